/* Chain discovery and top-down resolution against the fake driver: deep
 * chains, short parents, zeroed grains, odd sizes, unaligned reads, and every
 * discovery failure (missing parent, loop, depth cap, id mismatch, mixed
 * formats). Expected bytes come from an independent per-byte model. */
#include <errno.h>
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
#include "fake_helper.h"
#include "test_util.h"

#define MAXL 300

struct model_layer {
	uint64_t size, grain;
	unsigned tag;
	uint8_t *map; /* 0 unalloc, 1 data, 2 zero */
};

static struct model_layer model[MAXL];
static unsigned n_model;

static int setup(void **state)
{
	(void)state;
	fake_dir_begin("chain");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (unsigned i = 0; i < n_model; i++)
		free(model[i].map), model[i].map = NULL;
	n_model = 0;
	fake_dir_end();
	return 0;
}

static void path_of(unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/l%03u.fake", tu_dir(), i);
}

/* Writes layer i (parent i-1 unless i == 0) with a random map. */
static void layer_write(unsigned i, uint64_t size, uint64_t grain, unsigned pct_data,
			unsigned pct_zero, const char *magic)
{
	struct model_layer *m = &model[i];
	char path[300];
	FILE *f;

	path_of(i, path, sizeof(path));
	m->size = size;
	m->grain = grain;
	m->tag = i + 1;
	free(m->map);
	m->map = calloc((size + grain - 1) / grain, 1);
	assert_non_null(m->map);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%s\nsize %llu\ngrain %llu\ntag %u\nid %x\n", magic ? magic : "FAKEDISK",
		(unsigned long long)size, (unsigned long long)grain, m->tag, 0x1000 + i);
	if (i > 0)
		fprintf(f, "parentid %x\nparent l%03u.fake\n", 0x1000 + i - 1, i - 1);
	for (uint64_t g = 0; g < (size + grain - 1) / grain; g++) {
		unsigned r = (unsigned)(rand() % 100);
		if (r < pct_data) {
			m->map[g] = 1;
			fprintf(f, "data %llu 1\n", (unsigned long long)g);
		} else if (r < pct_data + pct_zero) {
			m->map[g] = 2;
			fprintf(f, "zero %llu 1\n", (unsigned long long)g);
		}
	}
	fclose(f);
	if (i + 1 > n_model)
		n_model = i + 1;
}

static uint8_t model_byte(unsigned level, uint64_t x)
{
	if (x >= model[level].size)
		return 0;
	for (int l = (int)level; l >= 0; l--) {
		struct model_layer *m = &model[l];
		if (x >= m->size)
			return 0;
		switch (m->map[x / m->grain]) {
		case 1:
			return fake_byte(m->tag, x);
		case 2:
			return 0;
		}
	}
	return 0;
}

static void check_level(struct vd_chain *c, unsigned level, unsigned n_random)
{
	uint64_t size = vd_chain_size(c, level);
	uint8_t *buf = malloc(size + 20000);

	assert_non_null(buf);
	assert_int_equal(size, model[level].size);
	assert_int_equal(vd_chain_read(c, level, buf, size, 0), 0);
	for (uint64_t x = 0; x < size; x++)
		if (buf[x] != model_byte(level, x))
			fail_msg("level %u byte %llu: got %u want %u", level, (unsigned long long)x,
				 buf[x], model_byte(level, x));
	for (unsigned k = 0; k < n_random; k++) {
		uint64_t off = (uint64_t)rand() % size;
		size_t len = 1 + (size_t)rand() % 20000;
		/* Reads may run past the end: the tail is zero-filled. */
		memset(buf, 0xee, len);
		assert_int_equal(vd_chain_read(c, level, buf, len, off), 0);
		for (size_t i = 0; i < len; i++)
			assert_int_equal(buf[i], off + i < size ? model_byte(level, off + i) : 0);
	}
	free(buf);
}

static struct vd_chain *open_top(unsigned top, unsigned flags, int expect)
{
	struct vd_chain *c = NULL;
	char path[300];

	path_of(top, path, sizeof(path));
	assert_int_equal(vd_chain_open(path, flags, &c), expect);
	return c;
}

static void test_single_layer(void **state)
{
	(void)state;
	srand(1);
	layer_write(0, 1000000, 4096, 60, 10, NULL); /* not a multiple of the grain */
	struct vd_chain *c = open_top(0, 0, 0);
	assert_int_equal(vd_chain_depth(c), 1);
	check_level(c, 0, 200);
	vd_chain_close(c);
}

static void test_deep_chain(void **state)
{
	(void)state;
	srand(2);
	for (unsigned i = 0; i < 40; i++)
		layer_write(i, 512 * 1024, 4096, i == 0 ? 80 : 5, i == 0 ? 0 : 2, NULL);
	struct vd_chain *c = open_top(39, 0, 0);
	assert_int_equal(vd_chain_depth(c), 40);
	for (unsigned l = 0; l < 40; l++)
		check_level(c, l, 20);
	vd_chain_close(c);
}

static void test_short_and_long_parents(void **state)
{
	(void)state;
	srand(3);
	/* base 1 MiB full, middle shorter (300 KiB), top 1 MiB + 5 sectors. */
	layer_write(0, 1 << 20, 65536, 100, 0, NULL);
	layer_write(1, 300 * 1024, 65536, 20, 0, NULL);
	layer_write(2, (1 << 20) + 2560, 65536, 10, 10, NULL);
	struct vd_chain *c = open_top(2, 0, 0);
	for (unsigned l = 0; l < 3; l++)
		check_level(c, l, 50);
	/* Past the middle layer's end the top reads zeros, not the base's data. */
	uint8_t b[512];
	uint64_t x = 512 * 1024;
	if (model[2].map[x / 65536] == 0) {
		assert_int_equal(vd_chain_read(c, 2, b, sizeof(b), x), 0);
		for (size_t i = 0; i < sizeof(b); i++)
			assert_int_equal(b[i], 0);
	}
	vd_chain_close(c);
}

static void test_zeroed_grains_hide_parent(void **state)
{
	(void)state;
	srand(4);
	layer_write(0, 256 * 1024, 4096, 100, 0, NULL);
	layer_write(1, 256 * 1024, 4096, 0, 50, NULL);
	struct vd_chain *c = open_top(1, 0, 0);
	check_level(c, 1, 50);
	uint64_t data, zero;
	assert_int_equal(vd_chain_layer_usage(c, 1, &data, &zero), 0);
	assert_int_equal(data, 0);
	assert_true(zero > 0);
	assert_int_equal(vd_chain_layer_usage(c, 0, &data, &zero), 0);
	assert_int_equal(data, 256 * 1024);
	vd_chain_close(c);
}

static void test_lookup_cost_is_per_layer_not_per_byte(void **state)
{
	(void)state;
	srand(5);
	/* 32 layers, only the base holds data: a 1 MiB read must cost about
	 * one status call per layer per run, not per grain per layer. */
	for (unsigned i = 0; i < 32; i++)
		layer_write(i, 1 << 20, 4096, i == 0 ? 100 : 0, 0, NULL);
	struct vd_chain *c = open_top(31, 0, 0);
	uint8_t *buf = malloc(1 << 20);
	fake_status_calls = fake_read_calls = 0;
	assert_int_equal(vd_chain_read(c, 31, buf, 1 << 20, 0), 0);
	assert_true(fake_status_calls <= 32);
	assert_int_equal(fake_read_calls, 1);
	/* The chain remembers which layer holds each block (its skip map):
	 * reading there again asks the base alone. */
	fake_status_calls = fake_read_calls = 0;
	assert_int_equal(vd_chain_read(c, 31, buf, 1 << 20, 0), 0);
	assert_true(fake_status_calls <= 2);
	assert_int_equal(fake_read_calls, 1);
	fake_status_calls = 0;
	assert_int_equal(vd_chain_read(c, 31, buf, 4096, 300 * 1024), 0);
	assert_int_equal(fake_status_calls, 1);
	free(buf);
	check_level(c, 31, 10);
	vd_chain_close(c);
}

static void test_block_status_owner(void **state)
{
	(void)state;
	srand(6);
	layer_write(0, 64 * 1024, 4096, 0, 0, NULL);
	layer_write(1, 64 * 1024, 4096, 0, 0, NULL);
	model[1].map[3] = 1;
	/* rewrite layer 1 with grain 3 held */
	char path[300];
	path_of(1, path, sizeof(path));
	FILE *f = fopen(path, "a");
	fprintf(f, "data 3 1\n");
	fclose(f);
	struct vd_chain *c = open_top(1, 0, 0);
	uint64_t n;
	int owner;
	assert_int_equal(vd_chain_block_status(c, 1, 0, 65536, &n, &owner), VD_ZERO);
	assert_int_equal(n, 3 * 4096);
	assert_int_equal(owner, -1);
	assert_int_equal(vd_chain_block_status(c, 1, 3 * 4096 + 100, 65536, &n, &owner), VD_DATA);
	assert_int_equal(n, 4096 - 100);
	assert_int_equal(owner, 1);
	/* seen from the base, grain 3 is a hole */
	assert_int_equal(vd_chain_block_status(c, 0, 3 * 4096, 4096, &n, &owner), VD_ZERO);
	vd_chain_close(c);
}

static void test_missing_parent(void **state)
{
	(void)state;
	char path[300];
	layer_write(0, 65536, 4096, 50, 0, NULL);
	layer_write(1, 65536, 4096, 50, 0, NULL);
	path_of(0, path, sizeof(path));
	unlink(path);
	unsigned before = vd_log_error_count();
	open_top(1, 0, -ENOENT);
	assert_int_equal(vd_log_error_count(), before + 1);
}

static void write_raw(const char *name, const char *text)
{
	tu_write_text(tu_path("%s", name), text);
}

static void test_loops(void **state)
{
	(void)state;
	struct vd_chain *c = NULL;
	char path[300];

	write_raw("a.fake", "FAKEDISK\nsize 4096\ngrain 4096\nid 1\nparentid 2\nparent b.fake\n");
	write_raw("b.fake", "FAKEDISK\nsize 4096\ngrain 4096\nid 2\nparentid 1\nparent a.fake\n");
	write_raw("self.fake",
		  "FAKEDISK\nsize 4096\ngrain 4096\nid 3\nparentid 3\nparent self.fake\n");
	snprintf(path, sizeof(path), "%s/a.fake", tu_dir());
	assert_int_equal(vd_chain_open(path, 0, &c), -ELOOP);
	snprintf(path, sizeof(path), "%s/self.fake", tu_dir());
	assert_int_equal(vd_chain_open(path, VD_CHAIN_FORCE, &c), -ELOOP);
	/* a hard link is the same file under another name: still a loop */
	write_raw("c.fake", "FAKEDISK\nsize 4096\ngrain 4096\nid 4\nparentid 4\nparent d.fake\n");
	char a[300], b[300];
	snprintf(a, sizeof(a), "%s/c.fake", tu_dir());
	snprintf(b, sizeof(b), "%s/d.fake", tu_dir());
	assert_int_equal(link(a, b), 0);
	assert_int_equal(vd_chain_open(a, 0, &c), -ELOOP);
}

static void test_depth_cap(void **state)
{
	(void)state;
	srand(7);
	for (unsigned i = 0; i < 256; i++)
		layer_write(i, 4096, 4096, 50, 0, NULL);
	open_top(255, 0, -ELOOP);
	struct vd_chain *c = open_top(254, 0, 0);
	assert_int_equal(vd_chain_depth(c), 255);
	check_level(c, 254, 2);
	vd_chain_close(c);
}

static void test_id_mismatch_and_force(void **state)
{
	(void)state;
	struct vd_chain *c = NULL;
	char path[300];

	write_raw("base.fake", "FAKEDISK\nsize 8192\ngrain 4096\ntag 1\nid aaaa\ndata 0 2\n");
	write_raw("top.fake", "FAKEDISK\nsize 8192\ngrain 4096\ntag 2\nid bbbb\nparentid cccc\n"
			      "parent base.fake\n");
	snprintf(path, sizeof(path), "%s/top.fake", tu_dir());
	unsigned before = vd_log_error_count();
	assert_int_equal(vd_chain_open(path, 0, &c), -EINVAL);
	assert_int_equal(vd_log_error_count(), before + 1);
	assert_int_equal(vd_chain_open(path, VD_CHAIN_FORCE, &c), 0);
	assert_int_equal(vd_chain_warning_count(c), 1);
	assert_false(vd_chain_link(c, 1)->id_match);
	uint8_t b[8192];
	assert_int_equal(vd_chain_read(c, 1, b, sizeof(b), 0), 0);
	assert_int_equal(b[5000], fake_byte(1, 5000));
	vd_chain_close(c);
}

static void test_mixed_formats(void **state)
{
	(void)state;
	struct vd_chain *c = NULL;
	char path[300];

	write_raw("base.fake", "FAKEDIS2\nsize 8192\ngrain 4096\ntag 1\nid aaaa\n");
	write_raw("top.fake", "FAKEDISK\nsize 8192\ngrain 4096\ntag 2\nid bbbb\nparentid aaaa\n"
			      "parent base.fake\n");
	snprintf(path, sizeof(path), "%s/top.fake", tu_dir());
	assert_int_equal(vd_chain_open(path, 0, &c), -EINVAL);
	assert_int_equal(vd_chain_open(path, VD_CHAIN_ALLOW_MIXED, &c), 0);
	vd_chain_close(c);
}

/* A virtual size must fit off_t (st_size, read offsets): 2^63 - 1 bytes at
 * most. One byte more is refused at open, with one error line. (Grains of
 * 8 TiB keep the fake driver's per-grain map small.) */
static void test_size_beyond_off_t(void **state)
{
	(void)state;
	struct vd_chain *c = NULL;
	char path[300];
	unsigned before;

	write_raw("huge.fake", "FAKEDISK\nsize 9223372036854775808\ngrain 8796093022208\nid 1\n");
	write_raw("max.fake", "FAKEDISK\nsize 9223372036854775807\ngrain 8796093022208\nid 1\n");
	write_raw("top.fake", "FAKEDISK\nsize 4096\ngrain 4096\nid 2\nparentid 1\n"
			      "parent huge.fake\n");
	snprintf(path, sizeof(path), "%s/huge.fake", tu_dir());
	before = vd_log_error_count();
	assert_int_equal(vd_chain_open(path, 0, &c), -EFBIG);
	assert_int_equal(vd_log_error_count(), before + 1);
	/* as a parent too */
	snprintf(path, sizeof(path), "%s/top.fake", tu_dir());
	assert_int_equal(vd_chain_open(path, 0, &c), -EFBIG);
	snprintf(path, sizeof(path), "%s/max.fake", tu_dir());
	assert_int_equal(vd_chain_open(path, 0, &c), 0);
	assert_int_equal(vd_chain_size(c, 0), 9223372036854775807ull);
	vd_chain_close(c);
}

static void test_describe(void **state)
{
	(void)state;
	srand(8);
	layer_write(0, 65536, 4096, 50, 0, NULL);
	layer_write(1, 65536, 4096, 50, 0, NULL);
	struct vd_chain *c = open_top(1, 0, 0);
	struct vd_json j = {0};
	assert_int_equal(vd_chain_describe(c, &j), 0);
	assert_non_null(strstr(j.buf.data, "\"depth\": 2"));
	assert_non_null(strstr(j.buf.data, "l000.fake"));
	assert_non_null(strstr(j.buf.data, "\"parent_id\": \"00001000\""));
	assert_non_null(strstr(j.buf.data, "\"parent_found_by\": \"parent\""));
	assert_non_null(strstr(j.buf.data, "\"result\": \"ok\""));
	vd_buf_free(&j.buf);
	vd_chain_close(c);
}

static void touch(const char *rel)
{
	tu_write_text(tu_path("%s", rel), "");
}

static struct vd_policy hint_policy;

/* Resolves hint for tmpdir/child.vmdk under hint_policy; want_rel NULL:
 * nothing may be found. Returns *tried (malloc'd) when nothing was found. */
static char *expect_hint_how(const char *hint, const char *want_rel, const char *want_how)
{
	char child[300], want[600];
	char *tried = NULL, *how = NULL;

	snprintf(child, sizeof(child), "%s/child.vmdk", tu_dir());
	char *got = NULL;
	int r = vd_chain_resolve_hint(child, hint, &hint_policy, &got, &how, &tried);

	if (!want_rel) {
		assert_int_equal(r, -ENOENT);
		assert_null(got);
		assert_null(how);
		assert_non_null(tried);
		return tried;
	}
	snprintf(want, sizeof(want), "%s/%s", tu_dir(), want_rel);
	assert_int_equal(r, 0);
	assert_non_null(got);
	assert_string_equal(got, want);
	if (want_how)
		assert_string_equal(how, want_how);
	free(got);
	free(how);
	return NULL;
}

static void expect_hint(const char *hint, const char *want_rel)
{
	free(expect_hint_how(hint, want_rel, NULL));
}

static void test_hint_resolution(void **state)
{
	(void)state;
	char sub[300], abs[600], img[600];

	snprintf(sub, sizeof(sub), "%s/sub", tu_dir());
	assert_int_equal(mkdir(sub, 0755), 0);
	vd_policy_init(&hint_policy);
	snprintf(img, sizeof(img), "%s/child.vmdk", tu_dir());
	assert_int_equal(vd_policy_add_image(&hint_policy, img), 0);
	touch("base.vmdk");
	touch("sub/deep.vmdk");
	expect_hint_how("base.vmdk", "base.vmdk", "relative to the child's directory");
	expect_hint("sub/deep.vmdk", "sub/deep.vmdk");
	expect_hint_how("sub\\deep.vmdk", "sub/deep.vmdk", "Windows relative path, as written");
	expect_hint(".\\base.vmdk", "base.vmdk");
	expect_hint("./sub/deep.vmdk", "sub/deep.vmdk");
	expect_hint_how("C:\\Users\\u\\VMs\\W10\\base.vmdk", "base.vmdk",
			"base name, in the child's directory");
	expect_hint("\\\\server\\share\\base.vmdk", "base.vmdk");
	expect_hint("/vmfs/volumes/5f2a1b3c-0d4e5f60-7a8b-001122334455/vm1/base.vmdk", "base.vmdk");
	expect_hint("/nonexistent/dir/base.vmdk", "base.vmdk");
	expect_hint("../elsewhere/base.vmdk", "base.vmdk");
	snprintf(abs, sizeof(abs), "%s/sub/deep.vmdk", tu_dir());
	expect_hint_how(abs, "sub/deep.vmdk", "absolute path, as written");
	/* Wine's Z: drive is / (vdmount's VHDX absolute_win32_path) */
	{
		char z[700], *q;
		snprintf(z, sizeof(z), "\\\\?\\Z:%s", abs);
		for (q = z + 6; *q; q++)
			if (*q == '/')
				*q = '\\';
		expect_hint_how(z, "sub/deep.vmdk", "Wine's Z: drive, which is /");
		expect_hint_how(z + 4, "sub/deep.vmdk", "Wine's Z: drive, which is /");
		z[4] = 'Y'; /* another drive letter is foreign: the base name only */
		expect_hint(z, NULL);
	}
	expect_hint("missing.vmdk", NULL);
	expect_hint("", NULL);
	expect_hint("sub", NULL); /* a directory is not a parent */
	vd_policy_free(&hint_policy);
}

/* Class 2 of the hostile-evidence issue: a hint may not lead outside the
 * image directories (absolute path, ../, or a symlink), nor to a device. */
static void test_hint_confinement(void **state)
{
	char out[] = "/tmp/vd-outside.XXXXXX", path[700], img[600], srch[600];
	char *tried;

	(void)state;
	assert_non_null(mkdtemp(out));
	snprintf(path, sizeof(path), "%s/secret.vmdk", out);
	tu_write_text(path, "");
	vd_policy_init(&hint_policy);
	snprintf(img, sizeof(img), "%s/child.vmdk", tu_dir());
	assert_int_equal(vd_policy_add_image(&hint_policy, img), 0);

	/* absolute, relative and symlinked ways out are refused, naming the option */
	tried = expect_hint_how(path, NULL, NULL);
	assert_non_null(strstr(tried, "--allow-outside"));
	free(tried);
	snprintf(srch, sizeof(srch), "../%s/secret.vmdk", strrchr(out, '/') + 1);
	tried = expect_hint_how(srch, NULL, NULL);
	assert_non_null(strstr(tried, "--allow-outside"));
	free(tried);
	snprintf(srch, sizeof(srch), "%s/link.vmdk", tu_dir());
	assert_int_equal(symlink(path, srch), 0);
	tried = expect_hint_how("link.vmdk", NULL, NULL);
	assert_non_null(strstr(tried, "really"));
	free(tried);
	tried = expect_hint_how("/dev/null", NULL, NULL);
	assert_non_null(strstr(tried, "not a regular file"));
	free(tried);
	/* the base name inside the child's directory still works */
	touch("secret.vmdk");
	expect_hint_how(path, "secret.vmdk", "base name, in the child's directory");
	unlink(path);

	/* --search makes a directory a root and a place to look */
	char found[700];
	snprintf(found, sizeof(found), "%s/moved.vmdk", out);
	tu_write_text(found, "");
	assert_int_equal(vd_policy_add_search(&hint_policy, out), 0);
	char *how = NULL, *got = NULL;

	assert_int_equal(
	    vd_chain_resolve_hint(img, "C:\\old\\moved.vmdk", &hint_policy, &got, &how, NULL), 0);
	assert_non_null(got);
	assert_non_null(strstr(how, "--search"));
	free(got);
	free(how);
	vd_policy_free(&hint_policy);

	/* --allow-outside lifts the rule and records the exception */
	vd_policy_init(&hint_policy);
	assert_int_equal(vd_policy_add_image(&hint_policy, img), 0);
	hint_policy.allow_outside = true;
	assert_int_equal(vd_chain_resolve_hint(img, found, &hint_policy, &got, &how, NULL), 0);
	assert_non_null(got);
	assert_int_equal(hint_policy.n_exceptions, 1);
	assert_non_null(strstr(hint_policy.exceptions[0], "--allow-outside"));
	free(got);
	free(how);
	vd_policy_free(&hint_policy);
	unlink(found);
	rmdir(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_single_layer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deep_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_and_long_parents, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_zeroed_grains_hide_parent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lookup_cost_is_per_layer_not_per_byte, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_block_status_owner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_parent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_depth_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_id_mismatch_and_force, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mixed_formats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_size_beyond_off_t, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_describe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hint_resolution, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hint_confinement, setup, teardown),
	};
	return cmocka_run_group_tests_name("chain", tests, NULL, NULL);
}
