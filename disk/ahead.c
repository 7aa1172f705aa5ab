/* Loading tables ahead of a sequential reader (see ahead.h).
 *
 * One worker thread serves every user: users with tables to load wait in a
 * FIFO queue, and the worker takes one table of the first user at a time and
 * puts the user back at the tail while it has more, so two streams read at
 * once share the worker. All state of every user is under one mutex: it is
 * taken a few times per table, which costs little next to producing one.
 *
 * The worker marks the table it is loading (busy) so that a reader who needs
 * that table now waits for it instead of producing it a second time, and so
 * that destroying a user can wait until the worker has let go of it. The
 * worker runs with every signal blocked, like libfuse's own threads: a
 * SIGTERM delivered to it would never reach the FUSE loop. */
#include "disk/ahead.h"

#include <pthread.h>
#include <signal.h>

#include "disk/util.h"

#define AHEAD_IDLE UINT64_MAX

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER; /* the queue got a user, or quit */
static pthread_cond_t done = PTHREAD_COND_INITIALIZER; /* a busy table was released */
static struct vd_ahead *qhead, *qtail;		       /* protected by lock */
static unsigned users;				       /* protected by lock */
static bool running;				       /* protected by lock */
static unsigned generation; /* a worker runs while this equals its own; protected by lock */
static pthread_t worker;    /* protected by lock */
static bool disabled;	    /* vd_ahead_disable(); atomic */
/* fork(2): see fork_prepare(). Both protected by lock. */
static struct vd_ahead *loading; /* the user whose table the worker loads now */
static bool forking;
/* The worker waits for work (in pthread_cond_wait on work): it holds nothing,
 * not even a lock of the allocator's, that a fork could copy half-taken. */
static bool parked;

/* Caller holds lock. */
static void queue_add(struct vd_ahead *a)
{
	a->qnext = NULL;
	a->queued = true;
	if (qtail)
		qtail->qnext = a;
	else
		qhead = a;
	qtail = a;
}

/* Caller holds lock. */
static void queue_remove(struct vd_ahead *a)
{
	struct vd_ahead **pp = &qhead, *prev = NULL;

	if (!a->queued)
		return;
	while (*pp && *pp != a) {
		prev = *pp;
		pp = &(*pp)->qnext;
	}
	if (*pp)
		*pp = a->qnext;
	if (qtail == a)
		qtail = prev;
	a->qnext = NULL;
	a->queued = false;
}

/* Loads table idx into the cache unless it is there or not wanted. Errors
 * are left for the reader to meet and log (this thread logs nothing). */
static bool ahead_load(struct vd_ahead *a, uint64_t idx)
{
	int err = 0;

	if (a->want && !a->want(a->ctx, idx))
		return false;
	if (vd_tcache_find(a->cache, idx)) {
		vd_tcache_put(a->cache, idx);
		return false;
	}
	if (!vd_tcache_get(a->cache, idx, &err))
		return false;
	vd_tcache_put(a->cache, idx);
	return true;
}

static void *worker_main(void *arg)
{
	unsigned mine = (unsigned)(uintptr_t)arg;

	vd_log_mute(true); /* speculative: the reader meets a failure again and logs it */
	pthread_mutex_lock(&lock);
	while (generation == mine) {
		struct vd_ahead *a = qhead;
		uint64_t idx;
		bool loaded;

		if (!a || forking) {
			parked = true;
			pthread_cond_broadcast(&done);
			pthread_cond_wait(&work, &lock);
			parked = false;
			continue;
		}
		qhead = a->qnext;
		if (!qhead)
			qtail = NULL;
		a->queued = false;
		if (a->pos >= a->until)
			continue;
		idx = a->pos++;
		a->busy = idx;
		loading = a;
		if (a->pos < a->until)
			queue_add(a);
		pthread_mutex_unlock(&lock);
		loaded = ahead_load(a, idx);
		pthread_mutex_lock(&lock);
		a->busy = AHEAD_IDLE;
		loading = NULL;
		a->loaded += loaded;
		pthread_cond_broadcast(&done);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

/* A fork(2) copies only the forking thread: a child would inherit a table
 * marked busy by a worker it does not have, and readers waiting for it
 * forever (vdmount reads partition tables before it daemonizes). So the
 * worker is held between two tables across a fork, and the child starts
 * without one: its next sequential read starts its own. The fork also waits
 * until the worker is parked: one started just before it may still be in
 * its thread's start-up, which under ASan allocates with the sanitizer's
 * allocator locked, and a child that copied that lock taken hung in its
 * first free() (a -s mount in large_reads.sh, built with ASan). */
static void fork_prepare(void)
{
	pthread_mutex_lock(&lock);
	forking = true;
	while (loading || (running && !parked))
		pthread_cond_wait(&done, &lock);
}

static void fork_parent(void)
{
	forking = false;
	pthread_cond_broadcast(&work);
	pthread_mutex_unlock(&lock);
}

static void fork_child(void)
{
	/* the parent's worker may wait on these: fresh ones, no waiters */
	pthread_cond_init(&work, NULL);
	pthread_cond_init(&done, NULL);
	/* No thread serves the parent's queue here, and a user still on it
	 * would never be queued again (vd_ahead_note queues only a user that is
	 * not): every one leaves it, and its next request starts the worker. */
	for (struct vd_ahead *a = qhead, *next; a; a = next) {
		next = a->qnext;
		a->qnext = NULL;
		a->queued = false;
	}
	qhead = qtail = NULL;
	forking = false;
	running = false;
	parked = false;
	generation++;
	pthread_mutex_unlock(&lock);
}

static void fork_handlers(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Starts the worker if none runs. Caller holds lock. */
static void worker_start(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	sigset_t all, old;

	if (running)
		return;
	pthread_once(&once, fork_handlers);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	running = pthread_create(&worker, NULL, worker_main, (void *)(uintptr_t)generation) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (running) /* or it takes the name of the thread that started it */
		(void)pthread_setname_np(worker, "vd-ahead");
}

void vd_ahead_init(struct vd_ahead *a, struct vd_tcache *cache, uint64_t limit, uint64_t window,
		   vd_ahead_want_fn want, void *ctx)
{
	*a = (struct vd_ahead){.cache = cache,
			       .limit = limit,
			       .window = window,
			       .want = want,
			       .ctx = ctx,
			       .busy = AHEAD_IDLE};
	if (!window || !limit)
		return;
	pthread_mutex_lock(&lock);
	a->ready = true;
	users++;
	pthread_mutex_unlock(&lock);
}

void vd_ahead_disable(void)
{
	__atomic_store_n(&disabled, true, __ATOMIC_RELEASE);
}

void vd_ahead_note(struct vd_ahead *a, uint64_t first, uint64_t last, bool extend)
{
	uint64_t until;

	if (!a->ready || first > last || __atomic_load_n(&disabled, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&lock);
	/* The worker never loads what this request is producing: it would do
	 * the work twice (the reader may not even cache what it produces). */
	if (a->pos <= last && first < a->until)
		a->pos = last + 1;
	/* Sequential: this request starts near where the last one ended (a
	 * window behind: concurrent requests arrive out of order, and partial
	 * requests start in the table the last one ended in; a window ahead:
	 * tables that are not wanted, such as unallocated grains, are skipped
	 * by the reader). */
	if (extend && first + a->window >= a->next && first <= a->next + a->window) {
		until = last + 1 + a->window < a->limit ? last + 1 + a->window : a->limit;
		if (a->pos < last + 1)
			a->pos = last + 1;
		if (until > a->until)
			a->until = until;
		if (a->pos < a->until && !a->queued) {
			queue_add(a);
			worker_start();
			pthread_cond_signal(&work);
		}
	}
	if (last + 1 > a->next)
		a->next = last + 1;
	pthread_mutex_unlock(&lock);
}

bool vd_ahead_wait(struct vd_ahead *a, uint64_t idx)
{
	bool waited = false;

	if (!a->ready)
		return false;
	pthread_mutex_lock(&lock);
	while (a->busy == idx) {
		pthread_cond_wait(&done, &lock);
		waited = true;
	}
	pthread_mutex_unlock(&lock);
	return waited;
}

uint64_t vd_ahead_loaded(struct vd_ahead *a)
{
	uint64_t n;

	pthread_mutex_lock(&lock);
	n = a->loaded;
	pthread_mutex_unlock(&lock);
	return n;
}

void vd_ahead_destroy(struct vd_ahead *a)
{
	pthread_t t;
	bool join = false;

	pthread_mutex_lock(&lock);
	if (!a->ready) {
		pthread_mutex_unlock(&lock);
		return;
	}
	queue_remove(a);
	a->until = a->pos;
	while (a->busy != AHEAD_IDLE)
		pthread_cond_wait(&done, &lock);
	a->ready = false;
	if (--users == 0 && running) {
		generation++;
		running = false;
		t = worker;
		join = true;
		pthread_cond_broadcast(&work);
	}
	pthread_mutex_unlock(&lock);
	if (join)
		pthread_join(t, NULL);
}
