/* VHD metadata: decoders on byte arrays, and every open-time validation
 * reached by poking one field of a writer-made image (expect -EINVAL, one
 * logged error, no crash). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include "chain/chain.h"
#include "disk/vhd.h"
#include "test_util.h"

static char base_path[PATH_MAX], child_path[PATH_MAX], fixed_path[PATH_MAX], work_path[PATH_MAX];

static void file_copy(const char *from, const char *to)
{
	assert_int_equal(tu_sh("cp '%s' '%s'", from, to), 0);
}

/* Sets a big-endian u32 (or u64 when wide) in the footer copies (at EOF and,
 * when both, at 0) and re-checksums them. */
static void ftr_put(const char *p, size_t field, uint64_t v, bool wide, bool both)
{
	uint64_t offs[2] = {tu_file_size(p) - VHD_FOOTER_SIZE, 0};

	for (int i = 0; i < (both ? 2 : 1); i++) {
		uint8_t b[VHD_FOOTER_SIZE];
		tu_peek(p, offs[i], b, sizeof(b));
		if (wide)
			vd_put_be64(b + field, v);
		else
			vd_put_be32(b + field, (uint32_t)v);
		vd_put_be32(b + VHD_FTR_CHECKSUM, vhd_checksum(b, sizeof(b), VHD_FTR_CHECKSUM));
		tu_poke(p, offs[i], b, sizeof(b));
	}
}

static void hdr_put(const char *p, size_t field, uint64_t v, bool wide, bool fix_sum)
{
	uint8_t b[VHD_HEADER_SIZE];

	tu_peek(p, VHD_FOOTER_SIZE, b, sizeof(b));
	if (wide)
		vd_put_be64(b + field, v);
	else
		vd_put_be32(b + field, (uint32_t)v);
	if (fix_sum)
		vd_put_be32(b + VHD_HDR_CHECKSUM, vhd_checksum(b, sizeof(b), VHD_HDR_CHECKSUM));
	tu_poke(p, VHD_FOOTER_SIZE, b, sizeof(b));
}

static int open_rc(const char *p)
{
	struct vd_image *img = NULL;
	unsigned errs = vd_log_error_count();
	int r = vd_image_open(p, 0, &img);

	if (r == 0)
		vd_image_close(img);
	else
		assert_true(vd_log_error_count() > errs); /* it said why */
	return r;
}

static int setup(void **state)
{
	uint8_t ftr[VHD_FOOTER_SIZE];
	struct vhd_footer f = {0};

	tu_dir_new("vhdmeta");
	snprintf(base_path, sizeof(base_path), "%s", tu_path("base.vhd"));
	snprintf(child_path, sizeof(child_path), "%s", tu_path("child.vhd"));
	snprintf(fixed_path, sizeof(fixed_path), "%s", tu_path("fixed.vhd"));
	snprintf(work_path, sizeof(work_path), "%s", tu_path("work.vhd"));
	/* 4 MiB, 512 KiB blocks: blocks 0 and 3 allocated in each layer. */
	assert_int_equal(vhd_create_dynamic(base_path, 4u << 20, 512u << 10), 0);
	assert_int_equal(tu_image_fill(base_path, 0, 4096, 0x11), 0);
	assert_int_equal(tu_image_fill(base_path, 3u << 19, 1024, 0x22), 0);
	assert_int_equal(tu_image_child(base_path, child_path), 0);
	assert_int_equal(tu_image_fill(child_path, 512, 1536, 0x33), 0);
	assert_int_equal(tu_image_fill(child_path, 3u << 19, 512, 0x44), 0);
	/* Hand-made fixed disk: 64 KiB of data, footer after it. */
	f.features = 2;
	f.version = VHD_VERSION;
	f.data_offset = UINT64_MAX;
	memcpy(f.creator_app, "test", 4);
	f.cur_size = f.orig_size = 65536;
	f.type = VHD_TYPE_FIXED;
	vhd_footer_encode(&f, ftr);
	tu_write_file(fixed_path, NULL, 0);
	tu_poke(fixed_path, 65536, ftr, sizeof(ftr));
	(void)state;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return tu_dir_remove();
}

static void test_checksum_and_footer_roundtrip(void **state)
{
	struct vhd_footer f = {0}, g;
	uint8_t b[VHD_FOOTER_SIZE];
	const char *why = NULL;

	f.features = 2;
	f.version = VHD_VERSION;
	f.data_offset = 512;
	f.timestamp = 0x12345678;
	memcpy(f.creator_app, "abcd", 4);
	f.cur_size = 1u << 20;
	f.cyls = 300;
	f.heads = 4;
	f.spt = 17;
	f.type = VHD_TYPE_DYNAMIC;
	f.uuid[0] = 0xAA;
	vhd_footer_encode(&f, b);
	assert_memory_equal(b, "conectix", 8);
	assert_int_equal(vd_get_be32(b + VHD_FTR_TYPE), 3); /* big-endian on disk */
	assert_int_equal(b[VHD_FTR_CUR_SIZE + 5], 0x10);
	assert_int_equal(vhd_footer_decode(b, &g, &why), 0);
	assert_true(g.checksum_ok);
	assert_int_equal(g.timestamp, 0x12345678);
	assert_int_equal(g.cyls, 300);
	assert_string_equal(g.creator_app, "abcd");
	assert_int_equal(vhd_footer_check(&g, 1u << 21, &why), 0);
	b[100] ^= 1;
	assert_int_equal(vhd_footer_decode(b, &g, &why), 0);
	assert_false(g.checksum_ok);
	b[0] = 'C';
	assert_int_equal(vhd_footer_decode(b, &g, &why), -EINVAL);
	/* field checks */
	f.type = 5;
	assert_int_equal(vhd_footer_check(&f, 1u << 21, &why), -EINVAL);
	f.type = VHD_TYPE_DYNAMIC;
	f.cur_size = 1000;
	assert_int_equal(vhd_footer_check(&f, 1u << 21, &why), -EINVAL);
	f.cur_size = VHD_MAX_SIZE + 512;
	assert_int_equal(vhd_footer_check(&f, 1u << 21, &why), -EINVAL);
	f.cur_size = 1u << 20;
	f.data_offset = 700;
	assert_int_equal(vhd_footer_check(&f, 1u << 21, &why), -EINVAL);
	(void)state;
}

static void test_header_decode(void **state)
{
	struct vhd_header h = {0}, g;
	uint8_t b[VHD_HEADER_SIZE];
	const char *why;

	h.table_offset = 1536;
	h.version = VHD_VERSION;
	h.max_entries = 4;
	h.block_size = 1u << 20;
	h.loc[2].code = VHD_PLAT_W2RU;
	h.loc[2].space = 1;
	h.loc[2].length = 10;
	h.loc[2].offset = 4096;
	vhd_header_encode(&h, b);
	assert_memory_equal(b, "cxsparse", 8);
	assert_int_equal(vd_get_be32(b + VHD_HDR_LOCATORS + 2 * VHD_LOC_SIZE), VHD_PLAT_W2RU);
	assert_int_equal(vhd_header_decode(b, &g, &why), 0);
	assert_true(g.checksum_ok);
	assert_int_equal(g.loc[2].offset, 4096);
	assert_int_equal(vhd_header_check(&g, 4u << 20, &why), 0);
	assert_int_equal(vhd_header_check(&g, 5u << 20, &why), -EINVAL); /* table too small */
	g.block_size = 3u << 19;
	assert_int_equal(vhd_header_check(&g, 1u << 20, &why), -EINVAL);
	g.block_size = 256;
	assert_int_equal(vhd_header_check(&g, 1u << 10, &why), -EINVAL);
	b[900] ^= 1;
	assert_int_equal(vhd_header_decode(b, &g, &why), 0);
	assert_false(g.checksum_ok);
	(void)state;
}

static void test_locator_span(void **state)
{
	uint64_t n;

	assert_int_equal(vhd_locator_span(1, &n), 0);
	assert_int_equal(n, 512);
	assert_int_equal(vhd_locator_span(1024, &n), 0);
	assert_int_equal(n, 1024);
	assert_int_equal(vhd_locator_span(600, &n), -EINVAL);
	(void)state;
}

static void test_utf16(void **state)
{
	/* "a\u00e9\U0001F600" in LE, then padding NULs */
	const uint8_t le[] = {'a', 0, 0xE9, 0, 0x3D, 0xD8, 0x00, 0xDE, 0, 0, 0, 0};
	const uint8_t be[] = {0, 'x', 0, '/', 0, 0};
	const uint8_t lone_hi[] = {0x3D, 0xD8, 'a', 0};
	const uint8_t lone_lo[] = {0x00, 0xDE};
	const uint8_t inner_nul[] = {'a', 0, 0, 0, 'b', 0};
	uint8_t back[16];
	char *s = NULL;

	assert_int_equal(vd_utf16_to_utf8(le, sizeof(le), false, &s), 0);
	assert_string_equal(s, "a\xC3\xA9\xF0\x9F\x98\x80");
	assert_int_equal(vd_utf8_to_utf16(s, false, back, sizeof(back)), 8);
	assert_memory_equal(back, le, 8);
	free(s);
	assert_int_equal(vd_utf16_to_utf8(be, sizeof(be), true, &s), 0);
	assert_string_equal(s, "x/");
	free(s);
	assert_int_equal(vd_utf16_to_utf8(lone_hi, sizeof(lone_hi), false, &s), -EINVAL);
	assert_int_equal(vd_utf16_to_utf8(lone_lo, sizeof(lone_lo), false, &s), -EINVAL);
	assert_int_equal(vd_utf16_to_utf8(inner_nul, sizeof(inner_nul), false, &s), -EINVAL);
	assert_int_equal(vd_utf16_to_utf8(be, 3, true, &s), -EINVAL);
	assert_int_equal(vd_utf8_to_utf16("\xC3", false, back, sizeof(back)), -EINVAL);
	assert_int_equal(vd_utf8_to_utf16("abcdefghijk", false, back, 8), -E2BIG);
	(void)state;
}

static void test_macx(void **state)
{
	const char *a = "file://localhost/dir/my%20disk.vhd";
	const char *b = "file://./p.vhd";
	char *s;

	assert_int_equal(vhd_macx_decode((const uint8_t *)a, strlen(a), &s), 0);
	assert_string_equal(s, "/dir/my disk.vhd");
	free(s);
	assert_int_equal(vhd_macx_decode((const uint8_t *)b, strlen(b) + 1, &s), 0);
	assert_string_equal(s, "./p.vhd");
	free(s);
	assert_int_equal(vhd_macx_decode((const uint8_t *)"file:///a%2", 11, &s), -EINVAL);
	assert_int_equal(vhd_macx_decode((const uint8_t *)"file:///a%00b", 13, &s), -EINVAL);
	assert_int_equal(vhd_macx_decode((const uint8_t *)"/a\xFF", 3, &s), -EINVAL);
	(void)state;
}

/* Runs of equal bits, MSB-first, ending mid-byte. */
static void test_bitmap_runs(void **state)
{
	const uint8_t bm[4] = {0x0F, 0xFF, 0xC0, 0x00};
	uint32_t n;

	assert_int_equal(vhd_bitmap_run(bm, 0, 32, &n), VD_UNALLOC);
	assert_int_equal(n, 4);
	assert_int_equal(vhd_bitmap_run(bm, 4, 32, &n), VD_DATA);
	assert_int_equal(n, 14); /* sectors 4..17: ends mid-byte 2 */
	assert_int_equal(vhd_bitmap_run(bm, 18, 32, &n), VD_UNALLOC);
	assert_int_equal(n, 14);
	assert_int_equal(vhd_bitmap_run(bm, 5, 9, &n), VD_DATA);
	assert_int_equal(n, 4); /* capped by limit */
	assert_int_equal(vhd_bitmap_run(bm, 17, 32, &n), VD_DATA);
	assert_int_equal(n, 1);
	(void)state;
}

static void test_chs(void **state)
{
	uint16_t c;
	uint8_t h, s;

	vhd_chs(64u << 20, &c, &h, &s);
	/* the spec's formula rounds down (QEMU then grows the size to 964*8*17) */
	assert_int_equal(c, 963);
	assert_int_equal(h, 8);
	assert_int_equal(s, 17);
	vhd_chs(VHD_MAX_SIZE, &c, &h, &s);
	assert_int_equal(h, 16);
	assert_int_equal(s, 255);
	(void)state;
}

static void test_open_good(void **state)
{
	struct vd_image *img;

	assert_int_equal(vd_image_open(child_path, 0, &img), 0);
	assert_string_equal(img->subformat, "differencing");
	assert_true(img->has_parent);
	assert_int_equal(img->size, 4u << 20);
	assert_int_equal(img->alloc_unit, 512u << 10);
	assert_int_equal(img->cow_unit, 512);
	assert_int_equal(img->n_hints, 4);
	assert_string_equal(img->hints[0].kind, "W2ru");
	assert_string_equal(img->hints[0].path, ".\\base.vhd");
	assert_string_equal(img->hints[1].kind, "W2ku");
	assert_string_equal(img->hints[2].kind, "MacX");
	assert_string_equal(img->hints[3].kind, "parentName");
	assert_string_equal(img->hints[3].path, "base.vhd");
	vd_image_close(img);
	assert_int_equal(vd_image_open(fixed_path, 0, &img), 0);
	assert_string_equal(img->subformat, "fixed");
	assert_int_equal(img->size, 65536);
	vd_image_close(img);
	(void)state;
}

/* Each case: a fresh copy of the child (or fixed disk), one poke, open. */
static void test_pokes(void **state)
{
	uint8_t b[8];
	uint64_t fs;

	/* bad cookie in both footer copies */
	file_copy(child_path, work_path);
	tu_poke(work_path, tu_file_size(work_path) - 512, "conectiy", 8);
	tu_poke(work_path, 0, "conectiy", 8);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* bad cookie, fixed disk (no copy) */
	file_copy(fixed_path, work_path);
	tu_poke(work_path, 65536, "xonectix", 8);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* bad checksum at EOF, good copy at 0: opens with a warning */
	file_copy(child_path, work_path);
	fs = tu_file_size(work_path);
	tu_peek(work_path, fs - 512 + VHD_FTR_CHECKSUM, b, 4);
	b[3] ^= 1;
	tu_poke(work_path, fs - 512 + VHD_FTR_CHECKSUM, b, 4);
	assert_int_equal(open_rc(work_path), 0);
	/* ... and the warning is in the chain's validation warnings (chain.json) */
	{
		struct vd_chain *c;
		assert_int_equal(vd_chain_open(work_path, 0, &c), 0);
		assert_int_equal(vd_chain_warning_count(c), 1);
		assert_non_null(strstr(vd_chain_warning(c, 0), "footer at EOF is bad"));
		assert_non_null(strstr(vd_chain_warning(c, 0), work_path));
		vd_chain_close(c);
	}
	/* ... and the copy at 0 bad too (differently) */
	b[3] ^= 3;
	tu_poke(work_path, VHD_FTR_CHECKSUM, b, 4);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* both copies identical but for a wrong checksum: a writer's bug, opened */
	b[3] ^= 2;
	tu_poke(work_path, VHD_FTR_CHECKSUM, b, 4);
	assert_int_equal(open_rc(work_path), 0);
	{
		struct vd_image *img;
		assert_int_equal(vd_image_open(work_path, VD_OPEN_RDWR, &img), -ENOTSUP);
	}
	/* bad checksum, fixed disk */
	file_copy(fixed_path, work_path);
	tu_peek(work_path, 65536 + VHD_FTR_CHECKSUM, b, 4);
	b[0] ^= 0x80;
	tu_poke(work_path, 65536 + VHD_FTR_CHECKSUM, b, 4);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* bad type, valid checksums */
	file_copy(child_path, work_path);
	ftr_put(work_path, VHD_FTR_TYPE, 5, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* size not a multiple of 512 */
	file_copy(child_path, work_path);
	ftr_put(work_path, VHD_FTR_CUR_SIZE, (4u << 20) - 100, true, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* fixed size larger than the file */
	file_copy(fixed_path, work_path);
	ftr_put(work_path, VHD_FTR_CUR_SIZE, 1u << 20, true, false);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* data offset outside the file */
	file_copy(child_path, work_path);
	ftr_put(work_path, VHD_FTR_DATA_OFFSET, 1ull << 40, true, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* header checksum */
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_PARENT_STAMP, 7, false, false);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* block size not a power of 2 */
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_BLOCK_SIZE, 3u << 18, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* block size too big */
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_BLOCK_SIZE, 512u << 20, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* max table entries too small / absurdly large */
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_MAX_ENTRIES, 7, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_MAX_ENTRIES, 0xFFFFFFFF, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* BAT past EOF */
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_TABLE_OFFSET, tu_file_size(work_path), true, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* BAT over the header */
	file_copy(child_path, work_path);
	hdr_put(work_path, VHD_HDR_TABLE_OFFSET, 1024, true, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* BAT entry past EOF */
	file_copy(child_path, work_path);
	vd_put_be32(b, (uint32_t)(tu_file_size(work_path) / 512));
	tu_poke(work_path, 1536 + 4, b, 4);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* BAT entry inside the metadata */
	file_copy(child_path, work_path);
	vd_put_be32(b, 2);
	tu_poke(work_path, 1536 + 4, b, 4);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* two overlapping blocks: entry 1 one sector after entry 0 */
	file_copy(child_path, work_path);
	tu_peek(work_path, 1536, b, 4);
	vd_put_be32(b, vd_get_be32(b) + 1);
	tu_poke(work_path, 1536 + 4, b, 4);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* a block over a locator */
	file_copy(child_path, work_path);
	vd_put_be32(b, 2048 / 512);
	tu_poke(work_path, 1536 + 4, b, 4);
	assert_int_equal(open_rc(work_path), -EINVAL);
	(void)state;
}

static void test_locator_pokes(void **state)
{
	const size_t l0 = VHD_HDR_LOCATORS;
	struct vhd_locator loc;
	uint8_t hb[VHD_HEADER_SIZE], bad[4] = {0x00, 0xDC, 'x', 0};
	struct vhd_header h;
	const char *why;

	tu_peek(child_path, VHD_FOOTER_SIZE, hb, sizeof(hb));
	assert_int_equal(vhd_header_decode(hb, &h, &why), 0);
	loc = h.loc[0];
	assert_int_equal(loc.code, VHD_PLAT_W2RU);
	/* locator length overflow: length > space */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0 + 8, 4096, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* length > 32 KiB with a space that would hold it */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0 + 4, 65536, false, true);
	hdr_put(work_path, l0 + 8, 40000, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* space neither sectors nor a multiple of 512 */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0 + 4, 700, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* data past EOF */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0 + 16, tu_file_size(work_path) - 100, true, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* data inside the header */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0 + 16, 600, true, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* unknown platform code */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0, 0x41424344, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* unpaired surrogate in the W2ru payload */
	file_copy(child_path, work_path);
	tu_poke(work_path, loc.offset, bad, sizeof(bad));
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* odd length for UTF-16 */
	file_copy(child_path, work_path);
	hdr_put(work_path, l0 + 8, loc.length - 1, false, true);
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* bad UTF-16BE parent name */
	file_copy(child_path, work_path);
	{
		uint8_t name[4] = {0xD8, 0x00, 0x00, 'a'};
		tu_peek(work_path, VHD_FOOTER_SIZE, hb, sizeof(hb));
		memcpy(hb + VHD_HDR_PARENT_NAME, name, sizeof(name));
		vd_put_be32(hb + VHD_HDR_CHECKSUM, vhd_checksum(hb, sizeof(hb), VHD_HDR_CHECKSUM));
		tu_poke(work_path, VHD_FOOTER_SIZE, hb, sizeof(hb));
	}
	assert_int_equal(open_rc(work_path), -EINVAL);
	(void)state;
}

/* Garbage and truncated files fail cleanly. */
static void test_hostile_files(void **state)
{
	uint8_t junk[4096];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	tu_write_file(work_path, junk, sizeof(junk));
	assert_int_equal(open_rc(work_path), -EINVAL);
	/* the child truncated in its middle: footer gone, copy at 0 names blocks past EOF */
	file_copy(child_path, work_path);
	assert_int_equal(truncate(work_path, (off_t)(tu_file_size(child_path) / 2)), 0);
	assert_int_equal(open_rc(work_path), -EINVAL);
	assert_int_equal(truncate(work_path, 300), 0);
	assert_int_equal(open_rc(work_path), -EINVAL);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_checksum_and_footer_roundtrip),
	    cmocka_unit_test(test_header_decode),
	    cmocka_unit_test(test_locator_span),
	    cmocka_unit_test(test_utf16),
	    cmocka_unit_test(test_macx),
	    cmocka_unit_test(test_bitmap_runs),
	    cmocka_unit_test(test_chs),
	    cmocka_unit_test(test_open_good),
	    cmocka_unit_test(test_pokes),
	    cmocka_unit_test(test_locator_pokes),
	    cmocka_unit_test(test_hostile_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
