/* VMDK streamOptimized extent backend, read-only (VMware Virtual Disk
 * Format 5.0, "Stream-Optimized Compressed Sparse Extents").
 *
 * A stream is a KDMV file whose grains are deflate-compressed, each behind a
 * 12-byte grain marker (lba u64, size u32) when flag bit 17 is set. Two
 * layouts exist:
 *   - "vmware": header gdOffset = GD_AT_END; grain markers, GT and GD metadata
 *     markers, then a footer marker at EOF-1536, the footer (a header copy with
 *     the real gdOffset) at EOF-1024 and an end-of-stream marker at EOF-512;
 *   - "qemu" (also vdiskmanager): GD/GTs preallocated with a valid gdOffset in
 *     the header, no footer.
 * If the footer or the GD is unusable the markers are scanned from overHead
 * ("scanned"); a scan that hits EOF before the end-of-stream marker means the
 * file was truncated, and we refuse it rather than serve a partial disk.
 *
 * Index, in memory proportional to what the file holds, never to the
 * capacity its header claims:
 *   - with a GD: the GD is paged and the GTs (2 KiB) loaded lazily, both
 *     through the metadata cache, as for hosted sparse extents. A small
 *     stream (up to STREAM_EAGER_GTS tables) is checked whole at open, so a
 *     bad entry fails the mount and the number of grains is known; in a
 *     larger one a bad entry fails the reads of its grain (-EIO);
 *   - scanned: the markers found, sorted by grain (8 bytes each, at most
 *     STREAM_SCAN_MAX of them).
 * A grain table entry is 0 (not in this layer), 1 (zeroed grain, with flag
 * bit 2) or the sector of the grain's marker.
 *
 * Inflated grains live in the metadata cache too (one table per grain; an
 * all-zero grain costs nothing), so a request that ends inside a grain does
 * not inflate it again for the next one. A request that covers a whole grain
 * that is not cached inflates it straight into the caller's buffer; a grain
 * that deflate kept in stored blocks (random, compressed or encrypted data)
 * is read there without inflating, its payloads scattered by one preadv
 * (disk/stored.h), once an earlier grain showed the layout. On
 * sequential access the next grains are inflated ahead on a worker thread
 * (disk/ahead.h) while the reader copies the current ones, so inflation is
 * off the critical path of a sequential read.
 *
 * Inflation (libdeflate: whole-buffer, several times faster than zlib's
 * streaming inflate on grains) only ever writes into a grain-sized buffer and
 * must produce exactly one grain (the final partial grain may stop early), so
 * a hostile stream cannot make us allocate or write more than that. */
#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "disk/ahead.h"
#include "disk/endian.h"
#include "disk/stored.h"
#include "disk/tcache.h"
#include "disk/vmdk.h"

#define STREAM_MARKER_BYTES 12
#define STREAM_META_TYPE 12 /* u32 type after lba/numSectors and size */
#define STREAM_EOS 0u
#define STREAM_GT 1u
#define STREAM_GD 2u
#define STREAM_FOOTER 3u
#define STREAM_GTES 512u
#define STREAM_GT_BYTES (STREAM_GTES * 4u)
#define STREAM_EAGER_GTS 256u	      /* GD entries checked at open: 512 KiB of GTs */
#define STREAM_SCAN_MAX (1u << 21)    /* markers indexed by a scan: 16 MiB */
#define STREAM_FIRST_READ 4096u	      /* first guess of a compressed grain's size */
#define STREAM_AHEAD_BYTES (4u << 20) /* inflated ahead of a sequential reader */
#define STREAM_UNCOUNTED UINT64_MAX   /* compressed grains not counted (large stream) */

enum stream_layout { STREAM_LAYOUT_QEMU, STREAM_LAYOUT_VMWARE, STREAM_LAYOUT_SCANNED };
static const char *const stream_layout_names[] = {"qemu", "vmware", "scanned"};

/* A grain found by scanning: its marker is at sector. */
struct stream_mark {
	uint32_t grain;
	uint32_t sector;
};

struct stream_state {
	struct vmdk_kdmv_header h; /* the footer when one was used */
	struct vmdk_extent *e;	   /* back pointer for the cache loaders */
	enum stream_layout layout;
	bool footer_used;
	uint64_t grain_bytes, n_grains, n_gd, ext_bytes; /* ext_bytes from the header */
	uint64_t max_csize;				 /* compressBound(grain_bytes) */
	uint64_t n_compressed;				 /* or STREAM_UNCOUNTED */

	/* Index with a GD (qemu, vmware): */
	struct vmdk_gd gd;
	struct vd_tcache gts; /* GTs by sector, native order */
	/* Index of a scanned stream, sorted by grain, immutable after open: */
	struct stream_mark *marks;
	uint64_t n_marks;

	struct vd_tcache grains; /* inflated grains by grain number */
	struct vd_ahead ahead;
	uint32_t csize_hint;	       /* size of the last compressed grain; atomic */
	struct vd_stored_guess stored; /* layout of the last grain in stored blocks */
	uint64_t inflated;	       /* atomic */
	uint64_t direct;	       /* grains read straight into place; atomic */
	uint64_t hits;		       /* atomic */
};

static void stream_close(struct vmdk_extent *e)
{
	struct stream_state *st = e->priv;

	if (!st)
		return;
	vd_ahead_destroy(&st->ahead); /* before the caches it loads into */
	vd_tcache_destroy(&st->grains);
	vd_tcache_destroy(&st->gts);
	vmdk_gd_destroy(&st->gd);
	free(st->marks);
	free(st);
	e->priv = NULL;
}

/* Reads and checks the three sectors at EOF-1536. Returns 1 and fills *foot if
 * a footer is there, 0 if there is none (caller scans), or -errno. */
static int stream_footer_read(struct vmdk_extent *e, struct stream_state *st,
			      struct vmdk_kdmv_header *foot)
{
	uint8_t t[1536];
	int ret;

	if (e->file_size % 512 || e->file_size < 2048)
		return 0;
	ret = vd_pread_full(e->fd, t, sizeof(t), e->file_size - sizeof(t));
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the stream footer: %s", e->path, strerror(-ret));
		return ret;
	}
	if (vd_get_le64(t) != 1 || vd_get_le32(t + 8) != 0 ||
	    vd_get_le32(t + STREAM_META_TYPE) != STREAM_FOOTER ||
	    vd_get_le32(t + 512) != VMDK_KDMV_MAGIC || vd_get_le64(t + 1024) != 0 ||
	    vd_get_le32(t + 1024 + 8) != 0 ||
	    vd_get_le32(t + 1024 + STREAM_META_TYPE) != STREAM_EOS)
		return 0;
	ret = vmdk_kdmv_decode(t + 512, e->path, foot);
	if (ret < 0)
		return ret;
	if (foot->gd_offset == VMDK_GD_AT_END || foot->capacity != st->h.capacity ||
	    foot->grain_size != st->h.grain_size || foot->flags != st->h.flags) {
		vd_log_err("vmdk: %s: stream footer disagrees with the header (gdOffset 0x%" PRIx64
			   ", capacity %" PRIu64 ", grain %" PRIu64 ", flags 0x%" PRIx32 ")",
			   e->path, foot->gd_offset, foot->capacity, foot->grain_size, foot->flags);
		return -EINVAL;
	}
	return 1;
}

/* vmdk_gte_fn: a GTE is 0 (not here), 1 (zeroed, with the flag) or the sector
 * of a grain marker, which must lie between overHead and EOF. *phys is the
 * grain's place in the extent, not in the file (block_status only strings
 * grains into runs with it; reading looks the marker up again). */
static int stream_gte(struct vmdk_extent *e, uint64_t g, uint64_t gte, bool log, uint64_t *phys)
{
	struct stream_state *st = e->priv;

	if (gte == 0)
		return VD_UNALLOC; /* a stream has no parent: chain/ reads zeros */
	if (gte == 1 && (st->h.flags & VMDK_FLAG_ZERO_GTE))
		return VD_ZERO;
	if (gte < st->h.overhead || gte * 512 + STREAM_MARKER_BYTES > e->file_size) {
		if (log)
			vd_log_err("vmdk: %s: grain %" PRIu64 " at sector %" PRIu64
				   " is before overHead %" PRIu64 " or past EOF",
				   e->path, g, gte, st->h.overhead);
		return -EIO;
	}
	*phys = g * st->grain_bytes;
	return VD_DATA;
}

static int stream_gt_of(struct vmdk_extent *e, uint64_t g, uint64_t *gt, uint64_t *absent)
{
	struct stream_state *st = e->priv;

	return vmdk_gd_gt(&st->gd, g / STREAM_GTES, UINT64_MAX, gt, absent);
}

static const struct vmdk_gt_format stream_gt_format = {4, STREAM_GTES, stream_gt_of, stream_gte,
						       NULL};

/* vmdk_gd.check: a GD entry must name a whole GT inside the file. */
static int stream_gde_check(struct vmdk_extent *e, uint64_t i, uint64_t gde)
{
	if (gde * 512 + STREAM_GT_BYTES <= e->file_size)
		return 0;
	vd_log_err("vmdk: %s: grain directory entry %" PRIu64 " (sector %" PRIu64 ") past EOF",
		   e->path, i, gde);
	return -EINVAL;
}

static int stream_gt_load(void *ctx, uint64_t sec, void *table)
{
	struct stream_state *st = ctx;

	return vmdk_gt_read(st->e, sec * 512, STREAM_GTES, 4, table, "grain table at sector", sec);
}

/* Index of the first mark whose grain is >= g. */
static uint64_t marks_find(const struct stream_state *st, uint64_t g)
{
	uint64_t lo = 0, hi = st->n_marks;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (st->marks[mid].grain < g)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* State of grain g (< n_grains) and, for DATA, the sector of its marker.
 * Returns the state or -errno (logged). */
static int stream_grain_where(struct stream_state *st, uint64_t g, uint64_t *sec)
{
	const uint32_t *gt;
	uint64_t gt_idx, phys;
	int r;

	if (st->layout == STREAM_LAYOUT_SCANNED) {
		uint64_t i = marks_find(st, g);

		if (i == st->n_marks || st->marks[i].grain != g)
			return VD_UNALLOC;
		*sec = st->marks[i].sector;
		return VD_DATA;
	}
	r = stream_gt_of(st->e, g, &gt_idx, NULL);
	if (r < 0 || gt_idx == VMDK_NO_GT)
		return r < 0 ? r : VD_UNALLOC;
	gt = vd_tcache_get(&st->gts, gt_idx, &r);
	if (!gt)
		return r;
	*sec = gt[g % STREAM_GTES];
	vd_tcache_put(&st->gts, gt_idx);
	r = stream_gte(st->e, g, *sec, true, &phys);
	return r;
}

/* Sets up the GD-based index and, for a small stream, checks every GT entry
 * and counts the grains. Returns 0, 1 if the GD lies past EOF (the caller
 * scans instead), or -errno. */
static int stream_index_from_gd(struct vmdk_extent *e, struct stream_state *st)
{
	uint64_t gd_off, gd_end;
	int r;

	if (st->h.gd_offset == 0 || vd_mul_ovf(st->h.gd_offset, 512, &gd_off) ||
	    vd_add_ovf(gd_off, st->n_gd * 4, &gd_end) || gd_end > e->file_size)
		return 1;
	st->gd = (struct vmdk_gd){.e = e,
				  .off = gd_off,
				  .n = st->n_gd,
				  .width = 4,
				  .what = "grain directory",
				  .check = stream_gde_check};
	r = vd_tcache_init(&st->gts, STREAM_GT_BYTES, stream_gt_load, st);
	if (r == 0)
		r = vmdk_gd_init(&st->gd);
	if (r < 0 || st->n_gd > STREAM_EAGER_GTS) {
		st->n_compressed = STREAM_UNCOUNTED;
		return r;
	}
	for (uint64_t g = 0; g < st->n_grains; g++) {
		uint64_t sec;
		int s = stream_grain_where(st, g, &sec);

		if (s < 0) /* a bad entry fails the open; no memory is not the file's fault */
			return s == -ENOMEM ? s : -EINVAL;
		st->n_compressed += s == VD_DATA;
	}
	return 0;
}

static int mark_cmp(const void *a, const void *b)
{
	const struct stream_mark *x = a, *y = b;

	if (x->grain != y->grain)
		return x->grain < y->grain ? -1 : 1;
	return x->sector < y->sector ? -1 : x->sector > y->sector;
}

/* Appends a marker found by the scan. Returns 0 or -errno (logged). */
static int marks_add(struct vmdk_extent *e, struct stream_state *st, uint64_t *cap, uint64_t g,
		     uint64_t sec)
{
	if (st->n_marks == *cap) {
		uint64_t n = *cap ? *cap * 2 : 1024;
		struct stream_mark *m;

		if (*cap >= STREAM_SCAN_MAX) {
			vd_log_err("vmdk: %s: more than %u grains in a stream without a usable "
				   "grain directory: too many to index",
				   e->path, STREAM_SCAN_MAX);
			return -EFBIG;
		}
		m = realloc(st->marks, n * sizeof(*m));
		if (!m)
			return -ENOMEM;
		st->marks = m;
		*cap = n;
	}
	st->marks[st->n_marks++] = (struct stream_mark){(uint32_t)g, (uint32_t)sec};
	return 0;
}

/* Sorts the marks by grain; when a grain appears twice the later marker (the
 * higher sector) wins, as it would in a stream written front to back. */
static void marks_finish(struct stream_state *st)
{
	uint64_t n = 0;

	if (!st->n_marks)
		return;
	qsort(st->marks, st->n_marks, sizeof(*st->marks), mark_cmp);
	for (uint64_t i = 0; i < st->n_marks; i++) {
		if (n && st->marks[n - 1].grain == st->marks[i].grain)
			n--;
		st->marks[n++] = st->marks[i];
	}
	st->n_marks = n;
	st->n_compressed = n;
}

/* Builds the index by walking the markers from overHead to the end-of-stream
 * marker. Each step advances at least one sector, so it always terminates. */
static int stream_index_scan(struct vmdk_extent *e, struct stream_state *st)
{
	uint64_t sec = st->h.overhead, file_secs = e->file_size / 512, cap = 0;
	uint8_t m[512];
	int ret;

	if (!(st->h.flags & VMDK_FLAG_MARKERS)) {
		vd_log_err("vmdk: %s: stream has no usable grain directory and no markers to scan",
			   e->path);
		return -EINVAL;
	}
	for (;;) {
		uint64_t val, size, next;

		if (sec >= file_secs) {
			vd_log_err(
			    "vmdk: %s: stream truncated at byte %" PRIu64
			    " (no footer and no end-of-stream marker); refusing partial data",
			    e->path, e->file_size);
			return -EINVAL;
		}
		ret = vd_pread_full(e->fd, m, sizeof(m), sec * 512);
		if (ret < 0) {
			vd_log_err("vmdk: %s: cannot read the marker at sector %" PRIu64 ": %s",
				   e->path, sec, strerror(-ret));
			return ret;
		}
		val = vd_get_le64(m);
		size = vd_get_le32(m + 8);
		if (size) {
			if (size > st->max_csize || val % st->h.grain_size ||
			    val / st->h.grain_size >= st->n_grains) {
				vd_log_err("vmdk: %s: bad grain marker at sector %" PRIu64
					   " (lba %" PRIu64 ", size %" PRIu64 ")",
					   e->path, sec, val, size);
				return -EINVAL;
			}
			next = sec + vd_div_round_up(STREAM_MARKER_BYTES + size, 512);
			if (next > file_secs || sec > UINT32_MAX) {
				sec = file_secs; /* cut inside this grain: truncated */
				continue;
			}
			ret = marks_add(e, st, &cap, val / st->h.grain_size, sec);
			if (ret < 0)
				return ret;
			sec = next;
			continue;
		}
		if (vd_get_le32(m + STREAM_META_TYPE) == STREAM_EOS)
			break;
		/* val + 1 sectors of metadata follow; val = 2^64 - 1 would make
		 * that 0 and the scan stand still */
		if (val == UINT64_MAX || vd_add_ovf(sec, val + 1, &next) || next > file_secs)
			next = file_secs;
		sec = next;
	}
	marks_finish(st);
	return 0;
}

/* Inflates in (len bytes, zlib or else raw deflate) into out, which holds
 * cap bytes. Returns the bytes produced, or -1 unless the compressed data
 * ended within cap bytes of output (bytes after its end are ignored, as
 * zlib's inflate does), or -ENOMEM. */
static int64_t stream_inflate(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
	struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
	size_t used, got;
	int64_t n = -1;

	if (!d)
		return -ENOMEM;
	if (libdeflate_zlib_decompress_ex(d, in, len, out, cap, &used, &got) ==
		LIBDEFLATE_SUCCESS ||
	    libdeflate_deflate_decompress_ex(d, in, len, out, cap, &used, &got) ==
		LIBDEFLATE_SUCCESS)
		n = (int64_t)got;
	libdeflate_free_decompressor(d);
	return n;
}

/* Reads the compressed grain g whose marker is at sector sec into a buffer
 * it allocates (*buf), and points *data and *clen at the compressed bytes.
 * Returns 0 or -errno after logging. */
static int stream_grain_fetch(struct vmdk_extent *e, struct stream_state *st, uint64_t g,
			      uint64_t sec, uint8_t **buf, const uint8_t **data, uint64_t *clen)
{
	uint64_t off = sec * 512, avail = e->file_size - off, first, lba;
	bool markers = st->h.flags & VMDK_FLAG_MARKERS;
	uint64_t guess = __atomic_load_n(&st->csize_hint, __ATOMIC_RELAXED) + 512;
	int ret;

	/* One read in the common case: as much as the last grain needed. */
	first = vd_min_u64(avail, STREAM_MARKER_BYTES + vd_min_u64(st->max_csize, guess));
	if (!markers)
		first = vd_min_u64(avail, st->max_csize);
	*buf = malloc(markers ? STREAM_MARKER_BYTES + st->max_csize : first);
	if (!*buf)
		return -ENOMEM;
	ret = vd_pread_full(e->fd, *buf, first, off);
	if (ret < 0)
		goto fail_io;
	*data = *buf;
	*clen = first;
	if (!markers)
		return 0;
	lba = vd_get_le64(*buf);
	*clen = vd_get_le32(*buf + 8);
	if (lba != g * st->h.grain_size || *clen == 0 || *clen > st->max_csize ||
	    *clen > avail - STREAM_MARKER_BYTES) {
		vd_log_err("vmdk: %s: grain %" PRIu64 " marker at byte %" PRIu64 " has lba %" PRIu64
			   ", size %" PRIu64 " (want lba %" PRIu64 ", size <= %" PRIu64
			   " and inside the file)",
			   e->path, g, off, lba, *clen, g * st->h.grain_size,
			   vd_min_u64(st->max_csize, avail - STREAM_MARKER_BYTES));
		free(*buf);
		return -EIO;
	}
	__atomic_store_n(&st->csize_hint, (uint32_t)*clen, __ATOMIC_RELAXED);
	if (STREAM_MARKER_BYTES + *clen > first) {
		ret = vd_pread_full(e->fd, *buf + first, STREAM_MARKER_BYTES + *clen - first,
				    off + first);
		if (ret < 0)
			goto fail_io;
	}
	*data = *buf + STREAM_MARKER_BYTES;
	return 0;
fail_io:
	vd_log_err("vmdk: %s: cannot read grain %" PRIu64 " at byte %" PRIu64 ": %s", e->path, g,
		   off, strerror(-ret));
	free(*buf);
	return ret;
}

/* Reads grain g (DATA, marker at sector sec) straight into out when it is
 * in stored blocks laid out about as the last such grain was
 * (disk/stored.h): the copy that inflating them would be is saved. Returns
 * true when out holds the grain, false when it must be inflated. */
static bool stream_grain_direct(struct vmdk_extent *e, struct stream_state *st, uint64_t g,
				uint64_t sec, uint8_t *out)
{
	uint32_t n = __atomic_load_n(&st->stored.n, __ATOMIC_RELAXED);
	uint64_t secs =
	    vd_div_round_up(STREAM_MARKER_BYTES + vd_stored_zlen(n, st->grain_bytes), 512);
	uint64_t next, zlen;
	uint8_t m[STREAM_MARKER_BYTES];

	/* The next grain's marker, when it follows right after, tells a
	 * compressed grain (the read-ahead worker loads those) without a read. */
	if (n == 0 || (g + 1 < st->n_grains && stream_grain_where(st, g + 1, &next) == VD_DATA &&
		       next > sec && next - sec < secs))
		return false;
	if (vd_stored_read(e->fd, sec * 512, m, sizeof(m), out, st->grain_bytes, &st->stored,
			   &zlen) != 1 ||
	    vd_get_le64(m) != g * st->h.grain_size || vd_get_le32(m + 8) != zlen)
		return false;
	__atomic_add_fetch(&st->direct, 1, __ATOMIC_RELAXED);
	return true;
}

/* Reads and inflates grain g (DATA, marker at sector sec) into out
 * (grain_bytes). Returns 0 or -EIO/-errno after logging. */
static int stream_grain_load(struct vmdk_extent *e, struct stream_state *st, uint64_t g,
			     uint64_t sec, uint8_t *out)
{
	uint64_t clen, want = vd_min_u64(st->grain_bytes, st->ext_bytes - g * st->grain_bytes);
	bool whole = want == st->grain_bytes && (st->h.flags & VMDK_FLAG_MARKERS);
	const uint8_t *data;
	uint8_t *buf;
	int64_t n;
	int ret;

	if (whole && stream_grain_direct(e, st, g, sec, out))
		return 0;
	ret = stream_grain_fetch(e, st, g, sec, &buf, &data, &clen);
	if (ret < 0)
		return ret;
	if (whole)
		vd_stored_learn(&st->stored, data, clen, st->grain_bytes);
	n = stream_inflate(data, clen, out, st->grain_bytes);
	free(buf);
	if (n == -ENOMEM) { /* the machine's fault, not the grain's */
		vd_log_err("vmdk: %s: out of memory inflating grain %" PRIu64, e->path, g);
		return -ENOMEM;
	}
	if (n < 0 || (uint64_t)n < want || (want == st->grain_bytes && (uint64_t)n != want)) {
		vd_log_err("vmdk: %s: grain %" PRIu64 " at byte %" PRIu64
			   " does not inflate to %" PRIu64 " bytes (got %" PRId64 ")",
			   e->path, g, sec * 512, want, n);
		return -EIO;
	}
	memset(out + n, 0, st->grain_bytes - (uint64_t)n);
	__atomic_add_fetch(&st->inflated, 1, __ATOMIC_RELAXED);
	return 0;
}

/* Table loader of st->grains: grain g inflated (VD_TCACHE_ZERO if it holds
 * only zeros). Only called for DATA grains. */
static int stream_grain_loader(void *ctx, uint64_t g, void *table)
{
	struct stream_state *st = ctx;
	uint64_t sec;
	int r = stream_grain_where(st, g, &sec);

	if (r >= 0 && r != VD_DATA)
		r = -EIO; /* not reached: readers only ask for DATA grains */
	if (r >= 0)
		r = stream_grain_load(st->e, st, g, sec, table);
	if (r < 0)
		return r;
	return vd_mem_is_zero(table, st->grain_bytes) ? VD_TCACHE_ZERO : 0;
}

/* vd_ahead want: inflate ahead only grains stored in this stream that
 * deflate shrank. A grain that deflate could not shrink is kept in stored
 * blocks, and inflating it is a copy: done ahead it would only add another
 * copy, out of the cache, to the reader's path, which reads it straight
 * into its own buffer (stream_grain_direct) (bench.sh's stream rows, random data: 0.67
 * to 0.76 of the ceiling inflated ahead, 0.77 to 0.85 not; a tar of /usr
 * deflated to 41%: O_DIRECT 640-830 MB/s ahead, 420-470 not). A stream is
 * written in LBA order, so the next grain's marker bounds this one's size:
 * marker and data that take more sectors than the grain itself are stored
 * blocks. Without a next grain to measure by, a grain is inflated ahead. */
static bool stream_grain_wanted(void *ctx, uint64_t g)
{
	struct stream_state *st = ctx;
	uint64_t sec, next;

	if (stream_grain_where(st, g, &sec) != VD_DATA)
		return false;
	return g + 1 >= st->n_grains || stream_grain_where(st, g + 1, &next) != VD_DATA ||
	       next <= sec || (next - sec) * 512 <= st->grain_bytes;
}

/* Copies [in, in+len) of DATA grain g (marker at sec) into dst: from the
 * cache, from the read-ahead worker when it is inflating g now, or inflated
 * here (straight into dst when the request covers the whole grain: nothing
 * will want it again soon). */
static int stream_grain_copy(struct stream_state *st, uint64_t g, uint64_t sec, uint64_t in,
			     uint64_t len, uint8_t *dst)
{
	const uint8_t *t;
	int err = 0;

	for (int tries = 0; tries < 3; tries++) {
		t = vd_tcache_find(&st->grains, g);
		if (t) {
			memcpy(dst, t + in, len);
			vd_tcache_put(&st->grains, g);
			__atomic_add_fetch(&st->hits, 1, __ATOMIC_RELAXED);
			return 0;
		}
		/* Not cached: the worker may be inflating g now (wait for it), or
		 * may have put it in the cache just after the look above (look
		 * once more before inflating it a second time). */
		if (!vd_ahead_wait(&st->ahead, g) && tries > 0)
			break;
	}
	if (in == 0 && len == st->grain_bytes)
		return stream_grain_load(st->e, st, g, sec, dst);
	t = vd_tcache_get(&st->grains, g, &err);
	if (!t)
		return err;
	memcpy(dst, t + in, len);
	vd_tcache_put(&st->grains, g);
	return 0;
}

/* Checks the header against the file and derives the geometry. */
static int stream_check_header(struct vmdk_extent *e, struct stream_state *st)
{
	if (!(st->h.flags & VMDK_FLAG_COMPRESSED) || st->h.compress_algorithm != 1) {
		vd_log_err("vmdk: %s: stream compressAlgorithm %u / flags 0x%" PRIx32
			   " (need deflate, 1, and flag 0x10000)",
			   e->path, st->h.compress_algorithm, st->h.flags);
		return -EINVAL;
	}
	if (st->h.capacity < e->sectors) {
		vd_log_err("vmdk: %s: stream capacity %" PRIu64 " < descriptor SECTORS %" PRIu64,
			   e->path, st->h.capacity, e->sectors);
		return -EINVAL;
	}
	if (st->h.capacity > e->sectors)
		vd_log_warn("vmdk: %s: stream capacity %" PRIu64 " > descriptor SECTORS %" PRIu64
			    ", using the descriptor",
			    e->path, st->h.capacity, e->sectors);
	if (st->h.overhead * 512 > e->file_size) {
		vd_log_err("vmdk: %s: overHead %" PRIu64 " sectors past EOF (file truncated)",
			   e->path, st->h.overhead);
		return -EINVAL;
	}
	st->grain_bytes = st->h.grain_size * 512;
	st->ext_bytes = st->h.capacity * 512;
	st->n_grains = vd_div_round_up(st->h.capacity, st->h.grain_size);
	st->n_gd = vd_div_round_up(st->n_grains, STREAM_GTES);
	st->max_csize = compressBound(st->grain_bytes);
	return 0;
}

/* Finds the grain index: the GD (of the header, or of the footer for the
 * VMware layout), else a scan of the markers. */
static int stream_index(struct vmdk_extent *e, struct stream_state *st)
{
	struct vmdk_kdmv_header foot;
	const char *why = "";
	int ret;

	st->layout = STREAM_LAYOUT_QEMU;
	if (st->h.gd_offset == VMDK_GD_AT_END) {
		ret = stream_footer_read(e, st, &foot);
		if (ret < 0)
			return ret;
		st->layout = ret ? STREAM_LAYOUT_VMWARE : STREAM_LAYOUT_SCANNED;
		st->footer_used = ret;
		if (ret)
			st->h = foot;
		else
			why = "no stream footer at EOF-1024";
	}
	ret = 1;
	if (st->layout != STREAM_LAYOUT_SCANNED) {
		ret = stream_index_from_gd(e, st);
		if (ret < 0)
			return ret;
		if (ret) {
			why = "grain directory past EOF";
			st->layout = STREAM_LAYOUT_SCANNED;
		}
	}
	if (ret) {
		/* Warn only once the scan worked: a failure is one error line. */
		ret = stream_index_scan(e, st);
		if (ret < 0)
			return ret;
		vd_log_warn("vmdk: %s: %s; grain index rebuilt by scanning %" PRIu64 " markers",
			    e->path, why, st->n_marks);
	}
	return 0;
}

static int stream_open(struct vmdk_extent *e)
{
	struct stream_state *st;
	uint8_t hdr[512];
	int ret = vd_pread_full(e->fd, hdr, sizeof(hdr), 0);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the stream header: %s", e->path,
			   ret == -EIO ? "file too short" : strerror(-ret));
		return ret == -EIO ? -EINVAL : ret;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	e->priv = st;
	st->e = e;
	st->csize_hint = STREAM_FIRST_READ;
	ret = vmdk_kdmv_decode(hdr, e->path, &st->h);
	if (ret == 0)
		ret = stream_check_header(e, st);
	if (ret == 0)
		ret = stream_index(e, st);
	if (ret == 0)
		ret = vd_tcache_init(&st->grains, st->grain_bytes, stream_grain_loader, st);
	if (ret < 0) {
		stream_close(e);
		return ret;
	}
	vd_ahead_init(&st->ahead, &st->grains, st->n_grains,
		      vd_div_round_up(STREAM_AHEAD_BYTES, st->grain_bytes), stream_grain_wanted,
		      st);
	e->grain_bytes = st->grain_bytes;
	return 0;
}

/* Scanned streams: the run from grain g, which is DATA when g has a marker
 * and UNALLOC up to the next grain that has one. */
static int stream_marks_status(struct stream_state *st, uint64_t off, uint64_t len, uint64_t *pnum)
{
	uint64_t g = off / st->grain_bytes, i = marks_find(st, g), end, next;
	int state = i < st->n_marks && st->marks[i].grain == g ? VD_DATA : VD_UNALLOC;

	if (state == VD_DATA) {
		next = g + 1;
		while (++i < st->n_marks && st->marks[i].grain == next)
			next++;
	} else {
		next = i < st->n_marks ? st->marks[i].grain : st->n_grains;
	}
	end = vd_min_u64(next * st->grain_bytes, off + len);
	*pnum = end - off;
	return state;
}

static int stream_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			       struct vd_map *map)
{
	struct stream_state *st = e->priv;
	int state;

	if (st->layout == STREAM_LAYOUT_SCANNED)
		state = stream_marks_status(st, off, len, pnum);
	else
		state = vmdk_gt_block_status(e, &stream_gt_format, &st->gts, st->grain_bytes, off,
					     len, pnum, map);
	if (state == VD_DATA)
		map->fd = -1; /* compressed: stream_read() inflates */
	return state;
}

static int stream_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct stream_state *st = e->priv;
	uint8_t *out = buf;

	if (!len)
		return 0;
	/* When the last grain fetched was stored blocks, the next ones most
	 * likely are too, and the worker would inflate none of them ahead
	 * (stream_grain_wanted): it is not woken for each request, which cost
	 * a sequential O_DIRECT reader 10-15% on 2 cores. The first grain
	 * fetched that deflate shrank sets it to work again. */
	vd_ahead_note(&st->ahead, off / st->grain_bytes, (off + len - 1) / st->grain_bytes,
		      __atomic_load_n(&st->csize_hint, __ATOMIC_RELAXED) + STREAM_MARKER_BYTES <=
			  st->grain_bytes);
	while (len) {
		uint64_t g = off / st->grain_bytes, in = off % st->grain_bytes, sec = 0;
		uint64_t n = vd_min_u64(st->grain_bytes - in, len);
		int ret = g < st->n_grains ? stream_grain_where(st, g, &sec) : VD_UNALLOC;

		if (ret == VD_DATA)
			ret = stream_grain_copy(st, g, sec, in, n, out);
		else if (ret >= 0)
			memset(out, 0, n);
		if (ret < 0)
			return ret;
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

static void stream_describe(struct vmdk_extent *e, struct vd_json *j)
{
	struct stream_state *st = e->priv;
	uint64_t held, loads;

	vd_tcache_stats(&st->grains, &held, &loads);
	vd_json_str(j, "layout", stream_layout_names[st->layout]);
	vd_json_bool(j, "footer_used", st->footer_used);
	vd_json_u64(j, "kdmv_version", st->h.version);
	vd_json_u64(j, "grain_sectors", st->h.grain_size);
	vd_json_u64(j, "capacity_sectors", st->h.capacity);
	vd_json_u64(j, "gd_entries", st->n_gd);
	if (st->n_compressed == STREAM_UNCOUNTED)
		vd_json_null(j, "compressed_grains"); /* large: not walked at open */
	else
		vd_json_u64(j, "compressed_grains", st->n_compressed);
	vd_json_bool(j, "markers", st->h.flags & VMDK_FLAG_MARKERS);
	vd_json_u64(j, "cache_grains", held);
	vd_json_u64(j, "grains_inflated", __atomic_load_n(&st->inflated, __ATOMIC_RELAXED));
	vd_json_u64(j, "grains_inflated_ahead", vd_ahead_loaded(&st->ahead));
	vd_json_u64(j, "grains_read_stored", __atomic_load_n(&st->direct, __ATOMIC_RELAXED));
	vd_json_u64(j, "cache_hits", __atomic_load_n(&st->hits, __ATOMIC_RELAXED));
}

const struct vmdk_extent_ops vmdk_stream_ops = {
    .name = "streamOptimized",
    .open = stream_open,
    .close = stream_close,
    .block_status = stream_block_status,
    .read = stream_read,
    .describe = stream_describe,
};
