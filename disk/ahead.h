/* Loading tables ahead of a sequential reader, on a worker thread.
 *
 * A user of the metadata cache (disk/tcache.h) whose tables are expensive to
 * produce (inflated stream grains) tells vd_ahead which tables each request
 * touches. When requests follow each other, a process-wide worker thread loads
 * the next tables into the cache while the reader copies the current ones, so
 * producing a table overlaps serving the previous request. Memory stays
 * bounded: what the worker loads lives in the cache, under its one budget, and
 * it runs at most `window` tables ahead of the reader. Random access schedules
 * nothing.
 *
 * The worker starts on the first sequential access and stops when the last
 * user is destroyed. A fork(2) holds it between two tables; the child has no
 * worker and starts its own at its next sequential read (vdmount reads
 * partition tables, then daemonizes). */
#ifndef VD_AHEAD_H
#define VD_AHEAD_H

#include <stdbool.h>
#include <stdint.h>

#include "disk/tcache.h"

/* Whether table idx should be loaded ahead at all (e.g. only allocated
 * grains). Called on the worker thread without any lock. */
typedef bool (*vd_ahead_want_fn)(void *ctx, uint64_t idx);

struct vd_ahead {
	struct vd_tcache *cache;
	uint64_t limit;	 /* tables 0 .. limit-1 exist */
	uint64_t window; /* tables kept loaded ahead of the reader (>= 1) */
	vd_ahead_want_fn want;
	void *ctx;
	/* protected by the module's lock: */
	uint64_t next;		/* first table after the latest request */
	uint64_t pos;		/* next table the worker loads */
	uint64_t until;		/* the worker stops before this table */
	uint64_t busy;		/* table the worker is loading now, or UINT64_MAX */
	struct vd_ahead *qnext; /* queue of users with work */
	bool queued;
	bool ready;
	uint64_t loaded; /* tables the worker loaded (statistics) */
};

/* Sets a up for the tables of cache (kept, not owned): limit tables, window
 * tables of read-ahead (0 disables it). Never fails; no thread starts here. */
void vd_ahead_init(struct vd_ahead *a, struct vd_tcache *cache, uint64_t limit, uint64_t window,
		   vd_ahead_want_fn want, void *ctx);

/* Schedules no more read-ahead in this process (tests that count or fail
 * every allocation and I/O call of a reader need it to run on one thread
 * only, deterministically). */
void vd_ahead_disable(void);

/* A reader is about to serve tables first .. last, which the worker then
 * never loads (the reader produces those itself). If the request follows
 * the previous one and extend is true, the worker is told to load the window
 * after last; with extend false (nothing ahead is worth loading now, by the
 * user's own measure) the worker is not woken. */
void vd_ahead_note(struct vd_ahead *a, uint64_t first, uint64_t last, bool extend);

/* Waits while the worker is loading table idx. Returns true if it waited
 * (the table is then most likely in the cache). */
bool vd_ahead_wait(struct vd_ahead *a, uint64_t idx);

/* Tables the worker loaded for a so far. */
uint64_t vd_ahead_loaded(struct vd_ahead *a);

/* Cancels a's read-ahead and waits until the worker no longer uses a (or
 * the cache); the last user also stops the worker thread. Safe on a zeroed
 * struct. */
void vd_ahead_destroy(struct vd_ahead *a);

#endif
