/* Names in descriptors that point at the wrong thing, on a real file system.
 *
 * Every quoted file name (extent files, parentFileNameHint) of every
 * descriptor of the seed chains (mkseeds chains: seam_helper.h), in a text
 * file or embedded in a KDMV file, is replaced in turn with a FIFO (an open
 * must not block on it), ".", "..", "/", a device node, nothing, a missing
 * file, and each other file of the chain (loops, files of another format).
 * Each variant is opened with vd_chain_open() (again with VD_CHAIN_FORCE if
 * that fails), read at every level, described and closed. It must not hang
 * (SIGALRM), must return 0 or -errno, must log an error line naming a file
 * of the chain when the open fails (and every error line must), must leave
 * no descriptor open and every file of the chain byte-identical.
 *
 * Everything else a hostile input can do is fuzzed in memory (tests/fuzz),
 * far faster; FIFOs, devices and directories exist only here. This replaces
 * the deterministic mutation fuzz (test_fuzz.c) whose byte mutations the
 * libFuzzer harnesses now cover; its byte-level regression inputs live on
 * in tests/fuzz/regress/. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
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
#include "disk/endian.h"
#include "esx_helper.h"
#include "seam_helper.h"

#define ODD_MAX_FILES 8
#define ODD_HANG_S 30
#define ODD_FIFO "fifo" /* in every chain directory and in their parent */

struct odd_file {
	char name[300]; /* relative to the chain's directory */
	uint8_t *data;
	size_t len;
};

struct odd_chain {
	char dir[PATH_MAX], top[PATH_MAX];
	struct odd_file f[ODD_MAX_FILES];
	unsigned n;
};

static const char *const odd_names[] = {
    ODD_FIFO, "./" ODD_FIFO, "../" ODD_FIFO, ".", "..",
    "/",      "/dev/zero",   "/dev/null",    "",  "missing.vmdk",
};

static char current[PATH_MAX + 1024]; /* the variant running, for the alarm */

static void on_alarm(int sig)
{
	(void)sig;
	fprintf(stderr, "test_odd_names: HANG in %s\n", current);
	abort();
}

/* ---- the log: every error line must name a file of the chain ------------- */

static const struct odd_chain *log_chain;
static unsigned log_unnamed;
static char log_last[512];

static void odd_sink(void *ctx, enum vd_log_level lvl, const char *msg)
{
	bool named;

	(void)ctx;
	if (lvl != VD_LOG_ERR)
		return;
	snprintf(log_last, sizeof(log_last), "%s", msg);
	named = strstr(msg, log_chain->dir) != NULL;
	for (unsigned i = 0; i < log_chain->n && !named; i++)
		named = strstr(msg, log_chain->f[i].name) != NULL;
	if (!named) {
		printf("%s: error line names no file: %s\n", current, msg);
		log_unnamed++;
	}
}

/* ---- files ----------------------------------------------------------------- */

static char *odd_path(const struct odd_chain *c, const char *name)
{
	static char p[PATH_MAX + 512];

	snprintf(p, sizeof(p), "%s/%s", c->dir, name);
	return p;
}

static void odd_write(const struct odd_chain *c, const char *name, const void *p, size_t n)
{
	int fd = open(odd_path(c, name), O_WRONLY | O_TRUNC);

	assert_true(fd >= 0);
	assert_int_equal(n ? vd_pwrite_full(fd, p, n, 0) : 0, 0);
	close(fd);
}

static bool odd_same(const struct odd_chain *c, unsigned i, const uint8_t *p, size_t n)
{
	size_t len = 0;
	uint8_t *got = tu_read_file(odd_path(c, c->f[i].name), &len);
	bool same = got && len == n && !memcmp(got, p, n);

	free(got);
	return same;
}

/* Loads every file below the chain's directory (one level of
 * subdirectories: "sub/mid.vmdk"), then adds the FIFOs. */
static void odd_load(struct odd_chain *c, const char *top)
{
	const char *subs[] = {"", "sub/"};

	memset(c, 0, sizeof(*c));
	snprintf(c->top, sizeof(c->top), "%s", top);
	snprintf(c->dir, sizeof(c->dir), "%.*s", (int)(strrchr(top, '/') - top), top);
	for (unsigned s = 0; s < 2; s++) {
		DIR *d = opendir(odd_path(c, subs[s]));
		struct dirent *de;

		while (d && (de = readdir(d))) {
			struct odd_file *f;
			struct stat st;
			char rel[sizeof(f->name)];

			if (snprintf(rel, sizeof(rel), "%s%s", subs[s], de->d_name) >=
				(int)sizeof(rel) ||
			    de->d_name[0] == '.' || stat(odd_path(c, rel), &st) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			assert_true(c->n < ODD_MAX_FILES);
			f = &c->f[c->n++];
			memcpy(f->name, rel, sizeof(rel));
			f->data = tu_read_file(odd_path(c, f->name), &f->len);
			assert_non_null(f->data);
		}
		if (d)
			closedir(d);
	}
	assert_int_equal(esx_run("cd '%s' && rm -f " ODD_FIFO " ../" ODD_FIFO " && mkfifo " ODD_FIFO
				 " ../" ODD_FIFO,
				 c->dir),
			 0);
}

static void odd_free(struct odd_chain *c)
{
	for (unsigned i = 0; i < c->n; i++)
		free(c->f[i].data);
}

/* ---- one variant ----------------------------------------------------------- */

static int lowest_fd(void)
{
	int fd = open("/dev/null", O_RDONLY);

	close(fd);
	return fd;
}

static bool is_errno(int r)
{
	return r >= -4095 && r <= 0;
}

/* Opens the chain as it now is on disk and puts it through its paces.
 * Returns the number of broken rules (0 or 1). */
static unsigned odd_open(const struct odd_chain *c)
{
	unsigned flags[] = {0, VD_CHAIN_FORCE}, errs;
	struct vd_chain *ch = NULL;
	int fd0 = lowest_fd(), r = 0;

	log_unnamed = 0;
	alarm(ODD_HANG_S);
	for (unsigned i = 0; i < 2; i++) {
		errs = vd_log_error_count();
		r = vd_chain_open(c->top, flags[i], &ch);
		if (r == 0)
			break;
		if (!is_errno(r) || vd_log_error_count() == errs) {
			printf("%s: open failed with %d and %s\n", current, r,
			       vd_log_error_count() == errs ? "no error line" : "a bad code");
			alarm(0);
			return 1;
		}
	}
	if (r == 0) {
		for (unsigned l = 0; l < vd_chain_depth(ch); l++) {
			uint64_t size = vd_min_u64(vd_chain_size(ch, l), 4u << 20);
			uint8_t *buf = malloc(size ? size : 1);
			struct vd_json j = {0};

			assert_non_null(buf);
			r = vd_chain_read(ch, l, buf, size, 0);
			free(buf);
			if (!is_errno(r) || !is_errno(vd_chain_describe(ch, &j))) {
				printf("%s: level %u read %d\n", current, l, r);
				r = 1;
			}
			vd_buf_free(&j.buf);
		}
		vd_chain_close(ch);
	}
	alarm(0);
	if (lowest_fd() != fd0) {
		printf("%s: a descriptor is left open\n", current);
		return 1;
	}
	return r == 1 || log_unnamed;
}

/* Replaces [a, b) of file fi's descriptor text, which ends at end, with
 * name. A text file grows or shrinks; an embedded descriptor must fit its
 * region [.., lim) and is NUL-padded to it (otherwise the variant is
 * skipped). Runs the variant, checks that no file changed and restores the
 * file. Returns the number of broken rules. */
static unsigned odd_variant(struct odd_chain *c, unsigned fi, size_t a, size_t b, size_t end,
			    size_t lim, bool embedded, const char *name)
{
	const struct odd_file *f = &c->f[fi];
	size_t n = strlen(name), len = embedded ? f->len : f->len - (b - a) + n;
	uint8_t *m;
	unsigned bad;

	if (embedded && end - (b - a) + n > lim)
		return 0;
	m = calloc(1, len + 1);
	assert_non_null(m);
	memcpy(m, f->data, a);
	memcpy(m + a, name, n);
	if (embedded) {
		memcpy(m + a + n, f->data + b, end - b); /* the rest of the region stays 0 */
		memcpy(m + lim, f->data + lim, f->len - lim);
	} else {
		memcpy(m + a + n, f->data + b, f->len - b);
	}
	snprintf(current, sizeof(current), "%s: %s: \"%.*s\" -> \"%s\"", c->dir, f->name,
		 (int)(b - a), (const char *)f->data + a, name);
	odd_write(c, f->name, m, len);
	bad = odd_open(c);
	for (unsigned i = 0; i < c->n; i++) {
		bool same =
		    i == fi ? odd_same(c, i, m, len) : odd_same(c, i, c->f[i].data, c->f[i].len);

		if (!same) {
			printf("%s: %s was modified\n", current, c->f[i].name);
			bad = 1;
		}
	}
	odd_write(c, f->name, f->data, f->len);
	free(m);
	return bad;
}

/* The descriptor text of file f: [*off, *off + *lim) (the whole file, or the
 * region a KDMV header names). False when f holds none. */
static bool odd_desc(const struct odd_file *f, size_t *off, size_t *lim)
{
	if (f->len >= 512 && !memcmp(f->data, "KDMV", 4)) {
		uint64_t o = vd_get_le64(f->data + 28) * 512, n = vd_get_le64(f->data + 36) * 512;

		if (!o || o + n > f->len)
			return false;
		*off = o;
		*lim = o + n;
		return true;
	}
	*off = 0;
	*lim = f->len;
	return f->len > 20 && !memcmp(f->data, "# Disk DescriptorFile", 21);
}

/* Every quoted name on an extent line or the parentFileNameHint line of
 * file fi's descriptor, replaced by every odd name and every other file. */
static unsigned odd_file_run(struct odd_chain *c, unsigned fi, unsigned *runs)
{
	const struct odd_file *f = &c->f[fi];
	size_t off, lim, end;
	unsigned bad = 0;

	if (!odd_desc(f, &off, &lim))
		return 0;
	end = off + strnlen((const char *)f->data + off, lim - off);
	for (size_t line = off; line < end;) {
		const char *s = (const char *)f->data + line;
		const char *nl = memchr(s, '\n', end - line);
		size_t ll = nl ? (size_t)(nl - s) : end - line;
		const char *q1 = memchr(s, '"', ll), *q2;

		if (q1 &&
		    (!strncmp(s, "RW ", 3) || !strncmp(s, "RDONLY ", 7) ||
		     !strncmp(s, "NOACCESS ", 9) || !strncmp(s, "parentFileNameHint", 18)) &&
		    (q2 = memchr(q1 + 1, '"', ll - (size_t)(q1 + 1 - s)))) {
			size_t a = (size_t)(q1 + 1 - (const char *)f->data);
			size_t b = (size_t)(q2 - (const char *)f->data);

			for (size_t k = 0; k < sizeof(odd_names) / sizeof(odd_names[0]);
			     k++, (*runs)++)
				bad += odd_variant(c, fi, a, b, end, lim, off > 0, odd_names[k]);
			for (unsigned k = 0; k < c->n; k++, (*runs)++)
				bad += odd_variant(c, fi, a, b, end, lim, off > 0, c->f[k].name);
		}
		line += ll + 1;
	}
	return bad;
}

static void test_odd_names(void **state)
{
	const char *const *tops;
	unsigned n = seam_chains(&tops), bad = 0, runs = 0;

	(void)state;
	assert_true(n >= 8);
	vd_log_set_sink(odd_sink, NULL);
	for (unsigned i = 0; i < n; i++) {
		struct odd_chain c;

		odd_load(&c, tops[i]);
		log_chain = &c;
		snprintf(current, sizeof(current), "%s unchanged", c.top);
		if (odd_open(&c))
			fail_msg("%s does not pass unchanged", c.top);
		for (unsigned k = 0; k < c.n; k++)
			bad += odd_file_run(&c, k, &runs);
		odd_free(&c);
	}
	printf("odd names: %u variants, %u broke a rule\n", runs, bad);
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_odd_names),
	};
	struct sigaction sa = {.sa_handler = on_alarm};

	sigaction(SIGALRM, &sa, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
