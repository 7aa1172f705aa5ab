/* Text: one home for UTF-8 validation, UTF-16 and legacy-charset conversion.
 *
 * Names and hints in images are foreign text (UTF-16 in VHD/VHDX, any glibc
 * charset in a VMDK descriptor's encoding=), and what we write (chain.json,
 * new deltas) must be well formed whatever came in. Every routine here is
 * bounded by the lengths it is given and by the output it allocates itself:
 * none trusts a charset's expansion ratio or a NUL terminator inside foreign
 * data. UTF-8 is strict (RFC 3629): no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
#ifndef VD_TEXT_H
#define VD_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes the UTF-8 sequence at s (avail bytes readable): returns its length
 * (1-4) and sets *cp, or 0 when it is not strict UTF-8. */
size_t vd_utf8_get(const unsigned char *s, size_t avail, uint32_t *cp);

/* Encodes code point cp (<= U+10FFFF, not a surrogate) into out; returns the
 * length (1-4). */
size_t vd_utf8_put(char out[4], uint32_t cp);

/* True when the len bytes at s are strict UTF-8 (a NUL byte counts as valid
 * text here; callers that need C strings check for it). */
bool vd_utf8_valid(const char *s, size_t len);

/* Converts UTF-16 (big- or little-endian) to a malloc'd UTF-8 string.
 * Trailing NUL code units end the string; an inner NUL, an odd length or an
 * unpaired surrogate is -EINVAL. Returns 0, -EINVAL or -ENOMEM. */
int vd_utf16_to_utf8(const uint8_t *in, size_t len, bool big_endian, char **out);

/* Converts a UTF-8 C string to UTF-16 into out (capacity cap bytes). Returns
 * the byte length written, -EINVAL (not UTF-8) or -E2BIG. */
long vd_utf8_to_utf16(const char *in, bool big_endian, uint8_t *out, size_t cap);

/* Converts the C string in, written in charset (any name iconv_open knows),
 * to a malloc'd UTF-8 string, growing the output as the converter needs (some
 * glibc converters emit several characters per input byte). Returns 0,
 * -EINVAL (unknown charset, invalid or incomplete input, or output that is
 * not strict UTF-8 or holds a NUL), -E2BIG (result over max_out bytes) or
 * -ENOMEM. */
int vd_iconv_to_utf8(const char *charset, const char *in, size_t max_out, char **out);

#endif
