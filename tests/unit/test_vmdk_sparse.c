/* Unit tests of the hosted sparse (KDMV) backend and of opening KDMV files:
 * a file built byte by byte (vmdk_gen_helper.c) is read back against its
 * model; every header check is reached by poking one bad value; bad GD/GT
 * entries give -EIO on the grains they cover; runs coalesce. When qemu-img is
 * installed, images it made are compared with `qemu-img convert -O raw`.
 * Resources: linear grain tables stay cached in a small budget, a GD that is
 * a hole costs a few steps, a small GD is kept whole (no cache lookup) and
 * answers as the paged one does, and chain.json caps counting a hostile
 * layer. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "disk/endian.h"
#include "disk/tcache.h"
#include "disk/vmdk.h"
#include "esx_helper.h"
#include "test_util.h"
#include "vmdk_gen_helper.h"

#define CAP 13290 /* sectors: 1661.25 grains of 4 KiB, 4 GTs */
#define GRAIN 8
#define GB (GRAIN * 512)
#define DESC                                                                                       \
	"# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n"                     \
	"createType=\"monolithicSparse\"\n\n# Extent description\n"                                \
	"RW 13290 SPARSE \"other-name.vmdk\"\n\n#DDB\nddb.adapterType = \"ide\"\n"

/* Grains 0-2 contiguous; 3-4 unallocated; 6 then 5 (not contiguous); 10
 * zeroed; GT 1 missing (GDE 0); 1100; 1535-1536 contiguous across GTs 2-3;
 * the last, partial grain 1661. */
static void build(struct kgen *g)
{
	kgen_init(g, CAP, GRAIN, 2, 0x5, DESC);
	kgen_alloc(g, 0, 1);
	kgen_alloc(g, 1, 2);
	kgen_alloc(g, 2, 3);
	kgen_alloc(g, 6, 4);
	kgen_alloc(g, 5, 5);
	kgen_set_gte(g, 10, 1);
	vd_put_le32(g->file + g->gd_off * 512 + 4, 0);
	kgen_alloc(g, 1100, 6);
	kgen_alloc(g, 1535, 7);
	kgen_alloc(g, 1536, 8);
	kgen_alloc(g, 1661, 9);
}

static const char *good_file(struct kgen *g)
{
	const char *p = tu_path("good.vmdk");

	build(g);
	kgen_write(g, p);
	return p;
}

static void test_open_and_identity(void **state)
{
	struct kgen g;
	struct vd_image *img;
	(void)state;
	assert_int_equal(vd_image_open(good_file(&g), 0, &img), 0);
	assert_string_equal(img->ops->name, "vmdk");
	assert_int_equal(img->size, (uint64_t)CAP * 512);
	assert_string_equal(img->subformat, "monolithicSparse");
	assert_int_equal(img->cow_unit, GB);
	assert_int_equal(img->alloc_unit, GB);
	assert_int_equal(img->id.len, 4);
	assert_memory_equal(img->id.bytes, "\x12\x34\xab\xcd", 4);
	assert_false(img->has_parent);
	assert_int_equal(img->parent_id.len, 0);
	assert_int_equal(img->n_hints, 0);
	vd_image_close(img);
	kgen_free(&g);
}

static void expect_status(struct vd_image *img, uint64_t off, uint64_t len, int state,
			  uint64_t pnum)
{
	uint64_t n = 0;

	assert_int_equal(vd_image_block_status(img, off, len, &n, NULL), state);
	assert_int_equal(n, pnum);
}

static void test_runs(void **state)
{
	struct kgen g;
	struct vd_image *img;
	uint64_t size = (uint64_t)CAP * 512;
	(void)state;
	assert_int_equal(vd_image_open(good_file(&g), 0, &img), 0);
	expect_status(img, 0, size, VD_DATA, 3 * GB);
	expect_status(img, 100, 5000, VD_DATA, 5000);
	expect_status(img, 3 * GB + 7, size - 3 * GB - 7, VD_UNALLOC, 2 * GB - 7);
	expect_status(img, 5 * GB, size - 5 * GB, VD_DATA, GB);
	expect_status(img, 6 * GB, size - 6 * GB, VD_DATA, GB);
	expect_status(img, 10 * GB, size - 10 * GB, VD_ZERO, GB);
	/* across the rest of GT 0, the missing GT 1 and into GT 2 */
	expect_status(img, 11 * GB, size - 11 * GB, VD_UNALLOC, (1100 - 11) * (uint64_t)GB);
	expect_status(img, 11 * GB, 3 * GB, VD_UNALLOC, 3 * GB);
	expect_status(img, 1535 * (uint64_t)GB, size - 1535 * (uint64_t)GB, VD_DATA, 2 * GB);
	expect_status(img, 1661 * (uint64_t)GB, size - 1661 * (uint64_t)GB, VD_DATA,
		      size - 1661 * (uint64_t)GB);
	vd_image_close(img);
	kgen_free(&g);
}

static void test_read_matches_model(void **state)
{
	struct kgen g;
	struct vd_chain *c;
	uint64_t size = (uint64_t)CAP * 512;
	uint8_t *buf = malloc(size);
	static const uint64_t cuts[][2] = {
	    {0, 1},
	    {511, 2},
	    {GB - 3, 7},
	    {2 * GB + 5, 3 * GB},
	    {5 * GB - 1, GB + 2},
	    {1535 * (uint64_t)GB - 100, 2 * GB + 200},
	    {CAP * 512 - 1500, 1500},
	    {9 * GB, 3 * GB},
	};
	(void)state;
	assert_non_null(buf);
	assert_int_equal(vd_chain_open(good_file(&g), 0, &c), 0);
	assert_int_equal(vd_chain_read(c, 0, buf, size, 0), 0);
	assert_memory_equal(buf, g.model, size);
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		memset(buf, 0xee, cuts[i][1]);
		assert_int_equal(vd_chain_read(c, 0, buf, cuts[i][1], cuts[i][0]), 0);
		assert_memory_equal(buf, g.model + cuts[i][0], cuts[i][1]);
	}
	vd_chain_close(c);
	free(buf);
	kgen_free(&g);
}

struct poke {
	uint64_t off;
	unsigned width; /* 1, 2, 4, 8 bytes LE, or 0: bytes in raw */
	uint64_t val;
	const char *raw;
	const char *msg; /* expected in the logged line */
};

static void poke_val(const char *path, const struct poke *p)
{
	uint8_t b[8];

	if (!p->width) {
		tu_poke(path, p->off, p->raw, strlen(p->raw));
		return;
	}
	vd_put_le64(b, p->val);
	tu_poke(path, p->off, b, p->width);
}

static void expect_open_fails(const char *path, const char *msg)
{
	struct vd_image *img = NULL;
	unsigned errs = vd_log_error_count();
	int r;
	char *log;

	tu_log_capture();
	r = vd_image_open(path, 0, &img);
	log = tu_log_release();

	assert_int_equal(r, -EINVAL);
	assert_null(img);
	assert_int_equal(vd_log_error_count(), errs + 1);
	if (!strstr(log, msg))
		fail_msg("expected \"%s\" in: %s", msg, log);
	free(log);
}

static void test_header_checks(void **state)
{
	static const struct poke pokes[] = {
	    {0, 4, 0x564d444c, NULL, "not a VMDK"},
	    {4, 4, 0, NULL, "version 0"},
	    {4, 4, 4, NULL, "version 4"},
	    {8, 4, 0x40005, NULL, "unknown incompatible header flags 0x00040000"},
	    {8, 4, 0x20005, NULL, "markers without compression"},
	    {73, 0, 0, "\n \n\n", "newline test"},
	    {20, 8, 0, NULL, "grain size 0"},
	    {20, 8, 3, NULL, "grain size 3"},
	    {20, 8, 4096, NULL, "grain size 4096"},
	    {44, 4, 256, NULL, "256 entries per grain table"},
	    {12, 8, 0, NULL, "capacity 0"},
	    {12, 8, (1ull << 32) + 1, NULL, "capacity 4294967297"},
	    {12, 8, CAP + 8, NULL, "header capacity is 13298"},
	    {28, 8, 1ull << 40, NULL, "embedded descriptor (sector 1099511627776"},
	    {36, 8, 4096, NULL, "exceeds 1048576 bytes"},
	    {64, 8, 1ull << 20, NULL, "overHead 1048576"},
	    {56, 8, 0, NULL, "grain directory (sector 0"},
	    {56, 8, 1ull << 30, NULL, "grain directory (sector 1073741824"},
	    {56, 8, ~0ull - 1, NULL, "grain directory (sector 18446744073709551614"},
	    {56, 8, 5, NULL, "overlaps the embedded descriptor"},
	    {56, 8, ~0ull, NULL, "grain directory at end but grains not compressed"},
	    {512 + 4 * 16, 0, 0, "=", "descriptor line"},
	    {512 + 150, 0, 0, "RW 8 ZERO\n", "lists 2 extents"},
	    {512 + 116, 0, 0, "RW 13290 ZERO                    \n",
	     "open the disk's descriptor file"},
	};
	struct kgen g;
	const char *p = tu_path("bad.vmdk");
	(void)state;
	build(&g);
	for (size_t i = 0; i < sizeof(pokes) / sizeof(pokes[0]); i++) {
		print_message("poke #%zu: %s\n", i, pokes[i].msg);
		kgen_write(&g, p);
		poke_val(p, &pokes[i]);
		expect_open_fails(p, pokes[i].msg);
	}
	/* a truncated file: overHead past EOF */
	g.len = (g.overhead - 1) * 512;
	kgen_write(&g, p);
	expect_open_fails(p, "file truncated");
	kgen_free(&g);
}

/* A bad GT entry fails reads of the grains it covers, with one logged line,
 * and nothing else; a bad GD entry fails the open. */
static void expect_grain_eio(struct kgen *g, uint64_t grain, uint32_t gte, bool set_gde,
			     const char *msg)
{
	const char *p = tu_path("gte.vmdk");
	struct vd_chain *c;
	uint8_t buf[GB];
	uint64_t off = grain * GB;
	int r;
	char *log;
	unsigned errs;

	kgen_write(g, p);
	if (set_gde) {
		uint8_t b[4];

		vd_put_le32(b, gte);
		tu_poke(p, g->gd_off * 512 + grain / 512 * 4, b, 4);
	} else {
		uint8_t b[4];

		vd_put_le32(b, gte);
		tu_poke(p, kgen_gte_off(g, grain), b, 4);
	}
	if (set_gde) {
		/* The GD is checked whole at open: a wild GT offset fails the open. */
		errs = vd_log_error_count();
		tu_log_capture();
		r = vd_chain_open(p, 0, &c);
		log = tu_log_release();
		assert_int_equal(r, -EINVAL);
		assert_int_equal(vd_log_error_count(), errs + 1);
		if (!strstr(log, msg))
			fail_msg("expected \"%s\" in: %s", msg, log);
		free(log);
		return;
	}
	assert_int_equal(vd_chain_open(p, 0, &c), 0);
	errs = vd_log_error_count();
	tu_log_capture();
	r = vd_chain_read(c, 0, buf, sizeof(buf), off);
	log = tu_log_release();
	assert_int_equal(r, -EIO);
	assert_int_equal(vd_log_error_count(), errs + 1);
	if (!strstr(log, msg))
		fail_msg("expected \"%s\" in: %s", msg, log);
	free(log);
	/* the neighbours still read */
	assert_int_equal(vd_chain_read(c, 0, buf, sizeof(buf), 0), 0);
	assert_memory_equal(buf, g->model, sizeof(buf));
	vd_chain_close(c);
}

static void test_gte_checks(void **state)
{
	struct kgen g;
	uint32_t eof_sector;
	(void)state;
	build(&g);
	eof_sector = (uint32_t)(g.len / 512);
	expect_grain_eio(&g, 3, eof_sector, false, "outside the file's grain area");
	expect_grain_eio(&g, 3, eof_sector - 4, false, "outside the file's grain area");
	expect_grain_eio(&g, 3, 0xffffffffu, false, "outside the file's grain area");
	expect_grain_eio(&g, 3, 5, false, "outside the file's grain area");
	expect_grain_eio(&g, 1100, eof_sector, true, "grain directory entry 2");
	expect_grain_eio(&g, 1100, 3, true, "grain directory entry 2");
	/* GTE 1 is a zeroed grain only with flag bit 2 */
	vd_put_le32(g.file + 8, 0x1);
	expect_grain_eio(&g, 3, 1, false, "outside the file's grain area");
	kgen_free(&g);
}

/* A run that meets a corrupt entry ends before it: the good part still reads. */
static void test_run_stops_before_corrupt(void **state)
{
	struct kgen g;
	struct vd_image *img;
	const char *p = tu_path("stop.vmdk");
	uint64_t n;
	(void)state;
	build(&g);
	kgen_set_gte(&g, 4, (uint32_t)(g.len / 512 + 100));
	kgen_write(&g, p);
	assert_int_equal(vd_image_open(p, 0, &img), 0);
	assert_int_equal(vd_image_block_status(img, 3 * GB, 4 * GB, &n, NULL), VD_UNALLOC);
	assert_int_equal(n, GB);
	assert_int_equal(vd_image_block_status(img, 4 * GB, GB, &n, NULL), -EIO);
	vd_image_close(img);
	kgen_free(&g);
}

/* twoGbMaxExtentSparse-style: two KDMV pieces without embedded descriptors and
 * a ZERO extent between them. */
static void test_split(void **state)
{
	struct kgen a, b;
	struct vd_image *img;
	struct vd_chain *c;
	uint64_t size = (1000 + 24 + 500) * 512ull, n;
	uint8_t *buf = calloc(1, size), *model = calloc(1, size);
	(void)state;
	kgen_init(&a, 1000, GRAIN, 1, 0x3, NULL);
	for (uint64_t i = 120; i < 125; i++)
		kgen_alloc(&a, i, 11);
	kgen_init(&b, 500, GRAIN, 1, 0x3, NULL);
	kgen_alloc(&b, 0, 12);
	kgen_alloc(&b, 62, 13);
	kgen_write(&a, tu_path("sp-s001.vmdk"));
	kgen_write(&b, tu_path("sp s002.vmdk"));
	memcpy(model, a.model, 1000 * 512);
	memcpy(model + 1024 * 512, b.model, 500 * 512);
	tu_write_text(tu_path("sp.vmdk"),
		      "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
		      "createType=\"twoGbMaxExtentSparse\"\nRW 1000 SPARSE \"sp-s001.vmdk\"\n"
		      "RDONLY 24 ZERO\nRW 500 SPARSE \"sp s002.vmdk\"\n");
	assert_int_equal(vd_image_open(tu_path("sp.vmdk"), 0, &img), 0);
	assert_int_equal(img->size, size);
	assert_string_equal(img->subformat, "twoGbMaxExtentSparse");
	assert_int_equal(vd_image_block_status(img, 999 * 512, 100 * 512, &n, NULL), VD_DATA);
	assert_int_equal(n, 512);
	assert_int_equal(vd_image_block_status(img, 0, 100 * 512, &n, NULL), VD_UNALLOC);
	assert_int_equal(n, 100 * 512);
	assert_int_equal(vd_image_block_status(img, 1000 * 512, 100 * 512, &n, NULL), VD_ZERO);
	assert_int_equal(n, 24 * 512);
	assert_int_equal(vd_image_block_status(img, 1024 * 512, 100 * 512, &n, NULL), VD_DATA);
	assert_int_equal(n, GB);
	vd_image_close(img);
	assert_int_equal(vd_chain_open(tu_path("sp.vmdk"), 0, &c), 0);
	assert_int_equal(vd_chain_read(c, 0, buf, size, 0), 0);
	assert_memory_equal(buf, model, size);
	assert_int_equal(vd_chain_read(c, 0, buf, 30 * 512 + 3, 990 * 512 - 1), 0);
	assert_memory_equal(buf, model + 990 * 512 - 1, 30 * 512 + 3);
	vd_chain_close(c);

	/* one piece opened directly, its descriptor gone: itself, without
	 * identity, and the warning reaches the chain's list (chain.json) */
	kgen_write(&a, tu_path("lone-s001.vmdk"));
	assert_int_equal(vd_image_open(tu_path("lone-s001.vmdk"), 0, &img), 0);
	assert_int_equal(img->size, 1000 * 512);
	assert_int_equal(img->id.len, 0);
	vd_image_close(img);
	assert_int_equal(vd_chain_open(tu_path("lone-s001.vmdk"), 0, &c), 0);
	assert_int_equal(vd_chain_warning_count(c), 1);
	assert_non_null(strstr(vd_chain_warning(c, 0), "without an embedded descriptor"));
	vd_chain_close(c);

	/* a piece whose capacity disagrees with its descriptor line */
	tu_write_text(tu_path("sp.vmdk"),
		      "CID=1\ncreateType=\"twoGbMaxExtentSparse\"\nRW 1008 SPARSE "
		      "\"sp-s001.vmdk\"\n");
	expect_open_fails(tu_path("sp.vmdk"), "differs from the descriptor's 1008");
	/* the same file twice */
	tu_write_text(tu_path("sp.vmdk"),
		      "CID=1\ncreateType=\"twoGbMaxExtentSparse\"\nRW 1000 SPARSE "
		      "\"sp-s001.vmdk\"\nRW 1000 SPARSE \"./sp-s001.vmdk\"\n");
	expect_open_fails(tu_path("sp.vmdk"), "listed twice");
	/* an extent that is the descriptor itself */
	tu_write_text(tu_path("sp.vmdk"),
		      "CID=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"sp.vmdk\" 0\n");
	expect_open_fails(tu_path("sp.vmdk"), "is the descriptor file itself");
	kgen_free(&a);
	kgen_free(&b);
	free(buf);
	free(model);
}

static void test_delta_identity(void **state)
{
	struct kgen g;
	struct vd_image *img;
	(void)state;
	kgen_init(&g, 64, GRAIN, 1, 0x3,
		  "CID=00c0ffee\nparentCID=1234abcd\nparentFileNameHint=\"../base dir/b.vmdk\"\n"
		  "createType=\"monolithicSparse\"\nRW 64 SPARSE \"d.vmdk\"\n");
	kgen_write(&g, tu_path("d.vmdk"));
	assert_int_equal(vd_image_open(tu_path("d.vmdk"), 0, &img), 0);
	assert_true(img->has_parent);
	assert_memory_equal(img->id.bytes, "\x00\xc0\xff\xee", 4);
	assert_int_equal(img->parent_id.len, 4);
	assert_memory_equal(img->parent_id.bytes, "\x12\x34\xab\xcd", 4);
	assert_int_equal(img->n_hints, 1);
	assert_string_equal(img->hints[0].kind, "parentFileNameHint");
	assert_string_equal(img->hints[0].path, "../base dir/b.vmdk");
	vd_image_close(img);
	kgen_free(&g);
}

static void test_describe(void **state)
{
	struct kgen g;
	struct vd_image *img;
	struct vd_json j = {0};
	(void)state;
	assert_int_equal(vd_image_open(good_file(&g), 0, &img), 0);
	vd_json_obj_begin(&j, NULL);
	img->ops->describe(img, &j);
	vd_json_obj_end(&j);
	assert_false(j.buf.oom);
	assert_non_null(strstr(j.buf.data, "\"createType\""));
	assert_non_null(strstr(j.buf.data, "1234abcd"));
	assert_non_null(strstr(j.buf.data, "\"other-name.vmdk\""));
	assert_non_null(strstr(j.buf.data, "\"ide\""));
	assert_non_null(strstr(j.buf.data, "\"grain_size\""));
	vd_buf_free(&j.buf);
	vd_image_close(img);
	kgen_free(&g);
}

static bool have_qemu(void)
{
	return tu_sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0;
}

static void qemu_compare(const char *name, unsigned from_top)
{
	char raw[600];

	snprintf(raw, sizeof(raw), "%s.raw", tu_path("%s", name));
	assert_int_equal(
	    tu_sh("cd '%s' && qemu-img convert -f vmdk -O raw '%s' '%s.raw'", tu_dir(), name, name),
	    0);
	assert_int_equal(kgen_compare_chain(tu_path("%s", name), from_top, raw), 0);
}

static void test_qemu_images(void **state)
{
	const char *d = tu_dir();
	(void)state;
	if (!have_qemu())
		skip();
	assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk -o subformat=monolithicSparse"
			       " q1.vmdk 64M && qemu-io -f vmdk -c 'write -P 0x5a 65000 70000'"
			       " -c 'write -P 0x33 33554000 1000' -c 'write -P 7 66000000 1108864'"
			       " q1.vmdk >/dev/null",
			       d),
			 0);
	qemu_compare("q1.vmdk", 0);
	/* zeroed grains (v2, flag 4) over data, in a delta */
	assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk -o zeroed_grain=on -b q1.vmdk"
			       " -F vmdk q2.vmdk && qemu-io -f vmdk -c 'write -z 0 131072'"
			       " -c 'write -P 0x11 200000 5' q2.vmdk >/dev/null",
			       d),
			 0);
	qemu_compare("q2.vmdk", 0);
	/* split sparse: a write straddling the 2 GiB extent boundary, odd size */
	assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk -o"
			       " subformat=twoGbMaxExtentSparse q3.vmdk 4100M && qemu-io -f vmdk"
			       " -c 'write -P 0x77 2147479552 8192' -c 'write -P 1 4299154000 7000'"
			       " q3.vmdk >/dev/null",
			       d),
			 0);
	qemu_compare("q3.vmdk", 0);
	assert_int_equal(tu_sh("cd '%s' && rm -f q3*", d), 0);
}

/* A 2 TiB sparse image must open fast: the GD is read, the GTs are not. */
static void test_qemu_2tib_open(void **state)
{
	struct vd_image *img;
	struct timespec t0, t1;
	uint8_t buf[4096];
	(void)state;
	if (!have_qemu())
		skip();
	assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk big.vmdk 2T && qemu-io -f"
			       " vmdk -c 'write -P 0x42 2199023000000 4096' big.vmdk >/dev/null",
			       tu_dir()),
			 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(vd_image_open(tu_path("big.vmdk"), 0, &img), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6 < 100.0);
	assert_int_equal(img->size, 2ull << 40);
	assert_int_equal(vd_image_read(img, buf, sizeof(buf), 2199023000000ull, NULL), 0);
	assert_int_equal(buf[0], 0x42);
	assert_int_equal(buf[4095], 0x42);
	vd_image_close(img);
	assert_int_equal(tu_sh("rm -f '%s'", tu_path("big.vmdk")), 0);
}

static char *describe(struct vd_image *img);

/* The number after "key": in js (the key must be there). */
static uint64_t json_u64(const char *js, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	assert_non_null(p);
	return strtoull(p + strlen(pat), NULL, 10);
}

/* qemu preallocates every grain table of an image, all zero: they must cost
 * the cache no table memory (a 255-layer chain of such deltas holds
 * thousands), whether looked up once or again; and, as qemu-img leaves them
 * unwritten (a hole in the file), no read either. */

static void test_zero_tables_cost_nothing(void **state)
{
	struct vd_image *img;
	uint8_t buf[4096];
	size_t before;
	char *js;
	(void)state;
	if (!have_qemu())
		skip();
	assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk z.vmdk 4G", tu_dir()), 0);
	before = vd_tcache_bytes();
	assert_int_equal(vd_image_open(tu_path("z.vmdk"), 0, &img), 0);
	for (int pass = 0; pass < 2; pass++) {
		uint64_t n;

		for (uint64_t off = 0; off < img->size; off += n) {
			struct vd_map m;

			assert_int_equal(vd_image_block_status(img, off, img->size - off, &n, &m),
					 VD_UNALLOC);
			assert_true(n > 0);
		}
	}
	/* 128 tables: 256 KiB if each were held whole, about 9 KiB of entries */
	assert_true(vd_tcache_bytes() - before < (32 << 10));
	/* qemu-img leaves them unwritten, a hole in the file: none is read
	 * but the first, which shares a file system block with the GD */
	js = describe(img);
	assert_true(json_u64(js, "gts_loaded") <= 1);
	free(js);
	vd_image_close(img);

	/* One grain written: its table is data now and is read; the other
	 * 127 still are not, and the grain reads back. */
	assert_int_equal(tu_sh("cd '%s' && qemu-io -f vmdk -c 'write -P 0x5a 3G 64k' z.vmdk "
			       ">/dev/null",
			       tu_dir()),
			 0);
	assert_int_equal(vd_image_open(tu_path("z.vmdk"), 0, &img), 0);
	assert_int_equal(vd_image_read(img, buf, sizeof(buf), (3ull << 30) + 512, NULL), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0x5a);
	assert_int_equal(vd_image_read(img, buf, sizeof(buf), 1ull << 30, NULL), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	js = describe(img);
	assert_true(json_u64(js, "gts_loaded") <= 2);
	free(js);
	vd_image_close(img);
	assert_int_equal(tu_sh("rm -f '%s'", tu_path("z.vmdk")), 0);
}

static int gd_check_any(struct vmdk_extent *e, uint64_t i, uint64_t gde)
{
	(void)e;
	(void)i;
	(void)gde;
	return 0;
}

/* Opens a GD of n entries of width bytes, entry i = model[i], through
 * vmdk_gd_init on a file holding it at offset 512. */
static void gd_open(struct vmdk_gd *gd, struct vmdk_extent *e, const uint64_t *model, uint64_t n,
		    unsigned width)
{
	size_t bytes = 512 + (size_t)n * width;
	uint8_t *raw = calloc(1, bytes);

	assert_non_null(raw);
	for (uint64_t i = 0; i < n; i++) {
		if (width == 4)
			vd_put_le32(raw + 512 + i * 4, (uint32_t)model[i]);
		else
			vd_put_le64(raw + 512 + i * 8, model[i]);
	}
	tu_write_file(tu_path("gd.bin"), raw, bytes);
	free(raw);
	memset(e, 0, sizeof(*e));
	e->path = (char *)tu_path("gd.bin");
	e->fd = open(e->path, O_RDONLY);
	assert_true(e->fd >= 0);
	*gd = (struct vmdk_gd){
	    .e = e, .off = 512, .n = n, .width = width, .what = "GD", .check = gd_check_any};
	assert_int_equal(vmdk_gd_init(gd), 0);
}

/* A GD of at most VMDK_GD_WHOLE_BYTES is kept whole and looked up without
 * the cache; it answers (entries and zero runs) exactly as a paged GD does,
 * checked against the model for both widths, with runs of zero entries that
 * cross page boundaries. */
static void test_small_gd_kept_whole(void **state)
{
	static const struct {
		uint64_t n;
		unsigned width;
		bool whole;
	} cases[] = {
	    {32, 4, true}, {4096, 4, true}, {2048, 8, true}, {4097, 4, false}, {3000, 8, false}};
	(void)state;
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t n = cases[c].n, *model = calloc(n, sizeof(*model));
		unsigned seed = 11 + c;
		struct vmdk_extent e;
		struct vmdk_gd gd;
		uint64_t held, loads;

		assert_non_null(model);
		for (uint64_t i = 0; i < n; i++) /* runs of zeros up to ~1,500 long */
			if (rand_r(&seed) % 100 < 3 || (i / 700) % 3 == 0)
				model[i] = (i + 1) * 7 + (cases[c].width == 8 ? 1ull << 40 : 0);
		gd_open(&gd, &e, model, n, cases[c].width);
		assert_int_equal(gd.whole != NULL, cases[c].whole);
		for (uint64_t i = 0; i < n; i++) {
			uint64_t gde = 1, absent = 0, z = i, page_end = (i / 512 + 1) * 512;

			assert_int_equal(vmdk_gd_get(&gd, i, &gde, &absent), 0);
			assert_int_equal(gde, model[i]);
			if (model[i])
				continue;
			while (z < n && z < page_end && !model[z])
				z++;
			/* to the end of the page, or (a paged GD whose page reads
			 * as a hole) past it: never less, never past the zeros
			 * (past the last entry callers clamp) */
			assert_true(absent >= z - i);
			for (uint64_t k = i; k < i + absent && k < n; k++)
				assert_int_equal(model[k], 0);
		}
		vd_tcache_stats(&gd.pages, &held, &loads);
		if (cases[c].whole)
			assert_int_equal(loads, 0);
		else
			assert_true(loads > 0);
		vmdk_gd_destroy(&gd);
		close(e.fd);
		free(model);
	}
}

static char *describe(struct vd_image *img)
{
	struct vd_json j = {0};

	vd_json_obj_begin(&j, NULL);
	img->ops->describe(img, &j);
	vd_json_obj_end(&j);
	assert_false(j.buf.oom);
	return j.buf.data;
}

/* A disk written front to back has grain tables whose entries follow each
 * other: 256 of them (64 MiB in 512-byte grains) stay cached in a budget that
 * holds a quarter of them whole, so random reads load each table once. */
static void test_linear_tables_stay_cached(void **state)
{
	struct kgen g;
	struct vd_image *img;
	uint8_t buf[512];
	unsigned seed = 7;
	char *js;

	(void)state;
	kgen_init(&g, 256 * 512, 1, 1, 0x3, NULL);
	for (uint64_t i = 0; i < 256 * 512; i++)
		kgen_alloc(&g, i, (uint8_t)(i * 13));
	kgen_write(&g, tu_path("lin.vmdk"));
	vd_tcache_budget_set(128 << 10);
	assert_int_equal(vd_image_open(tu_path("lin.vmdk"), 0, &img), 0);
	for (unsigned n = 0; n < 3 * 256 * 8; n++) {
		uint64_t s = (uint64_t)rand_r(&seed) % (256 * 512);

		assert_int_equal(vd_image_read(img, buf, sizeof(buf), s * 512, NULL), 0);
		assert_memory_equal(buf, g.model + s * 512, sizeof(buf));
	}
	js = describe(img);
	assert_int_equal(esx_json_u64(js, "gts_loaded"), 256);
	free(js);
	vd_image_close(img);
	vd_tcache_budget_set(VD_TCACHE_DEFAULT_BUDGET);
	kgen_free(&g);
}

/* A GD of 8 Mi entries that is one hole (a few KiB of file claiming 2 TiB in
 * 512-byte grains) is walked in a few steps: counting the layer's usage
 * leaves next to nothing in the cache (a page at a time: 16 Ki entries). */
static void test_hole_gd_walked_in_one_step(void **state)
{
	struct vd_chain *c;
	uint64_t data, zero;

	(void)state;
	assert_int_equal(esx_run("\"$T/mkclaims\" h.vmdk sparse %llu 1 --data 9000000", 1ull << 32),
			 0);
	assert_int_equal(vd_chain_open(tu_path("h.vmdk"), 0, &c), 0);
	assert_int_equal(vd_chain_layer_usage(c, 0, &data, &zero), 0);
	assert_int_equal(data, 512);
	assert_int_equal(zero, 0);
	assert_true(vd_tcache_bytes() < (64 << 10));
	vd_chain_close(c);
}

/* Every GD entry names one GT that maps all its grains: 2^29 grains claimed
 * by 4 MiB. chain.json stays quick and says the usage was not counted. */
static void test_describe_caps_usage(void **state)
{
	struct vd_chain *c;
	struct vd_json j = {0};
	struct timespec t0, t1;

	(void)state;
	assert_int_equal(esx_run("\"$T/mkclaims\" g.vmdk sparse %llu 8 --shared-gt", 1ull << 32),
			 0);
	assert_int_equal(vd_chain_open(tu_path("g.vmdk"), 0, &c), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(vd_chain_describe(c, &j), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6 < 5000.0);
	assert_non_null(strstr(j.buf.data, "\"allocated_bytes\": null"));
	assert_non_null(strstr(j.buf.data, "\"usage_note\": \"not counted"));
	vd_buf_free(&j.buf);
	vd_chain_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_and_identity),
	    cmocka_unit_test(test_runs),
	    cmocka_unit_test(test_read_matches_model),
	    cmocka_unit_test(test_header_checks),
	    cmocka_unit_test(test_gte_checks),
	    cmocka_unit_test(test_run_stops_before_corrupt),
	    cmocka_unit_test(test_split),
	    cmocka_unit_test(test_delta_identity),
	    cmocka_unit_test(test_describe),
	    cmocka_unit_test(test_qemu_images),
	    cmocka_unit_test(test_qemu_2tib_open),
	    cmocka_unit_test(test_zero_tables_cost_nothing),
	    cmocka_unit_test(test_small_gd_kept_whole),
	    cmocka_unit_test(test_linear_tables_stay_cached),
	    cmocka_unit_test(test_hole_gd_walked_in_one_step),
	    cmocka_unit_test(test_describe_caps_usage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
