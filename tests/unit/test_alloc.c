/* Allocation failures: the Nth allocation a chain open, its reads and
 * describe make fails, for every N in turn and every seed chain of every
 * format (seam_helper.h), as libyal's tests do. Each run must end cleanly:
 * what fails returns exactly -ENOMEM (a failed open also logs an error
 * line), what succeeds gives the clean run's bytes, a second pass of reads
 * succeeds as in the clean run, and every allocation is freed at close.
 *
 * The seam is the linker's: this executable is linked with --wrap=malloc,
 * calloc, realloc, free, strdup, strndup, asprintf, vasprintf, realpath and
 * inflateInit2_
 * (tests/CMakeLists.txt), so every call the library makes to them lands in
 * the __wrap_ functions below, with or without ASan (__real_malloc is then
 * ASan's), and no source file of the library changes. Only calls made while
 * the library runs (seam_enter/seam_leave) are counted or failed;
 * allocations inside libc (iconv_open, qsort) are out of reach and left
 * alone. Under ASan, LeakSanitizer checks at exit what the count cannot
 * see. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "disk/ahead.h"
#include "disk/util.h"
#include "seam_helper.h"

static bool in_lib;
static unsigned long allocs; /* allocation calls made by the library so far */
static unsigned long fail_at;
static long live; /* allocations made by the library minus frees */

static void lib_enter(void)
{
	in_lib = true;
}

static void lib_leave(void)
{
	in_lib = false;
}

static enum seam_phase fired; /* where the failure was injected */

/* True when this allocation is the one to fail. */
static bool fail_now(void)
{
	if (!in_lib || ++allocs != fail_at)
		return false;
	fired = seam_phase;
	return true;
}

static void *counted(void *p)
{
	live += p && in_lib;
	return p;
}

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : counted(__real_malloc(n));
}

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : counted(__real_calloc(n, size));
}

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
	void *q;

	if (fail_now())
		return NULL;
	q = __real_realloc(p, n);
	return p ? q : counted(q);
}

void __real_free(void *p);
void __wrap_free(void *p);
void __wrap_free(void *p)
{
	live -= p && in_lib;
	__real_free(p);
}

char *__real_strdup(const char *s);
char *__wrap_strdup(const char *s);
char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : counted(__real_strdup(s));
}

char *__real_strndup(const char *s, size_t n);
char *__wrap_strndup(const char *s, size_t n);
char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : counted(__real_strndup(s, n));
}

int __real_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);
int __wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (fail_now())
		return -1;
	va_start(ap, fmt);
	r = __real_vasprintf(out, fmt, ap);
	va_end(ap);
	if (r >= 0)
		counted(*out);
	return r;
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	int r;

	if (fail_now())
		return -1;
	r = __real_vasprintf(out, fmt, ap);
	if (r >= 0)
		counted(*out);
	return r;
}

/* realpath(path, NULL) allocates inside libc; the library frees the result. */
char *__real_realpath(const char *path, char *resolved);
char *__wrap_realpath(const char *path, char *resolved);
char *__wrap_realpath(const char *path, char *resolved)
{
	if (!resolved && fail_now()) {
		errno = ENOMEM;
		return NULL;
	}
	return resolved ? __real_realpath(path, resolved) : counted(__real_realpath(path, NULL));
}

/* zlib allocates through its own malloc calls inside libz: failing its init
 * stands for them. */
int __real_inflateInit2_(z_streamp strm, int bits, const char *version, int size);
int __wrap_inflateInit2_(z_streamp strm, int bits, const char *version, int size);
int __wrap_inflateInit2_(z_streamp strm, int bits, const char *version, int size)
{
	return fail_now() ? Z_MEM_ERROR : __real_inflateInit2_(strm, bits, version, size);
}

static void run(const char *top, unsigned long n, struct seam_outcome *o)
{
	fail_at = n;
	allocs = 0;
	live = 0;
	fired = SEAM_IDLE;
	seam_run(top, o);
	o->fault_phase = fired;
	fail_at = 0;
}

static void test_alloc(void **state)
{
	const char *const *tops;
	unsigned n, bad = 0;
	unsigned long runs = 0;

	(void)state;
	/* the stream read-ahead worker would allocate (and fail) on its own
	 * thread, at times no count can predict */
	vd_ahead_disable();
	seam_enter = lib_enter;
	seam_leave = lib_leave;
	n = seam_chains(&tops);
	assert_true(n >= 8);
	for (unsigned i = 0; i < n; i++) {
		struct seam_outcome clean, o;
		unsigned long total;

		run(tops[i], 0, &clean);
		total = allocs;
		if (clean.open_rc != 0)
			fail_msg("%s does not open: %s", tops[i], clean.last_error);
		if (live != 0)
			fail_msg("%s: %ld allocations not freed by close", tops[i], live);
		for (unsigned long k = 1; k <= total; k++) {
			char what[512];
			bool ok;

			run(tops[i], k, &o);
			runs++;
			snprintf(what, sizeof(what), "%s: allocation %lu of %lu fails", tops[i], k,
				 total);
			ok = seam_clean(&clean, &o, -ENOMEM, what);
			if (live != 0) {
				printf("%s: %ld allocation(s) not freed\n", what, live);
				ok = false;
			}
			bad += !ok;
			seam_outcome_free(&o);
		}
		printf("alloc: %-40s %lu allocations\n", strrchr(tops[i], '/') + 1, total);
		seam_outcome_free(&clean);
	}
	printf("alloc: %lu runs, %u failures\n", runs, bad);
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_alloc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
