/* VHDX open-time checks, each reached by one poked field ([MS-VHDX]
 * sections in the names): a small generator-made base (and child) is
 * written, one field is changed (checksums recomputed so the poke gets past
 * them unless the checksum is the point), and vd_image_open() must fail with
 * the expected code after logging an error, or succeed with a warning where
 * the spec says to fall back. Plus CRC-32C, GUID text and log entry checks
 * on byte arrays. */
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

#include "chain/chain.h"
#include "disk/endian.h"
#include "disk/formats.h"
#include "disk/vhdx.h"
#include "test_util.h"
#include "tests/tools/vhdx_gen.h"

/* The pristine images: a dynamic base and a differencing child over it. */
static struct vxg_layer base_l, child_l;
static uint8_t *base_img, *child_img;
static size_t base_len, child_len;

static void fix_header(uint8_t *img, uint64_t off)
{
	vd_put_le32(img + off + VHDX_HDR_CHECKSUM, 0);
	vd_put_le32(img + off + VHDX_HDR_CHECKSUM,
		    vhdx_checksum(img + off, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
}

static void fix_headers(uint8_t *img)
{
	fix_header(img, VHDX_HEADER1_OFF);
	fix_header(img, VHDX_HEADER2_OFF);
}

static void fix_rts(uint8_t *img)
{
	for (uint64_t off = VHDX_RT1_OFF; off <= VHDX_RT2_OFF; off += VHDX_RT2_OFF - VHDX_RT1_OFF)
		vd_put_le32(img + off + VHDX_RT_CHECKSUM,
			    vhdx_checksum(img + off, VHDX_RT_SIZE, VHDX_RT_CHECKSUM));
}

/* Both header copies get the same 2-byte/4-byte/8-byte poke. */
static void hdr_put32(uint8_t *img, unsigned field, uint32_t v)
{
	vd_put_le32(img + VHDX_HEADER1_OFF + field, v);
	vd_put_le32(img + VHDX_HEADER2_OFF + field, v);
	fix_headers(img);
}

static void rt_put32(uint8_t *img, unsigned field, uint32_t v)
{
	vd_put_le32(img + VHDX_RT1_OFF + field, v);
	vd_put_le32(img + VHDX_RT2_OFF + field, v);
	fix_rts(img);
}

static void rt_put64(uint8_t *img, unsigned field, uint64_t v)
{
	vd_put_le64(img + VHDX_RT1_OFF + field, v);
	vd_put_le64(img + VHDX_RT2_OFF + field, v);
	fix_rts(img);
}

/* Metadata table entry k (0 params, 1 size, 2 page83, 3 logical, 4
 * physical, 5 locator in the child) and item contents. */
static uint8_t *mt_entry(uint8_t *img, const struct vxg_layer *l, unsigned k)
{
	return img + l->meta_off + VHDX_MT_ENTRIES + k * VHDX_MT_ENTRY_SIZE;
}

static uint8_t *item(uint8_t *img, const struct vxg_layer *l, unsigned k)
{
	return img + l->meta_off + vd_get_le32(mt_entry(img, l, k) + 16);
}

/* Opens path; expects result want (0 or -errno) and, on failure, at
 * least one logged error. */
static void expect_open(const char *what, const char *path, int want)
{
	unsigned errs = vd_log_error_count();
	struct vd_image *img = NULL;
	int r = vd_image_open(path, 0, &img);

	if (r != want)
		fail_msg("%s: vd_image_open returned %d, expected %d", what, r, want);
	if (r < 0)
		assert_true(vd_log_error_count() > errs);
	vd_image_close(img);
}

typedef void (*poke_fn)(uint8_t *img, size_t len, const struct vxg_layer *l);

struct poke {
	const char *name;
	bool child; /* poke the child (locator, sector bitmaps) */
	poke_fn fn;
	int want;
};

/* 2.2.1, 2.2.2 */
static void p_ident(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	memcpy(b, "vhdxfilf", 8);
}
static void p_hdr_sig(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	memcpy(b + VHDX_HEADER1_OFF, "hexd", 4);
	memcpy(b + VHDX_HEADER2_OFF, "hexd", 4);
	fix_headers(b);
}
static void p_hdr_crc(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	b[VHDX_HEADER1_OFF + 300] ^= 1;
	b[VHDX_HEADER2_OFF + 300] ^= 1;
}
static void p_hdr_crc1(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	b[VHDX_HEADER1_OFF + 300] ^= 1;
}
static void p_hdr_crc2(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	b[VHDX_HEADER2_OFF + 300] ^= 1;
}
static void p_hdr_version(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le16(b + VHDX_HEADER1_OFF + VHDX_HDR_VERSION, 2);
	vd_put_le16(b + VHDX_HEADER2_OFF + VHDX_HDR_VERSION, 2);
	fix_headers(b);
}
static void p_hdr_log_align(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	hdr_put32(b, VHDX_HDR_LOG_LENGTH, VHDX_MiB + 4096);
}
static void set_log_guid(uint8_t *b)
{
	memset(b + VHDX_HEADER1_OFF + VHDX_HDR_LOG_GUID, 0x42, 16);
	memset(b + VHDX_HEADER2_OFF + VHDX_HDR_LOG_GUID, 0x42, 16);
}
static void p_hdr_log_version(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	set_log_guid(b);
	vd_put_le16(b + VHDX_HEADER1_OFF + VHDX_HDR_LOG_VERSION, 1);
	vd_put_le16(b + VHDX_HEADER2_OFF + VHDX_HDR_LOG_VERSION, 1);
	fix_headers(b);
}
static void p_hdr_log_outside(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	set_log_guid(b);
	hdr_put32(b, VHDX_HDR_LOG_LENGTH, (uint32_t)(n + VHDX_MiB) & ~(uint32_t)0xFFFFF);
}
static void p_hdr_log_in_header(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	set_log_guid(b);
	vd_put_le64(b + VHDX_HEADER1_OFF + VHDX_HDR_LOG_OFFSET, 0);
	vd_put_le64(b + VHDX_HEADER2_OFF + VHDX_HDR_LOG_OFFSET, 0);
	fix_headers(b);
}
static void p_hdr_log_empty(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	set_log_guid(b); /* a log region of zeros: nothing to replay, yet it must be */
	fix_headers(b);
}
static void p_hdr_same_seq(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(b + VHDX_HEADER1_OFF + VHDX_HDR_SEQ, 7);
	vd_put_le64(b + VHDX_HEADER2_OFF + VHDX_HDR_SEQ, 7);
	b[VHDX_HEADER2_OFF + VHDX_HDR_FILE_WRITE] ^= 1;
	fix_headers(b);
}
static void p_hdr_same_seq_identical(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	memcpy(b + VHDX_HEADER1_OFF, b + VHDX_HEADER2_OFF, VHDX_HEADER_SIZE);
}

/* 2.2.3 */
static void p_rt_sig(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	memcpy(b + VHDX_RT1_OFF, "regx", 4);
	memcpy(b + VHDX_RT2_OFF, "regx", 4);
	fix_rts(b);
}
static void p_rt_crc(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	b[VHDX_RT1_OFF + 1000] ^= 1;
	b[VHDX_RT2_OFF + 1000] ^= 1;
}
static void p_rt1_crc(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	b[VHDX_RT1_OFF + 1000] ^= 1;
}
static void p_rt_count(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	rt_put32(b, VHDX_RT_COUNT, 2048);
}
static void p_rt_dup(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	for (uint64_t o = VHDX_RT1_OFF; o <= VHDX_RT2_OFF; o += VHDX_RT2_OFF - VHDX_RT1_OFF)
		memcpy(b + o + 48, b + o + 16, 16);
	fix_rts(b);
}
static void p_rt_unknown_required(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	for (uint64_t o = VHDX_RT1_OFF; o <= VHDX_RT2_OFF; o += VHDX_RT2_OFF - VHDX_RT1_OFF) {
		uint8_t *e = b + o + VHDX_RT_ENTRIES + 2 * VHDX_RT_ENTRY_SIZE;
		memset(e, 0x77, 16);
		vd_put_le64(e + 16, 64 * VHDX_MiB);
		vd_put_le32(e + 24, VHDX_MiB);
		vd_put_le32(e + 28, 1);
		vd_put_le32(b + o + VHDX_RT_COUNT, 3);
	}
	fix_rts(b);
}
static void p_rt_unknown_optional(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	p_rt_unknown_required(b, n, l);
	rt_put32(b, VHDX_RT_ENTRIES + 2 * VHDX_RT_ENTRY_SIZE + 28, 0);
}
static void p_rt_align(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	rt_put64(b, VHDX_RT_ENTRIES + 16, l->bat_off + 4096);
}
static void p_rt_in_header(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	rt_put64(b, VHDX_RT_ENTRIES + 16, 0);
}
static void p_rt_no_meta(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	for (uint64_t o = VHDX_RT1_OFF; o <= VHDX_RT2_OFF; o += VHDX_RT2_OFF - VHDX_RT1_OFF)
		b[o + 48] ^= 0xFF;
	rt_put32(b, VHDX_RT_ENTRIES + VHDX_RT_ENTRY_SIZE + 28, 0);
}
static void p_rt_past_eof(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	rt_put64(b, VHDX_RT_ENTRIES + VHDX_RT_ENTRY_SIZE + 16, vd_round_up(n, VHDX_MiB));
}
static void p_rt_overlap(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	/* the metadata region moved onto the log */
	memcpy(b + VHDX_MiB, b + l->meta_off, VHDX_MiB);
	rt_put64(b, VHDX_RT_ENTRIES + VHDX_RT_ENTRY_SIZE + 16, VHDX_MiB);
}

/* 2.6.1 */
static void p_mt_sig(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	memcpy(b + l->meta_off, "metadatx", 8);
}
static void p_mt_count(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le16(b + l->meta_off + VHDX_MT_COUNT, 2048);
}
static void p_mt_item_low(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(mt_entry(b, l, 1) + 16, 4096);
}
static void p_mt_item_past(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(mt_entry(b, l, 1) + 16, VHDX_MiB - 4);
}
static void p_mt_item_zero_len(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(mt_entry(b, l, 2) + 20, 0); /* length 0 needs offset 0 */
}
static void p_mt_item_short(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(mt_entry(b, l, 0) + 20, 4);
}
static void p_mt_dup(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	memcpy(mt_entry(b, l, 4), mt_entry(b, l, 3), 16);
}
static void p_mt_overlap(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(mt_entry(b, l, 1) + 16, vd_get_le32(mt_entry(b, l, 0) + 16) + 4);
}
static void p_mt_unknown_required(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	uint8_t *e = mt_entry(b, l, 5);

	memset(e, 0x66, 16);
	vd_put_le32(e + 16, 0);
	vd_put_le32(e + 20, 0);
	vd_put_le32(e + 24, VHDX_MT_IS_REQUIRED);
	vd_put_le16(b + l->meta_off + VHDX_MT_COUNT, 6);
}
static void p_mt_missing(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	mt_entry(b, l, 3)[0] ^= 0xFF; /* logical sector size item now unknown */
	vd_put_le32(mt_entry(b, l, 3) + 24, 0);
}
static void p_block_pow2(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(item(b, l, 0), 3 * VHDX_MiB);
}
static void p_block_small(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(item(b, l, 0), 512 * 1024);
}
static void p_block_large(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(item(b, l, 0), 512 * VHDX_MiB);
}
static void p_has_parent(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(item(b, l, 0) + 4, VHDX_PARAM_HAS_PARENT);
}
static void p_size_zero(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(item(b, l, 1), 0);
}
static void p_size_odd(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(item(b, l, 1), 8 * VHDX_MiB + 100);
}
static void p_size_huge(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(item(b, l, 1), (64ull << 40) + 512);
}
static void p_size_bat_small(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(item(b, l, 1), 1ull << 40); /* 1 TiB of 1 MiB blocks: 8 MiB of BAT */
}
static void p_logical(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(item(b, l, 3), 1024);
}
static void p_physical(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(item(b, l, 4), 2048);
}

/* 2.6.2.6 (child) */
static uint8_t *loc(uint8_t *b, const struct vxg_layer *l)
{
	return item(b, l, 5);
}
static void p_loc_type(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	loc(b, l)[0] ^= 1;
}
static void p_loc_count(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le16(loc(b, l) + 18, 60000);
}
static void p_loc_key_zero(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le32(loc(b, l) + 20, 0);
}
static void p_loc_value_past(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le16(loc(b, l) + 20 + 10, 60000);
}
static void p_loc_utf16(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le16(loc(b, l) + 20 + 10, 77); /* odd value length */
}
static void p_loc_dup(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	/* entry 1 (relative_path) gets entry 0's key */
	memcpy(loc(b, l) + 32, loc(b, l) + 20, 4);
	memcpy(loc(b, l) + 40, loc(b, l) + 28, 2);
}
static void p_loc_no_linkage(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	uint8_t *k = loc(b, l) + vd_get_le32(loc(b, l) + 20);
	k[0] = 'q'; /* "qarent_linkage": an unknown key */
}
static void p_loc_bad_linkage(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	uint8_t *v = loc(b, l) + vd_get_le32(loc(b, l) + 24);
	v[4] = 'x';
}
static void p_loc_no_path(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le16(loc(b, l) + 18, 1); /* parent_linkage only */
}

/* 2.5 */
static uint64_t first_block(const struct vxg_layer *l, unsigned state)
{
	for (uint64_t i = 0; i < l->bat_entries; i++)
		if ((l->bat[i] & 7) == state && i % (l->chunk_ratio + 1) != l->chunk_ratio)
			return i;
	fail_msg("no block in state %u", state);
	return 0;
}
static void p_bat_state4(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(b + l->bat_off, 4);
}
static void p_bat_partial_base(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	uint64_t i = first_block(l, VHDX_PAYLOAD_FULLY_PRESENT);
	vd_put_le64(b + l->bat_off + 8 * i, l->bat[i] | 7);
}
static void p_bat_in_header(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(b + l->bat_off + 8 * first_block(l, VHDX_PAYLOAD_FULLY_PRESENT), 6);
}
static void p_bat_past_eof(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(b + l->bat_off + 8 * first_block(l, VHDX_PAYLOAD_FULLY_PRESENT),
		    vd_round_up(n, VHDX_MiB) | 6);
}
static void p_bat_overlap(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	uint64_t i = first_block(l, VHDX_PAYLOAD_FULLY_PRESENT);
	vd_put_le64(b + l->bat_off + 8 * i, l->meta_off | 6);
}
static void p_bat_sb_state(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(b + l->bat_off + 8 * l->chunk_ratio, 3);
}
static void p_bat_sb_missing(uint8_t *b, size_t n, const struct vxg_layer *l)
{
	vd_put_le64(b + l->bat_off + 8 * l->chunk_ratio, 0);
}

static const struct poke pokes[] = {
    {"2.2.1 file type identifier", false, p_ident, -EINVAL},
    {"2.2.2 header signatures", false, p_hdr_sig, -EINVAL},
    {"2.2.2 header checksums", false, p_hdr_crc, -EINVAL},
    {"2.2.2 header 1 bad: header 2 used", false, p_hdr_crc1, 0},
    {"2.2.2 header 2 bad: header 1 used", false, p_hdr_crc2, 0},
    {"2.2.2 version 2", false, p_hdr_version, -EINVAL},
    {"2.2.2 log length unaligned", false, p_hdr_log_align, -EINVAL},
    {"2.2.2 log version 1 with a log", false, p_hdr_log_version, -EINVAL},
    {"2.2.2 log past EOF", false, p_hdr_log_outside, -EINVAL},
    {"2.2.2 log in the header section", false, p_hdr_log_in_header, -EINVAL},
    {"2.3.3 dirty log with no entry", false, p_hdr_log_empty, -EINVAL},
    {"2.2.2 equal sequence numbers, different", false, p_hdr_same_seq, -EINVAL},
    {"2.2.2 equal sequence numbers, identical", false, p_hdr_same_seq_identical, 0},
    {"2.2.3 region table signatures", false, p_rt_sig, -EINVAL},
    {"2.2.3 region table checksums", false, p_rt_crc, -EINVAL},
    {"2.2.3 region table 1 bad: table 2 used", false, p_rt1_crc, 0},
    {"2.2.3.1 entry count", false, p_rt_count, -EINVAL},
    {"2.2.3.2 duplicate region", false, p_rt_dup, -EINVAL},
    {"2.2.3.2 unknown required region", false, p_rt_unknown_required, -ENOTSUP},
    {"2.2.3.2 unknown optional region", false, p_rt_unknown_optional, 0},
    {"2.2.3.2 BAT offset unaligned", false, p_rt_align, -EINVAL},
    {"2.2.3.2 BAT in the header section", false, p_rt_in_header, -EINVAL},
    {"2.2.3.2 no metadata region", false, p_rt_no_meta, -EINVAL},
    {"2.2.3.2 region past EOF", false, p_rt_past_eof, -EINVAL},
    {"2.2.3.2 region over the log", false, p_rt_overlap, -EINVAL},
    {"2.6.1.1 metadata signature", false, p_mt_sig, -EINVAL},
    {"2.6.1.1 metadata entry count", false, p_mt_count, -EINVAL},
    {"2.6.1.2 item inside the table", false, p_mt_item_low, -EINVAL},
    {"2.6.1.2 item past the region", false, p_mt_item_past, -EINVAL},
    {"2.6.1.2 zero length, non-zero offset", false, p_mt_item_zero_len, -EINVAL},
    {"2.6.1.2 item shorter than its content", false, p_mt_item_short, -EINVAL},
    {"2.6.1.2 duplicate item", false, p_mt_dup, -EINVAL},
    {"2.6.1.2 overlapping items", false, p_mt_overlap, -EINVAL},
    {"2.6.1.2 unknown required item", false, p_mt_unknown_required, -ENOTSUP},
    {"2.6.2 required item missing", false, p_mt_missing, -EINVAL},
    {"2.6.2.1 block size not a power of 2", false, p_block_pow2, -EINVAL},
    {"2.6.2.1 block size 512 KiB", false, p_block_small, -EINVAL},
    {"2.6.2.1 block size 512 MiB", false, p_block_large, -EINVAL},
    {"2.6.2.1 HasParent without a locator", false, p_has_parent, -EINVAL},
    {"2.6.2.2 size 0", false, p_size_zero, -EINVAL},
    {"2.6.2.2 size not a multiple of the sector", false, p_size_odd, -EINVAL},
    {"2.6.2.2 size over 64 TiB", false, p_size_huge, -EINVAL},
    {"2.5 BAT region too small for the size", false, p_size_bat_small, -EINVAL},
    {"2.6.2.4 logical sector 1024", false, p_logical, -EINVAL},
    {"2.6.2.5 physical sector 2048", false, p_physical, -EINVAL},
    {"2.6.2.6.1 locator type", true, p_loc_type, -ENOTSUP},
    {"2.6.2.6.1 locator entry count", true, p_loc_count, -EINVAL},
    {"2.6.2.6.2 key offset 0", true, p_loc_key_zero, -EINVAL},
    {"2.6.2.6.2 value past the item", true, p_loc_value_past, -EINVAL},
    {"2.6.2.6.2 odd UTF-16 length", true, p_loc_utf16, -EINVAL},
    {"2.6.2.6.2 duplicate key", true, p_loc_dup, -EINVAL},
    {"2.6.2.6.3 no parent_linkage", true, p_loc_no_linkage, -EINVAL},
    {"2.6.2.6.3 parent_linkage not a GUID", true, p_loc_bad_linkage, -EINVAL},
    {"2.6.2.6.3 no path", true, p_loc_no_path, -EINVAL},
    {"2.5.1.1 payload state 4", false, p_bat_state4, -EINVAL},
    {"2.5.1.1 PARTIALLY_PRESENT in a base", false, p_bat_partial_base, -EINVAL},
    {"2.5.1 block in the header section", false, p_bat_in_header, -EINVAL},
    {"2.5.1 block past EOF", false, p_bat_past_eof, -EINVAL},
    {"2.5.1 block over the metadata region", false, p_bat_overlap, -EINVAL},
    {"2.5.1.2 sector bitmap state 3", true, p_bat_sb_state, -EINVAL},
    {"2.5.1.2 partial blocks without a bitmap", true, p_bat_sb_missing, -EINVAL},
};

static void test_pokes(void **state)
{
	for (size_t i = 0; i < sizeof(pokes) / sizeof(pokes[0]); i++) {
		const struct poke *p = &pokes[i];
		const struct vxg_layer *l = p->child ? &child_l : &base_l;
		size_t n = p->child ? child_len : base_len;
		uint8_t *b = malloc(n);
		const char *path = tu_path("%s", p->child ? "poke.avhdx" : "poke.vhdx");

		assert_non_null(b);
		memcpy(b, p->child ? child_img : base_img, n);
		p->fn(b, n, l);
		tu_write_file(path, b, n);
		expect_open(p->name, path, p->want);
		free(b);
	}
}

static void test_truncated(void **state)
{
	tu_write_file(tu_path("short.vhdx"), base_img, VHDX_MiB - 4096);
	expect_open("file shorter than the header section", tu_path("short.vhdx"), -EINVAL);
	tu_write_file(tu_path("short.vhdx"), base_img, base_len - VHDX_MiB);
	expect_open("last block cut off", tu_path("short.vhdx"), -EINVAL);
}

/* Only an empty delta vdmount made opens for writing (test_vhdx_write):
 * never a base. */
static void test_readonly(void **state)
{
	struct vd_image *img = NULL;

	assert_int_equal(vd_image_open(tu_path("base.vhdx"), VD_OPEN_RDWR, &img), -EROFS);
	assert_null(img);
}

static void test_crc32c(void **state)
{
	/* the check value of CRC-32C (iSCSI, RFC 3720 B.4) */
	assert_int_equal(vhdx_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(vhdx_crc32c(vhdx_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	uint8_t zeros[32] = {0};
	assert_int_equal(vhdx_crc32c(0, zeros, 32), 0x8A9136AAu);
}

static void test_guid(void **state)
{
	struct vd_id id;
	char b[37];

	vhdx_guid_to_id(vhdx_guid_bat, &id);
	assert_string_equal(vd_id_format(&id, b), "2dc27766-f623-4200-9d64-115e9bfd4a08");
	assert_int_equal(vhdx_guid_parse("{2DC27766-F623-4200-9D64-115E9BFD4A08}", &id), 0);
	assert_string_equal(vd_id_format(&id, b), "2dc27766-f623-4200-9d64-115e9bfd4a08");
	assert_int_equal(vhdx_guid_parse("2dc27766-f623-4200-9d64-115e9bfd4a08", &id), 0);
	assert_int_equal(vhdx_guid_parse("{2dc27766-f623-4200-9d64-115e9bfd4a0}", &id), -EINVAL);
	assert_int_equal(vhdx_guid_parse("{2dc27766+f623-4200-9d64-115e9bfd4a08}", &id), -EINVAL);
	assert_int_equal(vhdx_guid_parse("{2dc2776g-f623-4200-9d64-115e9bfd4a08}", &id), -EINVAL);
}

static void test_bitmap_run(void **state)
{
	/* LSB-first (2.4): 0x05 = sectors 0 and 2 present */
	uint8_t bm[4] = {0x05, 0xFF, 0xF0, 0x00};
	uint64_t n;

	assert_int_equal(vhdx_bitmap_run(bm, 0, 32, &n), VD_DATA);
	assert_int_equal(n, 1);
	assert_int_equal(vhdx_bitmap_run(bm, 1, 32, &n), VD_UNALLOC);
	assert_int_equal(n, 1);
	assert_int_equal(vhdx_bitmap_run(bm, 3, 32, &n), VD_UNALLOC);
	assert_int_equal(n, 5);
	assert_int_equal(vhdx_bitmap_run(bm, 8, 32, &n), VD_DATA);
	assert_int_equal(n, 8);
	assert_int_equal(vhdx_bitmap_run(bm, 16, 32, &n), VD_UNALLOC);
	assert_int_equal(n, 4);
	assert_int_equal(vhdx_bitmap_run(bm, 20, 32, &n), VD_DATA);
	assert_int_equal(n, 4);
	assert_int_equal(vhdx_bitmap_run(bm, 20, 22, &n), VD_DATA);
	assert_int_equal(n, 2);
}

/* A one-entry log (two data descriptors and a zero descriptor) and every
 * check of vhdx_log_entry_check reached by a poke. */
static void test_log_entry(void **state)
{
	struct vxg_layer l = {.file_size = 8 * VHDX_MiB};
	uint8_t guid[16], d1[4096], d2[4096], *e = malloc(65536), *x = malloc(65536);
	uint64_t offs[3] = {2 * VHDX_MiB, 3 * VHDX_MiB + 4096, 4 * VHDX_MiB};
	const uint8_t *datas[3] = {d1, NULL, d2};
	struct vhdx_log_entry h;
	const char *why;
	uint32_t len;
	struct {
		unsigned off, width;
		uint64_t val;
		bool fix;
	} bad[] = {
	    {0, 4, 0x65676F6D, true},		  /* signature */
	    {8, 4, 0, true},			  /* length 0 */
	    {8, 4, 4097, true},			  /* length unaligned */
	    {8, 4, 1u << 21, true},		  /* length past the log */
	    {12, 4, 100, true},			  /* tail unaligned */
	    {12, 4, 1u << 20, true},		  /* tail past the log */
	    {16, 8, 0, true},			  /* sequence 0 */
	    {24, 4, 400, true},			  /* descriptors past the entry */
	    {32, 4, 0xDEAD, true},		  /* LogGuid */
	    {40, 4, 0x1234, false},		  /* checksum */
	    {64 + 24, 8, 9, true},		  /* descriptor sequence */
	    {64, 4, 0x78787878, true},		  /* descriptor signature */
	    {64 + 32 + 8, 8, 100, true},	  /* zero length unaligned */
	    {64 + 32 + 16, 8, 1ull << 60, true},  /* zero target too far */
	    {64 + 16, 8, 4 * VHDX_MiB + 8, true}, /* data target unaligned */
	    {4096, 4, 0x61746165, true},	  /* data sector signature */
	    {4096 + 4092, 4, 0x99, true},	  /* data sector sequence low */
	    {4096 + 4, 4, 0x99, true},		  /* data sector sequence high */
	};

	assert_non_null(e);
	assert_non_null(x);
	memset(guid, 0x3C, 16);
	memset(d1, 0x11, sizeof(d1));
	memset(d2, 0x22, sizeof(d2));
	len = vxg_log_entry(&l, e, 0x100000005ull, 0, 3, offs, datas, guid);
	assert_int_equal(len, 3 * 4096);
	assert_int_equal(vhdx_log_entry_check(e, len, VHDX_MiB, guid, &h, &why), 0);
	assert_int_equal(h.seq, 0x100000005ull);
	assert_int_equal(h.n_desc, 3);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(x, e, len);
		if (bad[i].width == 4)
			vd_put_le32(x + bad[i].off, (uint32_t)bad[i].val);
		else
			vd_put_le64(x + bad[i].off, bad[i].val);
		if (bad[i].fix)
			vd_put_le32(x + 4, vhdx_checksum(x, len, 4));
		why = NULL;
		if (vhdx_log_entry_check(x, len, VHDX_MiB, guid, &h, &why) != -EINVAL)
			fail_msg("log poke %zu at %u accepted", i, bad[i].off);
		assert_non_null(why);
	}
	free(e);
	free(x);
}

static int setup(void **state)
{
	struct vxg_opts o = {.size = 8 * VHDX_MiB + 3 * 512, .block = VHDX_MiB, .seed = 11};
	struct vd_image *p;
	char b[37];

	tu_dir_new("vhdx_meta");
	vd_log_set_level(VD_LOG_ERR);
	if (vxg_init(&base_l, &o) < 0)
		return -1;
	vxg_random(&base_l, 11, 20, 64, 2);
	if (vxg_file_write(&base_l, tu_path("base.vhdx")) < 0)
		return -1;
	if (vd_image_open(tu_path("base.vhdx"), 0, &p) < 0)
		return -1;
	o.diff = true;
	o.seed = 12;
	snprintf(o.linkage, sizeof(o.linkage), "{%s}", vd_id_format(&p->id, b));
	vd_image_close(p);
	o.relative_path = "base.vhdx";
	o.absolute_path = "C:\\vm\\base.vhdx";
	if (vxg_init(&child_l, &o) < 0)
		return -1;
	vxg_random(&child_l, 12, 30, 40, 0);
	if (vxg_file_write(&child_l, tu_path("child.avhdx")) < 0)
		return -1;
	base_img = tu_load(tu_path("base.vhdx"), &base_len);
	child_img = tu_load(tu_path("child.avhdx"), &child_len);
	/* the pristine images open */
	expect_open("pristine base", tu_path("base.vhdx"), 0);
	expect_open("pristine child", tu_path("child.avhdx"), 0);
	return 0;
}

static int teardown(void **state)
{
	vxg_free(&base_l);
	vxg_free(&child_l);
	free(base_img);
	free(child_img);
	return tu_dir_remove();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32c),     cmocka_unit_test(test_guid),
	    cmocka_unit_test(test_bitmap_run), cmocka_unit_test(test_log_entry),
	    cmocka_unit_test(test_pokes),      cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_readonly),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
