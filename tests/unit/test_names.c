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

#include "chain/chain.h"

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
	};
	return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
