/* VMDK streamOptimized extent backend, read-only (VMware Virtual Disk
 * Format 5.0, "Stream-Optimized Compressed Sparse Extents").
 *
 * A stream is a KDMV file whose grains are zlib-compressed, each behind a
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
 * State: idx[grain] = sector of the grain's marker (0 = not in this layer,
 * 1 = zeroed grain when flag bit 2 is set), built once at open and immutable.
 * Decompressed grains go through a small LRU cache (cache[], protected by
 * st->cache_lock) so sequential reads inflate each grain once. Inflation only
 * ever writes into a grain-sized buffer and must produce exactly one grain
 * (the final partial grain may stop early), so a hostile stream cannot make
 * us allocate or write more than that. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "disk/endian.h"
#include "disk/vmdk.h"

#define STREAM_MARKER_BYTES 12
#define STREAM_META_TYPE 12 /* u32 type after lba/numSectors and size */
#define STREAM_EOS 0u
#define STREAM_GT 1u
#define STREAM_GD 2u
#define STREAM_FOOTER 3u
#define STREAM_MAX_GRAINS (1ull << 26) /* 256 MiB of index; 4 TiB at 64 KiB grains */
#define STREAM_CACHE_BYTES (4u << 20)
#define STREAM_CACHE_MAX 64u
#define STREAM_CACHE_MIN 4u
#define STREAM_FIRST_READ 4096u

enum stream_layout { STREAM_LAYOUT_QEMU, STREAM_LAYOUT_VMWARE, STREAM_LAYOUT_SCANNED };
static const char *const stream_layout_names[] = {"qemu", "vmware", "scanned"};

struct stream_cache_slot {
	uint64_t grain;
	uint64_t stamp; /* 0 = empty */
	uint8_t *buf;
};

struct stream_state {
	struct vmdk_kdmv_header h; /* the footer when one was used */
	enum stream_layout layout;
	bool footer_used;
	uint64_t grain_bytes, n_grains, n_gd, ext_bytes; /* ext_bytes from the header */
	uint64_t max_csize;				 /* compressBound(grain_bytes) */
	uint64_t n_compressed;
	uint32_t *idx; /* immutable after open */

	pthread_mutex_t cache_lock; /* protects the fields below */
	struct stream_cache_slot *cache;
	unsigned cache_n;
	uint64_t clock, inflated, hits;
};

static void stream_close(struct vmdk_extent *e)
{
	struct stream_state *st = e->priv;

	if (!st)
		return;
	for (unsigned i = 0; i < st->cache_n; i++)
		free(st->cache[i].buf);
	free(st->cache);
	free(st->idx);
	pthread_mutex_destroy(&st->cache_lock);
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

/* Checks a GTE (marker sector) from the GD/GT or a scan and stores it. */
static int stream_idx_set(struct vmdk_extent *e, struct stream_state *st, uint64_t g, uint64_t sec)
{
	if (sec == 1 && (st->h.flags & VMDK_FLAG_ZERO_GTE)) {
		st->idx[g] = 1;
		return 0;
	}
	if (sec < st->h.overhead || sec < 1 || sec > UINT32_MAX ||
	    sec * 512 + STREAM_MARKER_BYTES > e->file_size) {
		vd_log_err("vmdk: %s: grain %" PRIu64 " at sector %" PRIu64
			   " is before overHead %" PRIu64 " or past EOF",
			   e->path, g, sec, st->h.overhead);
		return -EINVAL;
	}
	st->idx[g] = (uint32_t)sec;
	st->n_compressed++;
	return 0;
}

/* Builds idx[] from the GD and GTs. Returns 0, 1 if the GD lies past EOF (the
 * caller scans instead), or -errno. */
static int stream_index_from_gd(struct vmdk_extent *e, struct stream_state *st)
{
	uint64_t gd_off, gd_end;
	uint8_t *gd = NULL, gt[512 * 4];
	int ret = 0;

	if (vd_mul_ovf(st->h.gd_offset, 512, &gd_off) ||
	    vd_add_ovf(gd_off, st->n_gd * 4, &gd_end) || gd_end > e->file_size ||
	    st->h.gd_offset == 0)
		return 1;
	gd = malloc(st->n_gd * 4);
	if (!gd)
		return -ENOMEM;
	ret = vd_pread_full(e->fd, gd, st->n_gd * 4, gd_off);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the grain directory: %s", e->path,
			   strerror(-ret));
		goto out;
	}
	for (uint64_t i = 0; i < st->n_gd && ret == 0; i++) {
		uint64_t gde = vd_get_le32(gd + 4 * i);

		if (!gde)
			continue;
		if (gde * 512 + sizeof(gt) > e->file_size) {
			vd_log_err("vmdk: %s: grain directory entry %" PRIu64 " (sector %" PRIu64
				   ") past EOF",
				   e->path, i, gde);
			ret = -EINVAL;
			goto out;
		}
		ret = vd_pread_full(e->fd, gt, sizeof(gt), gde * 512);
		if (ret < 0) {
			vd_log_err("vmdk: %s: cannot read grain table %" PRIu64 ": %s", e->path, i,
				   strerror(-ret));
			goto out;
		}
		for (uint64_t k = 0; k < 512 && i * 512 + k < st->n_grains && ret == 0; k++) {
			uint64_t gte = vd_get_le32(gt + 4 * k);

			if (gte)
				ret = stream_idx_set(e, st, i * 512 + k, gte);
		}
	}
out:
	free(gd);
	return ret;
}

/* Builds idx[] by walking the markers from overHead to the end-of-stream
 * marker. Each step advances at least one sector, so it always terminates. */
static int stream_index_scan(struct vmdk_extent *e, struct stream_state *st)
{
	uint64_t sec = st->h.overhead, file_secs = e->file_size / 512;
	uint8_t m[512];
	int ret;

	if (!(st->h.flags & VMDK_FLAG_MARKERS)) {
		vd_log_err("vmdk: %s: stream has no usable grain directory and no markers to scan",
			   e->path);
		return -EINVAL;
	}
	memset(st->idx, 0, st->n_grains * sizeof(*st->idx));
	st->n_compressed = 0;
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
			if (!st->idx[val / st->h.grain_size])
				st->n_compressed++;
			st->idx[val / st->h.grain_size] = (uint32_t)sec;
			sec = next;
			continue;
		}
		if (vd_get_le32(m + STREAM_META_TYPE) == STREAM_EOS)
			break;
		if (vd_add_ovf(sec, val + 1, &next) || next > file_secs)
			next = file_secs;
		sec = next;
	}
	return 0;
}

static int stream_open(struct vmdk_extent *e)
{
	uint8_t hdr[512];
	struct vmdk_kdmv_header foot;
	struct stream_state *st;
	const char *why = "";
	unsigned n;
	int ret;

	ret = vd_fd_size(e->fd, &e->file_size);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot get the size: %s", e->path, strerror(-ret));
		return ret;
	}
	ret = vd_pread_full(e->fd, hdr, sizeof(hdr), 0);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the stream header: %s", e->path,
			   ret == -EIO ? "file too short" : strerror(-ret));
		return ret == -EIO ? -EINVAL : ret;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	pthread_mutex_init(&st->cache_lock, NULL);
	e->priv = st;
	ret = vmdk_kdmv_decode(hdr, e->path, &st->h);
	if (ret < 0)
		goto fail;
	ret = -EINVAL;
	if (!(st->h.flags & VMDK_FLAG_COMPRESSED) || st->h.compress_algorithm != 1) {
		vd_log_err("vmdk: %s: stream compressAlgorithm %u / flags 0x%" PRIx32
			   " (need deflate, 1, and flag 0x10000)",
			   e->path, st->h.compress_algorithm, st->h.flags);
		goto fail;
	}
	if (st->h.capacity < e->sectors) {
		vd_log_err("vmdk: %s: stream capacity %" PRIu64 " < descriptor SECTORS %" PRIu64,
			   e->path, st->h.capacity, e->sectors);
		goto fail;
	}
	if (st->h.capacity > e->sectors)
		vd_log_warn("vmdk: %s: stream capacity %" PRIu64 " > descriptor SECTORS %" PRIu64
			    ", using the descriptor",
			    e->path, st->h.capacity, e->sectors);
	if (st->h.overhead * 512 > e->file_size) {
		vd_log_err("vmdk: %s: overHead %" PRIu64 " sectors past EOF (file truncated)",
			   e->path, st->h.overhead);
		goto fail;
	}
	st->grain_bytes = st->h.grain_size * 512;
	st->ext_bytes = st->h.capacity * 512;
	st->n_grains = vd_div_round_up(st->h.capacity, st->h.grain_size);
	st->n_gd = vd_div_round_up(st->n_grains, 512);
	st->max_csize = compressBound(st->grain_bytes);
	if (st->n_grains > STREAM_MAX_GRAINS) {
		vd_log_err("vmdk: %s: %" PRIu64 " grains exceed the stream index cap %llu", e->path,
			   st->n_grains, STREAM_MAX_GRAINS);
		goto fail;
	}
	st->idx = calloc(st->n_grains, sizeof(*st->idx));
	if (!st->idx) {
		ret = -ENOMEM;
		goto fail;
	}

	st->layout = STREAM_LAYOUT_QEMU;
	if (st->h.gd_offset == VMDK_GD_AT_END) {
		ret = stream_footer_read(e, st, &foot);
		if (ret < 0)
			goto fail;
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
			goto fail;
		if (ret) {
			why = "grain directory past EOF";
			st->layout = STREAM_LAYOUT_SCANNED;
		}
	}
	if (ret) {
		/* Warn only once the scan worked: a failure is one error line. */
		ret = stream_index_scan(e, st);
		if (ret < 0)
			goto fail;
		vd_log_warn("vmdk: %s: %s; grain index rebuilt by scanning %" PRIu64 " markers",
			    e->path, why, st->n_compressed);
	}

	/* cache_n only once cache exists: stream_close() walks cache[cache_n]. */
	n = (unsigned)vd_min_u64(STREAM_CACHE_MAX, STREAM_CACHE_BYTES / st->grain_bytes);
	if (n < STREAM_CACHE_MIN)
		n = STREAM_CACHE_MIN;
	st->cache = calloc(n, sizeof(*st->cache));
	if (!st->cache) {
		ret = -ENOMEM;
		goto fail;
	}
	st->cache_n = n;
	e->grain_bytes = st->grain_bytes;
	return 0;
fail:
	stream_close(e);
	return ret;
}

/* Inflates in (len bytes, zlib or raw deflate by window_bits) into out, which
 * holds cap bytes, and sets *n to the bytes produced. Returns 0, -EINVAL
 * unless the compressed stream ended within cap bytes of output, or -ENOMEM
 * when zlib could not allocate its state (not the grain's fault). */
static int stream_inflate(const uint8_t *in, uint64_t len, uint8_t *out, uint64_t cap,
			  int window_bits, uint64_t *n)
{
	z_stream zs;
	int zr;

	memset(&zs, 0, sizeof(zs));
	zr = inflateInit2(&zs, window_bits);
	if (zr != Z_OK)
		return zr == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	zr = inflate(&zs, Z_FINISH);
	*n = zs.total_out;
	inflateEnd(&zs);
	if (zr == Z_MEM_ERROR)
		return -ENOMEM;
	return zr == Z_STREAM_END ? 0 : -EINVAL;
}

/* Reads and inflates grain g into out (grain_bytes). Returns 0 or -EIO/-errno
 * (-ENOMEM included) after logging. */
static int stream_grain_load(struct vmdk_extent *e, struct stream_state *st, uint64_t g,
			     uint8_t *out)
{
	uint64_t off = (uint64_t)st->idx[g] * 512, avail = e->file_size - off, clen, want;
	uint64_t first = vd_min_u64(avail, STREAM_FIRST_READ + (uint64_t)STREAM_MARKER_BYTES);
	bool markers = st->h.flags & VMDK_FLAG_MARKERS;
	uint8_t *buf, *data;
	uint64_t n = 0;
	int ret;

	if (!markers)
		first = vd_min_u64(avail, st->max_csize);
	else /* small grains: the first read must fit the buffer too */
		first = vd_min_u64(first, STREAM_MARKER_BYTES + st->max_csize);
	buf = malloc(markers ? STREAM_MARKER_BYTES + st->max_csize : first);
	if (!buf)
		return -ENOMEM;
	ret = vd_pread_full(e->fd, buf, first, off);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read grain %" PRIu64 " at byte %" PRIu64 ": %s",
			   e->path, g, off, strerror(-ret));
		goto out;
	}
	ret = -EIO;
	data = buf;
	clen = first;
	if (markers) {
		uint64_t lba = vd_get_le64(buf);

		clen = vd_get_le32(buf + 8);
		if (lba != g * st->h.grain_size || clen == 0 || clen > st->max_csize ||
		    clen > avail - STREAM_MARKER_BYTES) {
			vd_log_err("vmdk: %s: grain %" PRIu64 " marker at byte %" PRIu64
				   " has lba %" PRIu64 ", size %" PRIu64 " (want lba %" PRIu64
				   ", size <= %" PRIu64 " and inside the file)",
				   e->path, g, off, lba, clen, g * st->h.grain_size,
				   vd_min_u64(st->max_csize, avail - STREAM_MARKER_BYTES));
			goto out;
		}
		if (STREAM_MARKER_BYTES + clen > first) {
			ret = vd_pread_full(e->fd, buf + first, STREAM_MARKER_BYTES + clen - first,
					    off + first);
			if (ret < 0) {
				vd_log_err("vmdk: %s: cannot read grain %" PRIu64 ": %s", e->path,
					   g, strerror(-ret));
				goto out;
			}
			ret = -EIO;
		}
		data = buf + STREAM_MARKER_BYTES;
	}
	ret = stream_inflate(data, clen, out, st->grain_bytes, 15, &n);
	if (ret == -EINVAL)
		ret = stream_inflate(data, clen, out, st->grain_bytes, -15, &n);
	if (ret == -ENOMEM) {
		vd_log_err("vmdk: %s: out of memory inflating grain %" PRIu64, e->path, g);
		goto out;
	}
	want = vd_min_u64(st->grain_bytes, st->ext_bytes - g * st->grain_bytes);
	if (ret < 0 || n < want || (want == st->grain_bytes && n != want)) {
		vd_log_err("vmdk: %s: grain %" PRIu64 " at byte %" PRIu64
			   " does not inflate to %" PRIu64 " bytes (%s%" PRIu64 ")",
			   e->path, g, off, want, ret < 0 ? "corrupt after " : "got ", n);
		ret = -EIO;
		goto out;
	}
	memset(out + n, 0, st->grain_bytes - n);
	ret = 0;
out:
	free(buf);
	return ret;
}

/* Copies [in, in+len) of grain g into dst, through the cache for partial
 * grains. */
static int stream_grain_copy(struct vmdk_extent *e, struct stream_state *st, uint64_t g,
			     uint64_t in, uint64_t len, uint8_t *dst)
{
	struct stream_cache_slot *victim = NULL;
	uint8_t *fresh, *old;
	int ret;

	pthread_mutex_lock(&st->cache_lock);
	for (unsigned i = 0; i < st->cache_n; i++) {
		struct stream_cache_slot *s = &st->cache[i];

		if (s->stamp && s->grain == g) {
			s->stamp = ++st->clock;
			st->hits++;
			memcpy(dst, s->buf + in, len);
			pthread_mutex_unlock(&st->cache_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&st->cache_lock);

	/* A whole grain goes straight into the caller's buffer: nothing else
	 * will want it soon (sequential reads are grain-aligned), so caching
	 * it would only cost a copy. */
	if (in == 0 && len == st->grain_bytes) {
		ret = stream_grain_load(e, st, g, dst);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&st->cache_lock);
		st->inflated++;
		pthread_mutex_unlock(&st->cache_lock);
		return 0;
	}

	/* Inflate without the lock; two threads missing the same grain both
	 * inflate it, which is harmless. */
	fresh = malloc(st->grain_bytes);
	if (!fresh)
		return -ENOMEM;
	ret = stream_grain_load(e, st, g, fresh);
	if (ret < 0) {
		free(fresh);
		return ret;
	}
	memcpy(dst, fresh + in, len);

	pthread_mutex_lock(&st->cache_lock);
	st->inflated++;
	for (unsigned i = 0; i < st->cache_n; i++)
		if (!victim || st->cache[i].stamp < victim->stamp)
			victim = &st->cache[i];
	old = victim->buf;
	victim->buf = fresh;
	victim->grain = g;
	victim->stamp = ++st->clock;
	pthread_mutex_unlock(&st->cache_lock);
	free(old);
	return 0;
}

static int stream_state_of(const struct stream_state *st, uint64_t g)
{
	if (st->idx[g] == 0)
		return VD_UNALLOC; /* a stream has no parent: chain/ reads zeros */
	return st->idx[g] == 1 ? VD_ZERO : VD_DATA;
}

static int stream_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			       struct vd_map *map)
{
	struct stream_state *st = e->priv;
	uint64_t g = off / st->grain_bytes, end = off + len;
	int state = stream_state_of(st, g);

	while (++g < st->n_grains && g * st->grain_bytes < end && stream_state_of(st, g) == state)
		;
	*pnum = vd_min_u64(g * st->grain_bytes, end) - off;
	map->fd = -1; /* compressed: stream_read() inflates */
	return state;
}

static int stream_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct stream_state *st = e->priv;
	uint8_t *out = buf;

	while (len) {
		uint64_t g = off / st->grain_bytes, in = off % st->grain_bytes;
		uint64_t n = vd_min_u64(st->grain_bytes - in, len);

		if (g >= st->n_grains || stream_state_of(st, g) != VD_DATA) {
			memset(out, 0, n);
		} else {
			int ret = stream_grain_copy(e, st, g, in, n, out);
			if (ret < 0)
				return ret;
		}
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

static void stream_describe(struct vmdk_extent *e, struct vd_json *j)
{
	struct stream_state *st = e->priv;
	uint64_t inflated, hits;

	pthread_mutex_lock(&st->cache_lock);
	inflated = st->inflated;
	hits = st->hits;
	pthread_mutex_unlock(&st->cache_lock);
	vd_json_str(j, "layout", stream_layout_names[st->layout]);
	vd_json_bool(j, "footer_used", st->footer_used);
	vd_json_u64(j, "kdmv_version", st->h.version);
	vd_json_u64(j, "grain_sectors", st->h.grain_size);
	vd_json_u64(j, "capacity_sectors", st->h.capacity);
	vd_json_u64(j, "gd_entries", st->n_gd);
	vd_json_u64(j, "compressed_grains", st->n_compressed);
	vd_json_bool(j, "markers", st->h.flags & VMDK_FLAG_MARKERS);
	vd_json_u64(j, "cache_grains", st->cache_n);
	vd_json_u64(j, "grains_inflated", inflated);
	vd_json_u64(j, "cache_hits", hits);
}

const struct vmdk_extent_ops vmdk_stream_ops = {
    .name = "streamOptimized",
    .open = stream_open,
    .close = stream_close,
    .block_status = stream_block_status,
    .read = stream_read,
    .describe = stream_describe,
};
