/* Fault injection through the I/O seam (disk/util.h): the Nth call a chain
 * open, its reads and describe make to reach an input file fails, for every
 * N in turn and every seed chain of every format (seam_helper.h).
 *
 *   EIO:   vd_open_ro, vd_pread_full, vd_preadv_full, vd_fd_size, vd_fstat, vd_stat,
 *          vd_realpath or vd_fd_realpath fails
 *          with -EIO: the open or the read fails cleanly (-errno, an error
 *          line) or the run gives the clean run's bytes; a second pass of
 *          reads in the same open gives the clean bytes (nothing
 *          half-initialised is used later); no descriptor is left open.
 *   short, EINTR: the Nth pread(2) or preadv(2) returns half of what was
 *          asked, or fails with EINTR: vd_pread_full() and vd_preadv_full()
 *          must hide both; the run is identical to the clean one.
 * Each run has SEAM_HANG_S seconds (SIGALRM aborts a hang). Under ASan (the
 * asan tree of scripts/test.sh) every run is also checked for memory errors
 * and, at exit, leaks. Linked with vd_io_seam() and --wrap=pread64,preadv64
 * (tests/CMakeLists.txt). */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "disk/ahead.h"
#include "disk/util.h"
#include "seam_helper.h"

#define SEAM_HANG_S 30

enum fault { F_NONE, F_EIO, F_SHORT, F_EINTR };
static const char *const fault_names[] = {"none", "EIO", "short read", "EINTR"};

static enum fault mode;
static unsigned long calls, preads; /* seam calls and pread(2) calls so far */
static unsigned long fail_at;	    /* 1-based index of the call to fail */
static int open_fds;

/* True when this seam call is the one to fail with EIO. */
static enum seam_phase fired; /* where the fault fired */

static bool eio_now(void)
{
	if (++calls != fail_at || mode != F_EIO)
		return false;
	fired = seam_phase;
	return true;
}

int __real_vd_open_ro(const char *path);
int __wrap_vd_open_ro(const char *path);
int __wrap_vd_open_ro(const char *path)
{
	int fd;

	if (eio_now())
		return -EIO;
	fd = __real_vd_open_ro(path);
	open_fds += fd >= 0;
	return fd;
}

void __real_vd_close(int fd);
void __wrap_vd_close(int fd);
void __wrap_vd_close(int fd)
{
	open_fds--;
	__real_vd_close(fd);
}

int __real_vd_pread_full(int fd, void *buf, size_t len, uint64_t off);
int __wrap_vd_pread_full(int fd, void *buf, size_t len, uint64_t off);
int __wrap_vd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	return eio_now() ? -EIO : __real_vd_pread_full(fd, buf, len, off);
}

int __real_vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off);
int __wrap_vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off);
int __wrap_vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off)
{
	return eio_now() ? -EIO : __real_vd_preadv_full(fd, iov, n, off);
}

int __real_vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int __wrap_vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int __wrap_vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	fail_msg("a read-only chain wrote %zu bytes at %llu", len, (unsigned long long)off);
	return __real_vd_pwrite_full(fd, buf, len, off);
}

int __real_vd_fd_size(int fd, uint64_t *out);
int __wrap_vd_fd_size(int fd, uint64_t *out);
int __wrap_vd_fd_size(int fd, uint64_t *out)
{
	return eio_now() ? -EIO : __real_vd_fd_size(fd, out);
}

int __real_vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out);
int __wrap_vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out);
int __wrap_vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out)
{
	return eio_now() ? -EIO : __real_vd_seek_data(fd, off, whence, out);
}

/* Advice cannot fail (it has no result): passed through, so test_faults
 * also runs every prefetch against real files. */
void __real_vd_advise_willneed(int fd, uint64_t off, uint64_t len);
void __wrap_vd_advise_willneed(int fd, uint64_t off, uint64_t len);
void __wrap_vd_advise_willneed(int fd, uint64_t off, uint64_t len)
{
	__real_vd_advise_willneed(fd, off, len);
}

int __real_vd_fstat(int fd, struct stat *st);
int __wrap_vd_fstat(int fd, struct stat *st);
int __wrap_vd_fstat(int fd, struct stat *st)
{
	return eio_now() ? -EIO : __real_vd_fstat(fd, st);
}

int __real_vd_stat(const char *path, struct stat *st);
int __wrap_vd_stat(const char *path, struct stat *st);
int __wrap_vd_stat(const char *path, struct stat *st)
{
	return eio_now() ? -EIO : __real_vd_stat(path, st);
}

int __real_vd_realpath(const char *path, char **out);
int __wrap_vd_realpath(const char *path, char **out);
int __wrap_vd_realpath(const char *path, char **out)
{
	if (eio_now()) {
		*out = NULL;
		return -EIO;
	}
	return __real_vd_realpath(path, out);
}

int __real_vd_fd_realpath(int fd, const char *path, char *real);
int __wrap_vd_fd_realpath(int fd, const char *path, char *real);
int __wrap_vd_fd_realpath(int fd, const char *path, char *real)
{
	return eio_now() ? -EIO : __real_vd_fd_realpath(fd, path, real);
}

/* pread(2) itself, as vd_pread_full() calls it (pread64 with 64-bit off_t). */
ssize_t __real_pread64(int fd, void *buf, size_t count, off_t off);
ssize_t __wrap_pread64(int fd, void *buf, size_t count, off_t off);
ssize_t __wrap_pread64(int fd, void *buf, size_t count, off_t off)
{
	if (++preads == fail_at && mode != F_EIO)
		fired = seam_phase;
	if (preads == fail_at && mode == F_EINTR) {
		errno = EINTR;
		return -1;
	}
	if (preads == fail_at && mode == F_SHORT && count > 1)
		count /= 2;
	return __real_pread64(fd, buf, count, off);
}

/* preadv(2), as vd_preadv_full() calls it: counted with pread(2). A short
 * one reads everything but reports half. */
ssize_t __real_preadv64(int fd, const struct iovec *iov, int n, off_t off);
ssize_t __wrap_preadv64(int fd, const struct iovec *iov, int n, off_t off);
ssize_t __wrap_preadv64(int fd, const struct iovec *iov, int n, off_t off)
{
	ssize_t got;

	if (++preads == fail_at && mode != F_EIO)
		fired = seam_phase;
	if (preads == fail_at && mode == F_EINTR) {
		errno = EINTR;
		return -1;
	}
	got = __real_preadv64(fd, iov, n, off);
	return preads == fail_at && mode == F_SHORT && got > 1 ? got / 2 : got;
}

static void on_alarm(int sig)
{
	static const char msg[] = "test_faults: a run hung\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	abort();
}

/* One run of the scenario with call n failing as f. */
static void run(const char *top, enum fault f, unsigned long n, struct seam_outcome *o)
{
	mode = f;
	fail_at = n;
	calls = preads = 0;
	open_fds = 0;
	fired = SEAM_IDLE;
	alarm(SEAM_HANG_S);
	seam_run(top, o);
	alarm(0);
	o->fault_phase = fired;
	mode = F_NONE;
}

static void test_faults(void **state)
{
	const char *const *tops;
	unsigned n = seam_chains(&tops), bad = 0;
	unsigned long runs = 0;

	(void)state;
	vd_ahead_disable(); /* its worker's preads would come at unpredictable counts */
	assert_true(n >= 8);
	for (unsigned i = 0; i < n; i++) {
		struct seam_outcome clean, o;
		unsigned long n_calls, n_preads;

		run(tops[i], F_NONE, 0, &clean);
		n_calls = calls;
		n_preads = preads;
		if (clean.open_rc != 0)
			fail_msg("%s does not open without faults: %s", tops[i], clean.last_error);
		for (enum fault f = F_EIO; f <= F_EINTR; f++) {
			unsigned long total = f == F_EIO ? n_calls : n_preads;

			for (unsigned long k = 1; k <= total; k++) {
				char what[512];
				bool ok;

				run(tops[i], f, k, &o);
				runs++;
				snprintf(what, sizeof(what), "%s: %s at call %lu of %lu", tops[i],
					 fault_names[f], k, total);
				ok = f == F_EIO ? seam_clean(&clean, &o, 0, what)
						: seam_same(&clean, &o);
				if (!ok && f != F_EIO)
					printf("%s: the run differs from the clean one\n", what);
				if (open_fds != 0) {
					printf("%s: %d descriptor(s) left open\n", what, open_fds);
					ok = false;
				}
				bad += !ok;
				seam_outcome_free(&o);
			}
		}
		printf("faults: %-40s %lu seam calls, %lu preads\n", strrchr(tops[i], '/') + 1,
		       n_calls, n_preads);
		seam_outcome_free(&clean);
	}
	printf("faults: %lu runs, %u failures\n", runs, bad);
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_faults),
	};
	struct sigaction sa = {.sa_handler = on_alarm};

	sigaction(SIGALRM, &sa, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
