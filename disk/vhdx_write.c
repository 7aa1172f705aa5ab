/* VHDX writer: writing into a differencing VHDX that vhdx_create_child()
 * has just made, opened VD_OPEN_RDWR ([MS-VHDX] v8.0; section numbers are
 * its). The disk.h contract holds: data now, table entries in pinned
 * in-memory tables, tables into the file only at flush after the data is
 * durable. The metadata goes through the log as 2.3 requires.
 *
 * Open (2.2.2.1): both headers are rewritten with a new FileWriteGuid before
 * anything else changes. The first write or discard rewrites them with a new
 * DataWriteGuid first (2.2.2: before the first user-visible change).
 *
 * Write, per payload block (2.5.1.1; the BAT and the sector bitmaps live in
 * the pinned cache users the reader set up, and block_status sees them at
 * once):
 *   FULLY_PRESENT       overwritten in place.
 *   PARTIALLY_PRESENT   data pwritten, then the sectors' bitmap bits set
 *                       (2.4), so a reader sees them only once they hold
 *                       the data.
 *   NOT_PRESENT         a write of the whole block reserves a block at EOF,
 *                       writes it and only then publishes FULLY_PRESENT;
 *                       anything less allocates the block PARTIALLY_PRESENT
 *                       (no bit set yet: every sector still reads from the
 *                       parent) and the chunk's 1 MiB sector bitmap block
 *                       if it has none (SB_PRESENT), then as above.
 *   ZERO, UNMAPPED,     a new block at EOF, FULLY_PRESENT at once: its
 *   UNDEFINED           unwritten sectors are zeros, as the state said.
 * New blocks are appended (the file grows by ftruncate: holes read as
 * zeros); offsets are never reused. A PARTIALLY_PRESENT block whose every
 * bit is set becomes FULLY_PRESENT at the next flush (chain/ writes at most
 * 64 sectors per call, so that is how written-whole blocks get there).
 *
 * Discard: whole blocks only, which become ZERO (2.5.1.1: "MUST return
 * zeros", also in a differencing disk; UNMAPPED may show the parent's data
 * to other readers). Anything else is -ENOTSUP and the caller writes zeros:
 * a bitmap bit can only say "here" or "parent", never "zero". A discarded
 * block's space is punched out after the flush that records it.
 *
 * Flush (2.3: "write all metadata updates to the log; flush; apply them to
 * their final location; flush"):
 *   1. snapshot, under the lock: PARTIALLY_PRESENT blocks with every bit set
 *      promoted; the dirty 4 KiB sectors of sector bitmaps and of the BAT
 *      copied; the file's end;
 *   2. fdatasync: the data and the file's growth are durable;
 *   3. per round: one log entry (a sequence of its own: Tail = itself)
 *      holding as many sectors as half the log takes, written after the
 *      previous entry (the active sequence is never overwritten: each entry
 *      is at most half the ring); fdatasync; the first round of the session
 *      then puts a new LogGuid in both headers (each flushed); the sectors
 *      written to their places; fdatasync.
 *   4. blocks discarded before step 1 punched out.
 * Order of the first log entry and the header: the entry is durable before
 * the header names its LogGuid. 2.2.2 asks for the new LogGuid "before
 * overwriting existing space within the log", but a header naming a log
 * without a valid entry is a corrupt file (2.3.3), and a crash between the
 * two would leave exactly that; while the header says LogGuid zero no log
 * entry is replayed, so writing the log first is safe.
 * Crash at any moment: before the entry is durable, the previous flush's
 * state (its entry, if any, is still the active one, and replaying it is a
 * no-op); after, a replay (vdmount's is in memory) gives this round's state.
 * Rounds of one flush are each consistent: sector bitmaps go first (a bit
 * only ever goes up for durable data), then BAT sectors, in which a
 * PARTIALLY_PRESENT entry whose chunk has no sector bitmap in the file yet
 * (and not in this round) is written as NOT_PRESENT, what it was, and its
 * sector goes round again after the one holding the bitmap entry (bitmap
 * entries follow their chunk's payload entries, 2.5, so this ends).
 * Close: a last flush, then LogGuid zero in both headers: a clean file that
 * readers that do not replay logs read right.
 *
 * Locks, in order: flush_mx (one flush at a time; the log), then hdr_mx
 * (header updates); w->lock (allocation, the dirty sets, BAT changes) then
 * the cache's shard locks. Data I/O happens under none of them: an allocated
 * block never moves. */
#include "disk/vhdx.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/endian.h"

#define BAT_PER_SECTOR (VHDX_LOG_SECTOR / 8)		/* entries in a 4 KiB BAT sector */
#define SB_SECTORS (VHDX_SB_SIZE / VHDX_LOG_SECTOR)	/* 4 KiB sectors per bitmap block */
#define SB_SECTOR_BITS (VHDX_LOG_SECTOR * 8ull)		/* sectors one bitmap sector covers */
#define SLICE_SECTORS (VHDX_SB_SLICE / VHDX_LOG_SECTOR) /* bitmap sectors per cache slice */
#define BAT_PAGE_SECTORS (VHDX_BAT_PAGE / BAT_PER_SECTOR)

unsigned vhdx_test_round_cap;
enum vhdx_crash_point vhdx_test_crash_at;
unsigned vhdx_test_crash_round;

/* Sector numbers: a bit per possible one, and a list of those set. */
struct secset {
	uint8_t *bits; /* allocated at the first add */
	uint64_t *list;
	size_t n, cap;
	uint64_t limit;
};

struct vhdx_writer {
	pthread_mutex_t lock;	 /* protects the fields down to freed, and BAT changes */
	uint64_t next_off;	 /* the file's end: where the next block goes */
	struct secset bat_dirty; /* BAT sectors changed since the last snapshot */
	struct secset sb_dirty;	 /* bitmap sectors (chunk * 256 + k) changed since then */
	uint64_t *freed;	 /* offsets of blocks a discard let go */
	size_t n_freed, cap_freed;

	pthread_mutex_t flush_mx; /* one flush at a time; protects the log state */
	uint8_t log_guid[16];	  /* this session's, zero until the first entry */
	bool log_on;		  /* the headers name log_guid */
	uint64_t log_seq;	  /* the next entry's sequence number */
	uint32_t log_pos;	  /* where the next entry goes in the ring */
	uint8_t *sb_durable;	  /* bit per chunk: its SB_PRESENT entry is in the file */

	pthread_mutex_t hdr_mx; /* header updates (st->hdr, st->hdr_index) */
	bool data_guid_new;	/* atomic: DataWriteGuid renewed this session */
	int broken;		/* atomic: -errno after a failed sync (or a test crash) */
	uint64_t log_off;	/* the log region (the headers' fields, fixed) */
	uint32_t log_len;
	uint64_t flushes, entries; /* atomic counters for describe */
	bool locks;		   /* the mutexes are initialised */
};

/* Appends v to a growable array. Returns 0 or -ENOMEM. */
static int list_push(uint64_t **list, size_t *n, size_t *cap, uint64_t v)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		uint64_t *nl = realloc(*list, ncap * sizeof(*nl));

		if (!nl)
			return -ENOMEM;
		*list = nl;
		*cap = ncap;
	}
	(*list)[(*n)++] = v;
	return 0;
}

static int secset_add(struct secset *s, uint64_t k)
{
	int r;

	if (!s->bits) {
		s->bits = calloc(vd_div_round_up(s->limit, 8), 1);
		if (!s->bits)
			return -ENOMEM;
	}
	if (s->bits[k / 8] & (1u << (k % 8)))
		return 0;
	r = list_push(&s->list, &s->n, &s->cap, k);
	if (r == 0)
		s->bits[k / 8] |= (uint8_t)(1u << (k % 8));
	return r;
}

/* Moves the list out (*n entries, malloc'd or NULL) and empties the set. */
static uint64_t *secset_take(struct secset *s, size_t *n)
{
	uint64_t *l = s->list;

	*n = s->n;
	for (size_t i = 0; i < s->n; i++)
		s->bits[l[i] / 8] &= (uint8_t) ~(1u << (l[i] % 8));
	s->list = NULL;
	s->n = s->cap = 0;
	return l;
}

static void secset_free(struct secset *s)
{
	free(s->bits);
	free(s->list);
	memset(s, 0, sizeof(*s));
}

static int broken(struct vhdx_writer *w)
{
	return __atomic_load_n(&w->broken, __ATOMIC_ACQUIRE);
}

/* fdatasync; a failure is sticky (after a failed sync nothing is known
 * about what reached the disk). */
static int sync_fd(struct vd_image *img, struct vhdx_writer *w)
{
	int r = 0;

	if (fdatasync(img->fd) < 0) {
		r = -errno;
		__atomic_store_n(&w->broken, -EIO, __ATOMIC_RELEASE);
		vd_log_err("vhdx: %s: fdatasync failed: %s (no further writes)", img->path,
			   strerror(-r));
	}
	return r;
}

/* --- headers (2.2.2.1) ---------------------------------------------------- */

/* Writes the current header, changed where file_write, data_write or
 * log_guid are non-NULL, with the next sequence number, over the other
 * header and flushes it; twice, so both headers agree. hdr_mx held. */
static int header_update(struct vd_image *img, const uint8_t *file_write, const uint8_t *data_write,
			 const uint8_t *log_guid)
{
	struct vhdx_state *st = img->priv;
	uint8_t buf[VHDX_HEADER_SIZE];
	int r = 0;

	for (int i = 0; i < 2 && r == 0; i++) {
		struct vhdx_header h = st->hdr;

		h.seq++;
		if (file_write)
			memcpy(h.file_write, file_write, 16);
		if (data_write)
			memcpy(h.data_write, data_write, 16);
		if (log_guid)
			memcpy(h.log_guid, log_guid, 16);
		vhdx_header_encode(&h, buf);
		r = vd_pwrite_full(img->fd, buf, sizeof(buf),
				   st->hdr_index == 1 ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
		if (r == 0)
			r = sync_fd(img, st->w);
		if (r == 0) {
			st->hdr = h;
			st->hdr_index = 3 - st->hdr_index;
		}
	}
	if (r < 0)
		vd_log_err("vhdx: %s: cannot update the headers: %s", img->path, strerror(-r));
	return r;
}

/* 2.2.2: a new DataWriteGuid before the first user-visible change. */
static int data_guid_renew(struct vd_image *img)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	uint8_t g[16];
	int r = 0;

	if (__atomic_load_n(&w->data_guid_new, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&w->hdr_mx);
	if (!w->data_guid_new) {
		r = vhdx_guid_new(g);
		if (r == 0)
			r = header_update(img, NULL, g, NULL);
		if (r == 0)
			__atomic_store_n(&w->data_guid_new, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&w->hdr_mx);
	return r;
}

void vhdx_write_header_get(struct vd_image *img, struct vhdx_header *h, int *index)
{
	struct vhdx_state *st = img->priv;

	if (st->w)
		pthread_mutex_lock(&st->w->hdr_mx);
	*h = st->hdr;
	*index = st->hdr_index;
	if (st->w)
		pthread_mutex_unlock(&st->w->hdr_mx);
}

/* --- tables in the cache ---------------------------------------------------- */

/* Sets BAT entry idx and marks its sector dirty. w->lock held. */
static int bat_set(struct vhdx_state *st, uint64_t idx, uint64_t e)
{
	int r = 0;
	uint64_t *t = vd_tcache_get_mut(&st->bat, idx / VHDX_BAT_PAGE, &r);

	if (!t)
		return r;
	t[idx % VHDX_BAT_PAGE] = e;
	vd_tcache_put(&st->bat, idx / VHDX_BAT_PAGE);
	return secset_add(&st->w->bat_dirty, idx / BAT_PER_SECTOR);
}

/* First bit of block b in its chunk's bitmap, and its cache slice. */
static uint64_t block_bit(const struct vhdx_state *st, uint64_t b)
{
	return (b % st->geom.chunk_ratio) * st->sectors_per_block;
}

static uint64_t bit_slice(const struct vhdx_state *st, uint64_t c, uint64_t bit)
{
	return c * (VHDX_SB_SIZE / VHDX_SB_SLICE) + bit / 8 / VHDX_SB_SLICE;
}

/* Sectors of block b inside the disk (the last block may be short). */
static uint64_t block_sectors(const struct vhdx_state *st, uint64_t b)
{
	uint64_t start = b * st->par.block_size;

	return vd_min_u64(st->par.block_size, st->par.size - start) / st->par.logical;
}

/* Sets bits [k0, k1) of block b (its sectors), then marks the bitmap
 * sectors dirty: in that order, so a snapshot taken in between still sees
 * them dirty afterwards. */
static int bits_set(struct vhdx_state *st, uint64_t b, uint64_t k0, uint64_t k1)
{
	uint64_t c = b / st->geom.chunk_ratio, a = block_bit(st, b) + k0, e = block_bit(st, b) + k1;
	uint64_t slice = bit_slice(st, c, a), base = slice % (VHDX_SB_SIZE / VHDX_SB_SLICE);
	uint8_t *bm;
	int r = 0;

	/* a block's bits lie in one slice (see vhdx.c's lookup) */
	bm = vd_tcache_get_mut(&st->sb, slice, &r);
	if (!bm)
		return r;
	for (uint64_t i = a; i < e;) {
		uint64_t byte = i / 8 - base * VHDX_SB_SLICE;

		if (i % 8 == 0 && e - i >= 8) {
			uint64_t n = (e - i) / 8;

			memset(bm + byte, 0xFF, n);
			i += n * 8;
		} else {
			bm[byte] |= (uint8_t)(1u << (i % 8));
			i++;
		}
	}
	vd_tcache_put(&st->sb, slice);
	pthread_mutex_lock(&st->w->lock);
	for (uint64_t k = a / SB_SECTOR_BITS; r == 0 && k <= (e - 1) / SB_SECTOR_BITS; k++)
		r = secset_add(&st->w->sb_dirty, c * SB_SECTORS + k);
	pthread_mutex_unlock(&st->w->lock);
	return r;
}

/* Bit of sector k of block b: 1 when this layer holds it. */
static int bit_get(struct vhdx_state *st, uint64_t b, uint64_t k, bool *set)
{
	uint64_t c = b / st->geom.chunk_ratio, i = block_bit(st, b) + k;
	uint64_t slice = bit_slice(st, c, i);
	const uint8_t *bm;
	int r = 0;

	bm = vd_tcache_get(&st->sb, slice, &r);
	if (!bm)
		return r;
	*set = bm[i / 8 % VHDX_SB_SLICE] & (1u << (i % 8));
	vd_tcache_put(&st->sb, slice);
	return 0;
}

/* True when every sector of block b has its bit set. */
static int bits_all(struct vhdx_state *st, uint64_t b, bool *all)
{
	uint64_t c = b / st->geom.chunk_ratio, a = block_bit(st, b), n = block_sectors(st, b);
	uint64_t slice = bit_slice(st, c, a);
	const uint8_t *bm;
	int r = 0;

	bm = vd_tcache_get(&st->sb, slice, &r);
	if (!bm)
		return r;
	bm += a / 8 % VHDX_SB_SLICE; /* a is a multiple of 8: blocks hold >= 256 sectors */
	*all = true;
	for (uint64_t i = 0; i < n / 8 && *all; i++)
		*all = bm[i] == 0xFF;
	if (*all && n % 8)
		*all = (bm[n / 8] & ((1u << (n % 8)) - 1)) == (1u << (n % 8)) - 1;
	vd_tcache_put(&st->sb, slice);
	return 0;
}

/* --- allocation ------------------------------------------------------------- */

/* len bytes at the end of the file. w->lock held. */
static int space_alloc(struct vd_image *img, struct vhdx_writer *w, uint64_t len, uint64_t *off)
{
	uint64_t end = w->next_off + len;

	if (end > VHDX_MAX_OFFSET)
		return -EFBIG;
	if (ftruncate(img->fd, (off_t)end) < 0)
		return -errno;
	*off = w->next_off;
	w->next_off = end;
	return 0;
}

/* Gives chunk c a sector bitmap block unless it has one. w->lock held. */
static int sb_ensure(struct vd_image *img, struct vhdx_state *st, uint64_t c)
{
	uint64_t off = 0;
	int r;

	if (__atomic_load_n(&st->sb_off[c], __ATOMIC_ACQUIRE))
		return 0;
	r = space_alloc(img, st->w, VHDX_SB_SIZE, &off);
	if (r < 0)
		return r;
	__atomic_store_n(&st->sb_off[c], off, __ATOMIC_RELEASE);
	return bat_set(st, vhdx_bat_sb_index(&st->geom, c), off | VHDX_SB_PRESENT);
}

/* --- write ------------------------------------------------------------------- */

/* A write into a sector this layer does not hold must cover it whole (the
 * disk.h contract: chain/ copies it up first). */
static int edges_check(struct vd_image *img, struct vhdx_state *st, uint64_t b, uint64_t in,
		       uint64_t n, bool partial_block)
{
	uint64_t lss = st->par.logical, edge[2] = {in, in + n};

	for (int i = 0; i < 2; i++) {
		bool set = false;
		int r;

		if (edge[i] % lss == 0)
			continue;
		if (partial_block) {
			r = bit_get(st, b, edge[i] / lss, &set);
			if (r < 0)
				return r;
		}
		if (!set) {
			vd_log_err("vhdx: %s: write at %" PRIu64 " covers part of a sector this "
				   "layer does not hold",
				   img->path, b * st->par.block_size + edge[i]);
			return -EINVAL;
		}
	}
	return 0;
}

/* Writes n bytes at in inside block b. */
static int block_write(struct vd_image *img, uint64_t b, const uint8_t *p, size_t n, uint64_t in)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	uint64_t idx = vhdx_bat_payload_index(&st->geom, b), lss = st->par.logical;
	bool whole = in == 0 && n == block_sectors(st, b) * lss;
	uint64_t e = 0, e2 = 0, off = 0;
	int r;

	for (;;) {
		r = vhdx_bat_get(st, idx, &e);
		if (r < 0)
			return r;
		switch (e & VHDX_BAT_STATE_MASK) {
		case VHDX_PAYLOAD_FULLY_PRESENT:
			return vd_pwrite_full(img->fd, p, n, (e & VHDX_BAT_OFFSET_MASK) + in);
		case VHDX_PAYLOAD_PARTIALLY_PRESENT:
			r = edges_check(img, st, b, in, n, true);
			if (r == 0)
				r = vd_pwrite_full(img->fd, p, n, (e & VHDX_BAT_OFFSET_MASK) + in);
			if (r == 0) /* the bits go up only now that the data is there */
				r = bits_set(st, b, in / lss, vd_div_round_up(in + n, lss));
			return r;
		case VHDX_PAYLOAD_NOT_PRESENT:
			if (!whole && (r = edges_check(img, st, b, in, n, false)) < 0)
				return r;
			break;
		default: /* ZERO, UNMAPPED, UNDEFINED: a new block reads as zeros */
			break;
		}
		pthread_mutex_lock(&w->lock);
		r = vhdx_bat_get(st, idx, &e2);
		if (r == 0 && e2 == e) {
			if ((e & VHDX_BAT_STATE_MASK) != VHDX_PAYLOAD_NOT_PRESENT) {
				r = space_alloc(img, w, st->par.block_size, &off);
				if (r == 0)
					r = bat_set(st, idx, off | VHDX_PAYLOAD_FULLY_PRESENT);
			} else if (!whole) {
				r = sb_ensure(img, st, b / st->geom.chunk_ratio);
				if (r == 0)
					r = space_alloc(img, w, st->par.block_size, &off);
				if (r == 0)
					r = bat_set(st, idx, off | VHDX_PAYLOAD_PARTIALLY_PRESENT);
			} else {
				/* reserved now, published once it holds the data */
				r = space_alloc(img, w, st->par.block_size, &off);
				if (r == 0) {
					pthread_mutex_unlock(&w->lock);
					r = vd_pwrite_full(img->fd, p, n, off);
					if (r < 0)
						return r;
					pthread_mutex_lock(&w->lock);
					r = vhdx_bat_get(st, idx, &e2);
					if (r == 0 && e2 == e) {
						r = bat_set(st, idx,
							    off | VHDX_PAYLOAD_FULLY_PRESENT);
						pthread_mutex_unlock(&w->lock);
						return r;
					}
				}
			}
		}
		pthread_mutex_unlock(&w->lock);
		if (r < 0)
			return r;
		/* allocated (or changed meanwhile): go again with the new state */
	}
}

int vhdx_write(struct vd_image *img, const void *buf, size_t len, uint64_t off)
{
	struct vhdx_state *st = img->priv;
	const uint8_t *p = buf;
	uint64_t bs = st->par.block_size;
	int r;

	if (!st->w)
		return -EROFS;
	if (off > img->size || len > img->size - off)
		return -EINVAL;
	r = broken(st->w);
	if (r == 0)
		r = data_guid_renew(img);
	while (len && r == 0) {
		uint64_t in = off % bs;
		size_t n = (size_t)vd_min_u64(len, bs - in);

		r = block_write(img, off / bs, p, n, in);
		p += n;
		off += n;
		len -= n;
	}
	if (r < 0 && r != -EINVAL)
		vd_log_err("vhdx: %s: write at %" PRIu64 " failed: %s", img->path, off,
			   strerror(-r));
	return r;
}

/* Notes the offset of a block no longer used (w->lock held). */
static int freed_add(struct vhdx_writer *w, uint64_t off)
{
	return list_push(&w->freed, &w->n_freed, &w->cap_freed, off);
}

int vhdx_discard(struct vd_image *img, uint64_t off, uint64_t len)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	uint64_t bs = st->par.block_size, end = off + len;
	int r;

	if (!w)
		return -EROFS;
	if (off > img->size || len > img->size - off)
		return -EINVAL;
	if (off % bs || (end % bs && end != img->size))
		return -ENOTSUP; /* not whole blocks: the caller writes zeros */
	r = broken(w);
	if (r == 0)
		r = data_guid_renew(img);
	pthread_mutex_lock(&w->lock);
	for (uint64_t b = off / bs; r == 0 && b < vd_div_round_up(end, bs); b++) {
		uint64_t idx = vhdx_bat_payload_index(&st->geom, b), e = 0;
		unsigned state;

		r = vhdx_bat_get(st, idx, &e);
		state = (unsigned)(e & VHDX_BAT_STATE_MASK);
		if (r < 0 || state == VHDX_PAYLOAD_ZERO)
			continue;
		if (state == VHDX_PAYLOAD_FULLY_PRESENT || state == VHDX_PAYLOAD_PARTIALLY_PRESENT)
			r = freed_add(w, e & VHDX_BAT_OFFSET_MASK);
		if (r == 0)
			r = bat_set(st, idx, VHDX_PAYLOAD_ZERO);
	}
	pthread_mutex_unlock(&w->lock);
	if (r < 0)
		vd_log_err("vhdx: %s: discard at %" PRIu64 " failed: %s", img->path, off,
			   strerror(-r));
	return r;
}

/* --- flush ------------------------------------------------------------------- */

/* One 4 KiB metadata sector of a flush: where it goes and what it holds. */
struct snap_item {
	uint64_t off;	 /* in the file */
	uint64_t sector; /* BAT sector, or bitmap sector (chunk * 256 + k) */
	bool bitmap;
	uint8_t *data; /* 4 KiB, as of the snapshot */
};

struct snap {
	struct snap_item *items; /* bitmap sectors first, then BAT sectors ascending */
	size_t n;
	uint8_t *buf;
	uint64_t *freed;
	size_t n_freed;
	uint64_t file_end;
};

static void snap_free(struct snap *s)
{
	free(s->items);
	free(s->buf);
	free(s->freed);
	memset(s, 0, sizeof(*s));
}

/* Gives a failed flush's freed blocks back to the writer (w->lock held);
 * one lost to a failed allocation is only space not punched out. */
static void freed_return(struct vhdx_writer *w, struct snap *s)
{
	for (size_t i = 0; i < s->n_freed && freed_add(w, s->freed[i]) == 0; i++)
		;
	s->n_freed = 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* PARTIALLY_PRESENT blocks whose bits in the dirty bitmap sectors are all
 * set become FULLY_PRESENT. w->lock held. */
static int promote(struct vhdx_state *st)
{
	const struct secset *d = &st->w->sb_dirty;
	uint64_t cr = st->geom.chunk_ratio, spb = st->sectors_per_block;
	int r = 0;

	for (size_t i = 0; i < d->n && r == 0; i++) {
		uint64_t c = d->list[i] / SB_SECTORS, k = d->list[i] % SB_SECTORS;
		uint64_t b0 = c * cr + k * SB_SECTOR_BITS / spb;
		uint64_t b1 = c * cr + ((k + 1) * SB_SECTOR_BITS - 1) / spb;

		for (uint64_t b = b0; b <= b1 && b < st->geom.data_blocks && r == 0; b++) {
			uint64_t idx = vhdx_bat_payload_index(&st->geom, b), e = 0;
			bool all = false;

			r = vhdx_bat_get(st, idx, &e);
			if (r < 0 || (e & VHDX_BAT_STATE_MASK) != VHDX_PAYLOAD_PARTIALLY_PRESENT)
				continue;
			r = bits_all(st, b, &all);
			if (r == 0 && all)
				r = bat_set(st, idx,
					    (e & VHDX_BAT_OFFSET_MASK) |
						VHDX_PAYLOAD_FULLY_PRESENT);
		}
	}
	return r;
}

/* Copies sector bitmap sector (chunk * 256 + k) into out. */
static int sb_sector_copy(struct vhdx_state *st, uint64_t s, uint8_t *out, uint64_t *off)
{
	uint64_t c = s / SB_SECTORS, k = s % SB_SECTORS;
	uint64_t slice = c * (VHDX_SB_SIZE / VHDX_SB_SLICE) + k / SLICE_SECTORS;
	const uint8_t *t;
	int r = 0;

	t = vd_tcache_get(&st->sb, slice, &r);
	if (!t)
		return r;
	memcpy(out, t + (k % SLICE_SECTORS) * VHDX_LOG_SECTOR, VHDX_LOG_SECTOR);
	vd_tcache_put(&st->sb, slice);
	*off = __atomic_load_n(&st->sb_off[c], __ATOMIC_ACQUIRE) + k * VHDX_LOG_SECTOR;
	return 0;
}

/* Encodes BAT sector s (little-endian entries) into out. */
static int bat_sector_copy(struct vhdx_state *st, uint64_t s, uint8_t *out, uint64_t *off)
{
	uint64_t page = s / BAT_PAGE_SECTORS, first = (s % BAT_PAGE_SECTORS) * BAT_PER_SECTOR;
	const uint64_t *t;
	int r = 0;

	t = vd_tcache_get(&st->bat, page, &r);
	if (!t)
		return r;
	for (uint64_t i = 0; i < BAT_PER_SECTOR; i++)
		vd_put_le64(out + 8 * i, t[first + i]);
	vd_tcache_put(&st->bat, page);
	*off = st->rt.bat.offset + s * VHDX_LOG_SECTOR;
	return 0;
}

/* Step 1 of the flush (see the top of the file). w->lock held. On failure
 * the dirty sets may have been emptied: the caller restores them. */
static int snapshot(struct vhdx_state *st, struct snap *s)
{
	struct vhdx_writer *w = st->w;
	size_t n_sb, n_bat;
	uint64_t *sb, *bat;
	int r = promote(st);

	if (r < 0)
		return r;
	sb = secset_take(&w->sb_dirty, &n_sb);
	bat = secset_take(&w->bat_dirty, &n_bat);
	s->freed = w->freed;
	s->n_freed = w->n_freed;
	w->freed = NULL;
	w->n_freed = w->cap_freed = 0;
	s->file_end = w->next_off;
	s->n = n_sb + n_bat;
	s->items = calloc(s->n + 1, sizeof(*s->items));
	s->buf = malloc((s->n + 1) * VHDX_LOG_SECTOR);
	if (!s->items || !s->buf) {
		r = -ENOMEM;
		goto out;
	}
	if (n_bat > 1) /* bat is NULL when empty: no qsort on it (UBSan) */
		qsort(bat, n_bat, sizeof(*bat), u64_cmp);
	for (size_t i = 0; i < s->n && r == 0; i++) {
		struct snap_item *it = &s->items[i];

		it->data = s->buf + i * VHDX_LOG_SECTOR;
		it->bitmap = i < n_sb;
		it->sector = it->bitmap ? sb[i] : bat[i - n_sb];
		if (it->bitmap)
			r = sb_sector_copy(st, it->sector, it->data, &it->off);
		else
			r = bat_sector_copy(st, it->sector, it->data, &it->off);
	}
out:
	if (r < 0) {
		/* put everything back as it was: the next flush tries again */
		for (size_t i = 0; i < n_sb; i++)
			secset_add(&w->sb_dirty, sb[i]);
		for (size_t i = 0; i < n_bat; i++)
			secset_add(&w->bat_dirty, bat[i]);
		freed_return(w, s);
		snap_free(s);
	}
	free(sb);
	free(bat);
	return r;
}

/* Puts the sectors of a failed flush back in the dirty sets. */
static void snap_restore(struct vhdx_writer *w, struct snap *s)
{
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < s->n; i++)
		secset_add(s->items[i].bitmap ? &w->sb_dirty : &w->bat_dirty, s->items[i].sector);
	freed_return(w, s);
	pthread_mutex_unlock(&w->lock);
}

/* A simulated crash (tests) due at this point of round no. */
static bool crash_due(enum vhdx_crash_point at, unsigned no)
{
	return vhdx_test_crash_at == at && no + 1 >= vhdx_test_crash_round;
}

/* The simulated crash itself: nothing more reaches the file. */
static bool crash_here(struct vhdx_writer *w, enum vhdx_crash_point at, unsigned no)
{
	if (!crash_due(at, no))
		return false;
	vhdx_test_crash_at = VHDX_CRASH_NONE;
	__atomic_store_n(&w->broken, -EINTR, __ATOMIC_RELEASE);
	return true;
}

static bool durable_get(const struct vhdx_writer *w, uint64_t c)
{
	return w->sb_durable[c / 8] & (1u << (c % 8));
}

/* The image of BAT item it to log in a round whose BAT sectors are
 * round_secs[0..n) (sorted): a PARTIALLY_PRESENT entry whose chunk's bitmap
 * entry is neither in the file nor in this round is written as NOT_PRESENT
 * (see the top of the file). Returns true when it masked one. */
static bool bat_image(const struct vhdx_state *st, const struct snap_item *it,
		      const uint64_t *round_secs, size_t n, uint8_t *out)
{
	uint64_t cr = st->geom.chunk_ratio, last_c = UINT64_MAX;
	bool last_ok = true, masked = false;

	memcpy(out, it->data, VHDX_LOG_SECTOR);
	for (uint64_t i = 0; i < BAT_PER_SECTOR; i++) {
		uint64_t idx = it->sector * BAT_PER_SECTOR + i, e = vd_get_le64(out + 8 * i);
		uint64_t c = idx / (cr + 1), sb_sec;

		if (idx % (cr + 1) == cr ||
		    (e & VHDX_BAT_STATE_MASK) != VHDX_PAYLOAD_PARTIALLY_PRESENT)
			continue;
		if (c != last_c) {
			sb_sec = vhdx_bat_sb_index(&st->geom, c) / BAT_PER_SECTOR;
			last_c = c;
			last_ok = durable_get(st->w, c) ||
				  bsearch(&sb_sec, round_secs, n, sizeof(*round_secs), u64_cmp);
		}
		if (!last_ok) {
			vd_put_le64(out + 8 * i, VHDX_PAYLOAD_NOT_PRESENT);
			masked = true;
		}
	}
	return masked;
}

/* Writes the entry (len bytes) at the log position, wrapping at the end of
 * the ring; half of it when the test asks for a torn entry. */
static int entry_write(struct vd_image *img, const uint8_t *ent, size_t len, bool torn)
{
	struct vhdx_state *st = img->priv;
	uint64_t ring = st->w->log_len, pos = st->w->log_pos;
	size_t first = (size_t)vd_min_u64(len, ring - pos);
	int r;

	if (torn)
		len = vd_round_up(len / 2, VHDX_LOG_SECTOR);
	first = (size_t)vd_min_u64(first, len);
	r = vd_pwrite_full(img->fd, ent, first, st->w->log_off + pos);
	if (r == 0 && len > first)
		r = vd_pwrite_full(img->fd, ent + first, len - first, st->w->log_off);
	return r;
}

/* After a round's sectors are in place: the chunks whose bitmap entries it
 * wrote have their bitmap in the file. */
static void durable_mark(struct vhdx_state *st, struct snap_item *const *round, size_t m)
{
	uint64_t cr = st->geom.chunk_ratio;

	for (size_t i = 0; i < m; i++) {
		const struct snap_item *it = round[i];

		for (uint64_t k = 0; !it->bitmap && k < BAT_PER_SECTOR; k++) {
			uint64_t idx = it->sector * BAT_PER_SECTOR + k;

			if (idx % (cr + 1) == cr && (vd_get_le64(it->data + 8 * k) &
						     VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT)
				st->w->sb_durable[idx / (cr + 1) / 8] |=
				    (uint8_t)(1u << (idx / (cr + 1) % 8));
		}
	}
}

/* One round: items round[0..m) through the log into place (step 3). The
 * BAT images that had to be masked are appended to queue (*tail). */
static int round_run(struct vd_image *img, const struct snap *s, struct snap_item **round, size_t m,
		     struct snap_item **queue, size_t *tail, unsigned no)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	struct vhdx_log_entry h = {.n_desc = (uint32_t)m};
	size_t len = vhdx_log_entry_size((uint32_t)m), nb = 0;
	uint64_t *offs = malloc(m * sizeof(*offs)), *secs = malloc(m * sizeof(*secs));
	const uint8_t **data = malloc(m * sizeof(*data));
	uint8_t *imgs = malloc(m * VHDX_LOG_SECTOR), *ent = malloc(len);
	int r = -ENOMEM;

	if (!offs || !secs || !data || !imgs || !ent)
		goto out;
	for (size_t i = 0; i < m; i++)
		if (!round[i]->bitmap)
			secs[nb++] = round[i]->sector;
	for (size_t i = 0; i < m; i++) {
		offs[i] = round[i]->off;
		data[i] = round[i]->data;
		if (round[i]->bitmap)
			continue;
		if (bat_image(st, round[i], secs, nb, imgs + i * VHDX_LOG_SECTOR))
			queue[(*tail)++] = round[i];
		data[i] = imgs + i * VHDX_LOG_SECTOR;
	}
	h.seq = w->log_seq;
	h.tail = w->log_pos; /* a sequence of one entry */
	memcpy(h.log_guid, w->log_guid, 16);
	h.flushed = h.last = s->file_end;
	vhdx_log_entry_encode(&h, offs, data, ent);
	r = entry_write(img, ent, len, crash_due(VHDX_CRASH_ENTRY_TORN, no));
	if (r == 0 && crash_here(w, VHDX_CRASH_ENTRY_TORN, no))
		r = -EINTR;
	if (r == 0)
		r = sync_fd(img, w);
	if (r < 0)
		goto out;
	/* durable: this entry is the active sequence from now on */
	w->log_seq++;
	w->log_pos = (uint32_t)((w->log_pos + len) % w->log_len);
	__atomic_add_fetch(&w->entries, 1, __ATOMIC_RELAXED);
	if (crash_here(w, VHDX_CRASH_ENTRY_SYNCED, no)) {
		r = -EINTR;
		goto out;
	}
	if (!w->log_on) {
		pthread_mutex_lock(&w->hdr_mx);
		r = header_update(img, NULL, NULL, w->log_guid);
		pthread_mutex_unlock(&w->hdr_mx);
		if (r < 0)
			goto out;
		w->log_on = true;
	}
	if (crash_here(w, VHDX_CRASH_HEADER, no)) {
		r = -EINTR;
		goto out;
	}
	for (size_t i = 0; i < m && r == 0; i++) {
		if (i == m / 2 && crash_here(w, VHDX_CRASH_APPLY_HALF, no))
			r = -EINTR;
		else
			r = vd_pwrite_full(img->fd, data[i], VHDX_LOG_SECTOR, offs[i]);
	}
	if (r == 0)
		r = sync_fd(img, w);
	if (r == 0) {
		durable_mark(st, round, m);
		if (crash_here(w, VHDX_CRASH_APPLIED, no))
			r = -EINTR;
	}
out:
	free(offs);
	free(secs);
	free(data);
	free(imgs);
	free(ent);
	return r;
}

/* Step 3 for every sector of s, in rounds of at most half the log. */
static int rounds_run(struct vd_image *img, struct snap *s)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	uint32_t cap = vhdx_log_entry_max_desc(w->log_len / 2);
	struct snap_item **queue = malloc((2 * s->n + 1) * sizeof(*queue));
	size_t head = 0, tail = 0;
	unsigned no = 0;
	int r = 0;

	if (!queue)
		return -ENOMEM;
	if (vhdx_test_round_cap && vhdx_test_round_cap < cap)
		cap = vhdx_test_round_cap;
	for (size_t i = 0; i < s->n; i++)
		queue[tail++] = &s->items[i];
	if (vhdx_guid_is_zero(w->log_guid))
		r = vhdx_guid_new(w->log_guid);
	/* A masked sector goes round once more at most (the bitmap entries
	 * it waits for are ahead of it), so the queue holds 2n. */
	while (r == 0 && head < tail) {
		size_t m = vd_min_u64(cap, tail - head);

		r = round_run(img, s, queue + head, m, queue, &tail, no++);
		head += m;
	}
	free(queue);
	return r;
}

/* Punches out blocks that the flush just made unreferenced. */
static void freed_punch(struct vd_image *img, const struct snap *s)
{
	struct vhdx_state *st = img->priv;

	for (size_t i = 0; i < s->n_freed; i++)
		if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)s->freed[i], st->par.block_size) < 0)
			break; /* not supported here: the space stays */
}

int vhdx_flush(struct vd_image *img)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	struct snap s = {0};
	int r;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->flush_mx);
	r = broken(w);
	if (r < 0)
		goto out;
	pthread_mutex_lock(&w->lock);
	r = snapshot(st, &s);
	pthread_mutex_unlock(&w->lock);
	if (r < 0)
		goto out;
	r = sync_fd(img, w);
	if (r == 0 && crash_here(w, VHDX_CRASH_DATA_SYNCED, 0))
		r = -EINTR;
	if (r == 0 && s.n)
		r = rounds_run(img, &s);
	if (r == 0) {
		freed_punch(img, &s);
		__atomic_add_fetch(&w->flushes, 1, __ATOMIC_RELAXED);
	} else {
		snap_restore(w, &s);
	}
	snap_free(&s);
out:
	pthread_mutex_unlock(&w->flush_mx);
	if (r < 0 && r != -EINTR)
		vd_log_err("vhdx: %s: flush: %s", img->path, strerror(-r));
	return r;
}

/* --- open, close ------------------------------------------------------------- */

/* Why img is not a file this writer may write, or NULL. */
static const char *write_refusal(const struct vd_image *img, const struct vhdx_state *st)
{
	if (!st->par.has_parent)
		return "not a differencing disk";
	if (st->log.dirty)
		return "its log needs replaying";
	if (st->blocks_present || st->blocks_partial || st->blocks_zero)
		return "it holds data already";
	for (uint64_t c = 0; c < st->geom.sb_blocks; c++)
		if (st->sb_off[c])
			return "it holds data already";
	if (st->hdr.log_offset != VHDX_MiB || st->hdr.log_length != VHDX_MiB ||
	    st->rt.meta.offset != 2 * VHDX_MiB || st->rt.meta.length != VHDX_MiB ||
	    st->rt.bat.offset != 3 * VHDX_MiB || st->rt.count != 2 ||
	    img->file_size != st->rt.bat.offset + st->rt.bat.length)
		return "not laid out as vdmount lays out a new delta";
	return NULL;
}

int vhdx_write_open(struct vd_image *img)
{
	struct vhdx_state *st = img->priv;
	const char *why = write_refusal(img, st);
	struct vhdx_writer *w;
	uint8_t g[16];
	int r;

	if (why) {
		vd_log_err("vhdx: %s: cannot open for writing: %s (vdmount writes only the empty "
			   "differencing VHDX it has just made)",
			   img->path, why);
		return -EROFS;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	st->w = w;
	w->sb_durable = calloc(vd_div_round_up(st->geom.sb_blocks, 8) + 1, 1);
	if (!w->sb_durable)
		return -ENOMEM;
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->flush_mx, NULL);
	pthread_mutex_init(&w->hdr_mx, NULL);
	w->locks = true;
	w->next_off = img->file_size;
	w->bat_dirty.limit = st->rt.bat.length / VHDX_LOG_SECTOR;
	w->sb_dirty.limit = st->geom.sb_blocks * SB_SECTORS;
	w->log_seq = 1;
	w->log_off = st->hdr.log_offset;
	w->log_len = st->hdr.log_length;
	vd_tcache_pin(&st->bat);
	vd_tcache_pin(&st->sb);
	/* 2.2.2.1: the headers first, with a new FileWriteGuid */
	r = vhdx_guid_new(g);
	if (r == 0) {
		pthread_mutex_lock(&w->hdr_mx);
		r = header_update(img, g, NULL, NULL);
		pthread_mutex_unlock(&w->hdr_mx);
	}
	return r;
}

void vhdx_write_close(struct vd_image *img)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;
	static const uint8_t zero[16];

	if (!w)
		return;
	if (w->locks && !broken(w) && vhdx_flush(img) == 0 && w->log_on) {
		/* everything applied: the log is empty again */
		pthread_mutex_lock(&w->hdr_mx);
		if (header_update(img, NULL, NULL, zero) == 0)
			w->log_on = false;
		pthread_mutex_unlock(&w->hdr_mx);
	}
	if (w->locks) {
		pthread_mutex_destroy(&w->lock);
		pthread_mutex_destroy(&w->flush_mx);
		pthread_mutex_destroy(&w->hdr_mx);
	}
	secset_free(&w->bat_dirty);
	secset_free(&w->sb_dirty);
	free(w->freed);
	free(w->sb_durable);
	free(w);
	st->w = NULL;
}

void vhdx_write_describe(struct vd_image *img, struct vd_json *j)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_writer *w = st->w;

	if (!w)
		return;
	vd_json_obj_begin(j, "writer");
	vd_json_u64(j, "flushes", __atomic_load_n(&w->flushes, __ATOMIC_RELAXED));
	vd_json_u64(j, "log_entries_written", __atomic_load_n(&w->entries, __ATOMIC_RELAXED));
	pthread_mutex_lock(&w->flush_mx);
	vd_json_u64(j, "next_log_offset", w->log_pos);
	pthread_mutex_unlock(&w->flush_mx);
	vd_json_obj_end(j);
}
