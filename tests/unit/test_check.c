/* Metadata checks (vd_format_ops.check): a clean image reports nothing, and
 * each corruption injected into a copy is reported by the check meant to
 * find it (one test per check). VMDK images come from qemu-img (hosted
 * sparse with a redundant GD, as VMware writes them); VHD images from the
 * project's writer (vhd_write.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "disk/endian.h"
#include "disk/vhd.h"
#include "test_util.h"

struct findings {
	struct vd_buf text; /* one line per problem */
};

static void collect(void *ctx, const char *path, const char *msg)
{
	struct findings *f = ctx;

	vd_buf_printf(&f->text, "%s: %s\n", path, msg);
}

/* Opens path and checks it; returns the number of problems and leaves the
 * report in *out (malloc'd, "" when clean). */
static unsigned check_file(const char *path, char **out)
{
	struct findings f = {0};
	struct vd_check chk = {.report = collect, .ctx = &f};
	struct vd_image *img;

	assert_int_equal(vd_image_open(path, 0, &img), 0);
	assert_non_null(img->ops->check);
	assert_int_equal(img->ops->check(img, &chk), 0);
	vd_image_close(img);
	*out = f.text.data ? f.text.data : strdup("");
	return chk.problems;
}

static void expect_finding(const char *path, const char *needle)
{
	char *text;
	unsigned n = check_file(path, &text);

	if (n == 0 || !strstr(text, needle))
		fail_msg("%s: expected a problem containing \"%s\", got %u:\n%s", path, needle, n,
			 text);
	free(text);
}

static void expect_clean(const char *path)
{
	char *text;
	unsigned n = check_file(path, &text);

	if (n)
		fail_msg("%s: expected clean, got %u problem(s):\n%s", path, n, text);
	free(text);
}

/* --- VMDK hosted sparse ------------------------------------------------------ */

/* 40 MiB: 640 grains of 64 KiB, two GTs (the second only partly used). */
static const char *vmdk_base(void)
{
	static char path[256];

	if (!path[0]) {
		snprintf(path, sizeof(path), "%s", tu_path("base.vmdk"));
		assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk base.vmdk 40M && "
				       "qemu-io -f vmdk -c 'write -P 1 0 192k' "
				       "-c 'write -P 2 33M 64k' base.vmdk >/dev/null",
				       tu_dir()),
				 0);
	}
	return path;
}

static const char *vmdk_copy(const char *name)
{
	static char path[256];

	snprintf(path, sizeof(path), "%s", tu_path("%s", name));
	assert_int_equal(tu_sh("cp '%s' '%s'", vmdk_base(), path), 0);
	return path;
}

struct kdmv {
	uint64_t gd, rgd; /* sectors */
	uint32_t gt[2], rgt[2];
};

static struct kdmv kdmv_get(const char *p)
{
	uint8_t h[512], e[8];
	struct kdmv k;

	tu_peek(p, 0, h, sizeof(h));
	k.rgd = vd_get_le64(h + 48);
	k.gd = vd_get_le64(h + 56);
	tu_peek(p, k.gd * 512, e, 8);
	k.gt[0] = vd_get_le32(e);
	k.gt[1] = vd_get_le32(e + 4);
	tu_peek(p, k.rgd * 512, e, 8);
	k.rgt[0] = vd_get_le32(e);
	k.rgt[1] = vd_get_le32(e + 4);
	return k;
}

/* Sets entry i of GT t, in the primary GT and (both) its redundant copy. */
static void gte_put(const char *p, unsigned t, unsigned i, uint32_t v, bool both)
{
	struct kdmv k = kdmv_get(p);
	uint8_t b[4];

	vd_put_le32(b, v);
	tu_poke(p, (uint64_t)k.gt[t] * 512 + 4 * i, b, 4);
	if (both)
		tu_poke(p, (uint64_t)k.rgt[t] * 512 + 4 * i, b, 4);
}

static uint32_t gte_get(const char *p, unsigned t, unsigned i)
{
	struct kdmv k = kdmv_get(p);
	uint8_t b[4];

	tu_peek(p, (uint64_t)k.gt[t] * 512 + 4 * i, b, 4);
	return vd_get_le32(b);
}

static void test_vmdk_clean(void **state)
{
	(void)state;
	expect_clean(vmdk_base());
	assert_int_not_equal(kdmv_get(vmdk_base()).rgd, 0); /* qemu writes a redundant GD */
}

static void test_vmdk_unclean(void **state)
{
	const char *p = vmdk_copy("unclean.vmdk");
	uint8_t one = 1;

	(void)state;
	tu_poke(p, 72, &one, 1);
	expect_finding(p, "unclean-shutdown flag set");
}

static void test_vmdk_gte_past_eof(void **state)
{
	const char *p = vmdk_copy("gte-eof.vmdk");

	(void)state;
	gte_put(p, 0, 7, (uint32_t)(tu_file_size(p) / 512 + 1000), true);
	expect_finding(p, "grain 7 (grain table 0) points to sector");
}

static void test_vmdk_gte_past_disk(void **state)
{
	const char *p = vmdk_copy("gte-disk.vmdk");

	(void)state;
	/* Grain 712 = GT 1 entry 200: the disk has 640 grains. */
	gte_put(p, 1, 200, gte_get(p, 0, 0), true);
	expect_finding(p, "grain table 1 entry 200 past the disk's end");
}

static void test_vmdk_grain_twice(void **state)
{
	const char *p = vmdk_copy("twice.vmdk");

	(void)state;
	gte_put(p, 0, 9, gte_get(p, 0, 1), true);
	expect_finding(p, "space used twice");
}

static void test_vmdk_grain_on_metadata(void **state)
{
	const char *p = vmdk_copy("onmeta.vmdk");

	(void)state;
	uint8_t b[4];

	/* Grain table 1 moved onto grain 0's data. */
	vd_put_le32(b, gte_get(p, 0, 0));
	tu_poke(p, kdmv_get(p).gd * 512 + 4, b, 4);
	expect_finding(p, "overlaps grain table 1");
}

static void test_vmdk_rgd_disagrees(void **state)
{
	const char *p = vmdk_copy("rgd.vmdk");
	uint8_t zero[4] = {0};

	(void)state;
	tu_poke(p, kdmv_get(p).rgd * 512 + 4, zero, 4);
	expect_finding(p, "grain directory entry 1 is");
}

static void test_vmdk_rgt_differs(void **state)
{
	const char *p = vmdk_copy("rgt.vmdk");

	(void)state;
	gte_put(p, 0, 1, 0, false); /* the primary forgets grain 1, the copy does not */
	expect_finding(p, "grain table 0 differs from its redundant copy");
}

static void test_vmdk_leak(void **state)
{
	const char *p = vmdk_copy("leak.vmdk");

	(void)state;
	gte_put(p, 0, 1, 0, true); /* grain 1's space is now referenced by nothing */
	expect_finding(p, "65536 bytes between");
	p = vmdk_copy("leak2.vmdk");
	assert_int_equal(tu_sh("truncate -s +128K '%s'", p), 0);
	expect_finding(p, "131072 bytes between");
}

/* --- VHD ----------------------------------------------------------------------- */

#define VSIZE ((4u << 20) + 3 * 512) /* the last 512 KiB block is mostly past the end */
#define VBLOCK (512u << 10)

/* base.vhd (blocks 0 and 8 allocated) and child.vhd (block 1), made once. */
static const char *vhd_made(bool child)
{
	static char base[256], kid[256];

	if (!base[0]) {
		snprintf(base, sizeof(base), "%s", tu_path("base.vhd"));
		snprintf(kid, sizeof(kid), "%s", tu_path("child.vhd"));
		assert_int_equal(vhd_create_dynamic(base, VSIZE, VBLOCK), 0);
		assert_int_equal(tu_image_fill(base, 0, 4096, 0x11), 0);
		assert_int_equal(tu_image_fill(base, 4u << 20, 1024, 0x22), 0);
		assert_int_equal(tu_image_child(base, kid), 0);
		assert_int_equal(tu_image_fill(kid, VBLOCK + 512, 1024, 0x33), 0);
		assert_int_equal(tu_image_fill(kid, 4u << 20, 512, 0x44), 0);
	}
	return child ? kid : base;
}

static const char *vhd_copy(bool child, const char *name)
{
	static char path[256];

	snprintf(path, sizeof(path), "%s", tu_path("%s", name));
	assert_int_equal(tu_sh("cp '%s' '%s'", vhd_made(child), path), 0);
	/* The child names its parent by a relative locator: keep it beside. */
	return path;
}

/* Sets a big-endian u32 (or a byte) in footer copy at off and re-checksums it. */
static void ftr_poke(const char *p, uint64_t off, size_t field, uint32_t v, bool byte)
{
	uint8_t b[VHD_FOOTER_SIZE];

	tu_peek(p, off, b, sizeof(b));
	if (byte)
		b[field] = (uint8_t)v;
	else
		vd_put_be32(b + field, v);
	vd_put_be32(b + VHD_FTR_CHECKSUM, vhd_checksum(b, sizeof(b), VHD_FTR_CHECKSUM));
	tu_poke(p, off, b, sizeof(b));
}

static uint32_t bat_get(const char *p, uint32_t i)
{
	uint8_t h[VHD_HEADER_SIZE], e[4];

	tu_peek(p, VHD_FOOTER_SIZE, h, sizeof(h));
	tu_peek(p, vd_get_be64(h + VHD_HDR_TABLE_OFFSET) + 4 * i, e, 4);
	return vd_get_be32(e);
}

static void test_vhd_clean(void **state)
{
	(void)state;
	expect_clean(vhd_made(false));
	expect_clean(vhd_made(true));
}

static void test_vhd_saved_state(void **state)
{
	const char *p = vhd_copy(false, "saved.vhd");

	(void)state;
	ftr_poke(p, 0, VHD_FTR_SAVED, 1, true);
	ftr_poke(p, tu_file_size(p) - VHD_FOOTER_SIZE, VHD_FTR_SAVED, 1, true);
	expect_finding(p, "saved-state flag set");
}

static void test_vhd_footer_copies_differ(void **state)
{
	const char *p = vhd_copy(false, "copies.vhd");

	(void)state;
	ftr_poke(p, 0, VHD_FTR_TIMESTAMP, 12345, false);
	expect_finding(p, "footer copy at offset 0 differs");
}

static void test_vhd_footer_copy_checksum(void **state)
{
	const char *p = vhd_copy(false, "copysum.vhd");
	uint8_t x = 0x5a;

	(void)state;
	tu_poke(p, VHD_FTR_CHECKSUM, &x, 1);
	expect_finding(p, "footer copy at offset 0: checksum mismatch");
}

static void test_vhd_eof_footer_damaged(void **state)
{
	const char *p = vhd_copy(false, "eofbad.vhd");
	uint8_t x = 0x5a;

	(void)state;
	tu_poke(p, tu_file_size(p) - VHD_FOOTER_SIZE + VHD_FTR_CHECKSUM, &x, 1);
	expect_finding(p, "footer at the end of the file is damaged");
}

static void test_vhd_bat_tail(void **state)
{
	const char *p = tu_path("battail.vhd");
	uint8_t h[VHD_HEADER_SIZE], e[4];
	uint32_t n_blocks = 8;

	(void)state;
	/* A size that is a multiple of the block size may have one spare entry. */
	assert_int_equal(vhd_create_dynamic(p, n_blocks * VBLOCK, VBLOCK), 0);
	assert_int_equal(tu_image_fill(p, 0, 512, 0x55), 0);
	expect_clean(p);
	/* One more BAT entry than the disk needs (allowed), and it is used. */
	tu_peek(p, VHD_FOOTER_SIZE, h, sizeof(h));
	vd_put_be32(h + VHD_HDR_MAX_ENTRIES, n_blocks + 1);
	vd_put_be32(h + VHD_HDR_CHECKSUM, vhd_checksum(h, sizeof(h), VHD_HDR_CHECKSUM));
	tu_poke(p, VHD_FOOTER_SIZE, h, sizeof(h));
	vd_put_be32(e, bat_get(p, 0));
	tu_poke(p, vd_get_be64(h + VHD_HDR_TABLE_OFFSET) + 4ull * n_blocks, e, 4);
	expect_finding(p, "BAT entry 8 past the disk's end is used");
}

static void test_vhd_empty_bitmap(void **state)
{
	const char *p = vhd_copy(true, "emptybm.vhd");
	uint8_t zero[VHD_SECTOR] = {0};

	(void)state;
	tu_poke(p, (uint64_t)bat_get(p, 1) * VHD_SECTOR, zero, sizeof(zero));
	expect_finding(p, "block 1 is allocated but its bitmap marks no sector");
}

static void test_vhd_bitmap_past_end(void **state)
{
	const char *p = vhd_copy(true, "bmend.vhd");
	uint8_t b = 0xff;

	(void)state;
	/* Block 8 holds 3 sectors of the disk; byte 1 marks sectors 8-15 of it. */
	tu_poke(p, (uint64_t)bat_get(p, 8) * VHD_SECTOR + 1, &b, 1);
	expect_finding(p, "block 8 bitmap marks sector");
}

/* Moves the footer gap bytes further, leaving a gap after the last block. */
static void vhd_gap(const char *p, size_t gap)
{
	uint8_t ftr[VHD_FOOTER_SIZE], *zeros = calloc(1, gap);
	uint64_t end = tu_file_size(p) - VHD_FOOTER_SIZE;

	assert_non_null(zeros);
	tu_peek(p, end, ftr, sizeof(ftr));
	tu_poke(p, end, zeros, gap);
	tu_poke(p, end + gap, ftr, sizeof(ftr));
	free(zeros);
}

static void test_vhd_leak(void **state)
{
	const char *p = vhd_copy(false, "leak.vhd");

	(void)state;
	/* Room for a whole block (bitmap + data) that nothing uses: leaked. */
	vhd_gap(p, VHD_SECTOR + VBLOCK);
	expect_finding(p, "524800 bytes between");
	/* A gap too small for a block is alignment padding (Windows aligns
	 * block data to 4 KiB): not a finding. */
	p = vhd_copy(false, "pad.vhd");
	vhd_gap(p, 3584);
	expect_clean(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vmdk_clean),
	    cmocka_unit_test(test_vmdk_unclean),
	    cmocka_unit_test(test_vmdk_gte_past_eof),
	    cmocka_unit_test(test_vmdk_gte_past_disk),
	    cmocka_unit_test(test_vmdk_grain_twice),
	    cmocka_unit_test(test_vmdk_grain_on_metadata),
	    cmocka_unit_test(test_vmdk_rgd_disagrees),
	    cmocka_unit_test(test_vmdk_rgt_differs),
	    cmocka_unit_test(test_vmdk_leak),
	    cmocka_unit_test(test_vhd_clean),
	    cmocka_unit_test(test_vhd_saved_state),
	    cmocka_unit_test(test_vhd_footer_copies_differ),
	    cmocka_unit_test(test_vhd_footer_copy_checksum),
	    cmocka_unit_test(test_vhd_eof_footer_damaged),
	    cmocka_unit_test(test_vhd_bat_tail),
	    cmocka_unit_test(test_vhd_empty_bitmap),
	    cmocka_unit_test(test_vhd_bitmap_past_end),
	    cmocka_unit_test(test_vhd_leak),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
