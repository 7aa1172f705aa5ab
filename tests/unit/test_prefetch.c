/* Prefetch for a sequential reader of a chain (chain.c, chain_prefetch):
 * the deltas' short runs in the window ahead are asked of the kernel, each
 * at most once, and nothing else: not the base's long runs (the kernel reads
 * ahead of those by itself), nothing for a random reader, nothing for a
 * single image. vd_advise_willneed is wrapped (link option) to record the
 * advice instead of giving it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "disk/disk.h"
#include "test_util.h"

#define MIB (1u << 20)
#define DISK (64u * MIB)
#define GRAIN 65536u
#define N_PIECES 24 /* one grain of the delta at 3 MiB + 5 * 64 KiB, 4 MiB + ... */

struct advice {
	int fd;
	uint64_t off, len;
};

static struct advice advised[4096];
static unsigned n_advised;

void __wrap_vd_advise_willneed(int fd, uint64_t off, uint64_t len);
void __wrap_vd_advise_willneed(int fd, uint64_t off, uint64_t len)
{
	if (n_advised < sizeof(advised) / sizeof(advised[0]))
		advised[n_advised] = (struct advice){fd, off, len};
	n_advised++;
}

static bool have_qemu(void)
{
	return tu_sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0;
}

static uint64_t piece_at(unsigned i)
{
	return (uint64_t)(i + 3) * MIB + 5 * GRAIN;
}

/* base.vmdk: DISK bytes of data; top.vmdk: a delta holding N_PIECES grains,
 * written last first so that the delta's file order is not the disk's
 * (qemu-img and qemu-io make the base; vdmount's own writer the delta). */
static int setup(void **state)
{
	(void)state;
	tu_dir_new("prefetch");
	if (!have_qemu())
		return 0;
	assert_int_equal(tu_sh("qemu-img create -q -f vmdk %s %u && qemu-io -f vmdk -c "
			       "'write -P 0xbb 0 %u' %s >/dev/null",
			       tu_path("base.vmdk"), DISK, DISK, tu_path("base.vmdk")),
			 0);
	assert_int_equal(tu_image_child(tu_path("base.vmdk"), tu_path("top.vmdk")), 0);
	for (unsigned i = N_PIECES; i-- > 0;)
		assert_int_equal(tu_image_fill(tu_path("top.vmdk"), piece_at(i), GRAIN, (uint8_t)i),
				 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tu_dir_remove();
	return 0;
}

static void read_at(struct vd_chain *c, uint64_t off, size_t len)
{
	static uint8_t buf[MIB];

	assert_true(len <= sizeof(buf));
	assert_int_equal(vd_chain_read(c, vd_chain_depth(c) - 1, buf, len, off), 0);
}

/* Whether the advice so far covers [off, off + len) of fd. */
static bool covered(int fd, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < n_advised; i++)
		if (advised[i].fd == fd && advised[i].off <= off &&
		    advised[i].off + advised[i].len >= off + len)
			return true;
	return false;
}

static void test_sequential_reader(void **state)
{
	struct vd_chain *c;
	struct vd_image *top;
	unsigned before;

	(void)state;
	if (!have_qemu())
		skip();
	assert_int_equal(vd_chain_open(tu_path("top.vmdk"), 0, &c), 0);
	top = vd_chain_layer(c, 1);
	n_advised = 0;
	for (uint64_t off = 0; off < 16 * MIB; off += MIB)
		read_at(c, off, MIB);
	assert_true(n_advised > 0 && n_advised < sizeof(advised) / sizeof(advised[0]));
	/* only the delta's grains, each advised once */
	for (unsigned i = 0; i < n_advised; i++) {
		assert_int_equal(advised[i].fd, top->fd);
		assert_true(advised[i].len > 0 && advised[i].len < MIB);
		assert_true(advised[i].off + advised[i].len <= top->file_size);
		for (unsigned j = 0; j < i; j++)
			assert_true(advised[j].off + advised[j].len <= advised[i].off ||
				    advised[i].off + advised[i].len <= advised[j].off);
	}
	/* every grain of the delta from the second request to half a window
	 * (4 MiB: the window moves on in steps of at least half) past the
	 * last one: where the delta keeps it, asked for */
	for (unsigned i = 0; i < N_PIECES && piece_at(i) < 20 * MIB; i++) {
		struct vd_map map;
		uint64_t n;

		if (piece_at(i) < MIB)
			continue;
		assert_int_equal(vd_image_block_status(top, piece_at(i), GRAIN, &n, &map), VD_DATA);
		assert_int_equal(n, GRAIN);
		assert_true(covered(top->fd, map.off, GRAIN));
	}
	/* a read far from the last one is no sequential reader's */
	before = n_advised;
	read_at(c, 48 * MIB, 4096);
	assert_int_equal(n_advised, before);
	vd_chain_close(c);
}

static void test_single_image_is_left_to_the_kernel(void **state)
{
	struct vd_chain *c;

	(void)state;
	if (!have_qemu())
		skip();
	assert_int_equal(vd_chain_open(tu_path("base.vmdk"), 0, &c), 0);
	n_advised = 0;
	for (uint64_t off = 0; off < 16 * MIB; off += MIB)
		read_at(c, off, MIB);
	assert_int_equal(n_advised, 0);
	vd_chain_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sequential_reader),
	    cmocka_unit_test(test_single_image_is_left_to_the_kernel),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
