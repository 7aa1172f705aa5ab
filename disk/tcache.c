/* Bounded table cache (see tcache.h).
 *
 * slots[i] is NULL or a loaded table; ring[] lists loaded indices in load
 * order (FIFO eviction: grain tables are touched in long sequential sweeps,
 * where FIFO does as well as LRU and needs no bookkeeping on the hot path).
 * Readers hold the read lock while they look at a table, so eviction, which
 * takes the write lock, never frees a table in use. Loading happens without
 * the lock; when two threads load the same table the second copy is dropped.
 * All-zero tables point at one shared zero table that is never evicted: the
 * budget then only counts tables that hold something. */
#include "disk/tcache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TCACHE_MIN_TABLES 16

int vd_tcache_init(struct vd_tcache *c, uint64_t n, size_t table_bytes, size_t budget,
		   vd_tcache_load_fn load, void *ctx)
{
	memset(c, 0, sizeof(*c));
	c->n = n;
	c->table_bytes = table_bytes;
	c->load = load;
	c->ctx = ctx;
	c->cap = table_bytes ? budget / table_bytes : 0;
	if (c->cap < TCACHE_MIN_TABLES)
		c->cap = TCACHE_MIN_TABLES;
	if (c->cap > n)
		c->cap = n ? n : 1;
	c->slots = calloc(n ? n : 1, sizeof(*c->slots));
	c->ring = calloc(c->cap, sizeof(*c->ring));
	if (!c->slots || !c->ring) {
		free(c->slots);
		free(c->ring);
		c->slots = NULL;
		c->ring = NULL;
		return -ENOMEM;
	}
	if (pthread_rwlock_init(&c->lock, NULL)) {
		free(c->slots);
		free(c->ring);
		c->slots = NULL;
		c->ring = NULL;
		return -ENOMEM;
	}
	c->ready = 1;
	return 0;
}

void vd_tcache_destroy(struct vd_tcache *c)
{
	if (c->slots)
		for (uint64_t i = 0; i < c->n; i++)
			if (c->slots[i] != c->zero)
				free(c->slots[i]);
	free(c->slots);
	free(c->zero);
	free(c->ring);
	if (c->ready)
		pthread_rwlock_destroy(&c->lock);
	memset(c, 0, sizeof(*c));
}

/* Installs t as table idx unless another thread was first; drops the oldest
 * table when the cache is full. Takes the write lock. */
static void tcache_install(struct vd_tcache *c, uint64_t idx, void *t, bool zero)
{
	pthread_rwlock_wrlock(&c->lock);
	if (c->slots[idx]) {
		free(t);
		goto out;
	}
	c->loads++;
	if (zero) {
		if (!c->zero) {
			/* keep t itself as the shared zero table */
			memset(t, 0, c->table_bytes);
			c->zero = t;
		} else {
			free(t);
		}
		c->slots[idx] = c->zero;
		goto out;
	}
	if (c->loaded == c->cap) {
		uint64_t victim = c->ring[c->head];

		free(c->slots[victim]);
		c->slots[victim] = NULL;
		c->head = (c->head + 1) % c->cap;
		c->loaded--;
	}
	c->ring[(c->head + c->loaded) % c->cap] = idx;
	c->loaded++;
	c->slots[idx] = t;
out:
	pthread_rwlock_unlock(&c->lock);
}

const void *vd_tcache_get(struct vd_tcache *c, uint64_t idx, int *err)
{
	for (;;) {
		void *t;
		int r;

		pthread_rwlock_rdlock(&c->lock);
		if (c->slots[idx])
			return c->slots[idx];
		pthread_rwlock_unlock(&c->lock);

		t = malloc(c->table_bytes);
		if (!t) {
			*err = -ENOMEM;
			return NULL;
		}
		r = c->load(c->ctx, idx, t);
		if (r < 0) {
			free(t);
			*err = r;
			return NULL;
		}
		/* Another thread may evict it again before we look; then load
		 * again. With at least 16 slots this does not repeat in practice. */
		tcache_install(c, idx, t, r == VD_TCACHE_ZERO);
	}
}

void vd_tcache_put(struct vd_tcache *c)
{
	pthread_rwlock_unlock(&c->lock);
}

void vd_tcache_stats(struct vd_tcache *c, uint64_t *held, uint64_t *loads)
{
	pthread_rwlock_rdlock(&c->lock);
	*held = c->loaded;
	*loads = c->loads;
	pthread_rwlock_unlock(&c->lock);
}
