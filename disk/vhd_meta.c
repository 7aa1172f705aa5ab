/* VHD metadata codecs: footer, dynamic header, parent locators, UTF-16 and
 * file-URL text, sector bitmaps, CHS geometry. Everything here is pure: no
 * I/O, no logging; a failure returns -EINVAL with a short reason in *why so
 * the caller can log one line naming the file.
 *
 * All VHD fields are big-endian (VHD spec, "Hard Disk Footer Format", "Dynamic Disk Header
 * Format"). Only W2ru/W2ku payloads are UTF-16LE; the header's parent name is UTF-16BE. */
#include "disk/vhd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/text.h"

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < csum_off || i >= csum_off + 4)
			sum += buf[i];
	return ~sum;
}

int vhd_footer_decode(const uint8_t *buf, struct vhd_footer *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (memcmp(buf + VHD_FTR_COOKIE, "conectix", 8)) {
		*why = VHD_WHY_NO_COOKIE;
		return -EINVAL;
	}
	out->features = vd_get_be32(buf + VHD_FTR_FEATURES);
	out->version = vd_get_be32(buf + VHD_FTR_VERSION);
	out->data_offset = vd_get_be64(buf + VHD_FTR_DATA_OFFSET);
	out->timestamp = vd_get_be32(buf + VHD_FTR_TIMESTAMP);
	memcpy(out->creator_app, buf + VHD_FTR_CREATOR_APP, 4);
	out->creator_ver = vd_get_be32(buf + VHD_FTR_CREATOR_VER);
	out->creator_os = vd_get_be32(buf + VHD_FTR_CREATOR_OS);
	out->orig_size = vd_get_be64(buf + VHD_FTR_ORIG_SIZE);
	out->cur_size = vd_get_be64(buf + VHD_FTR_CUR_SIZE);
	out->cyls = vd_get_be16(buf + VHD_FTR_GEOMETRY);
	out->heads = buf[VHD_FTR_GEOMETRY + 2];
	out->spt = buf[VHD_FTR_GEOMETRY + 3];
	out->type = vd_get_be32(buf + VHD_FTR_TYPE);
	out->checksum = vd_get_be32(buf + VHD_FTR_CHECKSUM);
	out->checksum_ok = out->checksum == vhd_checksum(buf, VHD_FOOTER_SIZE, VHD_FTR_CHECKSUM);
	memcpy(out->uuid, buf + VHD_FTR_UUID, 16);
	out->saved_state = buf[VHD_FTR_SAVED];
	return 0;
}

int vhd_footer_check(const struct vhd_footer *f, uint64_t ftr_off, const char **why)
{
	if (f->version >> 16 != 1) {
		*why = "unsupported format version (major must be 1)";
		return -EINVAL;
	}
	if (f->type != VHD_TYPE_FIXED && f->type != VHD_TYPE_DYNAMIC && f->type != VHD_TYPE_DIFF) {
		*why = "disk type not fixed (2), dynamic (3) or differencing (4)";
		return -EINVAL;
	}
	if (f->cur_size % VHD_SECTOR) {
		*why = "current size is not a multiple of 512";
		return -EINVAL;
	}
	if (f->cur_size > VHD_MAX_SIZE) {
		*why = "current size exceeds 2040 GiB";
		return -EINVAL;
	}
	if (f->type == VHD_TYPE_FIXED) {
		/* Data is [0, size) and the footer follows it. */
		if (f->cur_size > ftr_off) {
			*why = "fixed disk larger than its file";
			return -EINVAL;
		}
		return 0;
	}
	if (f->data_offset % VHD_SECTOR || f->data_offset < VHD_FOOTER_SIZE ||
	    f->data_offset > ftr_off || ftr_off - f->data_offset < VHD_HEADER_SIZE) {
		*why = "data offset (dynamic header) not aligned or not inside the file";
		return -EINVAL;
	}
	return 0;
}

void vhd_footer_encode(const struct vhd_footer *f, uint8_t *buf)
{
	memset(buf, 0, VHD_FOOTER_SIZE);
	memcpy(buf + VHD_FTR_COOKIE, "conectix", 8);
	vd_put_be32(buf + VHD_FTR_FEATURES, f->features);
	vd_put_be32(buf + VHD_FTR_VERSION, f->version);
	vd_put_be64(buf + VHD_FTR_DATA_OFFSET, f->data_offset);
	vd_put_be32(buf + VHD_FTR_TIMESTAMP, f->timestamp);
	memcpy(buf + VHD_FTR_CREATOR_APP, f->creator_app, 4);
	vd_put_be32(buf + VHD_FTR_CREATOR_VER, f->creator_ver);
	vd_put_be32(buf + VHD_FTR_CREATOR_OS, f->creator_os);
	vd_put_be64(buf + VHD_FTR_ORIG_SIZE, f->orig_size);
	vd_put_be64(buf + VHD_FTR_CUR_SIZE, f->cur_size);
	vd_put_be16(buf + VHD_FTR_GEOMETRY, f->cyls);
	buf[VHD_FTR_GEOMETRY + 2] = f->heads;
	buf[VHD_FTR_GEOMETRY + 3] = f->spt;
	vd_put_be32(buf + VHD_FTR_TYPE, f->type);
	memcpy(buf + VHD_FTR_UUID, f->uuid, 16);
	buf[VHD_FTR_SAVED] = f->saved_state;
	vd_put_be32(buf + VHD_FTR_CHECKSUM, vhd_checksum(buf, VHD_FOOTER_SIZE, VHD_FTR_CHECKSUM));
}

int vhd_header_decode(const uint8_t *buf, struct vhd_header *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (memcmp(buf + VHD_HDR_COOKIE, "cxsparse", 8)) {
		*why = "dynamic header has no \"cxsparse\" cookie";
		return -EINVAL;
	}
	out->table_offset = vd_get_be64(buf + VHD_HDR_TABLE_OFFSET);
	out->version = vd_get_be32(buf + VHD_HDR_VERSION);
	out->max_entries = vd_get_be32(buf + VHD_HDR_MAX_ENTRIES);
	out->block_size = vd_get_be32(buf + VHD_HDR_BLOCK_SIZE);
	out->checksum = vd_get_be32(buf + VHD_HDR_CHECKSUM);
	out->checksum_ok = out->checksum == vhd_checksum(buf, VHD_HEADER_SIZE, VHD_HDR_CHECKSUM);
	memcpy(out->parent_uuid, buf + VHD_HDR_PARENT_UUID, 16);
	out->parent_stamp = vd_get_be32(buf + VHD_HDR_PARENT_STAMP);
	memcpy(out->parent_name, buf + VHD_HDR_PARENT_NAME, VHD_HDR_PARENT_NAME_LEN);
	for (int i = 0; i < VHD_NUM_LOCATORS; i++) {
		const uint8_t *p = buf + VHD_HDR_LOCATORS + i * VHD_LOC_SIZE;
		out->loc[i].code = vd_get_be32(p);
		out->loc[i].space = vd_get_be32(p + 4);
		out->loc[i].length = vd_get_be32(p + 8);
		out->loc[i].offset = vd_get_be64(p + 16);
	}
	return 0;
}

int vhd_header_check(const struct vhd_header *h, uint64_t size, const char **why)
{
	uint64_t need;

	if (h->version >> 16 != 1) {
		*why = "unsupported dynamic header version (major must be 1)";
		return -EINVAL;
	}
	if (!vd_is_pow2(h->block_size) || h->block_size < VHD_MIN_BLOCK ||
	    h->block_size > VHD_MAX_BLOCK) {
		*why = "block size not a power of 2 in [512 B, 256 MiB]";
		return -EINVAL;
	}
	need = vd_div_round_up(size, h->block_size); /* size <= 2040 GiB: no overflow */
	if (h->max_entries < need) {
		*why = "max table entries smaller than the virtual size needs";
		return -EINVAL;
	}
	if (need > VHD_MAX_BAT) {
		*why = "block table too large (more than 16M entries)";
		return -EINVAL;
	}
	if (h->table_offset % VHD_SECTOR) {
		*why = "block table offset not sector-aligned";
		return -EINVAL;
	}
	return 0;
}

void vhd_header_encode(const struct vhd_header *h, uint8_t *buf)
{
	memset(buf, 0, VHD_HEADER_SIZE);
	memcpy(buf + VHD_HDR_COOKIE, "cxsparse", 8);
	vd_put_be64(buf + VHD_HDR_DATA_OFFSET, UINT64_MAX);
	vd_put_be64(buf + VHD_HDR_TABLE_OFFSET, h->table_offset);
	vd_put_be32(buf + VHD_HDR_VERSION, h->version);
	vd_put_be32(buf + VHD_HDR_MAX_ENTRIES, h->max_entries);
	vd_put_be32(buf + VHD_HDR_BLOCK_SIZE, h->block_size);
	memcpy(buf + VHD_HDR_PARENT_UUID, h->parent_uuid, 16);
	vd_put_be32(buf + VHD_HDR_PARENT_STAMP, h->parent_stamp);
	memcpy(buf + VHD_HDR_PARENT_NAME, h->parent_name, VHD_HDR_PARENT_NAME_LEN);
	for (int i = 0; i < VHD_NUM_LOCATORS; i++) {
		uint8_t *p = buf + VHD_HDR_LOCATORS + i * VHD_LOC_SIZE;
		vd_put_be32(p, h->loc[i].code);
		vd_put_be32(p + 4, h->loc[i].space);
		vd_put_be32(p + 8, h->loc[i].length);
		vd_put_be64(p + 16, h->loc[i].offset);
	}
	vd_put_be32(buf + VHD_HDR_CHECKSUM, vhd_checksum(buf, VHD_HEADER_SIZE, VHD_HDR_CHECKSUM));
}

int vhd_locator_span(uint32_t space, uint64_t *bytes)
{
	if (space < VHD_SECTOR)
		*bytes = (uint64_t)space * VHD_SECTOR;
	else if (space % VHD_SECTOR == 0)
		*bytes = space;
	else
		return -EINVAL;
	return 0;
}

int vhd_macx_decode(const uint8_t *in, size_t len, char **out)
{
	size_t o = 0, i = 0;
	char *s;

	while (len && !in[len - 1])
		len--;
	if (len >= 7 && !memcmp(in, "file://", 7))
		i = 7;
	if (len - i >= 9 && !memcmp(in + i, "localhost", 9) && (len - i == 9 || in[i + 9] == '/'))
		i += 9;
	s = malloc(len - i + 1);
	if (!s)
		return -ENOMEM;
	for (; i < len; i++) {
		int c = in[i];
		if (c == '%') {
			int hi = i + 2 < len ? vd_hexval(in[i + 1]) : -1;
			int lo = hi >= 0 ? vd_hexval(in[i + 2]) : -1;
			if (lo < 0)
				goto bad;
			c = hi << 4 | lo;
			i += 2;
		}
		if (c == 0)
			goto bad;
		s[o++] = (char)c;
	}
	s[o] = 0;
	if (!o || !vd_utf8_valid(s, o))
		goto bad;
	*out = s;
	return 0;
bad:
	free(s);
	return -EINVAL;
}

const char *vhd_plat_name(uint32_t code)
{
	switch (code) {
	case VHD_PLAT_WI2R:
		return "Wi2r";
	case VHD_PLAT_WI2K:
		return "Wi2k";
	case VHD_PLAT_W2RU:
		return "W2ru";
	case VHD_PLAT_W2KU:
		return "W2ku";
	case VHD_PLAT_MAC:
		return "Mac";
	case VHD_PLAT_MACX:
		return "MacX";
	default:
		return NULL;
	}
}

int vhd_bitmap_run(const uint8_t *bm, uint32_t k, uint32_t limit, uint32_t *count)
{
	bool set;

	*count = (uint32_t)vd_bitmap_run(bm, k, limit, true, &set);
	return set ? VD_DATA : VD_UNALLOC;
}

void vhd_chs(uint64_t size, uint16_t *cyls, uint8_t *heads, uint8_t *spt)
{
	uint64_t ts = size / VHD_SECTOR, cth;
	uint32_t h, s;

	if (ts > 65535ull * 16 * 255)
		ts = 65535ull * 16 * 255;
	if (ts >= 65535ull * 16 * 63) {
		s = 255;
		h = 16;
		cth = ts / s;
	} else {
		s = 17;
		cth = ts / s;
		h = (uint32_t)((cth + 1023) / 1024);
		if (h < 4)
			h = 4;
		if (cth >= h * 1024ull || h > 16) {
			s = 31;
			h = 16;
			cth = ts / s;
		}
		if (cth >= h * 1024ull) {
			s = 63;
			h = 16;
			cth = ts / s;
		}
	}
	*cyls = (uint16_t)(cth / h);
	*heads = (uint8_t)h;
	*spt = (uint8_t)s;
}
