/* disk/text.c: strict UTF-8, conversion from every charset glibc offers
 * (bounded whatever the expansion ratio), and JSON output that stays valid
 * whatever bytes go in (issue "Hostile evidence", classes 1 and 4). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disk/text.h"
#include "disk/util.h"
#include "test_util.h"

static void test_utf8_strict(void **state)
{
	static const struct {
		const char *s;
		size_t len;
		bool ok;
	} cases[] = {
	    {"plain", 5, true},
	    {"\xc3\xa9", 2, true},
	    {"\xe2\x82\xac", 3, true},
	    {"\xf0\x9f\x92\xa9", 4, true},
	    {"\xf4\x8f\xbf\xbf", 4, true},	/* U+10FFFF */
	    {"\xc0\xaf", 2, false},		/* overlong '/' */
	    {"\xe0\x80\xaf", 3, false},		/* overlong, 3 bytes */
	    {"\xf0\x80\x80\xaf", 4, false},	/* overlong, 4 bytes */
	    {"\xed\xa0\x80", 3, false},		/* surrogate U+D800 */
	    {"\xed\xbf\xbf", 3, false},		/* surrogate U+DFFF */
	    {"\xf4\x90\x80\x80", 4, false},	/* U+110000 */
	    {"\xf8\x88\x80\x80\x80", 5, false}, /* 5-byte form */
	    {"\xe2\x82", 2, false},		/* cut at the end of the buffer */
	    {"\x80", 1, false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(vd_utf8_valid(cases[i].s, cases[i].len), cases[i].ok);
}

/* Converts in from charset; on success the result must be strict UTF-8 and
 * NUL-terminated exactly at its length (ASan checks the bounds). */
static int convert(const char *charset, const char *in, size_t *out_len)
{
	char *out = NULL;
	int r = vd_iconv_to_utf8(charset, in, 1u << 20, &out);

	if (r == 0) {
		size_t n = strlen(out);
		assert_true(vd_utf8_valid(out, n));
		if (out_len)
			*out_len = n;
		free(out);
	}
	return r;
}

/* The worst expansion glibc has (TSCII: byte 0x82 -> 12 bytes of UTF-8) at
 * every length, so some conversion fills its buffer exactly. */
static void test_iconv_worst_expansion(void **state)
{
	char in[300];
	size_t n;

	(void)state;
	for (unsigned len = 1; len < sizeof(in); len++) {
		memset(in, 0x82, len);
		in[len] = 0;
		assert_int_equal(convert("TSCII", in, &n), 0);
		assert_int_equal(n, 12 * (size_t)len);
	}
	/* every mix of 12-byte and 1-byte characters, so that some output
	 * fills each buffer size exactly */
	for (unsigned len = 1; len <= 48; len++)
		for (unsigned k = 0; k <= len; k++) {
			memset(in, 'a', len);
			memset(in, 0x82, k);
			in[len] = 0;
			assert_int_equal(convert("TSCII", in, &n), 0);
			assert_int_equal(n, 12 * (size_t)k + (len - k));
		}
	assert_int_equal(vd_iconv_to_utf8("TSCII", in, 100, &(char *){NULL}), -E2BIG);
	assert_int_equal(convert("no-such-charset", "x", NULL), -EINVAL);
	assert_int_equal(convert("UTF-8", "\xc0\xaf", NULL), -EINVAL);
	/* stateful encodings end with their shift state reset */
	assert_int_equal(convert("ISO-2022-JP", "\x1b$B$3$s\x1b(B", &n), 0);
}

/* Every charset iconv -l lists, fed every byte and every byte repeated. */
static void test_iconv_every_charset(void **state)
{
	char *list = tu_sh_output("iconv -l"), all[256], *save = NULL;
	unsigned charsets = 0;

	(void)state;
	assert_non_null(list);
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = 0;
	for (char *tok = strtok_r(list, ", \n", &save); tok; tok = strtok_r(NULL, ", \n", &save)) {
		char rep[24];

		*strchrnul(tok, '/') = 0;
		if (!*tok)
			continue;
		charsets++;
		convert(tok, all, NULL);
		for (int b = 0x80; b < 256; b += 7) {
			memset(rep, b, sizeof(rep) - 1);
			rep[sizeof(rep) - 1] = 0;
			convert(tok, rep, NULL);
		}
	}
	free(list);
	assert_true(charsets > 100);
}

/* chain.json's writer: overlong forms, surrogates and code points past
 * U+10FFFF used to pass through; now the output is strict UTF-8 and each bad
 * byte is escaped. */
static void test_json_stays_valid(void **state)
{
	static const char *const bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
					  "a\xffz",   "\xe2\x82",     "ok \xc3\xa9 \"q\" \\ \x01"};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vd_json j = {0};

		vd_json_obj_begin(&j, NULL);
		vd_json_str(&j, "v", bad[i]);
		vd_json_obj_end(&j);
		assert_false(j.buf.oom);
		assert_true(vd_utf8_valid(j.buf.data, j.buf.len));
		for (size_t k = 0; k < j.buf.len; k++)
			assert_true((unsigned char)j.buf.data[k] >= 0x20 || j.buf.data[k] == '\n');
		vd_buf_free(&j.buf);
	}
	struct vd_json j = {0};
	vd_json_str(&j, NULL, "\xc0\xaf");
	assert_string_equal(j.buf.data, "\"\\u00c0\\u00af\"");
	vd_buf_free(&j.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_utf8_strict),
	    cmocka_unit_test(test_iconv_worst_expansion),
	    cmocka_unit_test(test_iconv_every_charset),
	    cmocka_unit_test(test_json_stays_valid),
	};
	return cmocka_run_group_tests_name("text", tests, NULL, NULL);
}
