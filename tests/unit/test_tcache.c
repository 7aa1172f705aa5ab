/* The bounded table cache: lazy loads, the budget, contents after eviction,
 * load failures, and concurrent readers racing evictions. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "disk/tcache.h"

#define TBYTES 256
#define N 1000

static unsigned long loads_done;

/* Table i holds i * 1000 + k in entry k, except every 7th, which is all
 * zero; table 13 cannot be read. */
static uint32_t want(uint64_t idx, unsigned k)
{
	return idx % 7 ? (uint32_t)(idx * 1000 + k) : 0;
}

static int load(void *ctx, uint64_t idx, void *table)
{
	uint32_t *t = table;

	(void)ctx;
	__atomic_add_fetch(&loads_done, 1, __ATOMIC_RELAXED);
	if (idx == 13)
		return -EIO;
	for (unsigned k = 0; k < TBYTES / 4; k++)
		t[k] = want(idx, k);
	return idx % 7 ? 0 : VD_TCACHE_ZERO;
}

static uint32_t entry(struct vd_tcache *c, uint64_t idx, unsigned k)
{
	int err = 0;
	const uint32_t *t = vd_tcache_get(c, idx, &err);
	uint32_t v;

	assert_non_null(t);
	v = t[k];
	vd_tcache_put(c);
	return v;
}

static void test_budget_and_contents(void **state)
{
	struct vd_tcache c;
	uint64_t held, n_loads;

	(void)state;
	/* 32 tables' worth of budget */
	assert_int_equal(vd_tcache_init(&c, N, TBYTES, 32 * TBYTES, load, NULL), 0);
	loads_done = 0;
	for (unsigned round = 0; round < 3; round++)
		for (uint64_t i = 0; i < N; i++)
			if (i != 13)
				assert_int_equal(entry(&c, i, (unsigned)(i % 64)),
						 want(i, (unsigned)(i % 64)));
	vd_tcache_stats(&c, &held, &n_loads);
	/* zero tables are shared, loaded once and never evicted */
	unsigned zeros = (N + 6) / 7, others = N - zeros - 1;
	assert_int_equal(held, 32);
	assert_int_equal(n_loads, 3 * others + zeros);
	assert_int_equal(loads_done, 3 * others + zeros);
	/* a hot table stays cached: no new load */
	unsigned long before = loads_done;
	assert_int_equal(entry(&c, N - 1, 5), (N - 1) * 1000 + 5);
	assert_int_equal(loads_done, before);
	vd_tcache_destroy(&c);
}

static void test_load_failure(void **state)
{
	struct vd_tcache c;
	int err = 0;

	(void)state;
	assert_int_equal(vd_tcache_init(&c, N, TBYTES, 1 << 20, load, NULL), 0);
	assert_null(vd_tcache_get(&c, 13, &err));
	assert_int_equal(err, -EIO);
	/* the cache still works after a failure (no lock left held) */
	assert_int_equal(entry(&c, 12, 1), 12001);
	assert_int_equal(entry(&c, 14, 1), 0);
	vd_tcache_destroy(&c);
}

static void test_minimum_and_small_counts(void **state)
{
	struct vd_tcache c;
	uint64_t held, n_loads;

	(void)state;
	/* a budget below 16 tables still keeps 16; fewer tables than that: all */
	assert_int_equal(vd_tcache_init(&c, 5, TBYTES, 1, load, NULL), 0);
	for (uint64_t i = 0; i < 5; i++)
		assert_int_equal(entry(&c, i, 3), want(i, 3));
	vd_tcache_stats(&c, &held, &n_loads);
	assert_int_equal(held, 4); /* table 0 is a zero table */
	vd_tcache_destroy(&c);
	vd_tcache_destroy(&c); /* safe twice (zeroed) */
}

static void *reader(void *arg)
{
	struct vd_tcache *c = arg;
	unsigned seed = (unsigned)(uintptr_t)pthread_self();

	for (unsigned n = 0; n < 20000; n++) {
		uint64_t i = (uint64_t)rand_r(&seed) % N;
		unsigned k = (unsigned)rand_r(&seed) % 64;
		int err = 0;
		const uint32_t *t;

		if (i == 13)
			continue;
		t = vd_tcache_get(c, i, &err);
		if (!t || t[k] != want(i, k))
			return (void *)1;
		vd_tcache_put(c);
	}
	return NULL;
}

static void test_concurrent_readers(void **state)
{
	struct vd_tcache c;
	pthread_t th[4];
	void *ret;

	(void)state;
	assert_int_equal(vd_tcache_init(&c, N, TBYTES, 16 * TBYTES, load, NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &c), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], &ret), 0);
		assert_null(ret);
	}
	vd_tcache_destroy(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_budget_and_contents),
	    cmocka_unit_test(test_load_failure),
	    cmocka_unit_test(test_minimum_and_small_counts),
	    cmocka_unit_test(test_concurrent_readers),
	};
	return cmocka_run_group_tests_name("tcache", tests, NULL, NULL);
}
