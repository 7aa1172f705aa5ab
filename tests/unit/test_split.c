/* Large reads on two threads (fs/split.h), against a model view: a read
 * alone in flight of FS_SPLIT_MIN bytes or more has its second half read by
 * another thread, the halves meet on a 64 KiB boundary and compose the bytes
 * the whole read gives; a small read, or a read while another is in flight,
 * is read whole by its own thread; an error in either half is returned;
 * fs_split_disable() leaves every read whole.
 *
 * fs/split.c is compiled into this test with vd_view_read renamed to the
 * model below, so that the test sees which thread read which range (fs/ is
 * not part of vdcore). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define vd_view_read model_view_read
#include "fs/split.c"
#undef vd_view_read

#define MAX_CALLS 8

static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mcond = PTHREAD_COND_INITIALIZER;
struct call {
	pthread_t thread;
	uint64_t off;
	size_t len;
};
static struct call calls[MAX_CALLS];
static unsigned ncalls;
static uint64_t fail_at = UINT64_MAX; /* a read covering this offset fails */
static bool hold_small, small_entered, release_small;

static uint8_t byte_at(uint64_t off)
{
	return (uint8_t)((off * 7 + (off >> 16)) % 251);
}

int model_view_read(const struct vd_view *v, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	(void)v;
	pthread_mutex_lock(&mlock);
	if (ncalls >= MAX_CALLS)
		abort(); /* not a cmocka assert: this may be the helper thread */
	calls[ncalls].thread = pthread_self();
	calls[ncalls].off = off;
	calls[ncalls].len = len;
	ncalls++;
	if (hold_small && len < FS_SPLIT_MIN) {
		small_entered = true;
		pthread_cond_broadcast(&mcond);
		while (!release_small)
			pthread_cond_wait(&mcond, &mlock);
	}
	pthread_mutex_unlock(&mlock);
	for (size_t i = 0; i < len; i++)
		p[i] = byte_at(off + i);
	return fail_at >= off && fail_at - off < len ? -EIO : 0;
}

static int reset(void **st)
{
	(void)st;
	ncalls = 0;
	fail_at = UINT64_MAX;
	hold_small = small_entered = release_small = false;
	return 0;
}

static void check_bytes(const uint8_t *buf, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != byte_at(off + i))
			fail_msg("byte %zu of the read at %llu is wrong", i,
				 (unsigned long long)off);
}

static void test_alone_splits(void **st)
{
	static const struct {
		size_t len;
		uint64_t off;
	} cases[] = {
	    {1u << 20, 0}, {FS_SPLIT_MIN, 4096}, {(1u << 20) + 12345, 777}, {8u << 20, 1u << 30}};
	struct vd_view v = {0};

	(void)st;
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t len = cases[c].len;
		uint8_t *buf = malloc(len);

		assert_non_null(buf);
		reset(NULL);
		assert_int_equal(fs_split_read(&v, buf, len, cases[c].off), 0);
		check_bytes(buf, len, cases[c].off);
		assert_int_equal(ncalls, 2);
		{
			/* this thread read the first half, another the second */
			unsigned a = calls[0].off == cases[c].off ? 0 : 1, b = 1 - a;
			size_t half = calls[a].len;

			assert_int_equal(calls[a].off, cases[c].off);
			assert_true(pthread_equal(calls[a].thread, pthread_self()));
			assert_false(pthread_equal(calls[b].thread, pthread_self()));
			assert_int_equal(half % SPLIT_ALIGN, 0);
			assert_true(half <= len / 2 && half + SPLIT_ALIGN > len / 2);
			assert_int_equal(calls[b].off, cases[c].off + half);
		}
		assert_int_equal(calls[0].len + calls[1].len, len);
		free(buf);
	}
}

static void test_small_whole(void **st)
{
	struct vd_view v = {0};
	size_t len = FS_SPLIT_MIN - 4096;
	uint8_t *buf = malloc(len);

	(void)st;
	assert_non_null(buf);
	assert_int_equal(fs_split_read(&v, buf, len, 8192), 0);
	check_bytes(buf, len, 8192);
	assert_int_equal(ncalls, 1);
	assert_true(pthread_equal(calls[0].thread, pthread_self()));
	free(buf);
}

static int small_ret = 1;

static void *small_reader(void *arg)
{
	struct vd_view v = {0};
	uint8_t buf[4096];

	(void)arg;
	small_ret = fs_split_read(&v, buf, sizeof(buf), 0);
	return NULL;
}

static void test_not_alone_whole(void **st)
{
	struct vd_view v = {0};
	size_t len = 1u << 20;
	uint8_t *buf = malloc(len);
	pthread_t t;
	struct call big;
	unsigned n;
	int r;

	(void)st;
	assert_non_null(buf);
	hold_small = true;
	assert_int_equal(pthread_create(&t, NULL, small_reader, NULL), 0);
	pthread_mutex_lock(&mlock);
	while (!small_entered)
		pthread_cond_wait(&mcond, &mlock);
	pthread_mutex_unlock(&mlock);
	/* a 4 KiB read is in flight: the large one is read whole, here */
	r = fs_split_read(&v, buf, len, 1u << 20);
	pthread_mutex_lock(&mlock);
	n = ncalls;
	big = calls[1];
	release_small = true; /* before any assert: a failed one leaves no reader held */
	pthread_cond_broadcast(&mcond);
	pthread_mutex_unlock(&mlock);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(small_ret, 0);
	assert_int_equal(r, 0);
	check_bytes(buf, len, 1u << 20);
	assert_int_equal(n, 2);
	assert_int_equal(big.len, len);
	assert_true(pthread_equal(big.thread, pthread_self()));
	/* alone again: split again */
	ncalls = 0;
	hold_small = false;
	assert_int_equal(fs_split_read(&v, buf, len, 0), 0);
	assert_int_equal(ncalls, 2);
	free(buf);
}

static void test_error_either_half(void **st)
{
	struct vd_view v = {0};
	size_t len = 1u << 20;
	uint8_t *buf = malloc(len);

	(void)st;
	assert_non_null(buf);
	fail_at = 100; /* the first half, this thread's */
	assert_int_equal(fs_split_read(&v, buf, len, 0), -EIO);
	assert_int_equal(ncalls, 2);
	ncalls = 0;
	fail_at = len - 1; /* the second half, the helper's */
	assert_int_equal(fs_split_read(&v, buf, len, 0), -EIO);
	assert_int_equal(ncalls, 2);
	ncalls = 0;
	fail_at = UINT64_MAX;
	assert_int_equal(fs_split_read(&v, buf, len, 0), 0);
	free(buf);
}

/* Last: the helper stays off for the rest of the process. */
static void test_disabled_whole(void **st)
{
	struct vd_view v = {0};
	size_t len = 2u << 20;
	uint8_t *buf = malloc(len);

	(void)st;
	assert_non_null(buf);
	fs_split_disable();
	assert_int_equal(fs_split_read(&v, buf, len, 0), 0);
	check_bytes(buf, len, 0);
	assert_int_equal(ncalls, 1);
	assert_true(pthread_equal(calls[0].thread, pthread_self()));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_alone_splits, reset),
	    cmocka_unit_test_setup(test_small_whole, reset),
	    cmocka_unit_test_setup(test_not_alone_whole, reset),
	    cmocka_unit_test_setup(test_error_either_half, reset),
	    cmocka_unit_test_setup(test_disabled_whole, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
