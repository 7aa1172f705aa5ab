/* Large reads on two cores (fs/split.h). */
#include "fs/split.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

/* Halves meet at a multiple of this, so that neither cuts a grain or block
 * of the common sizes (a stream grain cut in two is inflated into the cache
 * and copied, where a whole one goes straight into place). */
#define SPLIT_ALIGN (64u << 10)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t posted = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static enum { HELPER_NONE, HELPER_FAILED, HELPER_IDLE, HELPER_BUSY, HELPER_DONE } state;
static struct {
	const struct vd_view *v;
	void *buf;
	size_t len;
	uint64_t off;
	int ret;
} job;

static void *helper_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	for (;;) {
		while (state != HELPER_BUSY)
			pthread_cond_wait(&posted, &lock);
		pthread_mutex_unlock(&lock);
		job.ret = vd_view_read(job.v, job.buf, job.len, job.off);
		pthread_mutex_lock(&lock);
		state = HELPER_DONE;
		pthread_cond_signal(&done);
	}
	return NULL;
}

/* Under lock: posts [off, off + len) of v to the helper if it is free.
 * Returns whether it took the job. */
static bool post(const struct vd_view *v, void *buf, size_t len, uint64_t off)
{
	if (state == HELPER_NONE) {
		pthread_t t;
		pthread_attr_t a;

		sigset_t all, old;

		state = HELPER_FAILED; /* no helper: every request is read whole */
		/* signals are for the FUSE threads (libfuse's handlers) */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		if (pthread_attr_init(&a) == 0) {
			if (pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) == 0 &&
			    pthread_create(&t, &a, helper_main, NULL) == 0) {
				state = HELPER_IDLE;
				(void)pthread_setname_np(t, "vd-split"); /* for ps and tests */
			}
			pthread_attr_destroy(&a);
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (state != HELPER_IDLE)
		return false;
	job.v = v;
	job.buf = buf;
	job.len = len;
	job.off = off;
	state = HELPER_BUSY;
	pthread_cond_signal(&posted);
	return true;
}

void fs_split_disable(void)
{
	pthread_mutex_lock(&lock);
	state = HELPER_FAILED;
	pthread_mutex_unlock(&lock);
}

/* Reads in flight in fs_split_read(), of any size. */
static unsigned inflight;

static int split_read(const struct vd_view *v, void *buf, size_t len, uint64_t off, bool alone)
{
	size_t half = len / 2 / SPLIT_ALIGN * SPLIT_ALIGN;
	bool posted_half = false;
	int r, r2;

	/* Another request in flight keeps the other core busy already: a
	 * split would only add a third runner and a hand-off (a buffered read
	 * of a 255-layer chain dropped from 2.0 to 1.2 GB/s in some rounds). */
	if (len >= FS_SPLIT_MIN && alone) {
		pthread_mutex_lock(&lock);
		posted_half = post(v, (char *)buf + half, len - half, off + half);
		pthread_mutex_unlock(&lock);
	}
	if (!posted_half)
		return vd_view_read(v, buf, len, off);
	r = vd_view_read(v, buf, half, off);
	pthread_mutex_lock(&lock);
	while (state != HELPER_DONE)
		pthread_cond_wait(&done, &lock);
	r2 = job.ret;
	state = HELPER_IDLE;
	pthread_mutex_unlock(&lock);
	return r < 0 ? r : r2;
}

int fs_split_read(const struct vd_view *v, void *buf, size_t len, uint64_t off)
{
	bool alone = __atomic_add_fetch(&inflight, 1, __ATOMIC_RELAXED) == 1;
	int r = split_read(v, buf, len, off, alone);

	__atomic_sub_fetch(&inflight, 1, __ATOMIC_RELAXED);
	return r;
}
