/* vmfsSparse (COWD) extent backend against mkcowd's exact model: several
 * grain sizes, a partial last GT, unaligned and odd-sized requests, a
 * cross-check with qemu-img, and every COWD header and table check
 * reached by a poked field (-EINVAL at open, -EIO at read, never a crash). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "esx_helper.h"

#define SECTORS 20000u

/* Generates c.vmdk (+ model c.raw, mask c.mask) with grain g sectors. */
static void gen(unsigned g)
{
	assert_int_equal(
	    esx_run("\"$T/mkcowd\" c.vmdk %u %u --write 0:4096:1 "
		    "--write 1000000:70000:2 --write 5000000:512:3 "
		    "--write %u:512:4 --model c.raw --mask c.mask --descriptor cd.vmdk",
		    SECTORS, g, SECTORS * 512 - 512),
	    0);
}

static void check_against_model(size_t chunk)
{
	struct vmdk_extent e;
	uint8_t *got, *model, *mask, state[SECTORS];
	size_t mlen, klen;

	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	assert_int_equal(esx_extent_read_all(&e, chunk, &got, state), 0);
	model = tu_read_file(tu_path("c.raw"), &mlen);
	mask = tu_read_file(tu_path("c.mask"), &klen);
	assert_non_null(model);
	assert_non_null(mask);
	assert_int_equal(mlen, SECTORS * 512);
	assert_memory_equal(got, model, mlen);
	for (unsigned s = 0; s < SECTORS; s++)
		assert_int_equal(state[s], mask[s] ? VD_DATA : VD_UNALLOC);
	free(got);
	free(model);
	free(mask);
	esx_extent_close(&e);
}

static void test_grains(void **st)
{
	(void)st;
	static const unsigned grains[] = {1, 8, 128, 2048};

	for (unsigned i = 0; i < sizeof(grains) / sizeof(grains[0]); i++) {
		gen(grains[i]);
		check_against_model(65536);
		check_against_model(1536);
		check_against_model(SECTORS * 512);
	}
}

static void test_unaligned_read(void **st)
{
	struct vmdk_extent e;
	uint8_t *model, buf[3000];
	size_t mlen;
	uint64_t pnum;

	(void)st;
	gen(1);
	model = tu_read_file(tu_path("c.raw"), &mlen);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	/* 1000000 rounds down to grain 1953 (999936): the written run covers 70064+ bytes. */
	assert_int_equal(esx_status(&e, 1000001, 3000, &pnum), VD_DATA);
	assert_int_equal(pnum, 3000);
	assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), 1000001), 0);
	assert_memory_equal(buf, model + 1000001, sizeof(buf));
	assert_int_equal(esx_status(&e, 4096, 2000000, &pnum), VD_UNALLOC);
	assert_int_equal(pnum, 999936 - 4096);
	free(model);
	esx_extent_close(&e);
}

static void test_qemu_agrees(void **st)
{
	(void)st;
	if (esx_run("command -v qemu-img >/dev/null") != 0)
		skip();
	gen(8);
	assert_int_equal(esx_run("qemu-img convert -O raw cd.vmdk q.raw && cmp q.raw c.raw"), 0);
}

static void test_capacity_vs_descriptor(void **st)
{
	struct vmdk_extent e;

	(void)st;
	gen(8);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS + 1, &e),
			 -EINVAL);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS - 8, &e), 0);
	esx_extent_close(&e);
}

/* Pokes a u32 at off into a fresh file and expects open() to return want. */
static void poke_open(uint64_t off, uint32_t v, int want)
{
	struct vmdk_extent e;
	unsigned errs = vd_log_error_count();
	int ret;

	gen(8);
	tu_poke_le32(tu_path("c.vmdk"), off, v);
	ret = esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e);
	assert_int_equal(ret, want);
	if (ret == 0)
		esx_extent_close(&e);
	else
		assert_int_equal(vd_log_error_count(), errs + 1);
}

static void test_bad_header(void **st)
{
	(void)st;
	poke_open(0, 0x12345678, -EINVAL);	 /* magic */
	poke_open(4, 2, -EINVAL);		 /* version */
	poke_open(12, 0, -EINVAL);		 /* numSectors 0 */
	poke_open(12, SECTORS - 1, -EINVAL);	 /* numSectors < SECTORS */
	poke_open(16, 0, -EINVAL);		 /* grainSize 0 */
	poke_open(16, 4096, -EINVAL);		 /* grainSize > 2048 */
	poke_open(16, 1, -EINVAL);		 /* GD entry count no longer matches */
	poke_open(20, 3, -EINVAL);		 /* gdOffset inside the header */
	poke_open(20, 0x7fffffff, -EINVAL);	 /* GD past EOF */
	poke_open(24, 2, -EINVAL);		 /* numGDEntries */
	poke_open(24, 0xffffffff, -EINVAL);	 /* numGDEntries huge */
	poke_open(4 * 512, 0x7fffffff, -EINVAL); /* GDE past EOF */
	poke_open(4 * 512, 2, -EINVAL);		 /* GDE inside the header */
}

static void test_truncated(void **st)
{
	struct vmdk_extent e;

	(void)st;
	gen(8);
	assert_int_equal(truncate(tu_path("c.vmdk"), 1000), 0);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), -EINVAL);
	gen(8);
	/* Cut inside the data of the last GT: the GT entry points past EOF. */
	assert_int_equal(truncate(tu_path("c.vmdk"), 4 * 512 + 512 + 16384 + 4096), 0);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	{
		uint8_t *got;
		assert_int_equal(esx_extent_read_all(&e, 65536, &got, NULL), -EIO);
		free(got);
	}
	esx_extent_close(&e);
}

/* check(): clean as generated; then one corruption per finding. */
static void test_check(void **st)
{
	const uint64_t gt0 = (4 + 1) * 512;
	struct vmdk_extent e;
	uint8_t *f;
	size_t len;
	char *text;

	(void)st;
	gen(8);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	assert_int_equal(esx_check(&e, &text), 0);
	free(text);
	esx_extent_close(&e);
	f = tu_read_file(tu_path("c.vmdk"), &len);
	assert_non_null(f);
	/* Grain 1 pointed at grain 0's data: space used twice. */
	tu_poke(tu_path("c.vmdk"), gt0 + 4, f + gt0, 4);
	free(f);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	assert_int_equal(esx_check(&e, &text), 1);
	assert_non_null(strstr(text, "grain 1 (at byte"));
	assert_non_null(strstr(text, "space used twice"));
	free(text);
	esx_extent_close(&e);
	/* A grain past EOF, and the unclean flag. */
	gen(8);
	tu_poke_le32(tu_path("c.vmdk"), gt0, 0x7ffffff0);
	tu_poke_le32(tu_path("c.vmdk"), 1648, 1);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	assert_int_equal(esx_check(&e, &text), 2);
	assert_non_null(strstr(text, "grain 0: table entry 0x7ffffff0 points outside"));
	assert_non_null(strstr(text, "uncleanShutdown flag set"));
	free(text);
	esx_extent_close(&e);
}

static void test_bad_gte(void **st)
{
	struct vmdk_extent e;
	uint8_t buf[512];
	uint64_t pnum;
	const uint64_t gt0 = (4 + 1) * 512; /* GD is one sector; GT 0 follows */

	(void)st;
	gen(8);
	tu_poke_le32(tu_path("c.vmdk"), gt0, 0x7ffffff0);
	tu_poke_le32(tu_path("c.vmdk"), gt0 + 4, 1);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	assert_int_equal(esx_status(&e, 0, 512, &pnum), -EIO);
	assert_int_equal(vmdk_extent_read(&e, buf, 512, 0), -EIO);
	assert_int_equal(esx_status(&e, 4096, 512, &pnum), -EIO);
	assert_int_equal(vmdk_extent_read(&e, buf, 512, 4096), -EIO);
	esx_extent_close(&e);
}

static void test_describe(void **st)
{
	struct vmdk_extent e;
	char *js;

	(void)st;
	gen(8);
	assert_int_equal(esx_extent_open(&vmdk_cowd_ops, tu_path("c.vmdk"), SECTORS, &e), 0);
	assert_int_equal(e.grain_bytes, 4096);
	js = esx_describe(&e);
	assert_non_null(strstr(js, "\"grain_sectors\": 8"));
	free(js);
	esx_extent_close(&e);
}

/* vmfs flat base + two COWD deltas through vdcore's chain layer. */
static void test_chain(void **st)
{
	static const char *const models[] = {"b-flat.vmdk", "m1.raw", "m2.raw"};

	(void)st;
	assert_int_equal(esx_vmfs_base(SECTORS), 0);
	assert_int_equal(
	    esx_run("\"$T/mkcowd\" d1-delta.vmdk %u 1 --write 0:100000:1 "
		    "--write 3000000:5000:2 --model m1.raw --over b-flat.vmdk "
		    "--descriptor d1.vmdk --parent b.vmdk --parent-cid 0badcafe --cid 1 && "
		    "\"$T/mkcowd\" d2-delta.vmdk %u 8 --write 50000:100000:3 "
		    "--model m2.raw --over m1.raw --descriptor d2.vmdk --parent d1.vmdk "
		    "--parent-cid 1 --cid 2",
		    SECTORS, SECTORS),
	    0);
	assert_int_equal(esx_chain_check("d2.vmdk", 3, models, "\"grain_sectors\": 8"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grains),	cmocka_unit_test(test_unaligned_read),
	    cmocka_unit_test(test_qemu_agrees), cmocka_unit_test(test_capacity_vs_descriptor),
	    cmocka_unit_test(test_bad_header),	cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_bad_gte),	cmocka_unit_test(test_check),
	    cmocka_unit_test(test_describe),	cmocka_unit_test(test_chain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
