/* The process-wide metadata cache (see tcache.h).
 *
 * Tables live in VD_TCACHE_SHARDS shards, chosen by a hash of (user, index),
 * each a uthash table under its own rwlock with an equal share of the budget.
 * uthash keeps insertion order, so the head of a shard is its oldest table
 * and eviction is FIFO: grain tables are touched in long sequential sweeps,
 * where FIFO does as well as LRU and needs no bookkeeping on the hot path.
 *
 * Readers hold their shard's read lock while they look at a table, so an
 * eviction, which takes the write lock, never frees a table in use. Loading
 * happens without any lock; when two threads load the same table the second
 * copy is dropped. The thread that installs a table gets it back under the
 * write lock, so it is used at least once even when the shard thrashes, and a
 * shard always keeps the table just installed, so a table larger than a
 * shard's share still works (one at a time).
 *
 * Cost of an entry: its table plus the entry itself; an all-zero table points
 * at its user's shared zero copy and costs only the entry, and a table in its
 * loader's short form (VD_TCACHE_COMPACT) costs the entry and 16 bytes. */
#include "disk/tcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define VD_TCACHE_SHARDS 16

struct tc_key {
	const struct vd_tcache *owner;
	uint64_t idx;
};

/* One multiplicative hash of (user, index): its top bits choose the shard,
 * the 32 below them the bucket in the shard. Every read of a chain looks up
 * a table in each layer above the one that holds the block, so this is on
 * the hot path; uthash's default (Jenkins over the 16-byte key) cost several
 * times the rest of a lookup. */
static inline uint64_t tc_hash(const struct tc_key *k)
{
	return (k->idx ^ ((uintptr_t)k->owner >> 4)) * 0x9e3779b97f4a7c15ull;
}

#define HASH_FUNCTION(keyptr, keylen, hashv)                                                       \
	((hashv) = (unsigned)(tc_hash((const struct tc_key *)(keyptr)) >> 28))
/* uthash's answer to a failed allocation is exit(-1); with this it leaves
 * the entry out (hh.tbl NULL) and the load fails with -ENOMEM. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

struct tc_entry {
	struct tc_key key;
	void *table;  /* NULL: the owner's zero table */
	bool compact; /* table holds VD_TCACHE_COMPACT_BYTES, the loader's short form */
	UT_hash_handle hh;
};

struct tc_shard {
	pthread_rwlock_t lock;
	struct tc_entry *head; /* protected by lock; oldest first */
	size_t bytes;	       /* protected by lock */
};

static struct tc_shard shards[VD_TCACHE_SHARDS] = {
    [0 ... VD_TCACHE_SHARDS - 1] = {.lock = PTHREAD_RWLOCK_INITIALIZER}};
static size_t budget = VD_TCACHE_DEFAULT_BUDGET;

void vd_tcache_budget_set(size_t bytes)
{
	budget = bytes;
}

size_t vd_tcache_bytes(void)
{
	size_t n = 0;

	for (unsigned i = 0; i < VD_TCACHE_SHARDS; i++) {
		pthread_rwlock_rdlock(&shards[i].lock);
		n += shards[i].bytes;
		pthread_rwlock_unlock(&shards[i].lock);
	}
	return n;
}

static struct tc_shard *shard_of(const struct vd_tcache *c, uint64_t idx)
{
	struct tc_key key = {c, idx};

	return &shards[tc_hash(&key) >> 60];
}

static size_t entry_cost(const struct vd_tcache *c, const struct tc_entry *e)
{
	if (c->pinned)
		return 0;
	if (!e->table)
		return sizeof(*e);
	return sizeof(*e) + (e->compact ? VD_TCACHE_COMPACT_BYTES : c->table_bytes);
}

void vd_tcache_pin(struct vd_tcache *c)
{
	c->pinned = true;
}

int vd_tcache_init(struct vd_tcache *c, size_t table_bytes, vd_tcache_load_fn load, void *ctx)
{
	memset(c, 0, sizeof(*c));
	if (!table_bytes || !load)
		return -EINVAL;
	c->table_bytes = table_bytes;
	c->load = load;
	c->ctx = ctx;
	c->ready = 1;
	return 0;
}

/* Unlinks and frees e; the caller holds sh->lock for writing. */
static void entry_drop(struct tc_shard *sh, struct tc_entry *e)
{
	struct vd_tcache *owner = (struct vd_tcache *)e->key.owner;

	HASH_DEL(sh->head, e);
	sh->bytes -= entry_cost(owner, e);
	__atomic_sub_fetch(&owner->held, 1, __ATOMIC_RELAXED);
	free(e->table);
	free(e);
}

void vd_tcache_destroy(struct vd_tcache *c)
{
	/* A user that holds nothing (most extents of a large split disk) costs
	 * no walk over every shard. */
	if (!c->ready || !__atomic_load_n(&c->held, __ATOMIC_RELAXED))
		goto out;
	for (unsigned i = 0; i < VD_TCACHE_SHARDS; i++) {
		struct tc_shard *sh = &shards[i];
		struct tc_entry *e, *tmp;

		pthread_rwlock_wrlock(&sh->lock);
		HASH_ITER(hh, sh->head, e, tmp)
		{
			if (e->key.owner == c)
				entry_drop(sh, e);
		}
		pthread_rwlock_unlock(&sh->lock);
	}
out:
	free(c->zero);
	memset(c, 0, sizeof(*c));
}

/* Makes room for cost bytes in sh (FIFO), then links e. Caller holds the
 * write lock. Returns 0, or -ENOMEM when the hash could not grow (e is then
 * not linked). */
static int entry_link(struct tc_shard *sh, struct vd_tcache *c, struct tc_entry *e)
{
	size_t cost = entry_cost(c, e), share = budget / VD_TCACHE_SHARDS;

	/* Evict the oldest unpinned tables (pinned ones are skipped over). */
	for (struct tc_entry *v = sh->head, *next; v && sh->bytes + cost > share; v = next) {
		next = v->hh.next;
		if (!v->key.owner->pinned)
			entry_drop(sh, v);
	}
	HASH_ADD(hh, sh->head, key, sizeof(e->key), e);
	if (!e->hh.tbl)
		return -ENOMEM;
	sh->bytes += cost;
	__atomic_add_fetch(&c->held, 1, __ATOMIC_RELAXED);
	return 0;
}

/* Installs a freshly loaded table unless another thread was first, and
 * returns the cached table with the shard write-locked (vd_tcache_put()
 * unlocks either kind), so the caller always gets to use what it loaded even
 * when the shard is thrashing. Takes ownership of t. NULL (unlocked) when
 * there is no memory for the entry. */
static const void *tcache_install(struct vd_tcache *c, uint64_t idx, void *t, int kind,
				  bool *compact)
{
	struct tc_shard *sh = shard_of(c, idx);
	struct tc_key key = {c, idx};
	struct tc_entry *e;

	if (kind == VD_TCACHE_COMPACT && c->table_bytes > VD_TCACHE_COMPACT_BYTES) {
		void *small = malloc(VD_TCACHE_COMPACT_BYTES);

		if (small)
			memcpy(small, t, VD_TCACHE_COMPACT_BYTES);
		free(t);
		t = small;
		if (!t)
			return NULL;
	}
	if (kind == VD_TCACHE_ZERO) {
		void *none = NULL;

		/* Keep t itself as the user's shared zero table the first time. */
		memset(t, 0, c->table_bytes);
		if (__atomic_compare_exchange_n(&c->zero, &none, t, false, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED))
			t = NULL;
		free(t);
		t = NULL;
	}
	pthread_rwlock_wrlock(&sh->lock);
	HASH_FIND(hh, sh->head, &key, sizeof(key), e);
	if (e) {
		free(t);
		goto out;
	}
	e = calloc(1, sizeof(*e));
	if (e) {
		e->key = key;
		e->table = t;
		e->compact = t && kind == VD_TCACHE_COMPACT; /* before entry_link: the cost */
	}
	if (!e || entry_link(sh, c, e) < 0) {
		free(e);
		free(t);
		pthread_rwlock_unlock(&sh->lock);
		return NULL;
	}
	__atomic_add_fetch(&c->loads, 1, __ATOMIC_RELAXED);
out:
	*compact = e->compact;
	return e->table ? e->table : c->zero;
}

/* The cached table idx, read-locked, or NULL (unlocked). */
static const void *tcache_find(struct vd_tcache *c, uint64_t idx, bool *compact)
{
	struct tc_shard *sh = shard_of(c, idx);
	struct tc_key key = {c, idx};
	struct tc_entry *e;

	pthread_rwlock_rdlock(&sh->lock);
	HASH_FIND(hh, sh->head, &key, sizeof(key), e);
	if (e) {
		*compact = e->compact;
		return e->table ? e->table : __atomic_load_n(&c->zero, __ATOMIC_ACQUIRE);
	}
	pthread_rwlock_unlock(&sh->lock);
	return NULL;
}

const void *vd_tcache_find(struct vd_tcache *c, uint64_t idx)
{
	bool compact;

	return tcache_find(c, idx, &compact);
}

const void *vd_tcache_get_ex(struct vd_tcache *c, uint64_t idx, int *err, bool *compact)
{
	const void *got = tcache_find(c, idx, compact);
	void *t;
	int r;

	if (got)
		return got;
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
	got = tcache_install(c, idx, t, r, compact);
	if (!got)
		*err = -ENOMEM;
	return got;
}

const void *vd_tcache_get(struct vd_tcache *c, uint64_t idx, int *err)
{
	bool compact;

	return vd_tcache_get_ex(c, idx, err, &compact);
}

void *vd_tcache_get_mut(struct vd_tcache *c, uint64_t idx, int *err)
{
	struct tc_shard *sh = shard_of(c, idx);
	struct tc_key key = {c, idx};
	struct tc_entry *e;

	if (!c->pinned) {
		*err = -EINVAL; /* an unpinned table could be evicted with its changes */
		return NULL;
	}
	for (;;) {
		const void *t = vd_tcache_get(c, idx, err);

		if (!t)
			return NULL;
		vd_tcache_put(c, idx);
		pthread_rwlock_wrlock(&sh->lock);
		HASH_FIND(hh, sh->head, &key, sizeof(key), e);
		if (e && e->compact) {
			/* the short form has no room for changes: a pinned user's
			 * loader must not choose it */
			pthread_rwlock_unlock(&sh->lock);
			*err = -EINVAL;
			return NULL;
		}
		if (e && !e->table) {
			/* a shared zero table: give this one its own copy */
			e->table = calloc(1, c->table_bytes);
			if (!e->table) {
				pthread_rwlock_unlock(&sh->lock);
				*err = -ENOMEM;
				return NULL;
			}
		}
		if (e)
			return e->table;
		pthread_rwlock_unlock(&sh->lock); /* lost to a racing destroy: try again */
	}
}

void vd_tcache_put(struct vd_tcache *c, uint64_t idx)
{
	pthread_rwlock_unlock(&shard_of(c, idx)->lock);
}

int vd_tcache_set(struct vd_tcache *c, uint64_t idx, const void *table)
{
	struct tc_shard *sh = shard_of(c, idx);
	struct tc_key key = {c, idx};
	struct tc_entry *e;
	void *t = malloc(c->table_bytes);
	int r = 0;

	if (t)
		memcpy(t, table, c->table_bytes);
	pthread_rwlock_wrlock(&sh->lock);
	HASH_FIND(hh, sh->head, &key, sizeof(key), e);
	if (e)
		entry_drop(sh, e);
	e = t ? calloc(1, sizeof(*e)) : NULL;
	if (!e) {
		free(t);
		r = -ENOMEM;
		goto out;
	}
	e->key = key;
	e->table = t;
	entry_link(sh, c, e);
out:
	pthread_rwlock_unlock(&sh->lock);
	return r;
}

void vd_tcache_stats(struct vd_tcache *c, uint64_t *held, uint64_t *loads)
{
	*held = __atomic_load_n(&c->held, __ATOMIC_RELAXED);
	*loads = __atomic_load_n(&c->loads, __ATOMIC_RELAXED);
}
