/* The metadata cache: one bounded, process-wide cache of fixed-size tables
 * (VMDK grain directories and tables of every flavour, VHD BAT pages and
 * sector bitmaps, inflated stream grains), loaded lazily by a driver
 * callback.
 *
 * Each user (one table family of one file: "the GTs of this extent") owns a
 * small struct vd_tcache naming its table size and loader; tables are keyed by
 * (user, index). The memory all users hold together is bounded by one budget
 * (vd_tcache_budget_set), so it depends on what is read, not on how large a
 * disk claims to be or how many layers a chain has. An all-zero table costs
 * no table memory: every user keeps one shared zero copy; a regular one may
 * cost a few bytes (VD_TCACHE_COMPACT). */
#ifndef VD_TCACHE_H
#define VD_TCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fills table (table_bytes, native order) with table idx. Returns 0, or
 * VD_TCACHE_ZERO when the table is all zero (sparse images preallocate many
 * empty tables), or -errno after logging. Called without any cache lock,
 * possibly concurrently for the same idx. */
#define VD_TCACHE_ZERO 1
typedef int (*vd_tcache_load_fn)(void *ctx, uint64_t idx, void *table);

/* A loader may also return VD_TCACHE_COMPACT after writing a short form of
 * the table, VD_TCACHE_COMPACT_BYTES at its start, that its user knows how to
 * read (e.g. "entry i is base + i * step"): the cache then holds only those
 * bytes, so a family of regular tables (the grain tables of a disk written
 * front to back) fits a small budget. Such users (table_bytes >=
 * VD_TCACHE_COMPACT_BYTES) read with vd_tcache_get_ex(). */
#define VD_TCACHE_COMPACT 2
#define VD_TCACHE_COMPACT_BYTES 16

struct vd_tcache {
	size_t table_bytes;
	bool pinned; /* tables are never evicted nor counted in the budget (writable layers) */
	vd_tcache_load_fn load;
	void *ctx;
	void *zero;	/* shared all-zero table; written once under the shard lock */
	uint64_t loads; /* tables read so far; atomic */
	uint64_t held;	/* tables held now (zero tables included); atomic */
	int ready;
};

/* Sets up a user of table_bytes tables (> 0). No memory is reserved.
 * Returns 0 or -EINVAL. */
int vd_tcache_init(struct vd_tcache *c, size_t table_bytes, vd_tcache_load_fn load, void *ctx);

/* Pins the user: its tables stay until vd_tcache_destroy() and do not count
 * in the budget. For the tables of a writable layer, which hold entries not
 * yet on disk: memory then grows with what is written, never with claims. */
void vd_tcache_pin(struct vd_tcache *c);

/* Drops every table of this user; safe on a zeroed or half-initialised user.
 * No other thread may use c during or after the call. */
void vd_tcache_destroy(struct vd_tcache *c);

/* Returns table idx, loading it on first use. The table stays valid until
 * vd_tcache_put(c, idx) (a shard lock is held for reading meanwhile: do not
 * call back into the cache before putting it). Returns NULL with *err =
 * -errno when loading failed (nothing to put then). */
const void *vd_tcache_get(struct vd_tcache *c, uint64_t idx, int *err);

/* As vd_tcache_get() for a pinned user, but the table may be changed in
 * place: the shard is write-locked until vd_tcache_put(). -EINVAL for a table
 * its loader gave in the short form (VD_TCACHE_COMPACT): a pinned user's
 * loader must not choose it. */
void *vd_tcache_get_mut(struct vd_tcache *c, uint64_t idx, int *err);

/* vd_tcache_get() that also says (*compact) whether the table is in the
 * short form its loader chose (VD_TCACHE_COMPACT). */
const void *vd_tcache_get_ex(struct vd_tcache *c, uint64_t idx, int *err, bool *compact);

/* Returns table idx if it is cached now, without loading it (then put it
 * as after vd_tcache_get()); NULL when it is not (nothing to put). */
const void *vd_tcache_find(struct vd_tcache *c, uint64_t idx);

/* Releases the table vd_tcache_get(c, idx) or vd_tcache_find(c, idx) returned. */
void vd_tcache_put(struct vd_tcache *c, uint64_t idx);

/* Installs table as the content of idx (copied), replacing a cached copy:
 * for writers that changed a table on disk. Returns 0 or -ENOMEM (then the
 * cached copy, if any, is dropped so a stale table is never served). */
int vd_tcache_set(struct vd_tcache *c, uint64_t idx, const void *table);

/* Tables this user holds now and tables it has loaded so far. */
void vd_tcache_stats(struct vd_tcache *c, uint64_t *held, uint64_t *loads);

/* The budget in bytes that all users' tables share (default
 * VD_TCACHE_DEFAULT_BUDGET). Set it before opening images. */
#define VD_TCACHE_DEFAULT_BUDGET (16u << 20)
void vd_tcache_budget_set(size_t bytes);

/* Bytes of table memory held now by all users (tests, chain.json). */
size_t vd_tcache_bytes(void);

#endif
