/* The process-wide metadata cache: lazy loads, the one budget shared by every
 * user, contents after eviction, shared zero tables, load failures, set(),
 * users that do not see each other's tables, concurrent readers racing
 * evictions, tables kept in a loader's short form, and find(). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disk/tcache.h"

#define TBYTES 256
#define N 1000

static unsigned long loads_done;

/* Table i of user tag holds tag + i * 1000 + k in entry k, except every 7th,
 * which is all zero; table 13 cannot be read. */
static uint32_t want(uintptr_t tag, uint64_t idx, unsigned k)
{
	return idx % 7 ? (uint32_t)(tag + idx * 1000 + k) : 0;
}

static int load(void *ctx, uint64_t idx, void *table)
{
	uint32_t *t = table;

	__atomic_add_fetch(&loads_done, 1, __ATOMIC_RELAXED);
	if (idx == 13)
		return -EIO;
	for (unsigned k = 0; k < TBYTES / 4; k++)
		t[k] = want((uintptr_t)ctx, idx, k);
	return idx % 7 ? 0 : VD_TCACHE_ZERO;
}

static uint32_t entry(struct vd_tcache *c, uint64_t idx, unsigned k)
{
	int err = 0;
	const uint32_t *t = vd_tcache_get(c, idx, &err);
	uint32_t v;

	assert_non_null(t);
	v = t[k];
	vd_tcache_put(c, idx);
	return v;
}

static void test_budget_and_contents(void **state)
{
	struct vd_tcache c;
	uint64_t held, n_loads;
	size_t budget = 64 * (TBYTES + 128);

	(void)state;
	vd_tcache_budget_set(budget);
	assert_int_equal(vd_tcache_init(&c, TBYTES, load, NULL), 0);
	loads_done = 0;
	for (unsigned round = 0; round < 3; round++)
		for (uint64_t i = 0; i < N; i++)
			if (i != 13)
				assert_int_equal(entry(&c, i, (unsigned)(i % 64)),
						 want(0, i, (unsigned)(i % 64)));
	vd_tcache_stats(&c, &held, &n_loads);
	/* what is held stays within the budget; every sweep reloads */
	assert_true(vd_tcache_bytes() <= budget);
	assert_true(held > 0 && held < N / 4);
	assert_int_equal(n_loads, loads_done);
	assert_true(n_loads > 2 * N);
	/* a table just read stays cached: no new load */
	unsigned long before = loads_done;
	assert_int_equal(entry(&c, N - 1, 5), (N - 1) * 1000 + 5);
	assert_int_equal(loads_done, before);
	vd_tcache_destroy(&c);
	assert_int_equal(vd_tcache_bytes(), 0);
	vd_tcache_budget_set(VD_TCACHE_DEFAULT_BUDGET);
}

static void test_zero_tables_cost_no_table_memory(void **state)
{
	struct vd_tcache c;
	uint64_t held, n_loads;

	(void)state;
	assert_int_equal(vd_tcache_init(&c, TBYTES, load, NULL), 0);
	for (uint64_t i = 0; i < 7 * 100; i += 7)
		assert_int_equal(entry(&c, i, 3), 0);
	vd_tcache_stats(&c, &held, &n_loads);
	assert_int_equal(held, 100);
	/* 100 entries, one shared zero table outside the count */
	assert_true(vd_tcache_bytes() < 100 * TBYTES);
	vd_tcache_destroy(&c);
}

static void test_load_failure(void **state)
{
	struct vd_tcache c;
	int err = 0;

	(void)state;
	assert_int_equal(vd_tcache_init(&c, TBYTES, load, NULL), 0);
	assert_null(vd_tcache_get(&c, 13, &err));
	assert_int_equal(err, -EIO);
	/* the cache still works after a failure (no lock left held) */
	assert_int_equal(entry(&c, 12, 1), 12001);
	assert_int_equal(entry(&c, 14, 1), 0);
	vd_tcache_destroy(&c);
	vd_tcache_destroy(&c); /* safe twice (zeroed) */
	assert_int_equal(vd_tcache_init(&c, 0, load, NULL), -EINVAL);
}

static void test_users_apart_and_set(void **state)
{
	struct vd_tcache a, b;
	uint32_t fresh[TBYTES / 4];

	(void)state;
	assert_int_equal(vd_tcache_init(&a, TBYTES, load, (void *)(uintptr_t)1000000), 0);
	assert_int_equal(vd_tcache_init(&b, TBYTES, load, (void *)(uintptr_t)2000000), 0);
	assert_int_equal(entry(&a, 5, 2), 1005002);
	assert_int_equal(entry(&b, 5, 2), 2005002);
	/* set() replaces a cached table and installs an uncached one */
	for (unsigned k = 0; k < TBYTES / 4; k++)
		fresh[k] = 42 + k;
	assert_int_equal(vd_tcache_set(&a, 5, fresh), 0);
	assert_int_equal(vd_tcache_set(&a, 7, fresh), 0);
	assert_int_equal(entry(&a, 5, 2), 44);
	assert_int_equal(entry(&a, 7, 3), 45);
	assert_int_equal(entry(&b, 5, 2), 2005002);
	/* destroying one user leaves the other's tables */
	unsigned long before = loads_done;
	vd_tcache_destroy(&a);
	assert_int_equal(entry(&b, 5, 2), 2005002);
	assert_int_equal(loads_done, before);
	vd_tcache_destroy(&b);
}

/* A pinned user's tables survive any pressure and may be changed in place. */
static void test_pinned(void **state)
{
	struct vd_tcache w, other;
	uint64_t held, n_loads;
	int err = 0;

	(void)state;
	vd_tcache_budget_set(16 * (TBYTES + 128));
	assert_int_equal(vd_tcache_init(&w, TBYTES, load, NULL), 0);
	assert_int_equal(vd_tcache_init(&other, TBYTES, load, (void *)(uintptr_t)7), 0);
	assert_null(vd_tcache_get_mut(&w, 1, &err));
	assert_int_equal(err, -EINVAL);
	vd_tcache_pin(&w);
	for (uint64_t i = 0; i < 200; i++) {
		uint32_t *t = vd_tcache_get_mut(&w, i, &err);

		if (i == 13) {
			assert_null(t);
			continue;
		}
		assert_non_null(t);
		t[0] = (uint32_t)(0xabc000 + i); /* zero tables get their own copy */
		vd_tcache_put(&w, i);
	}
	for (uint64_t i = 0; i < 2000; i++)
		if (i != 13)
			entry(&other, i, 1);
	for (uint64_t i = 0; i < 200; i++)
		if (i != 13)
			assert_int_equal(entry(&w, i, 0), 0xabc000 + i);
	vd_tcache_stats(&w, &held, &n_loads);
	assert_int_equal(n_loads, 199); /* loaded once each, never evicted */
	assert_true(vd_tcache_bytes() <= 16 * (TBYTES + 128));
	vd_tcache_destroy(&w);
	vd_tcache_destroy(&other);
	vd_tcache_budget_set(VD_TCACHE_DEFAULT_BUDGET);
}

/* Table i of the compact loader is entry k = i * 100 + k, kept as {i * 100}
 * (entries follow a rule), except odd tables, which are stored whole. */
static int load_compact(void *ctx, uint64_t idx, void *table)
{
	uint32_t *t = table;

	(void)ctx;
	__atomic_add_fetch(&loads_done, 1, __ATOMIC_RELAXED);
	for (unsigned k = 0; k < TBYTES / 4; k++)
		t[k] = (uint32_t)(idx * 100 + k);
	if (idx % 2)
		return 0;
	t[1] = 0xc0;
	return VD_TCACHE_COMPACT;
}

static uint32_t compact_entry(struct vd_tcache *c, uint64_t idx, unsigned k)
{
	bool compact = true;
	int err = 0;
	const uint32_t *t = vd_tcache_get_ex(c, idx, &err, &compact);
	uint32_t v;

	assert_non_null(t);
	assert_int_equal(compact, idx % 2 == 0);
	/* the user reads its own short form */
	v = compact ? (assert_int_equal(t[1], 0xc0), t[0] + k) : t[k];
	vd_tcache_put(c, idx);
	return v;
}

static void test_compact_tables(void **state)
{
	struct vd_tcache c;
	uint64_t held, n_loads;
	size_t budget = 200 * (TBYTES + 128);

	(void)state;
	vd_tcache_budget_set(budget);
	assert_int_equal(vd_tcache_init(&c, TBYTES, load_compact, NULL), 0);
	loads_done = 0;
	/* 400 compact tables fit a budget that holds 200 whole ones: one load each */
	for (unsigned round = 0; round < 3; round++)
		for (uint64_t i = 0; i < 800; i += 2)
			assert_int_equal(compact_entry(&c, i, 7), i * 100 + 7);
	assert_int_equal(loads_done, 400);
	vd_tcache_stats(&c, &held, &n_loads);
	assert_int_equal(held, 400);
	assert_true(vd_tcache_bytes() <= budget);
	/* whole tables still evict (and never come back compact) */
	for (uint64_t i = 1; i < 200; i += 2)
		assert_int_equal(compact_entry(&c, i, 7), i * 100 + 7);
	assert_true(vd_tcache_bytes() <= budget);
	vd_tcache_destroy(&c);
	/* a short form has no room for changes: a pinned user gets -EINVAL */
	assert_int_equal(vd_tcache_init(&c, TBYTES, load_compact, NULL), 0);
	vd_tcache_pin(&c);
	{
		int err = 0;
		uint32_t *t = vd_tcache_get_mut(&c, 2, &err);

		assert_null(t);
		assert_int_equal(err, -EINVAL);
		t = vd_tcache_get_mut(&c, 3, &err);
		assert_non_null(t);
		assert_int_equal(t[5], 305);
		vd_tcache_put(&c, 3);
	}
	vd_tcache_destroy(&c);
	vd_tcache_budget_set(VD_TCACHE_DEFAULT_BUDGET);
}

static void test_find_does_not_load(void **state)
{
	struct vd_tcache c;
	const uint32_t *t;
	int err = 0;

	(void)state;
	assert_int_equal(vd_tcache_init(&c, TBYTES, load, NULL), 0);
	loads_done = 0;
	assert_null(vd_tcache_find(&c, 3));
	assert_int_equal(loads_done, 0);
	t = vd_tcache_get(&c, 3, &err);
	assert_non_null(t);
	vd_tcache_put(&c, 3);
	t = vd_tcache_find(&c, 3);
	assert_non_null(t);
	assert_int_equal(t[5], 3005);
	vd_tcache_put(&c, 3);
	assert_int_equal(loads_done, 1);
	vd_tcache_destroy(&c);
	/* a user that never held a table is destroyed without trouble */
	assert_int_equal(vd_tcache_init(&c, TBYTES, load, NULL), 0);
	vd_tcache_destroy(&c);
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
		if (!t)
			return (void *)1;
		if (t[k] != want(0, i, k)) {
			vd_tcache_put(c, i);
			return (void *)1;
		}
		vd_tcache_put(c, i);
	}
	return NULL;
}

static void test_concurrent_readers(void **state)
{
	struct vd_tcache c;
	pthread_t th[4];
	void *ret;

	(void)state;
	vd_tcache_budget_set(32 * (TBYTES + 128));
	assert_int_equal(vd_tcache_init(&c, TBYTES, load, NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &c), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], &ret), 0);
		assert_null(ret);
	}
	vd_tcache_destroy(&c);
	vd_tcache_budget_set(VD_TCACHE_DEFAULT_BUDGET);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_budget_and_contents),
	    cmocka_unit_test(test_zero_tables_cost_no_table_memory),
	    cmocka_unit_test(test_load_failure),
	    cmocka_unit_test(test_users_apart_and_set),
	    cmocka_unit_test(test_pinned),
	    cmocka_unit_test(test_concurrent_readers),
	    cmocka_unit_test(test_compact_tables),
	    cmocka_unit_test(test_find_does_not_load),
	};
	return cmocka_run_group_tests_name("tcache", tests, NULL, NULL);
}
