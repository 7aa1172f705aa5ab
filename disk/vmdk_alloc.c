/* The write side of a hosted sparse extent: a delta that create_child()
 * made, opened VD_OPEN_RDWR as the copy-on-write target (contract in
 * disk/disk.h: data now, tables at flush, after the data is durable).
 *
 * A grain is unallocated (GTE 0), zeroed (GTE 1) or at sector GTE. Nothing
 * but GT entries ever changes: the GD and all GTs were laid out by
 * create_child(), and vmdk_rw_open() refuses any other layout, so the GT of
 * grain g is always at sector gt0 + 4 * (g / 512) and its redundant copy at
 * rgt0 + 4 * (g / 512), whatever the file says.
 *
 *   write, allocated grains: pwrite at the place block_status maps (no lock).
 *   write, new grains (whole: chain/ guarantees it): under w->lock only
 *     bump alloc_end (the grains go at the end of the file); pwrite the
 *     data with no lock held; raise the extent's file size; set the GT
 *     entries in the pinned GT cache (vd_tcache_get_mut: block_status and
 *     reads see the grain from then on, never before its data is in the
 *     file) and put their GTs on the dirty list.
 *   discard: whole grains get GTE 1 in the cache, their GTs go on the list.
 *   flush: take the dirty list, copy those GTs, fdatasync (every grain a
 *     copied entry points at was pwritten before its entry was set, so it
 *     is durable now), write the copies over the GTs and the redundant GTs,
 *     fdatasync. Two syncs per flush, none per write.
 *   header: uncleanShutdown is set (written, fdatasync'd) before the first
 *     change and cleared at a clean close, after the last flush.
 *
 * A crash at any moment leaves GTs that point only at durable grains (from
 * the last flush, or a mix of it and the one in progress, entry by entry):
 * at worst grains nothing points at. ENOSPC or EIO while writing data or
 * GTs goes to the caller and leaves the file as it was (the GTs stay dirty
 * for the next flush; a failed grain's space is given back when it is still
 * the last). A failed fdatasync is sticky: what reached the disk is then
 * unknown, so every later write and flush returns that error and the file
 * keeps the state of the last good flush, marked unclean.
 *
 * Lock order: flush_lock, then lock; a GT cache shard lock is never held
 * together with either. */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/tcache.h"

#define GTES 512u
#define GT_BYTES (GTES * 4u)
#define GT_SECTORS 4u
#define GRAIN_BYTES (128u * 512u)
#define MAX_SECTORS (1ull << 32) /* a GTE is a u32 sector number */

struct vmdk_rw {
	struct vmdk_extent *e;
	struct vd_tcache *gts; /* the backend's GT cache, pinned; by GT sector */
	uint64_t ext_bytes;
	uint64_t n_gt;
	uint64_t gt0, rgt0; /* sectors of GT 0 and of redundant GT 0 */

	pthread_mutex_t lock; /* the allocation lock: never held across I/O */
	uint64_t alloc_end;   /* protected by lock: where the next grain goes */
	uint32_t *dirty;      /* protected by lock: GTs changed since the last flush */
	uint64_t *dirty_bits; /* protected by lock */
	uint32_t n_dirty;     /* protected by lock */
	int failed;   /* sticky -errno of a failed fdatasync; set under lock, read atomically */
	bool changed; /* written since the last flush began; atomic */

	pthread_mutex_t flush_lock; /* serialises flushes and header writes (held over I/O) */
	struct vmdk_kdmv_header h;  /* protected by flush_lock: the header as on disk */
	uint32_t *batch;	    /* protected by flush_lock */
	bool unclean;		    /* set under flush_lock; read atomically */
};

static const uint8_t zero_grain[GRAIN_BYTES];

static uint64_t gt_sector(const struct vmdk_rw *w, uint64_t gt)
{
	return w->gt0 + gt * GT_SECTORS;
}

/* --- opening ------------------------------------------------------------- */

/* One GD as create_child() writes it? */
static int gd_check(struct vmdk_extent *e, uint64_t off, uint64_t n_gt, const char *what)
{
	size_t bytes = (size_t)n_gt * 4;
	uint8_t *got = malloc(bytes), *want = malloc(bytes);
	int r = -ENOMEM;

	if (!got || !want)
		goto out;
	vmdk_gd_encode(off, n_gt, want);
	r = vd_pread_full(e->fd, got, bytes, off * 512);
	if (r < 0)
		vd_log_err("vmdk: %s: cannot read the %s: %s", e->path, what, strerror(-r));
	else if (memcmp(got, want, bytes) != 0)
		r = -EINVAL;
	if (r == -EINVAL)
		vd_log_err("vmdk: %s: cannot open for writing: the %s does not point at the "
			   "preallocated grain tables of a delta vdmount made",
			   e->path, what);
out:
	free(got);
	free(want);
	return r;
}

/* Is e exactly a delta create_child() made, closed cleanly? */
static int layout_check(struct vmdk_extent *e, const struct vmdk_kdmv_header *h, uint64_t n_gt)
{
	struct vmdk_kdmv_header want;
	uint8_t a[512], b[512];
	struct stat s;
	int r;

	vmdk_delta_header(h->capacity, &want);
	want.unclean_shutdown = h->unclean_shutdown;
	vmdk_kdmv_encode(h, a);
	vmdk_kdmv_encode(&want, b);
	if (memcmp(a, b, sizeof(a)) != 0) {
		vd_log_err("vmdk: %s: cannot open for writing: not laid out as a delta vdmount "
			   "makes (version %" PRIu32 ", flags 0x%" PRIx32 ", grain %" PRIu64
			   " sectors, GD at %" PRIu64 "; only new deltas are written)",
			   e->path, h->version, h->flags, h->grain_size, h->gd_offset);
		return -EINVAL;
	}
	if (h->unclean_shutdown) {
		vd_log_err("vmdk: %s: cannot open for writing: it was not closed cleanly (open it "
			   "read-only, or stack a new delta on it)",
			   e->path);
		return -EINVAL;
	}
	if (fstat(e->fd, &s) < 0 || !S_ISREG(s.st_mode)) {
		vd_log_err("vmdk: %s: cannot open for writing: not a regular file", e->path);
		return -EINVAL;
	}
	r = gd_check(e, h->rgd_offset, n_gt, "redundant grain directory");
	if (r == 0)
		r = gd_check(e, h->gd_offset, n_gt, "grain directory");
	return r;
}

int vmdk_rw_open(struct vmdk_extent *e, const struct vmdk_kdmv_header *h, struct vd_tcache *gts,
		 struct vmdk_rw **out)
{
	uint64_t n_gt = vd_div_round_up(vd_div_round_up(h->capacity, h->grain_size), GTES);
	uint64_t gd_sectors = vd_div_round_up(n_gt * 4, 512);
	struct vmdk_rw *w;
	int r = layout_check(e, h, n_gt);

	if (r < 0)
		return r;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->dirty = calloc(n_gt, sizeof(*w->dirty));
	w->batch = calloc(n_gt, sizeof(*w->batch));
	w->dirty_bits = calloc(vd_div_round_up(n_gt, 64), sizeof(*w->dirty_bits));
	if (!w->dirty || !w->batch || !w->dirty_bits) {
		free(w->dirty);
		free(w->batch);
		free(w->dirty_bits);
		free(w);
		return -ENOMEM;
	}
	w->e = e;
	w->gts = gts;
	w->h = *h;
	w->ext_bytes = h->capacity * 512;
	w->n_gt = n_gt;
	w->gt0 = h->gd_offset + gd_sectors;
	w->rgt0 = h->rgd_offset + gd_sectors;
	/* Past everything, leaked grains of an earlier session included. */
	w->alloc_end = vd_round_up(e->file_size, GRAIN_BYTES);
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->flush_lock, NULL);
	vd_tcache_pin(gts);
	*out = w;
	return 0;
}

/* --- shared steps -------------------------------------------------------- */

/* fdatasync; a failure is sticky (see the top of the file). */
static int rw_sync(struct vmdk_rw *w)
{
	int r = fdatasync(w->e->fd) < 0 ? -errno : 0;

	if (r < 0) {
		vd_log_err("vmdk: %s: fdatasync failed: %s; refusing further writes", w->e->path,
			   strerror(-r));
		pthread_mutex_lock(&w->lock);
		__atomic_store_n(&w->failed, r, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&w->lock);
	}
	return r;
}

/* Writes the header with uncleanShutdown = flag and syncs it. flush_lock held. */
static int header_put(struct vmdk_rw *w, uint8_t flag)
{
	uint8_t buf[512];
	int r;

	w->h.unclean_shutdown = flag;
	vmdk_kdmv_encode(&w->h, buf);
	r = vd_pwrite_full(w->e->fd, buf, sizeof(buf), 0);
	if (r < 0)
		vd_log_err("vmdk: %s: cannot write the header: %s", w->e->path, strerror(-r));
	if (r == 0)
		r = rw_sync(w);
	if (r == 0)
		__atomic_store_n(&w->unclean, flag != 0, __ATOMIC_RELEASE);
	return r;
}

/* Before the first change: the sticky error, or the header marked unclean. */
static int rw_begin(struct vmdk_rw *w)
{
	int r = __atomic_load_n(&w->failed, __ATOMIC_ACQUIRE);

	if (r < 0 || __atomic_load_n(&w->unclean, __ATOMIC_ACQUIRE))
		return r;
	pthread_mutex_lock(&w->flush_lock);
	if (!w->unclean)
		r = header_put(w, 1);
	pthread_mutex_unlock(&w->flush_lock);
	return r;
}

/* Puts GT gt on the dirty list. lock held. */
static void dirty_add(struct vmdk_rw *w, uint32_t gt)
{
	uint64_t bit = 1ull << (gt % 64);

	if (w->dirty_bits[gt / 64] & bit)
		return;
	w->dirty_bits[gt / 64] |= bit;
	w->dirty[w->n_dirty++] = gt;
}

/* Sets the GTEs of grains g .. g + count - 1 to val, val + step, ... in the
 * cache and marks their GTs dirty. */
static int gtes_set(struct vmdk_rw *w, uint64_t g, uint64_t count, uint32_t val, uint32_t step)
{
	while (count) {
		uint64_t gt = g / GTES, i = g % GTES, n = vd_min_u64(count, GTES - i);
		int err = 0;
		uint32_t *t = vd_tcache_get_mut(w->gts, gt_sector(w, gt), &err);

		if (!t) {
			vd_log_err("vmdk: %s: cannot load grain table %" PRIu64 ": %s", w->e->path,
				   gt, strerror(-err));
			return err;
		}
		for (uint64_t k = 0; k < n; k++, val += step)
			t[i + k] = val;
		vd_tcache_put(w->gts, gt_sector(w, gt));
		pthread_mutex_lock(&w->lock);
		dirty_add(w, (uint32_t)gt);
		pthread_mutex_unlock(&w->lock);
		g += n;
		count -= n;
	}
	return 0;
}

/* Whole grains [off, off + len): grain-aligned, ending on a grain or at the
 * extent's end. */
static int grains_check(struct vmdk_rw *w, uint64_t off, uint64_t len, const char *what)
{
	if (off % GRAIN_BYTES == 0 && (len % GRAIN_BYTES == 0 || off + len == w->ext_bytes))
		return 0;
	vd_log_err("vmdk: %s: %s of %" PRIu64 " bytes at offset %" PRIu64
		   " covers only part of a grain this delta does not hold (whole grains only)",
		   w->e->path, what, len, off);
	return -EINVAL;
}

/* --- write, discard, flush ----------------------------------------------- */

/* Writes [off, off + len), whole grains not allocated here, into new grains
 * at the end of the file. */
static int write_new(struct vmdk_rw *w, const uint8_t *p, uint64_t len, uint64_t off)
{
	uint64_t grains = vd_div_round_up(len, GRAIN_BYTES), bytes = grains * GRAIN_BYTES;
	uint64_t phys = 0;
	int r = grains_check(w, off, len, "write");

	if (r < 0)
		return r;
	pthread_mutex_lock(&w->lock);
	r = w->failed;
	if (r == 0 && (w->alloc_end + bytes) / 512 > MAX_SECTORS)
		r = -EFBIG;
	if (r == 0) {
		phys = w->alloc_end;
		w->alloc_end += bytes;
	}
	pthread_mutex_unlock(&w->lock);
	if (r == -EFBIG)
		vd_log_err("vmdk: %s: full: a hosted sparse file cannot grow past 2 TiB",
			   w->e->path);
	if (r < 0)
		return r;
	r = vd_pwrite_full(w->e->fd, p, len, phys);
	/* The last, partial grain is stored whole, as every reader expects. */
	if (r == 0 && len < bytes)
		r = vd_pwrite_full(w->e->fd, zero_grain, bytes - len, phys + len);
	pthread_mutex_lock(&w->lock);
	if (r < 0 && w->alloc_end == phys + bytes)
		w->alloc_end = phys; /* still the last: give the space back */
	if (r == 0 && phys + bytes > w->e->file_size)
		__atomic_store_n(&w->e->file_size, phys + bytes, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&w->lock);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot write %" PRIu64
			   " bytes of new grains at offset %" PRIu64 ": %s",
			   w->e->path, len, off, strerror(-r));
		return r;
	}
	return gtes_set(w, off / GRAIN_BYTES, grains, (uint32_t)(phys / 512), GRAIN_BYTES / 512);
}

int vmdk_rw_write(struct vmdk_rw *w, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	int r = rw_begin(w);

	while (r == 0 && len) {
		struct vd_map map = {.fd = -1};
		uint64_t n = 0;
		int s = w->e->ops->block_status(w->e, off, len, &n, &map);

		if (s < 0)
			return s;
		if (s != VD_DATA) {
			r = write_new(w, p, n, off);
		} else {
			/* Allocated here: overwrite in place; its GTE does not change. */
			r = vd_pwrite_full(map.fd, p, n, map.off);
			if (r < 0)
				vd_log_err("vmdk: %s: cannot write %" PRIu64
					   " bytes at offset %" PRIu64 ": %s",
					   w->e->path, n, off, strerror(-r));
		}
		p += n;
		off += n;
		len -= n;
	}
	__atomic_store_n(&w->changed, true, __ATOMIC_RELEASE);
	return r;
}

int vmdk_rw_discard(struct vmdk_rw *w, uint64_t off, uint64_t len)
{
	int r = grains_check(w, off, len, "discard");

	if (r == 0)
		r = rw_begin(w);
	/* The grains' old space, if any, is leaked: nothing is moved. */
	if (r == 0)
		r = gtes_set(w, off / GRAIN_BYTES, vd_div_round_up(len, GRAIN_BYTES), 1, 0);
	__atomic_store_n(&w->changed, true, __ATOMIC_RELEASE);
	return r;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Writes the n copies in buf (GTs batch[0..n), ascending) over both GT
 * areas, one pwrite per run of neighbouring tables. */
static int gts_write(struct vmdk_rw *w, const uint8_t *buf, uint32_t n)
{
	for (uint32_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && w->batch[j] == w->batch[j - 1] + 1; j++)
			;
		for (unsigned copy = 0; copy < 2; copy++) {
			uint64_t sec = (copy ? w->rgt0 : w->gt0) + w->batch[i] * GT_SECTORS;
			int r = vd_pwrite_full(w->e->fd, buf + (size_t)i * GT_BYTES,
					       (size_t)(j - i) * GT_BYTES, sec * 512);

			if (r < 0) {
				vd_log_err("vmdk: %s: cannot write %sgrain table %" PRIu32 ": %s",
					   w->e->path, copy ? "redundant " : "", w->batch[i],
					   strerror(-r));
				return r;
			}
		}
	}
	return 0;
}

/* Copies GTs batch[0..n) out of the cache, little-endian, into buf. */
static int gts_copy(struct vmdk_rw *w, uint8_t *buf, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint64_t sec = gt_sector(w, w->batch[i]);
		int err = 0;
		const uint32_t *t = vd_tcache_get(w->gts, sec, &err);

		if (!t)
			return err;
		for (unsigned k = 0; k < GTES; k++)
			vd_put_le32(buf + (size_t)i * GT_BYTES + k * 4, t[k]);
		vd_tcache_put(w->gts, sec);
	}
	return 0;
}

int vmdk_rw_flush(struct vmdk_rw *w)
{
	uint8_t *buf = NULL;
	bool sticky = false;
	uint32_t n;
	int r;

	pthread_mutex_lock(&w->flush_lock);
	/* Nothing written since the last flush began: that flush, done when
	 * flush_lock is ours, made it all durable (a periodic flush of an idle
	 * delta costs nothing). */
	if (!__atomic_exchange_n(&w->changed, false, __ATOMIC_ACQ_REL)) {
		pthread_mutex_unlock(&w->flush_lock);
		return __atomic_load_n(&w->failed, __ATOMIC_ACQUIRE);
	}
	pthread_mutex_lock(&w->lock);
	r = w->failed;
	n = w->n_dirty;
	memcpy(w->batch, w->dirty, (size_t)n * sizeof(*w->batch));
	for (uint32_t i = 0; i < n; i++)
		w->dirty_bits[w->batch[i] / 64] &= ~(1ull << (w->batch[i] % 64));
	w->n_dirty = 0;
	pthread_mutex_unlock(&w->lock);
	sticky = r < 0;
	if (r < 0)
		goto out;
	qsort(w->batch, n, sizeof(*w->batch), u32_cmp);
	if (n) {
		buf = malloc((size_t)n * GT_BYTES);
		r = buf ? gts_copy(w, buf, n) : -ENOMEM;
		if (r < 0)
			vd_log_err("vmdk: %s: cannot flush: %s", w->e->path, strerror(-r));
	}
	if (r == 0) {
		r = rw_sync(w); /* the grains the copies point at are durable */
		sticky = r < 0;
	}
	if (r == 0)
		r = gts_write(w, buf, n);
	if (r == 0 && n) {
		r = rw_sync(w);
		sticky = r < 0;
	}
out:
	if (r < 0 && !sticky) {
		/* Not written (yet): keep the tables dirty for the next flush. */
		pthread_mutex_lock(&w->lock);
		for (uint32_t i = 0; i < n; i++)
			dirty_add(w, w->batch[i]);
		pthread_mutex_unlock(&w->lock);
		__atomic_store_n(&w->changed, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&w->flush_lock);
	free(buf);
	return r;
}

void vmdk_rw_close(struct vmdk_rw *w)
{
	int r;

	if (!w)
		return;
	if (__atomic_load_n(&w->unclean, __ATOMIC_ACQUIRE)) {
		r = vmdk_rw_flush(w);
		if (r == 0) {
			pthread_mutex_lock(&w->flush_lock);
			r = header_put(w, 0);
			pthread_mutex_unlock(&w->flush_lock);
		}
		if (r < 0)
			vd_log_warn("vmdk: %s: left marked as not closed cleanly: it holds what "
				    "was flushed before the error",
				    w->e->path);
	}
	pthread_mutex_destroy(&w->lock);
	pthread_mutex_destroy(&w->flush_lock);
	free(w->dirty);
	free(w->batch);
	free(w->dirty_bits);
	free(w);
}
