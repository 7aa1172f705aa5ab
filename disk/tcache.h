/* A lazily loaded, bounded cache of fixed-size metadata tables (VMDK grain
 * tables of every flavour). Table i is loaded by a driver callback on first
 * use; when the budget is reached the oldest loaded table is dropped. */
#ifndef VD_TCACHE_H
#define VD_TCACHE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Fills table (table_bytes, native order) with table idx. Returns 0, or
 * VD_TCACHE_ZERO when the table is all zero (the cache then keeps one shared
 * zero table instead of a copy: sparse images preallocate many empty tables),
 * or -errno after logging. Called without the cache lock, possibly
 * concurrently. */
#define VD_TCACHE_ZERO 1
typedef int (*vd_tcache_load_fn)(void *ctx, uint64_t idx, void *table);

struct vd_tcache {
	pthread_rwlock_t lock;
	void **slots; /* [n]; protected by lock */
	uint64_t n;
	size_t table_bytes;
	uint64_t *ring;		    /* indices of loaded tables, oldest first; protected by lock */
	uint64_t cap, head, loaded; /* cap immutable; head, loaded protected by lock */
	uint64_t loads;		    /* tables read from disk so far; protected by lock */
	void *zero;		    /* the shared all-zero table, allocated on first use */
	vd_tcache_load_fn load;
	void *ctx;
	int ready;
};

/* Sets up a cache of n tables of table_bytes, keeping at most budget bytes of
 * them (at least 16 tables). Returns 0 or -ENOMEM. */
int vd_tcache_init(struct vd_tcache *c, uint64_t n, size_t table_bytes, size_t budget,
		   vd_tcache_load_fn load, void *ctx);

/* Frees every table; safe on a zeroed or half-initialised cache. */
void vd_tcache_destroy(struct vd_tcache *c);

/* Returns table idx (< n), loading it on first use, with the cache
 * read-locked: the caller must call vd_tcache_put() when done with the
 * pointer, and must not call back into the cache before that. Returns NULL
 * with *err = -errno when loading failed (nothing to put then). */
const void *vd_tcache_get(struct vd_tcache *c, uint64_t idx, int *err);

/* Releases the lock vd_tcache_get() returned with. */
void vd_tcache_put(struct vd_tcache *c);

/* Tables currently held (zero tables excluded) and tables read so far. */
void vd_tcache_stats(struct vd_tcache *c, uint64_t *held, uint64_t *loads);

#endif
