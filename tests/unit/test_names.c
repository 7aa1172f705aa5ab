/* Names front ends show (chain/path.c): disk directory names for several
 * images (stems made unique with -2, -3, ...) and layer names (NN-<stem>).
 * The expected names are written out by hand; the scale case checks that
 * naming thousands of images sharing a stem (one disk.vmdk per VM directory)
 * costs time linear in their number: it runs under alarm(), whose default
 * action kills the test if the naming takes minutes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "chain/chain.h"
#include "fake_helper.h"
#include "test_util.h"

static void expect_names(const char *const *paths, unsigned n, const char *const *want)
{
	char **names = calloc(n, sizeof(*names));

	assert_non_null(names);
	assert_int_equal(vd_disk_names(paths, n, names), 0);
	for (unsigned i = 0; i < n; i++)
		assert_string_equal(names[i], want[i]);
	for (unsigned i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

#define NAME_MAX_BYTES 255

static int setup(void **state)
{
	(void)state;
	fake_dir_begin("names");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_dir_end();
	return 0;
}

/* The suffix a shortened name ends with: "~" and the CRC-32 (zlib) of the
 * full stem as 8 lowercase hex digits. */
static void crc_suffix(const char *stem, char out[10])
{
	snprintf(out, 10, "~%08lx", crc32(0, (const unsigned char *)stem, (unsigned)strlen(stem)));
}

/* Layer 1 of a one-layer fake chain in a file named file_name. */
static char *layer_name_of(const char *file_name)
{
	const char *path = tu_path("%s", file_name);
	struct vd_chain *c;
	char *name;

	tu_write_text(path, "FAKEDISK\nsize 4096\ngrain 512\ntag 1\nid 1\n");
	assert_int_equal(vd_chain_open(path, 0, &c), 0);
	name = vd_chain_layer_name(c, 0);
	assert_non_null(name);
	vd_chain_close(c);
	unlink(path);
	return name;
}

static void test_long_layer_names(void **state)
{
	char stem[300], want[320], sfx[10], *got;

	(void)state;
	/* fits exactly: "01-" + 252 bytes */
	memset(stem, 'a', 252);
	stem[252] = 0;
	snprintf(want, sizeof(want), "01-%s", stem);
	got = layer_name_of(stem);
	assert_string_equal(got, want);
	free(got);

	/* 255-byte file name, no known extension: 258 bytes unshortened */
	memset(stem, 'b', 255);
	stem[255] = 0;
	crc_suffix(stem, sfx);
	snprintf(want, sizeof(want), "01-%.*s%s", NAME_MAX_BYTES - 3 - 9, stem, sfx);
	got = layer_name_of(stem);
	assert_int_equal(strlen(got), NAME_MAX_BYTES);
	assert_string_equal(got, want);
	free(got);

	/* the cut never splits a UTF-8 character: "cc" then 2-byte characters,
	 * so byte 243 of the stem (the limit) is the first byte of one */
	strcpy(stem, "cc");
	for (unsigned i = 0; i < 124; i++)
		strcat(stem, "\xc3\xa9"); /* U+00E9 */
	strcat(stem, ".bak");		  /* 254 bytes, no known extension */
	crc_suffix(stem, sfx);
	snprintf(want, sizeof(want), "01-%.*s%s", 242, stem, sfx);
	got = layer_name_of(stem);
	assert_string_equal(got, want);
	free(got);
}

static void test_long_disk_names(void **state)
{
	char stem[300], path[310], sfx[10], want[300];

	(void)state;
	/* a 255-byte stem fits alone; its second copy needs "-2" and is shortened */
	memset(stem, 'd', 255);
	stem[255] = 0;
	snprintf(path, sizeof(path), "/x/%s", stem);
	crc_suffix(stem, sfx);
	snprintf(want, sizeof(want), "%.*s%s-2", NAME_MAX_BYTES - 9 - 2, stem, sfx);
	{
		const char *p[] = {path, path, "/y/short.vmdk"};
		const char *w[] = {stem, want, "short"};
		expect_names(p, 3, w);
	}
}

static void test_disk_names(void **state)
{
	(void)state;
	{
		const char *p[] = {"/a/disk.vmdk", "/b/disk.vmdk", "/c/other.vhd", "/d/DISK.VMDK"};
		const char *w[] = {"disk", "disk-2", "other", "DISK"};
		expect_names(p, 4, w);
	}
	{
		/* a stem that looks like an earlier image's renamed one */
		const char *p[] = {"/a/disk.vmdk", "/b/disk.vmdk", "/c/disk-2.vmdk",
				   "/d/disk.vmdk"};
		const char *w[] = {"disk", "disk-2", "disk-2-2", "disk-3"};
		expect_names(p, 4, w);
	}
	{
		/* the other order: disk-2 is taken by a real stem first */
		const char *p[] = {"/c/disk-2.vmdk", "/a/disk.vmdk", "/b/disk.vmdk",
				   "/d/disk.vmdk"};
		const char *w[] = {"disk-2", "disk", "disk-3", "disk-4"};
		expect_names(p, 4, w);
	}
	{
		/* names a directory cannot have */
		const char *p[] = {"/a/..", "/b/.", "/c/.", "/d/x.vmdk.bak"};
		const char *w[] = {"..-2", ".-2", ".-3", "x.vmdk.bak"};
		expect_names(p, 4, w);
	}
}

static void test_disk_names_scale(void **state)
{
	enum { N = 50000 };
	char **paths = calloc(N, sizeof(*paths)), **names = calloc(N, sizeof(*names));
	char want[32];

	(void)state;
	assert_non_null(paths);
	assert_non_null(names);
	for (unsigned i = 0; i < N; i++)
		assert_true(asprintf(&paths[i], "/evidence/vm%05u/disk.vmdk", i) > 0);
	/* Linear naming takes milliseconds even under ASan; the cubic search
	 * this replaces needs hours for N images, a quadratic one minutes. */
	alarm(60);
	assert_int_equal(vd_disk_names((const char *const *)paths, N, names), 0);
	alarm(0);
	assert_string_equal(names[0], "disk");
	for (unsigned i = 1; i < N; i++) {
		snprintf(want, sizeof(want), "disk-%u", i + 1);
		assert_string_equal(names[i], want);
	}
	for (unsigned i = 0; i < N; i++) {
		free(paths[i]);
		free(names[i]);
	}
	free(paths);
	free(names);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_disk_names),
	    cmocka_unit_test(test_disk_names_scale),
	    cmocka_unit_test_setup_teardown(test_long_layer_names, setup, teardown),
	    cmocka_unit_test(test_long_disk_names),
	};
	return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
