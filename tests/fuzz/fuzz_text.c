/* Harness: the text routines of disk/text.c, which every foreign name and
 * hint goes through. Input: one selector byte, then:
 *   0 bytes: vd_utf8_valid() and vd_utf8_get() agree with RFC 3629's table
 *     of well-formed byte sequences (an independent decoder, below);
 *   1, 2 UTF-16 (BE, LE): -> UTF-8 (strict) -> UTF-16 gives the input back,
 *     less trailing NUL units;
 *   3 charset byte, limit byte, text: vd_iconv_to_utf8() from one of the
 *     charsets below (the ones that expand the most among them) gives
 *     strict UTF-8 without NUL within the limit, or an error. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "disk/text.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 3629, section 4: the length of the well-formed sequence at p, or 0. */
static size_t rfc3629_len(const uint8_t *p, size_t n)
{
	static const struct {
		uint8_t lo, hi, n, lo2, hi2; /* first byte range, length, second byte range */
	} t[] = {
	    {0x00, 0x7f, 1, 0, 0},	 {0xc2, 0xdf, 2, 0x80, 0xbf}, {0xe0, 0xe0, 3, 0xa0, 0xbf},
	    {0xe1, 0xec, 3, 0x80, 0xbf}, {0xed, 0xed, 3, 0x80, 0x9f}, {0xee, 0xef, 3, 0x80, 0xbf},
	    {0xf0, 0xf0, 4, 0x90, 0xbf}, {0xf1, 0xf3, 4, 0x80, 0xbf}, {0xf4, 0xf4, 4, 0x80, 0x8f},
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (p[0] < t[i].lo || p[0] > t[i].hi)
			continue;
		if (t[i].n > n)
			return 0;
		if (t[i].n > 1 && (p[1] < t[i].lo2 || p[1] > t[i].hi2))
			return 0;
		for (size_t k = 2; k < t[i].n; k++)
			if (p[k] < 0x80 || p[k] > 0xbf)
				return 0;
		return t[i].n;
	}
	return 0;
}

static bool rfc3629_valid(const uint8_t *p, size_t n)
{
	while (n) {
		size_t k = rfc3629_len(p, n);

		if (!k)
			return false;
		p += k;
		n -= k;
	}
	return true;
}

static void utf8_check(const uint8_t *p, size_t n)
{
	bool ref = rfc3629_valid(p, n);

	if (vd_utf8_valid((const char *)p, n) != ref)
		fz_fail("vd_utf8_valid() says %d, RFC 3629 says %d", !ref, ref);
	for (size_t i = 0; i < n; i++) {
		uint32_t cp;

		if (vd_utf8_get(p + i, n - i, &cp) != rfc3629_len(p + i, n - i))
			fz_fail("vd_utf8_get() at byte %zu disagrees with RFC 3629", i);
	}
}

static void utf16_roundtrip(const uint8_t *p, size_t n, bool be)
{
	char *s = NULL;
	uint8_t *back;
	long got;
	int r = vd_utf16_to_utf8(p, n, be, &s);

	if (r < 0) {
		if (r != -EINVAL)
			fz_fail("vd_utf16_to_utf8: %d", r);
		return;
	}
	if (!rfc3629_valid((const uint8_t *)s, strlen(s)))
		fz_fail("vd_utf16_to_utf8 wrote invalid UTF-8");
	while (n >= 2 && !p[n - 1] && !p[n - 2])
		n -= 2;
	back = malloc(n + 4);
	if (!back)
		fz_fail("out of memory");
	got = vd_utf8_to_utf16(s, be, back, n + 4);
	if (got < 0 || (size_t)got != n || memcmp(back, p, n))
		fz_fail("UTF-16%s -> UTF-8 -> UTF-16 changed the text (%ld of %zu bytes)",
			be ? "BE" : "LE", got, n);
	free(back);
	free(s);
}

static void iconv_check(const uint8_t *p, size_t n)
{
	static const char *const charsets[] = {
	    "UTF-8",	  "windows-1252", "ISO-8859-1", "SHIFT_JIS", "EUC-JP",	    "GB18030",
	    "BIG5-HKSCS", "UTF-7",	  "UTF-16",	"UTF-32",    "ISO-2022-JP", "ISO-2022-KR",
	    "TSCII",	  "IBM930",	  "CP949",	"UTF-16LE",
	};
	size_t max_out, len;
	char *in, *out = NULL;
	int r;

	if (n < 2)
		return;
	max_out = (size_t)p[1] * 64 + 1;
	len = strnlen((const char *)p + 2, n - 2);
	in = malloc(len + 1);
	if (!in)
		fz_fail("out of memory");
	memcpy(in, p + 2, len);
	in[len] = '\0';
	r = vd_iconv_to_utf8(charsets[p[0] % (sizeof(charsets) / sizeof(charsets[0]))], in, max_out,
			     &out);
	if (r == 0) {
		size_t olen = strlen(out);

		if (olen > max_out || !rfc3629_valid((const uint8_t *)out, olen))
			fz_fail("vd_iconv_to_utf8: %zu bytes (limit %zu), %s", olen, max_out,
				"not strict UTF-8 or over the limit");
		free(out);
	} else if (r != -EINVAL && r != -E2BIG) {
		fz_fail("vd_iconv_to_utf8: %d", r);
	}
	free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_init();
	if (size < 1)
		return 0;
	switch (data[0] % 4) {
	case 0:
		utf8_check(data + 1, size - 1);
		break;
	case 1:
	case 2:
		utf16_roundtrip(data + 1, size - 1, data[0] % 4 == 1);
		break;
	default:
		iconv_check(data + 1, size - 1);
	}
	return 0;
}
