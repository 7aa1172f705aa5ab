/* VMDK vmfsSparse ("COWD") extent backend, read-only. Reference: QEMU's
 * block/vmdk.c (vmdk_open_vmfs_sparse, VMDK3Header); no public specification.
 *
 * Layout: a 2048-byte LE header, a grain directory (GD) of u32 sector numbers
 * at gdOffset, and grain tables (GT) of 4096 u32 sector numbers (16 KiB each)
 * allocated on demand, each followed by the grains it maps. A grain is either
 * unallocated (GDE 0 or GTE 0: this layer does not hold it, read the parent)
 * or stored at sector GTE; GD -> GT -> grain.
 *
 * The GD is read and range-checked once at open. GTs are loaded lazily on the
 * first touch into a bounded table cache (disk/tcache.h), so the hot path does
 * no metadata I/O. Every GTE is re-checked against the file size on every
 * lookup, because a cached table holds raw on-disk values. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/tcache.h"
#include "disk/vmdk.h"

#define COWD_MAGIC 0x44574f43u /* "COWD" read as LE u32 */
#define COWD_HDR_SIZE 2048
#define COWD_HDR_VERSION 4
#define COWD_HDR_FLAGS 8
#define COWD_HDR_SECTORS 12
#define COWD_HDR_GRAIN 16
#define COWD_HDR_GD_OFFSET 20
#define COWD_HDR_GD_ENTRIES 24
#define COWD_HDR_FREE 28
#define COWD_HDR_UNCLEAN 1648

#define COWD_GT_ENTRIES 4096u
#define COWD_GT_BYTES (COWD_GT_ENTRIES * 4u)
#define COWD_MAX_GRAIN 2048u /* sectors (1 MiB): larger grains are refused */

struct cowd_header {
	uint32_t version, flags;
	uint32_t num_sectors, grain_size, gd_offset, gd_entries, free_sector;
	uint32_t unclean;
};

struct cowd_state {
	struct cowd_header h;
	uint64_t grain_bytes;
	uint64_t gt_cover;     /* bytes of virtual disk one GT maps */
	uint64_t meta_end;     /* first byte after header + GD: GTs and grains start here */
	struct vmdk_gd gd;     /* read lazily */
	struct vd_tcache gts;  /* GTs by sector, native order */
	struct vmdk_extent *e; /* back pointer for the GT loader */
};

/* Decodes and validates the header fields that do not depend on the file
 * size. No I/O. */
static int cowd_header_decode(const uint8_t *buf, const char *path, struct cowd_header *h)
{
	uint64_t per_gt, want;

	if (vd_get_le32(buf) != COWD_MAGIC) {
		vd_log_err("vmdk: %s: bad COWD magic", path);
		return -EINVAL;
	}
	h->version = vd_get_le32(buf + COWD_HDR_VERSION);
	h->flags = vd_get_le32(buf + COWD_HDR_FLAGS);
	h->num_sectors = vd_get_le32(buf + COWD_HDR_SECTORS);
	h->grain_size = vd_get_le32(buf + COWD_HDR_GRAIN);
	h->gd_offset = vd_get_le32(buf + COWD_HDR_GD_OFFSET);
	h->gd_entries = vd_get_le32(buf + COWD_HDR_GD_ENTRIES);
	h->free_sector = vd_get_le32(buf + COWD_HDR_FREE);
	h->unclean = vd_get_le32(buf + COWD_HDR_UNCLEAN);

	if (h->version != 1) {
		vd_log_err("vmdk: %s: COWD version %" PRIu32 " not supported", path, h->version);
		return -EINVAL;
	}
	if (h->num_sectors == 0) {
		vd_log_err("vmdk: %s: COWD numSectors is 0", path);
		return -EINVAL;
	}
	if (h->grain_size == 0 || h->grain_size > COWD_MAX_GRAIN) {
		vd_log_err("vmdk: %s: COWD grainSize %" PRIu32 " out of range [1, %u]", path,
			   h->grain_size, COWD_MAX_GRAIN);
		return -EINVAL;
	}
	if (h->gd_offset < COWD_HDR_SIZE / 512) {
		vd_log_err("vmdk: %s: COWD gdOffset %" PRIu32 " inside the header", path,
			   h->gd_offset);
		return -EINVAL;
	}
	per_gt = (uint64_t)COWD_GT_ENTRIES * h->grain_size;
	want = vd_div_round_up((uint64_t)h->num_sectors, per_gt);
	if (h->gd_entries != want) {
		vd_log_err("vmdk: %s: COWD numGDEntries %" PRIu32 " != %" PRIu64 " for %" PRIu32
			   " sectors",
			   path, h->gd_entries, want, h->num_sectors);
		return -EINVAL;
	}
	return 0;
}

/* Table loader for st->gts: reads the GT at sector sec (a checked GD entry). */
static int cowd_gt_load(void *ctx, uint64_t sec, void *table)
{
	struct cowd_state *st = ctx;

	int r = vmdk_gt_read(st->e, sec * 512, COWD_GT_ENTRIES, 4, table,
			     "COWD grain table at sector", sec);

	return r == 0 ? vmdk_gt_compact(table, COWD_GT_ENTRIES, 4, st->h.grain_size) : r;
}

/* vmdk_gd.check: a GT must lie after the header and GD, inside the file. */
static int cowd_gde_check(struct vmdk_extent *e, uint64_t i, uint64_t gde)
{
	struct cowd_state *st = e->priv;
	uint64_t gt_off = gde * 512;

	if (gt_off >= st->meta_end && gt_off + COWD_GT_BYTES <= e->file_size)
		return 0;
	vd_log_err("vmdk: %s: COWD GD entry %" PRIu64 " (sector %" PRIu64
		   ") outside [end of GD, EOF]",
		   e->path, i, gde);
	return -EINVAL;
}

static void cowd_close(struct vmdk_extent *e)
{
	struct cowd_state *st = e->priv;

	if (!st)
		return;
	vd_tcache_destroy(&st->gts);
	vmdk_gd_destroy(&st->gd);
	free(st);
	e->priv = NULL;
}

static int cowd_open(struct vmdk_extent *e)
{
	uint8_t buf[COWD_HDR_SIZE];
	struct cowd_state *st;
	uint64_t gd_bytes, gd_off;
	int ret;

	ret = vd_fd_size(e->fd, &e->file_size);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot get the size: %s", e->path, strerror(-ret));
		return ret;
	}
	if (e->file_size < COWD_HDR_SIZE) {
		vd_log_err("vmdk: %s: COWD file shorter than its header", e->path);
		return -EINVAL;
	}
	ret = vd_pread_full(e->fd, buf, sizeof(buf), 0);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the COWD header: %s", e->path, strerror(-ret));
		return ret;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->e = e;
	e->priv = st;
	ret = cowd_header_decode(buf, e->path, &st->h);
	if (ret < 0)
		goto fail;
	if (st->h.num_sectors < e->sectors) {
		vd_log_err("vmdk: %s: COWD numSectors %" PRIu32 " < descriptor SECTORS %" PRIu64,
			   e->path, st->h.num_sectors, e->sectors);
		ret = -EINVAL;
		goto fail;
	}
	if (st->h.num_sectors > e->sectors)
		vd_log_warn("vmdk: %s: COWD numSectors %" PRIu32 " > descriptor SECTORS %" PRIu64
			    ", using the descriptor",
			    e->path, st->h.num_sectors, e->sectors);
	if (st->h.unclean)
		vd_log_warn("vmdk: %s: COWD uncleanShutdown is set", e->path);

	st->grain_bytes = (uint64_t)st->h.grain_size * 512;
	st->gt_cover = st->grain_bytes * COWD_GT_ENTRIES;
	gd_off = (uint64_t)st->h.gd_offset * 512;
	gd_bytes = (uint64_t)st->h.gd_entries * 4;
	st->meta_end = gd_off + gd_bytes;
	if (st->meta_end > e->file_size) {
		vd_log_err("vmdk: %s: COWD grain directory (%" PRIu64 " bytes at %" PRIu64
			   ") past EOF",
			   e->path, gd_bytes, gd_off);
		ret = -EINVAL;
		goto fail;
	}
	st->gd = (struct vmdk_gd){.e = e,
				  .off = gd_off,
				  .n = st->h.gd_entries,
				  .width = 4,
				  .what = "COWD grain directory",
				  .check = cowd_gde_check};
	ret = vd_tcache_init(&st->gts, COWD_GT_BYTES, cowd_gt_load, st);
	if (ret == 0)
		ret = vmdk_gd_init(&st->gd);
	if (ret < 0)
		goto fail;
	e->grain_bytes = st->grain_bytes;
	return 0;
fail:
	cowd_close(e);
	return ret;
}

/* vmdk_gte_fn: a GTE is 0 (unallocated) or the sector of the grain, which
 * must lie after the header and GD and inside the file. */
static int cowd_gte(struct vmdk_extent *e, uint64_t g, uint64_t gte, bool log, uint64_t *phys)
{
	struct cowd_state *st = e->priv;
	uint64_t p = gte * 512;

	if (!gte)
		return VD_UNALLOC;
	if (p < st->meta_end || p + st->grain_bytes > e->file_size) {
		if (log)
			vd_log_err("vmdk: %s: COWD GT entry for grain %" PRIu64 " (sector %" PRIu64
				   ") outside [end of GD, EOF]",
				   e->path, g, gte);
		return -EIO;
	}
	*phys = p;
	return VD_DATA;
}

static int cowd_gt_of(struct vmdk_extent *e, uint64_t g, uint64_t *gt, uint64_t *absent)
{
	struct cowd_state *st = e->priv;

	return vmdk_gd_gt(&st->gd, g / COWD_GT_ENTRIES, UINT64_MAX, gt, absent);
}

static const struct vmdk_gt_format cowd_gt_format = {4, COWD_GT_ENTRIES, cowd_gt_of, cowd_gte,
						     vmdk_gt_pos_sectors};

static int cowd_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	struct cowd_state *st = e->priv;

	return vmdk_gt_block_status(e, &cowd_gt_format, &st->gts, st->grain_bytes, off, len, pnum,
				    map);
}

static void cowd_describe(struct vmdk_extent *e, struct vd_json *j)
{
	struct cowd_state *st = e->priv;
	uint64_t held, loads;

	vd_tcache_stats(&st->gts, &held, &loads);
	vd_json_u64(j, "cowd_version", st->h.version);
	vd_json_u64(j, "grain_sectors", st->h.grain_size);
	vd_json_u64(j, "capacity_sectors", st->h.num_sectors);
	vd_json_u64(j, "gd_offset_sector", st->h.gd_offset);
	vd_json_u64(j, "gd_entries", st->h.gd_entries);
	vd_json_u64(j, "free_sector", st->h.free_sector);
	vd_json_bool(j, "unclean_shutdown", st->h.unclean != 0);
	vd_json_u64(j, "gts_cached", held);
	vd_json_u64(j, "gts_loaded", loads);
}

static int cowd_check(struct vmdk_extent *e, struct vd_check *chk)
{
	struct cowd_state *st = e->priv;

	if (st->h.unclean)
		vd_check_report(chk, e->path, "COWD uncleanShutdown flag set");
	return vmdk_gt_check(e, &cowd_gt_format, &st->gts, st->grain_bytes, chk);
}

const struct vmdk_extent_ops vmdk_cowd_ops = {
    .name = "vmfsSparse",
    .open = cowd_open,
    .close = cowd_close,
    .block_status = cowd_block_status,
    .describe = cowd_describe,
    .check = cowd_check,
};
