/* Hosted sparse ("KDMV") extent backend: header decode, GD/GT lookup
 * (VMware Virtual Disk Format 5.0, "Hosted Sparse Extents").
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
 * GTs; lookups scan a GT in place while the cache is read-locked. A delta
 * opened for writing pins them and changes entries in place (vmdk_alloc.c);
 * its file then grows, so the file-size bound is read atomically. */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/space.h"
#include "disk/tcache.h"

/* KDMV header field offsets (Virtual Disk Format 5.0, "Hosted Sparse Extent Header"). */
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

struct sparse_state {
	struct vmdk_kdmv_header h;
	uint64_t grain_bytes;
	uint64_t ext_bytes;	   /* virtual size of the extent */
	uint64_t min_grain_sector; /* no grain may start below this */
	uint64_t desc_end;	   /* first sector after the embedded descriptor */
	uint64_t n_gd;		   /* GD entries */
	struct vmdk_gd gd;	   /* read lazily */
	struct vd_tcache gts;	   /* GTs by sector, native order */
	struct vmdk_extent *e;	   /* back pointer for the GT loader */
	struct vmdk_rw *rw;	   /* the write side (vmdk_alloc.c), when e->writable */
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

void vmdk_kdmv_encode(const struct vmdk_kdmv_header *h, uint8_t buf[512])
{
	static const uint8_t nl[4] = {0x0a, 0x20, 0x0d, 0x0a};

	memset(buf, 0, 512);
	vd_put_le32(buf + KDMV_MAGIC, VMDK_KDMV_MAGIC);
	vd_put_le32(buf + KDMV_VERSION, h->version);
	vd_put_le32(buf + KDMV_FLAGS, h->flags);
	vd_put_le64(buf + KDMV_CAPACITY, h->capacity);
	vd_put_le64(buf + KDMV_GRAIN, h->grain_size);
	vd_put_le64(buf + KDMV_DESC_OFF, h->desc_offset);
	vd_put_le64(buf + KDMV_DESC_SIZE, h->desc_size);
	vd_put_le32(buf + KDMV_NUM_GTES, h->num_gtes_per_gt);
	vd_put_le64(buf + KDMV_RGD, h->rgd_offset);
	vd_put_le64(buf + KDMV_GD, h->gd_offset);
	vd_put_le64(buf + KDMV_OVERHEAD, h->overhead);
	buf[KDMV_UNCLEAN] = h->unclean_shutdown;
	memcpy(buf + KDMV_NL_TEST, nl, sizeof(nl));
	vd_put_le16(buf + KDMV_COMPRESS, h->compress_algorithm);
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
	vmdk_rw_close(st->rw);
	vd_tcache_destroy(&st->gts);
	vmdk_gd_destroy(&st->gd);
	free(st);
	e->priv = NULL;
}

/* vmdk_gd.check: a non-zero GD entry must name a whole GT inside the file,
 * clear of the header and the embedded descriptor. */
static bool sparse_gde_ok(struct vmdk_extent *e, uint64_t gde)
{
	struct sparse_state *st = e->priv;
	uint64_t end;

	return gde >= 1 &&
	       !(st->h.desc_size && gde < st->desc_end && gde + 4 > st->h.desc_offset) &&
	       !vd_add_ovf(gde * 512, KDMV_GT_BYTES, &end) &&
	       end <= __atomic_load_n(&e->file_size, __ATOMIC_ACQUIRE);
}

static int sparse_gde_check(struct vmdk_extent *e, uint64_t i, uint64_t gde)
{
	if (sparse_gde_ok(e, gde))
		return 0;
	vd_log_err("vmdk: %s: grain directory entry %" PRIu64 " points to sector %" PRIu64
		   ", outside the file's metadata area",
		   e->path, i, gde);
	return -EINVAL;
}

/* Table loader for st->gts: reads the GT at sector sec (a checked GD entry). */
static int sparse_gt_load(void *ctx, uint64_t sec, void *table)
{
	struct sparse_state *st = ctx;

	int r = vmdk_gt_read(st->e, sec * 512, KDMV_GTES, 4, table, "grain table at sector", sec);

	/* An all-zero table stays VD_TCACHE_ZERO (it costs no table memory);
	 * a writable extent's tables are changed in place: never the short form. */
	if (r != 0 || st->gts.pinned)
		return r;
	return vmdk_gt_compact(table, KDMV_GTES, 4, st->h.grain_size);
}

static int sparse_open(struct vmdk_extent *e)
{
	struct sparse_state *st;
	uint8_t hdr[512];
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

	st->e = e;
	st->gd = (struct vmdk_gd){.e = e,
				  .off = st->h.gd_offset * 512,
				  .n = st->n_gd,
				  .width = 4,
				  .what = "grain directory",
				  .check = sparse_gde_check};
	r = vd_tcache_init(&st->gts, KDMV_GT_BYTES, sparse_gt_load, st);
	if (r == 0)
		r = vmdk_gd_init(&st->gd);
	if (r == 0 && e->writable)
		r = vmdk_rw_open(e, &st->h, &st->gts, &st->rw);
	if (r < 0)
		goto fail;
	return 0;
fail:
	sparse_close(e);
	return r;
}

/* vmdk_gte_fn: a GTE is 0 (unallocated), 1 (zeroed, with the flag) or the
 * sector of the grain, which must lie in the grain area and inside the file. */
static int sparse_gte(struct vmdk_extent *e, uint64_t grain, uint64_t gte, bool log, uint64_t *phys)
{
	struct sparse_state *st = e->priv;
	uint64_t start = grain * st->grain_bytes;
	uint64_t need = vd_min_u64(st->grain_bytes, st->ext_bytes - start), end;
	/* A writable extent grows: its new grains are set in the GTs after
	 * file_size was raised past them. */
	uint64_t file_size = __atomic_load_n(&e->file_size, __ATOMIC_ACQUIRE);

	if (gte == 0)
		return VD_UNALLOC;
	if (gte == 1 && (st->h.flags & VMDK_FLAG_ZERO_GTE))
		return VD_ZERO;
	if (gte < st->min_grain_sector || vd_add_ovf(gte * 512, need, &end) || end > file_size) {
		if (log)
			vd_log_err("vmdk: %s: grain %" PRIu64 " has table entry %" PRIu64
				   " (sector), outside the file's grain area",
				   e->path, grain, gte);
		return -EIO;
	}
	*phys = gte * 512;
	return VD_DATA;
}

static int sparse_gt_of(struct vmdk_extent *e, uint64_t g, uint64_t *gt, uint64_t *absent)
{
	struct sparse_state *st = e->priv;

	return vmdk_gd_gt(&st->gd, g / KDMV_GTES, UINT64_MAX, gt, absent);
}

static const struct vmdk_gt_format sparse_gt_format = {4, KDMV_GTES, sparse_gt_of, sparse_gte,
						       vmdk_gt_pos_sectors};

static int sparse_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			       struct vd_map *map)
{
	struct sparse_state *st = e->priv;

	return vmdk_gt_block_status(e, &sparse_gt_format, &st->gts, st->grain_bytes, off, len, pnum,
				    map);
}

static void sparse_describe(struct vmdk_extent *e, struct vd_json *j)
{
	struct sparse_state *st = e->priv;
	uint64_t held, loads;

	vd_tcache_stats(&st->gts, &held, &loads);
	vd_json_u64(j, "kdmv_version", st->h.version);
	vd_json_u64(j, "kdmv_flags", st->h.flags);
	vd_json_u64(j, "grain_size", st->grain_bytes);
	vd_json_bool(j, "unclean_shutdown", st->h.unclean_shutdown != 0);
	vd_json_u64(j, "gts_cached", held);
	vd_json_u64(j, "gts_loaded", loads);
}

/* --- check ---------------------------------------------------------------
 * Everything is read from the file again (not from the GT cache): a check
 * looks at what is on disk. Grain table entries that open() tolerates (they
 * only fail reads of their grains) are reported here, as are the redundant
 * GD/GTs that reads never use. */

enum { SP_HEADER, SP_DESC, SP_GD, SP_RGD, SP_GT, SP_RGT, SP_GRAIN };
static const char *const sparse_kinds[] = {
    "header",	   "embedded descriptor",   "grain directory", "redundant grain directory",
    "grain table", "redundant grain table", "grain",
};

/* Reads a GD of st->n_gd entries at sector off into gd (native order). */
static int sparse_gd_read(struct vmdk_extent *e, uint64_t off, uint32_t *gd)
{
	struct sparse_state *st = e->priv;
	uint8_t *raw = malloc(st->n_gd * 4);
	int r;

	if (!raw)
		return -ENOMEM;
	r = vd_pread_full(e->fd, raw, st->n_gd * 4, off * 512);
	for (uint64_t i = 0; r == 0 && i < st->n_gd; i++)
		gd[i] = vd_get_le32(raw + i * 4);
	free(raw);
	if (r < 0)
		vd_log_err("vmdk: %s: cannot read a grain directory at sector %" PRIu64 ": %s",
			   e->path, off, strerror(-r));
	return r;
}

static int sparse_gt_read(struct vmdk_extent *e, uint32_t sector, uint8_t raw[KDMV_GT_BYTES])
{
	int r = vd_pread_full(e->fd, raw, KDMV_GT_BYTES, (uint64_t)sector * 512);

	if (r < 0)
		vd_log_err("vmdk: %s: cannot read the grain table at sector %" PRIu32 ": %s",
			   e->path, sector, strerror(-r));
	return r;
}

/* The redundant GD and its GTs must mirror the primary ones. */
static int sparse_check_rgd(struct vmdk_extent *e, struct vd_check *chk, struct vd_space *sp,
			    const uint32_t *gd, uint32_t *rgd)
{
	struct sparse_state *st = e->priv;
	uint64_t gd_bytes = vd_round_up(st->n_gd * 4, 512), end;
	uint8_t gt[KDMV_GT_BYTES], rgt[KDMV_GT_BYTES];
	int r;

	if (st->h.rgd_offset < 1 || vd_add_ovf(st->h.rgd_offset * 512, gd_bytes, &end) ||
	    end > e->file_size) {
		vd_check_report(chk, e->path,
				"redundant grain directory (sector %" PRIu64
				") is outside the file",
				st->h.rgd_offset);
		return 0;
	}
	r = vd_space_add(sp, SP_RGD, 0, st->h.rgd_offset * 512, gd_bytes);
	if (r == 0)
		r = sparse_gd_read(e, st->h.rgd_offset, rgd);
	for (uint64_t i = 0; r == 0 && i < st->n_gd; i++) {
		if (!rgd[i] && !gd[i])
			continue;
		if (!rgd[i] != !gd[i]) {
			vd_check_report(chk, e->path,
					"grain directory entry %" PRIu64 " is %" PRIu32
					" but the redundant one is %" PRIu32,
					i, gd[i], rgd[i]);
			continue;
		}
		if (!sparse_gde_ok(e, gd[i]))
			continue; /* reported with the primary */
		if (!sparse_gde_ok(e, rgd[i])) {
			vd_check_report(chk, e->path,
					"redundant grain directory entry %" PRIu64
					" points to sector %" PRIu32 ", outside the file",
					i, rgd[i]);
			continue;
		}
		r = vd_space_add(sp, SP_RGT, (uint32_t)i, (uint64_t)rgd[i] * 512, KDMV_GT_BYTES);
		if (r == 0)
			r = sparse_gt_read(e, gd[i], gt);
		if (r == 0)
			r = sparse_gt_read(e, rgd[i], rgt);
		if (r == 0 && memcmp(gt, rgt, sizeof(gt)))
			vd_check_report(chk, e->path,
					"grain table %" PRIu64 " differs from its redundant copy",
					i);
	}
	return r;
}

static int sparse_check(struct vmdk_extent *e, struct vd_check *chk)
{
	struct sparse_state *st = e->priv;
	struct vd_space sp = {.kinds = sparse_kinds};
	uint64_t grains = vd_div_round_up(st->h.capacity, st->h.grain_size);
	uint8_t raw[KDMV_GT_BYTES];
	uint32_t *gd = calloc(st->n_gd, sizeof(*gd)), *rgd = calloc(st->n_gd, sizeof(*rgd));
	unsigned bad = 0;
	int r = gd && rgd ? 0 : -ENOMEM;

	if (st->h.unclean_shutdown)
		vd_check_report(chk, e->path,
				"unclean-shutdown flag set (the file was open for writing when "
				"its writer stopped)");
	if (r == 0)
		r = vd_space_add(&sp, SP_HEADER, 0, 0, 512);
	if (r == 0 && st->h.desc_size)
		r = vd_space_add(&sp, SP_DESC, 0, st->h.desc_offset * 512, st->h.desc_size * 512);
	if (r == 0)
		r = vd_space_add(&sp, SP_GD, 0, st->h.gd_offset * 512,
				 vd_round_up(st->n_gd * 4, 512));
	if (r == 0)
		r = sparse_gd_read(e, st->h.gd_offset, gd);
	if (r == 0 && (st->h.flags & VMDK_FLAG_RGD))
		r = sparse_check_rgd(e, chk, &sp, gd, rgd);
	for (uint64_t i = 0; r == 0 && i < st->n_gd; i++) {
		if (!gd[i])
			continue;
		if (!sparse_gde_ok(e, gd[i])) {
			vd_check_report(chk, e->path,
					"grain directory entry %" PRIu64
					" points to sector %" PRIu32
					", outside the file's metadata area",
					i, gd[i]);
			continue;
		}
		r = vd_space_add(&sp, SP_GT, (uint32_t)i, (uint64_t)gd[i] * 512, KDMV_GT_BYTES);
		if (r == 0)
			r = sparse_gt_read(e, gd[i], raw);
		for (uint64_t k = 0; r == 0 && k < KDMV_GTES; k++) {
			uint64_t g = i * KDMV_GTES + k;
			uint32_t gte = vd_get_le32(raw + 4 * k);

			if (g >= grains) {
				if (gte && ++bad <= 10)
					vd_check_report(chk, e->path,
							"grain table %" PRIu64 " entry %" PRIu64
							" past the disk's end is %" PRIu32,
							i, k, gte);
				continue;
			}
			if (gte == 0 || (gte == 1 && (st->h.flags & VMDK_FLAG_ZERO_GTE)))
				continue;
			uint64_t phys;
			if (sparse_gte(e, g, gte, false, &phys) < 0) {
				if (++bad <= 10)
					vd_check_report(chk, e->path,
							"grain %" PRIu64 " (grain table %" PRIu64
							") points to sector %" PRIu32
							", outside the file's grain area",
							g, i, gte);
				continue;
			}
			r = vd_space_add(&sp, SP_GRAIN, (uint32_t)g, (uint64_t)gte * 512,
					 vd_min_u64(st->grain_bytes, e->file_size - gte * 512ull));
		}
	}
	if (bad > 10)
		vd_check_report(chk, e->path, "%u more bad grain table entries not listed",
				bad - 10);
	/* Leaks: only past the overhead, where grains live (the metadata area
	 * may hold padding); grains are packed, so any gap counts. */
	if (r == 0)
		r = vd_space_check(&sp, st->h.overhead * 512, e->file_size, 1, chk, e->path);
	vd_space_free(&sp);
	free(gd);
	free(rgd);
	return r;
}

static int sparse_write(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	struct sparse_state *st = e->priv;

	return st->rw ? vmdk_rw_write(st->rw, buf, len, off) : -EROFS;
}

static int sparse_discard(struct vmdk_extent *e, uint64_t off, uint64_t len)
{
	struct sparse_state *st = e->priv;

	return st->rw ? vmdk_rw_discard(st->rw, off, len) : -EROFS;
}

static int sparse_flush(struct vmdk_extent *e)
{
	struct sparse_state *st = e->priv;

	return st->rw ? vmdk_rw_flush(st->rw) : 0;
}

const struct vmdk_extent_ops vmdk_sparse_ops = {
    .name = "sparse",
    .open = sparse_open,
    .close = sparse_close,
    .block_status = sparse_block_status,
    .describe = sparse_describe,
    .check = sparse_check,

    .write = sparse_write,
    .discard = sparse_discard,
    .flush = sparse_flush,
};
