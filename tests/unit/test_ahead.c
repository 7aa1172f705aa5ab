/* Loading ahead of a sequential reader (disk/ahead.h): the window after a
 * sequential request is loaded once, on the worker; random requests and the
 * request's own tables are not; only wanted tables are; a reader needing the
 * table being loaded waits for it; destroying a user waits for the worker and
 * the last user stops the thread; a child of fork(2) (vdmount daemonizing
 * after reading partition tables) loads ahead with a worker of its own. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "disk/ahead.h"

#define TBYTES 64
#define LIMIT 100

struct user {
	struct vd_tcache cache;
	struct vd_ahead ahead;
	unsigned loads[LIMIT]; /* atomic */
	uint64_t slow;	       /* this table takes 200 ms to load */
	uint64_t started;      /* last table whose load began + 1; atomic */
	bool odd_unwanted;
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static int load(void *ctx, uint64_t idx, void *table)
{
	struct user *u = ctx;

	__atomic_store_n(&u->started, idx + 1, __ATOMIC_RELEASE);
	if (idx == u->slow)
		sleep_ms(200);
	__atomic_add_fetch(&u->loads[idx], 1, __ATOMIC_RELAXED);
	memset(table, (int)idx, TBYTES);
	return 0;
}

static bool want(void *ctx, uint64_t idx)
{
	struct user *u = ctx;

	return !(u->odd_unwanted && idx % 2);
}

static struct user *user_new(uint64_t window)
{
	struct user *u = calloc(1, sizeof(*u));

	assert_non_null(u);
	u->slow = UINT64_MAX;
	assert_int_equal(vd_tcache_init(&u->cache, TBYTES, load, u), 0);
	vd_ahead_init(&u->ahead, &u->cache, LIMIT, window, want, u);
	return u;
}

static void user_free(struct user *u)
{
	vd_ahead_destroy(&u->ahead);
	vd_tcache_destroy(&u->cache);
	free(u);
}

/* Waits (5 s at most) until the worker has loaded n tables for u. */
static void wait_loaded(struct user *u, uint64_t n)
{
	for (int i = 0; i < 500 && vd_ahead_loaded(&u->ahead) < n; i++)
		sleep_ms(10);
	assert_int_equal(vd_ahead_loaded(&u->ahead), n);
}

static unsigned threads(void)
{
	DIR *d = opendir("/proc/self/task");
	unsigned n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void test_window_after_sequential(void **state)
{
	unsigned before = threads();
	struct user *u = user_new(4);

	(void)state;
	vd_ahead_note(&u->ahead, 0, 1, true); /* a first request at 0 counts as sequential */
	wait_loaded(u, 4);
	for (uint64_t i = 0; i < LIMIT; i++)
		assert_int_equal(u->loads[i], i >= 2 && i < 6 ? 1 : 0);
	assert_int_equal(threads(), before + 1);
	/* the next request moves the window on; what is loaded is not again */
	vd_ahead_note(&u->ahead, 2, 3, true);
	wait_loaded(u, 6);
	for (uint64_t i = 0; i < LIMIT; i++)
		assert_int_equal(u->loads[i], i >= 2 && i < 8 ? 1 : 0);
	/* a random request schedules nothing */
	vd_ahead_note(&u->ahead, 60, 60, true);
	sleep_ms(100);
	assert_int_equal(vd_ahead_loaded(&u->ahead), 6);
	assert_int_equal(u->loads[61], 0);
	/* the window stops at the last table */
	vd_ahead_note(&u->ahead, 61, 97, true);
	wait_loaded(u, 8);
	assert_int_equal(u->loads[98], 1);
	assert_int_equal(u->loads[99], 1);
	user_free(u);
	/* the last user gone, the worker is too */
	assert_int_equal(threads(), before);
}

/* A request noted without extending (the user sees nothing worth loading
 * ahead) wakes nothing, and its tables are never loaded by the worker
 * later; the next extending request resumes after it. */
static void test_note_without_extending(void **state)
{
	struct user *u = user_new(4);

	(void)state;
	vd_ahead_note(&u->ahead, 0, 0, true);
	wait_loaded(u, 4); /* 1 .. 4 */
	vd_ahead_note(&u->ahead, 1, 10, false);
	sleep_ms(100);
	assert_int_equal(vd_ahead_loaded(&u->ahead), 4);
	vd_ahead_note(&u->ahead, 11, 11, true);
	wait_loaded(u, 8); /* 12 .. 15 */
	for (uint64_t i = 0; i < LIMIT; i++)
		assert_int_equal(u->loads[i], (i >= 1 && i <= 4) || (i >= 12 && i <= 15) ? 1 : 0);
	user_free(u);
}

/* Waits (5 s at most) until u's worker has begun loading table idx. */
static void wait_started(struct user *u, uint64_t idx)
{
	for (int i = 0; i < 500 && __atomic_load_n(&u->started, __ATOMIC_ACQUIRE) != idx + 1; i++)
		sleep_ms(10);
	assert_int_equal(__atomic_load_n(&u->started, __ATOMIC_ACQUIRE), idx + 1);
}

static void test_request_is_never_loaded_twice(void **state)
{
	struct user *u = user_new(8), *v = user_new(2);

	(void)state;
	/* keep the worker busy with v for 200 ms while u's requests arrive */
	v->slow = 1;
	vd_ahead_note(&v->ahead, 0, 0, true);
	wait_started(v, 1);
	u->odd_unwanted = true;
	vd_ahead_note(&u->ahead, 0, 0, true); /* schedules 1 .. 8 */
	vd_ahead_note(&u->ahead, 1, 5, true); /* the reader takes 1 .. 5 back */
	wait_loaded(u, 4);		      /* 6, 8, 10, 12: the window after 5, wanted ones */
	for (uint64_t i = 0; i < LIMIT; i++)
		assert_int_equal(u->loads[i], i >= 6 && i < 14 && i % 2 == 0 ? 1 : 0);
	user_free(u);
	user_free(v);
}

static void test_reader_waits_for_busy_table(void **state)
{
	struct user *u = user_new(2);
	int err = 0;

	(void)state;
	u->slow = 1;
	vd_ahead_note(&u->ahead, 0, 0, true);
	wait_started(u, 1);
	/* table 1 is being loaded (200 ms): wait for it instead of loading it */
	assert_true(vd_ahead_wait(&u->ahead, 1));
	assert_non_null(vd_tcache_find(&u->cache, 1));
	vd_tcache_put(&u->cache, 1);
	assert_false(vd_ahead_wait(&u->ahead, 1));
	assert_non_null(vd_tcache_get(&u->cache, 1, &err));
	vd_tcache_put(&u->cache, 1);
	assert_int_equal(u->loads[1], 1);
	user_free(u);
}

static void test_destroy_waits_for_worker(void **state)
{
	struct user *u = user_new(4), *v = user_new(4);

	(void)state;
	u->slow = 1;
	vd_ahead_note(&v->ahead, 0, 0, true);
	vd_ahead_note(&u->ahead, 0, 0, true);
	wait_started(u, 1);
	/* u's table 1 is loading: destroy returns after it, and nothing more of
	 * u is loaded; v keeps its worker */
	vd_ahead_destroy(&u->ahead);
	assert_int_equal(u->loads[1], 1);
	assert_int_equal(u->loads[2], 0);
	vd_tcache_destroy(&u->cache);
	free(u);
	wait_loaded(v, 4);
	user_free(v);
	/* a zeroed or disabled user is harmless */
	{
		struct vd_ahead z;

		memset(&z, 0, sizeof(z));
		vd_ahead_destroy(&z);
		vd_ahead_init(&z, NULL, 10, 0, NULL, NULL);
		vd_ahead_note(&z, 0, 3, true);
		assert_false(vd_ahead_wait(&z, 1));
		vd_ahead_destroy(&z);
	}
}

/* The child of a fork made while a user had tables queued: its next
 * sequential request is loaded ahead in the child. It once stayed on the
 * parent's queue, which nothing in the child serves, so a daemonized vdmount
 * never inflated a stream grain ahead. cmocka's asserts must not run in the
 * child: it answers by its exit status. */
static void test_fork_child_loads_ahead(void **state)
{
	struct user *u = user_new(4);
	int status = -1;
	pid_t pid;

	(void)state;
	u->slow = 2;
	vd_ahead_note(&u->ahead, 0, 0, true); /* queues 1 .. 4; 2 takes 200 ms */
	wait_started(u, 2);		      /* the fork waits for it, with 3 and 4 queued */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		bool ok = true;

		vd_ahead_note(&u->ahead, 5, 5, true); /* queues 6 .. 9 */
		for (int i = 0; i < 500 && __atomic_load_n(&u->loads[9], __ATOMIC_RELAXED) == 0;
		     i++)
			sleep_ms(10);
		for (uint64_t i = 6; i < 10; i++)
			ok = ok && __atomic_load_n(&u->loads[i], __ATOMIC_RELAXED) == 1;
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	user_free(u);
}

/* A fork right after the first request started the worker: the child must
 * not inherit a lock the worker's start-up held (under ASan, the allocator's:
 * a child hung in its first free()). The fork waits until the worker is
 * parked; each child allocates and exits, 200 times, each within 10 s. */
static void test_fork_as_worker_starts(void **state)
{
	(void)state;
	for (int round = 0; round < 200; round++) {
		struct user *u = user_new(4);
		int status = -1;
		pid_t pid;

		vd_ahead_note(&u->ahead, 0, 0, true); /* starts the worker */
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			alarm(10);
			for (int i = 0; i < 64; i++)
				free(malloc(4096u << (i % 8)));
			_exit(0);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("round %d: the child hung or failed (status %#x)", round, status);
		user_free(u); /* stops the worker: the next round starts one */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_window_after_sequential),
	    cmocka_unit_test(test_note_without_extending),
	    cmocka_unit_test(test_request_is_never_loaded_twice),
	    cmocka_unit_test(test_reader_waits_for_busy_table),
	    cmocka_unit_test(test_destroy_waits_for_worker),
	    cmocka_unit_test(test_fork_child_loads_ahead),
	    cmocka_unit_test(test_fork_as_worker_starts),
	};
	return cmocka_run_group_tests_name("ahead", tests, NULL, NULL);
}
