/* VHDX metadata codecs: CRC-32C, GUIDs, headers, region tables, the
 * metadata table and its known items, the parent locator, BAT geometry and
 * entries, sector bitmaps. Everything here is pure: no I/O, no logging; a
 * failure returns -EINVAL (or -ENOTSUP for something valid that vdmount does
 * not understand) with a short reason in *why, and the caller logs one line
 * naming the file. Section numbers are [MS-VHDX] v8.0's.
 *
 * CRC-32C: zlib only has CRC-32 (another polynomial) and none of the Debian
 * libraries in our dependency set (libfuse3, zlib, uthash, cmocka, libssl)
 * exports CRC-32C, so a small table-driven one lives here. It only ever runs
 * over headers, region tables and log entries, never over payload. */
#include "disk/vhdx.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/text.h"

/* A GUID's on-disk bytes from its text form a-b-c-d (2: little-endian u32,
 * u16, u16, then 8 bytes as written). */
#define VHDX_GUID(a, b, c, d0, d1, d2, d3, d4, d5, d6, d7)                                         \
	{                                                                                          \
		(a) & 0xFF, ((a) >> 8) & 0xFF, ((a) >> 16) & 0xFF, ((a) >> 24) & 0xFF, (b)&0xFF,   \
		    ((b) >> 8) & 0xFF, (c)&0xFF, ((c) >> 8) & 0xFF, d0, d1, d2, d3, d4, d5, d6, d7 \
	}

const uint8_t vhdx_guid_bat[16] =
    VHDX_GUID(0x2DC27766, 0xF623, 0x4200, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08);
const uint8_t vhdx_guid_metadata[16] =
    VHDX_GUID(0x8B7CA206, 0x4790, 0x4B9A, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E);
const uint8_t vhdx_guid_file_params[16] =
    VHDX_GUID(0xCAA16737, 0xFA36, 0x4D43, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B);
const uint8_t vhdx_guid_disk_size[16] =
    VHDX_GUID(0x2FA54224, 0xCD1B, 0x4876, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8);
const uint8_t vhdx_guid_page83[16] =
    VHDX_GUID(0xBECA12AB, 0xB2E6, 0x4523, 0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46);
const uint8_t vhdx_guid_logical[16] =
    VHDX_GUID(0x8141BF1D, 0xA96F, 0x4709, 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F);
const uint8_t vhdx_guid_physical[16] =
    VHDX_GUID(0xCDA348C7, 0x445D, 0x4471, 0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56);
const uint8_t vhdx_guid_locator[16] =
    VHDX_GUID(0xA8D35F2D, 0xB30B, 0x454D, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C);
const uint8_t vhdx_guid_locator_vhdx[16] =
    VHDX_GUID(0xB04AEFB7, 0xD19E, 0x4A81, 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13);

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	static const uint8_t zero[4];
	uint32_t c = vhdx_crc32c(0, buf, csum_off);

	c = vhdx_crc32c(c, zero, 4);
	return vhdx_crc32c(c, buf + csum_off + 4, len - csum_off - 4);
}

void vhdx_guid_to_id(const uint8_t raw[16], struct vd_id *out)
{
	out->len = 16;
	vd_put_be32(out->bytes, vd_get_le32(raw));
	vd_put_be16(out->bytes + 4, vd_get_le16(raw + 4));
	vd_put_be16(out->bytes + 6, vd_get_le16(raw + 6));
	memcpy(out->bytes + 8, raw + 8, 8);
}

int vhdx_guid_parse(const char *s, struct vd_id *out)
{
	size_t n = strlen(s), k = 0;

	if (n == 38 && s[0] == '{' && s[37] == '}') {
		s++;
		n = 36;
	}
	if (n != 36)
		return -EINVAL;
	for (size_t i = 0; i < 36; i++) {
		int hi, lo;
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			continue;
		}
		hi = vd_hexval(s[i]);
		lo = vd_hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out->bytes[k++] = (uint8_t)(hi << 4 | lo);
		i++;
	}
	out->len = 16;
	return 0;
}

bool vhdx_guid_is_zero(const uint8_t g[16])
{
	return vd_mem_is_zero(g, 16);
}

int vhdx_header_decode(const uint8_t *buf, uint64_t file_size, struct vhdx_header *h,
		       const char **why)
{
	uint64_t end;

	memset(h, 0, sizeof(*h));
	if (memcmp(buf + VHDX_HDR_SIG, "head", 4)) {
		*why = "no \"head\" signature";
		return -EINVAL;
	}
	h->checksum = vd_get_le32(buf + VHDX_HDR_CHECKSUM);
	if (h->checksum != vhdx_checksum(buf, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM)) {
		*why = "CRC-32C mismatch";
		return -EINVAL;
	}
	h->seq = vd_get_le64(buf + VHDX_HDR_SEQ);
	memcpy(h->file_write, buf + VHDX_HDR_FILE_WRITE, 16);
	memcpy(h->data_write, buf + VHDX_HDR_DATA_WRITE, 16);
	memcpy(h->log_guid, buf + VHDX_HDR_LOG_GUID, 16);
	h->log_version = vd_get_le16(buf + VHDX_HDR_LOG_VERSION);
	h->version = vd_get_le16(buf + VHDX_HDR_VERSION);
	h->log_length = vd_get_le32(buf + VHDX_HDR_LOG_LENGTH);
	h->log_offset = vd_get_le64(buf + VHDX_HDR_LOG_OFFSET);
	/* 2.2.2: Version MUST be 1, else the file is not processed. */
	if (h->version != 1) {
		*why = "unsupported version (must be 1)";
		return -EINVAL;
	}
	if (h->log_length % VHDX_MiB || h->log_offset % VHDX_MiB) {
		*why = "log offset or length not a multiple of 1 MiB";
		return -EINVAL;
	}
	if (vhdx_guid_is_zero(h->log_guid))
		return 0; /* 2.2.2: no log to replay; its fields are not used */
	if (h->log_version != 0) {
		*why = "unsupported log version (must be 0)";
		return -EINVAL;
	}
	if (h->log_length == 0 || h->log_offset < VHDX_HEADER_SECTION ||
	    vd_add_ovf(h->log_offset, h->log_length, &end) || end > file_size) {
		*why = "log outside the file or inside the header section";
		return -EINVAL;
	}
	return 0;
}

void vhdx_header_encode(const struct vhdx_header *h, uint8_t *buf)
{
	memset(buf, 0, VHDX_HEADER_SIZE);
	memcpy(buf + VHDX_HDR_SIG, "head", 4);
	vd_put_le64(buf + VHDX_HDR_SEQ, h->seq);
	memcpy(buf + VHDX_HDR_FILE_WRITE, h->file_write, 16);
	memcpy(buf + VHDX_HDR_DATA_WRITE, h->data_write, 16);
	memcpy(buf + VHDX_HDR_LOG_GUID, h->log_guid, 16);
	vd_put_le16(buf + VHDX_HDR_LOG_VERSION, h->log_version);
	vd_put_le16(buf + VHDX_HDR_VERSION, h->version);
	vd_put_le32(buf + VHDX_HDR_LOG_LENGTH, h->log_length);
	vd_put_le64(buf + VHDX_HDR_LOG_OFFSET, h->log_offset);
	vd_put_le32(buf + VHDX_HDR_CHECKSUM,
		    vhdx_checksum(buf, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
}

int vhdx_region_table_decode(const uint8_t *buf, struct vhdx_regions *out, const char **why)
{
	bool have_bat = false, have_meta = false;

	memset(out, 0, sizeof(*out));
	if (memcmp(buf + VHDX_RT_SIG, "regi", 4)) {
		*why = "no \"regi\" signature";
		return -EINVAL;
	}
	if (vd_get_le32(buf + VHDX_RT_CHECKSUM) !=
	    vhdx_checksum(buf, VHDX_RT_SIZE, VHDX_RT_CHECKSUM)) {
		*why = "CRC-32C mismatch";
		return -EINVAL;
	}
	out->count = vd_get_le32(buf + VHDX_RT_COUNT);
	if (out->count > VHDX_MAX_ENTRIES) {
		*why = "more than 2047 entries";
		return -EINVAL;
	}
	for (uint32_t i = 0; i < out->count; i++) {
		const uint8_t *e = buf + VHDX_RT_ENTRIES + (size_t)i * VHDX_RT_ENTRY_SIZE;
		struct vhdx_region r;

		memcpy(r.guid, e, 16);
		r.offset = vd_get_le64(e + 16);
		r.length = vd_get_le32(e + 24);
		r.required = vd_get_le32(e + 28) & 1;
		/* 2.2.3.2: GUIDs unique within the table. */
		for (uint32_t k = 0; k < i; k++)
			if (!memcmp(buf + VHDX_RT_ENTRIES + (size_t)k * VHDX_RT_ENTRY_SIZE, e,
				    16)) {
				*why = "a region is listed twice";
				return -EINVAL;
			}
		if (memcmp(r.guid, vhdx_guid_bat, 16) && memcmp(r.guid, vhdx_guid_metadata, 16)) {
			/* 2.2: an unknown required region MUST make the open fail. */
			if (r.required) {
				*why = "unknown required region";
				return -ENOTSUP;
			}
			continue;
		}
		if (r.offset % VHDX_MiB || r.offset < VHDX_HEADER_SECTION || r.length % VHDX_MiB ||
		    r.length == 0 || r.offset > VHDX_MAX_OFFSET) {
			*why = "BAT or metadata region not 1 MiB-aligned, empty, or in the header "
			       "section";
			return -EINVAL;
		}
		if (!memcmp(r.guid, vhdx_guid_bat, 16)) {
			out->bat = r;
			have_bat = true;
		} else {
			out->meta = r;
			have_meta = true;
		}
	}
	if (!have_bat || !have_meta) {
		*why = have_bat ? "no metadata region" : "no BAT region";
		return -EINVAL;
	}
	return 0;
}

static const uint8_t *const item_guids[] = {
    vhdx_guid_file_params, vhdx_guid_disk_size, vhdx_guid_page83,
    vhdx_guid_logical,	   vhdx_guid_physical,	vhdx_guid_locator,
};

int vhdx_metadata_table_decode(const uint8_t *buf, uint32_t region_len, struct vhdx_item_map *m,
			       const char **why)
{
	uint16_t count;

	memset(m, 0, sizeof(*m));
	if (memcmp(buf, "metadata", 8)) {
		*why = "metadata table has no \"metadata\" signature";
		return -EINVAL;
	}
	count = vd_get_le16(buf + VHDX_MT_COUNT);
	if (count > VHDX_MAX_ENTRIES) {
		*why = "metadata table has more than 2047 entries";
		return -EINVAL;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = buf + VHDX_MT_ENTRIES + (size_t)i * VHDX_MT_ENTRY_SIZE;
		uint32_t off = vd_get_le32(e + 16), len = vd_get_le32(e + 20);
		uint32_t flags = vd_get_le32(e + 24);
		int known = -1;

		/* 2.6.1.2: inside the region, after the table, at most 1 MiB;
		 * a zero length has a zero offset. */
		if (len == 0 ? off != 0
			     : (off < VHDX_MT_SIZE || len > VHDX_MAX_ITEM ||
				(uint64_t)off + len > region_len)) {
			*why = "metadata item outside the metadata region";
			return -EINVAL;
		}
		for (uint32_t k = 0; k < i; k++) {
			const uint8_t *o = buf + VHDX_MT_ENTRIES + (size_t)k * VHDX_MT_ENTRY_SIZE;
			uint32_t ooff = vd_get_le32(o + 16), olen = vd_get_le32(o + 20);

			if (!memcmp(o, e, 16) &&
			    ((vd_get_le32(o + 24) ^ flags) & VHDX_MT_IS_USER) == 0) {
				*why = "metadata item listed twice";
				return -EINVAL;
			}
			if (len && olen && off < ooff + olen && ooff < off + len) {
				*why = "metadata items overlap";
				return -EINVAL;
			}
		}
		if (!(flags & VHDX_MT_IS_USER))
			for (int k = 0; k < 6; k++)
				if (!memcmp(e, item_guids[k], 16))
					known = k;
		if (known < 0) {
			/* 2.6.1.2: an unknown required item MUST make the open fail. */
			if (flags & VHDX_MT_IS_REQUIRED) {
				*why = "unknown required metadata item";
				return -ENOTSUP;
			}
			continue;
		}
		m->present[known] = true;
		m->off[known] = off;
		m->len[known] = len;
	}
	for (int k = 0; k < VHDX_IT_LOCATOR; k++)
		if (!m->present[k]) {
			static const char *const names[] = {
			    "no file parameters metadata item",
			    "no virtual disk size metadata item",
			    "no virtual disk id (page 83) metadata item",
			    "no logical sector size metadata item",
			    "no physical sector size metadata item"};
			*why = names[k];
			return -EINVAL;
		}
	return 0;
}

int vhdx_params_decode(const uint8_t *const items[6], const struct vhdx_item_map *m,
		       struct vhdx_params *p, const char **why)
{
	static const uint32_t need[6] = {8, 8, 16, 4, 4, 0};
	uint32_t flags;

	memset(p, 0, sizeof(*p));
	for (int k = 0; k < VHDX_IT_LOCATOR; k++)
		if (m->len[k] < need[k]) {
			*why = "a metadata item is shorter than its content";
			return -EINVAL;
		}
	p->block_size = vd_get_le32(items[VHDX_IT_PARAMS]);
	flags = vd_get_le32(items[VHDX_IT_PARAMS] + 4);
	p->leave_allocated = flags & VHDX_PARAM_LEAVE_ALLOCATED;
	p->has_parent = flags & VHDX_PARAM_HAS_PARENT;
	p->size = vd_get_le64(items[VHDX_IT_SIZE]);
	memcpy(p->page83, items[VHDX_IT_PAGE83], 16);
	p->logical = vd_get_le32(items[VHDX_IT_LOGICAL]);
	p->physical = vd_get_le32(items[VHDX_IT_PHYSICAL]);
	if (m->present[VHDX_IT_LOCATOR]) {
		p->loc_offset = m->off[VHDX_IT_LOCATOR];
		p->loc_length = m->len[VHDX_IT_LOCATOR];
	}
	if (!vd_is_pow2(p->block_size) || p->block_size < VHDX_MIN_BLOCK ||
	    p->block_size > VHDX_MAX_BLOCK) {
		*why = "block size not a power of 2 in [1 MiB, 256 MiB]";
		return -EINVAL;
	}
	if (p->logical != 512 && p->logical != 4096) {
		*why = "logical sector size not 512 or 4096";
		return -EINVAL;
	}
	if (p->physical != 512 && p->physical != 4096) {
		*why = "physical sector size not 512 or 4096";
		return -EINVAL;
	}
	if (p->size == 0 || p->size % p->logical || p->size > VHDX_MAX_SIZE) {
		*why =
		    "virtual disk size zero, not a multiple of the logical sector, or over 64 TiB";
		return -EINVAL;
	}
	if (p->has_parent && !p->loc_length) {
		*why = "differencing disk (HasParent) without a parent locator";
		return -EINVAL;
	}
	return 0;
}

void vhdx_locator_free(struct vhdx_locator *l)
{
	free(l->linkage);
	free(l->linkage2);
	free(l->relative_path);
	free(l->volume_path);
	free(l->absolute_win32_path);
	memset(l, 0, sizeof(*l));
}

int vhdx_locator_decode(const uint8_t *item, uint32_t len, struct vhdx_locator *l, const char **why)
{
	static const char *const keys[] = {"parent_linkage", "parent_linkage2", "relative_path",
					   "volume_path", "absolute_win32_path"};
	char **slots[] = {&l->linkage, &l->linkage2, &l->relative_path, &l->volume_path,
			  &l->absolute_win32_path};
	uint16_t count;
	struct vd_id id;
	int r;

	memset(l, 0, sizeof(*l));
	if (len < 20) {
		*why = "parent locator shorter than its header";
		return -EINVAL;
	}
	if (memcmp(item, vhdx_guid_locator_vhdx, 16)) {
		*why = "parent locator type is not VHDX";
		return -ENOTSUP;
	}
	count = vd_get_le16(item + 18);
	if (20 + (uint64_t)count * 12 > len) {
		*why = "parent locator entries past the item";
		return -EINVAL;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = item + 20 + (size_t)i * 12;
		uint32_t ko = vd_get_le32(e), vo = vd_get_le32(e + 4);
		uint16_t kl = vd_get_le16(e + 8), vl = vd_get_le16(e + 10);
		char *key = NULL, *val = NULL;
		int slot = -1;

		/* 2.6.2.6.2: offsets and lengths > 0, inside the item. */
		if (!ko || !vo || !kl || !vl || (uint64_t)ko + kl > len ||
		    (uint64_t)vo + vl > len) {
			*why = "parent locator key or value outside the item";
			r = -EINVAL;
			goto fail;
		}
		r = vd_utf16_to_utf8(item + ko, kl, false, &key);
		if (r == 0)
			r = vd_utf16_to_utf8(item + vo, vl, false, &val);
		if (r < 0) {
			free(key);
			if (r == -EINVAL)
				*why = "parent locator key or value is not valid UTF-16LE";
			goto fail;
		}
		for (int k = 0; k < 5; k++)
			if (!strcmp(key, keys[k]))
				slot = k;
		free(key);
		if (slot < 0) {
			free(val);
			continue;
		}
		if (*slots[slot]) {
			free(val);
			*why = "parent locator key listed twice";
			r = -EINVAL;
			goto fail;
		}
		*slots[slot] = val;
		l->n_keys++;
	}
	if (!l->linkage || vhdx_guid_parse(l->linkage, &id) < 0) {
		*why = l->linkage ? "parent_linkage is not a GUID"
				  : "parent locator has no "
				    "parent_linkage";
		r = -EINVAL;
		goto fail;
	}
	if (!l->relative_path && !l->volume_path && !l->absolute_win32_path) {
		*why = "parent locator has no relative_path, volume_path or absolute_win32_path";
		r = -EINVAL;
		goto fail;
	}
	return 0;
fail:
	vhdx_locator_free(l);
	return r;
}

int vhdx_geom_compute(const struct vhdx_params *p, uint32_t bat_region_len, struct vhdx_geom *g,
		      const char **why)
{
	/* 2.4: chunk ratio = 2^23 * LogicalSectorSize / BlockSize (>= 16). */
	g->chunk_ratio = (VHDX_SB_SECTORS * p->logical) / p->block_size;
	g->data_blocks = vd_div_round_up(p->size, p->block_size);
	g->sb_blocks = vd_div_round_up(g->data_blocks, g->chunk_ratio);
	/* 2.5: payload entries interleaved with one sector bitmap entry per
	 * chunk; a differencing BAT reaches the last chunk's bitmap entry. */
	if (p->has_parent)
		g->bat_entries = g->sb_blocks * (g->chunk_ratio + 1);
	else
		g->bat_entries = g->data_blocks + (g->data_blocks - 1) / g->chunk_ratio;
	if (g->bat_entries > bat_region_len / 8) {
		*why = "BAT region too small for the virtual disk size";
		return -EINVAL;
	}
	return 0;
}

int vhdx_bat_entry_check(uint64_t e, bool payload, bool has_parent, uint64_t need,
			 uint64_t file_size, const char **why)
{
	unsigned state = (unsigned)(e & VHDX_BAT_STATE_MASK);
	uint64_t off = e & VHDX_BAT_OFFSET_MASK, end;

	if (!payload) {
		/* 2.5.1.2: only 0 and 6; a bitmap block is 1 MiB. */
		if (state == VHDX_SB_NOT_PRESENT)
			return 0;
		if (state != VHDX_SB_PRESENT) {
			*why = "sector bitmap entry has a reserved state";
			return -EINVAL;
		}
		need = VHDX_SB_SIZE;
	} else {
		switch (state) {
		case VHDX_PAYLOAD_NOT_PRESENT:
		case VHDX_PAYLOAD_UNDEFINED:
		case VHDX_PAYLOAD_ZERO:
		case VHDX_PAYLOAD_UNMAPPED:
		case VHDX_PAYLOAD_UNMAPPED_V095:
			return 0; /* FileOffsetMB is reserved or unused for reading */
		case VHDX_PAYLOAD_FULLY_PRESENT:
			break;
		case VHDX_PAYLOAD_PARTIALLY_PRESENT:
			/* 2.5.1.1: MUST NOT appear in a fixed or dynamic file. */
			if (!has_parent) {
				*why = "PARTIALLY_PRESENT block in a disk without a parent";
				return -EINVAL;
			}
			break;
		default:
			*why = "payload entry has the reserved state 4";
			return -EINVAL;
		}
	}
	/* 2.5.1: blocks lie after the header section, inside the file. */
	if (off < VHDX_HEADER_SECTION || vd_add_ovf(off, need, &end) || end > file_size) {
		*why = "block inside the header section or past the end of the file";
		return -EINVAL;
	}
	return 0;
}

int vhdx_bitmap_run(const uint8_t *bm, uint64_t k, uint64_t limit, uint64_t *count)
{
	bool set;

	*count = vd_bitmap_run(bm, k, limit, false, &set);
	return set ? VD_DATA : VD_UNALLOC;
}

/* --- encoders (the writer's; inverse of the decoders above) ------------- */

void vhdx_guid_format(const uint8_t raw[16], char out[VHDX_GUID_TEXT])
{
	struct vd_id id;
	char b[37];

	vhdx_guid_to_id(raw, &id);
	snprintf(out, VHDX_GUID_TEXT, "{%s}", vd_id_format(&id, b));
}

int vhdx_ident_encode(const char *creator, uint8_t *buf)
{
	long n;

	memset(buf, 0, VHDX_HEADER_SIZE);
	memcpy(buf, "vhdxfile", 8);
	n = vd_utf8_to_utf16(creator, false, buf + 8, VHDX_CREATOR_SIZE - 2);
	return n < 0 ? (int)n : 0;
}

void vhdx_region_table_encode(const struct vhdx_regions *rt, uint8_t *buf)
{
	const struct vhdx_region *r[2] = {&rt->bat, &rt->meta};

	memset(buf, 0, VHDX_RT_SIZE);
	memcpy(buf + VHDX_RT_SIG, "regi", 4);
	vd_put_le32(buf + VHDX_RT_COUNT, 2);
	for (int i = 0; i < 2; i++) {
		uint8_t *e = buf + VHDX_RT_ENTRIES + i * VHDX_RT_ENTRY_SIZE;

		memcpy(e, i ? vhdx_guid_metadata : vhdx_guid_bat, 16);
		vd_put_le64(e + 16, r[i]->offset);
		vd_put_le32(e + 24, r[i]->length);
		vd_put_le32(e + 28, r[i]->required ? 1 : 0);
	}
	vd_put_le32(buf + VHDX_RT_CHECKSUM, vhdx_checksum(buf, VHDX_RT_SIZE, VHDX_RT_CHECKSUM));
}

long vhdx_locator_encode(const struct vhdx_locator *l, uint8_t *buf, size_t cap)
{
	static const char *const keys[] = {"parent_linkage", "parent_linkage2", "relative_path",
					   "volume_path", "absolute_win32_path"};
	const char *vals[] = {l->linkage, l->linkage2, l->relative_path, l->volume_path,
			      l->absolute_win32_path};
	uint16_t count = 0, i = 0;
	size_t pos;

	for (int k = 0; k < 5; k++)
		count += vals[k] != NULL;
	pos = 20 + (size_t)count * 12;
	if (cap < pos)
		return -E2BIG;
	memset(buf, 0, pos);
	memcpy(buf, vhdx_guid_locator_vhdx, 16);
	vd_put_le16(buf + 18, count);
	for (int k = 0; k < 5; k++) {
		uint8_t *e = buf + 20 + (size_t)i * 12;
		long kl, vl;

		if (!vals[k])
			continue;
		kl = vd_utf8_to_utf16(keys[k], false, buf + pos, cap - pos);
		if (kl < 0)
			return kl;
		vl = vd_utf8_to_utf16(vals[k], false, buf + pos + kl, cap - pos - kl);
		if (vl < 0)
			return vl;
		/* 2.6.2.6.2: lengths are 16 bits and non-zero */
		if (vl == 0 || vl > UINT16_MAX)
			return -EINVAL;
		vd_put_le32(e, (uint32_t)pos);
		vd_put_le32(e + 4, (uint32_t)(pos + kl));
		vd_put_le16(e + 8, (uint16_t)kl);
		vd_put_le16(e + 10, (uint16_t)vl);
		pos += kl + vl;
		i++;
	}
	return pos > VHDX_MAX_ITEM ? -E2BIG : (long)pos;
}

int vhdx_metadata_encode(const struct vhdx_params *p, const uint8_t *loc, uint32_t loc_len,
			 uint8_t *buf, size_t cap)
{
	/* Items where Hyper-V puts them (file parameters, size, sectors, id,
	 * then the locator); flags per 2.6.2: IsVirtualDisk for what a child
	 * shares with its parent, IsRequired for all. */
	static const uint32_t offs[6] = {65536, 65544, 65560, 65552, 65556, 65576};
	static const uint32_t lens[5] = {8, 8, 16, 4, 4};
	static const uint32_t flags[6] = {4, 6, 6, 6, 6, 4};
	unsigned n = p->has_parent ? 6 : 5;

	if (cap < VHDX_META_ITEMS_END + (p->has_parent ? loc_len : 0))
		return -E2BIG;
	memset(buf, 0, VHDX_META_ITEMS_END);
	memcpy(buf, "metadata", 8);
	vd_put_le16(buf + VHDX_MT_COUNT, (uint16_t)n);
	for (unsigned k = 0; k < n; k++) {
		uint8_t *e = buf + VHDX_MT_ENTRIES + k * VHDX_MT_ENTRY_SIZE;

		memcpy(e, item_guids[k], 16);
		vd_put_le32(e + 16, offs[k]);
		vd_put_le32(e + 20, k < 5 ? lens[k] : loc_len);
		vd_put_le32(e + 24, flags[k]);
	}
	vd_put_le32(buf + offs[VHDX_IT_PARAMS], p->block_size);
	vd_put_le32(buf + offs[VHDX_IT_PARAMS] + 4,
		    (p->leave_allocated ? VHDX_PARAM_LEAVE_ALLOCATED : 0) |
			(p->has_parent ? VHDX_PARAM_HAS_PARENT : 0));
	vd_put_le64(buf + offs[VHDX_IT_SIZE], p->size);
	memcpy(buf + offs[VHDX_IT_PAGE83], p->page83, 16);
	vd_put_le32(buf + offs[VHDX_IT_LOGICAL], p->logical);
	vd_put_le32(buf + offs[VHDX_IT_PHYSICAL], p->physical);
	if (p->has_parent)
		memcpy(buf + offs[VHDX_IT_LOCATOR], loc, loc_len);
	return 0;
}
