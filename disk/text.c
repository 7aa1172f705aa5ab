/* Text conversion and validation (see text.h). */
#include "disk/text.h"

#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"

size_t vd_utf8_get(const unsigned char *s, size_t avail, uint32_t *cp)
{
	uint32_t c;
	size_t n;

	if (!avail)
		return 0;
	c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if ((c & 0xE0) == 0xC0) {
		n = 2;
		c &= 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3;
		c &= 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		n = 4;
		c &= 0x07;
	} else {
		return 0;
	}
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3F);
	}
	if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
	    c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return n;
}

size_t vd_utf8_put(char out[4], uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

bool vd_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	while (len) {
		uint32_t cp;
		size_t n = vd_utf8_get(p, len, &cp);

		if (!n)
			return false;
		p += n;
		len -= n;
	}
	return true;
}

int vd_utf16_to_utf8(const uint8_t *in, size_t len, bool big_endian, char **out)
{
	size_t n, o = 0;
	char *s;

	if (len % 2)
		return -EINVAL;
	n = len / 2;
	/* Trailing NULs are padding; one before other text is an inner NUL. */
	while (n && !in[2 * n - 2] && !in[2 * n - 1])
		n--;
	s = malloc(n * 3 + 1); /* a BMP unit gives <= 3 bytes, a pair 4 for 2 units */
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = in + 2 * i;
		uint32_t u = big_endian ? vd_get_be16(p) : vd_get_le16(p);

		if (u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
			goto bad;
		if (u >= 0xD800 && u <= 0xDBFF) {
			uint32_t lo;
			if (i + 1 >= n)
				goto bad;
			lo = big_endian ? vd_get_be16(p + 2) : vd_get_le16(p + 2);
			if (lo < 0xDC00 || lo > 0xDFFF)
				goto bad;
			u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
			i++;
		}
		o += vd_utf8_put(s + o, u);
	}
	s[o] = 0;
	*out = s;
	return 0;
bad:
	free(s);
	return -EINVAL;
}

static void utf16_put(uint8_t *p, uint16_t u, bool big_endian)
{
	if (big_endian)
		vd_put_be16(p, u);
	else
		vd_put_le16(p, u);
}

long vd_utf8_to_utf16(const char *in, bool big_endian, uint8_t *out, size_t cap)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t left = strlen(in), o = 0;

	while (left) {
		uint32_t cp;
		size_t n = vd_utf8_get(s, left, &cp);

		if (!n)
			return -EINVAL;
		s += n;
		left -= n;
		if (cp >= 0x10000) {
			if (cap - o < 4 || o > cap)
				return -E2BIG;
			cp -= 0x10000;
			utf16_put(out + o, (uint16_t)(0xD800 | cp >> 10), big_endian);
			utf16_put(out + o + 2, (uint16_t)(0xDC00 | (cp & 0x3FF)), big_endian);
			o += 4;
		} else {
			if (cap - o < 2 || o > cap)
				return -E2BIG;
			utf16_put(out + o, (uint16_t)cp, big_endian);
			o += 2;
		}
	}
	return (long)o;
}

int vd_iconv_to_utf8(const char *charset, const char *in, size_t max_out, char **out)
{
	size_t in_left = strlen(in), cap = in_left + 16, used = 0;
	char *src = (char *)in, *buf = NULL;
	bool flushing = false;
	iconv_t cd;
	int r = 0;

	if (cap > max_out)
		cap = max_out;
	cd = iconv_open("UTF-8", charset);
	if (cd == (iconv_t)-1)
		return -EINVAL;
	for (;;) {
		/* + 1: room for the NUL that we, not iconv, write at the end */
		char *nb = realloc(buf, cap + 1), *dst;
		size_t out_left, rc;

		if (!nb) {
			r = -ENOMEM;
			break;
		}
		buf = nb;
		dst = buf + used;
		out_left = cap - used;
		/* After the input, a NULL input writes the shift state's reset. */
		rc = flushing ? iconv(cd, NULL, NULL, &dst, &out_left)
			      : iconv(cd, &src, &in_left, &dst, &out_left);
		used = (size_t)(dst - buf);
		if (rc == (size_t)-1) {
			if (errno != E2BIG) {
				r = -EINVAL; /* EILSEQ, EINVAL: not text in that charset */
				break;
			}
			if (cap >= max_out) {
				r = -E2BIG;
				break;
			}
			cap = cap > max_out / 2 ? max_out : cap * 2;
			continue;
		}
		if (flushing)
			break;
		flushing = true;
	}
	iconv_close(cd);
	if (r == 0) {
		buf[used] = 0;
		if (memchr(buf, 0, used) || !vd_utf8_valid(buf, used))
			r = -EINVAL;
	}
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	return 0;
}
