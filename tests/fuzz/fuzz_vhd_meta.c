/* Harness: the pure VHD codecs of disk/vhd_meta.c, checked against their
 * own inverses. Input: one selector byte, then the bytes to decode:
 *   0 footer, 1 dynamic header: decode -> encode -> decode gives the same
 *     fields, a valid checksum, and the same bytes at every decoded offset;
 *   2 MacX file URL: the path decoded is UTF-8 that encodes as UTF-16;
 *   3 sector bitmap: vhd_bitmap_run() agrees with a bit-by-bit count;
 *   4 CHS geometry of a size: never more sectors than the disk has.
 * (The UTF-16 codecs are fuzz_text's.) */
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/text.h"
#include "disk/vhd.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void footer_roundtrip(const uint8_t *p, size_t n, struct fz_rng *r)
{
	uint8_t again[VHD_FOOTER_SIZE];
	struct vhd_footer f, g;
	const char *why = NULL;

	if (n < VHD_FOOTER_SIZE || vhd_footer_decode(p, &f, &why) < 0)
		return;
	if (vhd_footer_check(&f, fz_rng_below(r, 1ull << 40), &why) < 0 && !why)
		fz_fail("vhd_footer_check failed without a reason");
	vhd_footer_encode(&f, again);
	if (vhd_footer_decode(again, &g, &why) < 0 || !g.checksum_ok)
		fz_fail("footer: encode gave an undecodable footer or a bad checksum");
	f.checksum = g.checksum;
	f.checksum_ok = true;
	if (memcmp(&f, &g, sizeof(f)))
		fz_fail("footer: decode(encode(f)) != f");
	if (memcmp(p, again, VHD_FTR_CHECKSUM) ||
	    memcmp(p + VHD_FTR_UUID, again + VHD_FTR_UUID, VHD_FTR_SAVED + 1 - VHD_FTR_UUID))
		fz_fail("footer: encode does not write fields where decode reads them");
}

static void header_roundtrip(const uint8_t *p, size_t n)
{
	uint8_t again[VHD_HEADER_SIZE];
	struct vhd_header h, g;
	const char *why = NULL;

	if (n < VHD_HEADER_SIZE || vhd_header_decode(p, &h, &why) < 0)
		return;
	if (vhd_header_check(&h, vd_get_be64(p + VHD_HDR_DATA_OFFSET) % (VHD_MAX_SIZE + 1), &why) <
		0 &&
	    !why)
		fz_fail("vhd_header_check failed without a reason");
	vhd_header_encode(&h, again);
	if (vhd_header_decode(again, &g, &why) < 0 || !g.checksum_ok)
		fz_fail("header: encode gave an undecodable header or a bad checksum");
	h.checksum = g.checksum;
	h.checksum_ok = true;
	if (memcmp(&h, &g, sizeof(h)))
		fz_fail("header: decode(encode(h)) != h");
}

static void macx_decode(const uint8_t *p, size_t n)
{
	char *s = NULL;
	uint8_t *u16;
	size_t len;

	if (vhd_macx_decode(p, n, &s) < 0)
		return;
	len = strlen(s);
	if (len == 0)
		fz_fail("MacX: empty path accepted");
	u16 = malloc(len * 2 + 2);
	if (!u16)
		fz_fail("out of memory");
	if (vd_utf8_to_utf16(s, false, u16, len * 2 + 2) < 0)
		fz_fail("MacX: decoded path is not UTF-8");
	free(u16);
	free(s);
}

static void bitmap_run(const uint8_t *p, size_t n, struct fz_rng *r)
{
	uint32_t bits, k, limit, count, j;
	int st;

	if (n == 0 || n > (1u << 20))
		return;
	bits = (uint32_t)n * 8;
	k = (uint32_t)fz_rng_below(r, bits);
	limit = k + 1 + (uint32_t)fz_rng_below(r, bits - k);
	st = vhd_bitmap_run(p, k, limit, &count);
	for (j = k; j < limit; j++)
		if (!(p[j / 8] & (0x80u >> (j % 8))) != !(p[k / 8] & (0x80u >> (k % 8))))
			break;
	if (count != j - k || st != ((p[k / 8] & (0x80u >> (k % 8))) ? VD_DATA : VD_UNALLOC))
		fz_fail("bitmap run from %u (limit %u): %u sectors, state %d; expected %u", k,
			limit, count, st, j - k);
}

static void chs(const uint8_t *p, size_t n)
{
	uint64_t size, ts;
	uint16_t c;
	uint8_t h, s;

	if (n < 8)
		return;
	size = vd_get_be64(p);
	vhd_chs(size, &c, &h, &s);
	ts = size / 512;
	if (ts > 65535ull * 16 * 255)
		ts = 65535ull * 16 * 255;
	if ((uint64_t)c * h * s > ts)
		fz_fail("CHS %u/%u/%u exceeds the %llu sectors of the disk", c, h, s,
			(unsigned long long)ts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_rng r;

	fz_init();
	if (size < 1)
		return 0;
	fz_rng_init(&r, data, size);
	switch (data[0] % 5) {
	case 0:
		footer_roundtrip(data + 1, size - 1, &r);
		break;
	case 1:
		header_roundtrip(data + 1, size - 1);
		break;
	case 2:
		macx_decode(data + 1, size - 1);
		break;
	case 3:
		bitmap_run(data + 1, size - 1, &r);
		break;
	default:
		chs(data + 1, size - 1);
	}
	return 0;
}
