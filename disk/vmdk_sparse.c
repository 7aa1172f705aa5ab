/* Hosted sparse ("KDMV") extent backend: header decode, GD/GT lookup
 * (formats.md section 2).
 *
 * A grain is unallocated (GTE 0), zeroed (GTE 1, only with flag bit 2), or at
 * sector GTE of the extent file: GD -> GT -> grain. Only the primary GD is
 * used. The GD is read whole at open (it is at most 2^23 entries and must fit
 * in the file); GTs (2 KiB each) are loaded lazily on first use and kept in a
 * bounded cache, so a 2 TiB image opens with one small read and the hot path
 * does no metadata I/O. Every GD/GT entry is re-checked against the file size
 * each time it is used, not only when loaded: a hostile entry gives -EIO for
 * the grains it covers and nothing else.
 *
 * State: st->gts is a bounded table cache (disk/tcache.h) of native-order
 * GTs; lookups scan a GT in place while the cache is read-locked. */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/tcache.h"

/* KDMV header field offsets (formats.md 2.1). */
#define KDMV_MAGIC 0
#define KDMV_VERSION 4
#define KDMV_FLAGS 8
#define KDMV_CAPACITY 12
#define KDMV_GRAIN 20
#define KDMV_DESC_OFF 28
#define KDMV_DESC_SIZE 36
#define KDMV_NUM_GTES 44
#define KDMV_RGD 48
#define KDMV_GD 56
#define KDMV_OVERHEAD 64
#define KDMV_UNCLEAN 72
#define KDMV_NL_TEST 73
#define KDMV_COMPRESS 77

#define KDMV_GTES 512u
#define KDMV_GT_BYTES (KDMV_GTES * 4u)
#define KDMV_KNOWN_INCOMPAT (VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS)
/* GT cache budget per extent: 16 MiB of non-empty GTs covers 256 GiB of
 * allocated 64 KiB grains; past that a miss costs one 2 KiB pread. */
#define SPARSE_GT_CACHE_BYTES (16u << 20)

struct sparse_state {
	struct vmdk_kdmv_header h;
	uint64_t grain_bytes;
	uint64_t ext_bytes;	   /* virtual size of the extent */
	uint64_t min_grain_sector; /* no grain may start below this */
	uint64_t desc_end;	   /* first sector after the embedded descriptor */
	uint32_t *gd;		   /* native order, immutable after open */
	uint64_t n_gd;
	struct vd_tcache gts;  /* GT i, native order */
	struct vmdk_extent *e; /* back pointer for the GT loader */
};

int vmdk_kdmv_decode(const uint8_t buf[512], const char *path, struct vmdk_kdmv_header *out)
{
	static const uint8_t nl[4] = {0x0a, 0x20, 0x0d, 0x0a};
	struct vmdk_kdmv_header h = {0};
	uint32_t magic = vd_get_le32(buf + KDMV_MAGIC);
	uint32_t bad_incompat;

	if (magic != VMDK_KDMV_MAGIC) {
		vd_log_err("vmdk: %s: bad sparse header magic 0x%08" PRIx32, path, magic);
		return -EINVAL;
	}
	h.version = vd_get_le32(buf + KDMV_VERSION);
	h.flags = vd_get_le32(buf + KDMV_FLAGS);
	h.capacity = vd_get_le64(buf + KDMV_CAPACITY);
	h.grain_size = vd_get_le64(buf + KDMV_GRAIN);
	h.desc_offset = vd_get_le64(buf + KDMV_DESC_OFF);
	h.desc_size = vd_get_le64(buf + KDMV_DESC_SIZE);
	h.num_gtes_per_gt = vd_get_le32(buf + KDMV_NUM_GTES);
	h.rgd_offset = vd_get_le64(buf + KDMV_RGD);
	h.gd_offset = vd_get_le64(buf + KDMV_GD);
	h.overhead = vd_get_le64(buf + KDMV_OVERHEAD);
	h.unclean_shutdown = buf[KDMV_UNCLEAN];
	h.compress_algorithm = vd_get_le16(buf + KDMV_COMPRESS);

	bad_incompat = h.flags & 0xffff0000u & ~KDMV_KNOWN_INCOMPAT;
	if (h.version < 1 || h.version > 3) {
		vd_log_err("vmdk: %s: unsupported sparse header version %" PRIu32, path, h.version);
		return -EINVAL;
	}
	if (bad_incompat) {
		vd_log_err("vmdk: %s: unknown incompatible header flags 0x%08" PRIx32, path,
			   bad_incompat);
		return -EINVAL;
	}
	if ((h.flags & VMDK_FLAG_MARKERS) && !(h.flags & VMDK_FLAG_COMPRESSED)) {
		vd_log_err("vmdk: %s: header flags 0x%08" PRIx32
			   " have markers without compression",
			   path, h.flags);
		return -EINVAL;
	}
	if ((h.flags & VMDK_FLAG_NL_TEST) && memcmp(buf + KDMV_NL_TEST, nl, sizeof(nl)) != 0) {
		vd_log_err("vmdk: %s: header newline test bytes are damaged (file transferred in "
			   "text mode?)",
			   path);
		return -EINVAL;
	}
	if (h.grain_size < 1 || h.grain_size > 2048 || !vd_is_pow2(h.grain_size)) {
		vd_log_err("vmdk: %s: grain size %" PRIu64
			   " sectors is not a power of 2 in [1, 2048]",
			   path, h.grain_size);
		return -EINVAL;
	}
	if (h.num_gtes_per_gt != KDMV_GTES) {
		vd_log_err("vmdk: %s: %" PRIu32 " entries per grain table (must be 512)", path,
			   h.num_gtes_per_gt);
		return -EINVAL;
	}
	if (h.capacity == 0 || h.capacity > (1ull << 32)) {
		vd_log_err("vmdk: %s: capacity %" PRIu64 " sectors is not in (0, 2^32]", path,
			   h.capacity);
		return -EINVAL;
	}
	*out = h;
	return 0;
}

/* Checks the header against the file (I/O-free part of open). */
static int sparse_check_layout(struct vmdk_extent *e, struct sparse_state *st)
{
	const struct vmdk_kdmv_header *h = &st->h;
	uint64_t file_sectors = e->file_size / 512, grains, gd_sectors, gd_end;

	if (h->capacity != e->sectors) {
		vd_log_err("vmdk: %s: header capacity %" PRIu64 " sectors differs from the "
			   "descriptor's %" PRIu64,
			   e->path, h->capacity, e->sectors);
		return -EINVAL;
	}
	if (h->gd_offset == VMDK_GD_AT_END) {
		vd_log_err("vmdk: %s: grain directory at end but grains not compressed", e->path);
		return -EINVAL;
	}
	if (h->desc_size) {
		if (vd_add_ovf(h->desc_offset, h->desc_size, &st->desc_end) || h->desc_offset < 1 ||
		    st->desc_end > file_sectors) {
			vd_log_err("vmdk: %s: embedded descriptor (sector %" PRIu64 ", %" PRIu64
				   " sectors) is outside the file",
				   e->path, h->desc_offset, h->desc_size);
			return -EINVAL;
		}
	}
	if (h->overhead > file_sectors) {
		vd_log_err("vmdk: %s: overHead %" PRIu64 " sectors is past the end of the file "
			   "(%" PRIu64 " sectors): file truncated",
			   e->path, h->overhead, file_sectors);
		return -EINVAL;
	}
	grains = vd_div_round_up(h->capacity, h->grain_size);
	st->n_gd = vd_div_round_up(grains, KDMV_GTES);
	gd_sectors = vd_div_round_up(st->n_gd * 4, 512);
	if (h->gd_offset < 1 || vd_add_ovf(h->gd_offset, gd_sectors, &gd_end) ||
	    gd_end > file_sectors) {
		vd_log_err("vmdk: %s: grain directory (sector %" PRIu64 ", %" PRIu64
			   " entries) is outside the file",
			   e->path, h->gd_offset, st->n_gd);
		return -EINVAL;
	}
	if (h->desc_size && h->gd_offset < st->desc_end && gd_end > h->desc_offset) {
		vd_log_err("vmdk: %s: grain directory at sector %" PRIu64
			   " overlaps the embedded descriptor",
			   e->path, h->gd_offset);
		return -EINVAL;
	}
	st->min_grain_sector = h->overhead > gd_end ? h->overhead : gd_end;
	return 0;
}

static void sparse_close(struct vmdk_extent *e)
{
	struct sparse_state *st = e->priv;

	if (!st)
		return;
	vd_tcache_destroy(&st->gts);
	free(st->gd);
	free(st);
	e->priv = NULL;
}

/* A non-zero GD entry must name a whole GT inside the file, clear of the
 * header and the embedded descriptor. */
static bool sparse_gde_ok(const struct vmdk_extent *e, const struct sparse_state *st, uint64_t gde)
{
	uint64_t end;

	if (gde < 1 || (st->h.desc_size && gde < st->desc_end && gde + 4 > st->h.desc_offset))
		return false;
	return !vd_add_ovf(gde * 512, KDMV_GT_BYTES, &end) && end <= e->file_size;
}

/* Table loader for st->gts: reads GT gt_idx (its GD entry was checked at open). */
static int sparse_gt_load(void *ctx, uint64_t gt_idx, void *table)
{
	struct sparse_state *st = ctx;
	struct vmdk_extent *e = st->e;
	uint64_t gde = st->gd[gt_idx];
	uint8_t raw[KDMV_GT_BYTES];
	uint32_t *gt = table;
	int r;

	r = vd_pread_full(e->fd, raw, sizeof(raw), gde * 512);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read grain table %" PRIu64 ": %s", e->path, gt_idx,
			   strerror(-r));
		return r;
	}
	for (unsigned i = 0; i < KDMV_GTES; i++)
		gt[i] = vd_get_le32(raw + i * 4);
	return vd_mem_is_zero(gt, KDMV_GT_BYTES) ? VD_TCACHE_ZERO : 0;
}

static int sparse_open(struct vmdk_extent *e)
{
	struct sparse_state *st;
	uint8_t hdr[512], *raw = NULL;
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	e->priv = st;
	r = vd_pread_full(e->fd, hdr, sizeof(hdr), 0);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read the sparse header: %s", e->path, strerror(-r));
		goto fail;
	}
	r = vmdk_kdmv_decode(hdr, e->path, &st->h);
	if (r < 0)
		goto fail;
	r = sparse_check_layout(e, st);
	if (r < 0)
		goto fail;
	st->grain_bytes = st->h.grain_size * 512;
	st->ext_bytes = st->h.capacity * 512;
	e->grain_bytes = st->grain_bytes;

	raw = malloc(st->n_gd * 4);
	st->gd = malloc(st->n_gd * sizeof(*st->gd));
	st->e = e;
	if (!raw || !st->gd ||
	    vd_tcache_init(&st->gts, st->n_gd, KDMV_GT_BYTES, SPARSE_GT_CACHE_BYTES, sparse_gt_load,
			   st) < 0) {
		vd_log_err("vmdk: %s: out of memory for the grain directory", e->path);
		r = -ENOMEM;
		goto fail;
	}
	r = vd_pread_full(e->fd, raw, st->n_gd * 4, st->h.gd_offset * 512);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read the grain directory: %s", e->path, strerror(-r));
		goto fail;
	}
	/* The GD is small and in memory: check every entry now, so a wild GT
	 * offset fails the open (and the mount) instead of surfacing as EIO
	 * later. GT contents are checked as each GT is loaded. */
	for (uint64_t i = 0; i < st->n_gd; i++) {
		st->gd[i] = vd_get_le32(raw + i * 4);
		if (st->gd[i] && !sparse_gde_ok(e, st, st->gd[i])) {
			vd_log_err("vmdk: %s: grain directory entry %" PRIu64
				   " points to sector %" PRIu32
				   ", outside the file's metadata area",
				   e->path, i, st->gd[i]);
			r = -EINVAL;
			goto fail;
		}
	}
	free(raw);
	return 0;
fail:
	free(raw);
	sparse_close(e);
	return r;
}

/* State of grain entry gte: VD_UNALLOC, VD_ZERO, VD_DATA, or -EIO for a
 * corrupt entry (logged only when log is set: the first grain of a request). */
static int sparse_gte_state(struct vmdk_extent *e, struct sparse_state *st, uint64_t grain,
			    uint32_t gte, bool log)
{
	uint64_t start = grain * st->grain_bytes;
	uint64_t need = vd_min_u64(st->grain_bytes, st->ext_bytes - start), end;

	if (gte == 0)
		return VD_UNALLOC;
	if (gte == 1 && (st->h.flags & VMDK_FLAG_ZERO_GTE))
		return VD_ZERO;
	if (gte < st->min_grain_sector || vd_add_ovf((uint64_t)gte * 512, need, &end) ||
	    end > e->file_size) {
		if (log)
			vd_log_err("vmdk: %s: grain %" PRIu64 " has table entry %" PRIu32
				   " (sector), outside the file's grain area",
				   e->path, grain, gte);
		return -EIO;
	}
	return VD_DATA;
}

/* Scans the grains of one GT from grain g, extending the run of state *state
 * (negative: not started yet; then sets it and *file_off). Returns the number
 * of grains that belong to the run (0 when the first grain ends it), or -EIO
 * when the first grain of the request is corrupt. gt NULL = whole GT missing. */
static int64_t sparse_scan_gt(struct vmdk_extent *e, struct sparse_state *st, const uint32_t *gt,
			      uint64_t g, uint64_t g_end, int *state, uint32_t *last_gte)
{
	uint64_t n = 0;

	for (; g < g_end; g++, n++) {
		uint32_t gte = gt ? gt[g % KDMV_GTES] : 0;
		int s = sparse_gte_state(e, st, g, gte, *state < 0);

		if (s < 0)
			return *state < 0 ? s : (int64_t)n;
		if (*state < 0) {
			*state = s;
		} else if (s != *state || (s == VD_DATA && gte != *last_gte + st->h.grain_size)) {
			break;
		}
		*last_gte = gte;
	}
	return (int64_t)n;
}

/* Maps [off, off+len) of the extent: returns the state of the run from off,
 * its length in *pnum, and for VD_DATA the file offset of off in *file_off. */
static int sparse_map(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
		      uint64_t *file_off)
{
	struct sparse_state *st = e->priv;
	uint64_t g = off / st->grain_bytes;
	uint64_t g_last = (off + len - 1) / st->grain_bytes;
	uint64_t first_gte = 0, run_end;
	uint32_t last_gte = 0;
	int state = -1;

	while (g <= g_last) {
		uint64_t gt_idx = g / KDMV_GTES;
		uint64_t g_end = vd_min_u64((gt_idx + 1) * KDMV_GTES, g_last + 1);
		bool first = state < 0;
		int64_t n;

		if (st->gd[gt_idx] == 0) {
			n = sparse_scan_gt(e, st, NULL, g, g_end, &state, &last_gte);
		} else {
			int r = 0;
			const uint32_t *gt = vd_tcache_get(&st->gts, gt_idx, &r);

			if (!gt) {
				if (!first)
					break;
				return r;
			}
			n = sparse_scan_gt(e, st, gt, g, g_end, &state, &last_gte);
			vd_tcache_put(&st->gts);
		}
		if (n < 0)
			return (int)n;
		if (first && state == VD_DATA)
			first_gte = last_gte - (uint64_t)(n - 1) * st->h.grain_size;
		g += (uint64_t)n;
		if (g < g_end)
			break;
	}
	if (state < 0)
		return -EIO;
	run_end = vd_min_u64(g * st->grain_bytes, off + len);
	*pnum = run_end - off;
	if (state == VD_DATA)
		*file_off = first_gte * 512 + off % st->grain_bytes;
	return state;
}

static int sparse_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum)
{
	uint64_t file_off;

	return sparse_map(e, off, len, pnum, &file_off);
}

static int sparse_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		uint64_t pnum, file_off;
		int s = sparse_map(e, off, len, &pnum, &file_off);

		if (s < 0)
			return s;
		if (s == VD_DATA) {
			int r = vd_pread_full(e->fd, p, pnum, file_off);

			if (r < 0) {
				vd_log_err("vmdk: %s: cannot read %" PRIu64 " bytes at %" PRIu64
					   ": %s",
					   e->path, pnum, file_off, strerror(-r));
				return r;
			}
		} else if (s == VD_ZERO) {
			memset(p, 0, pnum);
		} else {
			vd_log_err("vmdk: %s: read of unallocated range at %" PRIu64, e->path, off);
			return -EIO;
		}
		p += pnum;
		off += pnum;
		len -= pnum;
	}
	return 0;
}

static void sparse_describe(struct vmdk_extent *e, struct vd_json *j)
{
	struct sparse_state *st = e->priv;

	vd_json_u64(j, "kdmv_version", st->h.version);
	vd_json_u64(j, "kdmv_flags", st->h.flags);
	vd_json_u64(j, "grain_size", st->grain_bytes);
	vd_json_bool(j, "unclean_shutdown", st->h.unclean_shutdown != 0);
}

const struct vmdk_extent_ops vmdk_sparse_ops = {
    .name = "sparse",
    .open = sparse_open,
    .close = sparse_close,
    .block_status = sparse_block_status,
    .read = sparse_read,
    .describe = sparse_describe,
};
