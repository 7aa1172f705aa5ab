/* VMDK vmfsSparse ("COWD") extent backend, read-only (formats.md 4.1, 9).
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
#define COWD_MAX_GRAIN 2048u /* sectors (1 MiB), formats.md 9 */
#define COWD_GT_CACHE_BYTES (16u << 20)

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
	uint32_t *gd;	       /* gd_entries, immutable after open */
	struct vd_tcache gts;  /* GT i by GD index, native order */
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

/* Table loader for st->gts: reads GT gdi (its GD entry was checked at open). */
static int cowd_gt_load(void *ctx, uint64_t gdi, void *table)
{
	struct cowd_state *st = ctx;
	struct vmdk_extent *e = st->e;
	uint32_t *gt = table;
	int ret;

	ret = vd_pread_full(e->fd, gt, COWD_GT_BYTES, (uint64_t)st->gd[gdi] * 512);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read COWD grain table %" PRIu64 ": %s", e->path, gdi,
			   strerror(-ret));
		return ret;
	}
	for (unsigned i = 0; i < COWD_GT_ENTRIES; i++)
		gt[i] = vd_get_le32((const uint8_t *)&gt[i]);
	return vd_mem_is_zero(gt, COWD_GT_BYTES) ? VD_TCACHE_ZERO : 0;
}

static void cowd_close(struct vmdk_extent *e)
{
	struct cowd_state *st = e->priv;

	if (!st)
		return;
	vd_tcache_destroy(&st->gts);
	free(st->gd);
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
	/* gd_entries <= 2^32 / 4096 = 1 Mi, so the GD is at most 4 MiB. */
	st->gd = malloc(gd_bytes);
	if (!st->gd || vd_tcache_init(&st->gts, st->h.gd_entries, COWD_GT_BYTES,
				      COWD_GT_CACHE_BYTES, cowd_gt_load, st) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vd_pread_full(e->fd, st->gd, gd_bytes, gd_off);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the COWD grain directory: %s", e->path,
			   strerror(-ret));
		goto fail;
	}
	for (uint32_t i = 0; i < st->h.gd_entries; i++) {
		uint32_t gde = vd_get_le32((const uint8_t *)&st->gd[i]);
		uint64_t gt_off = (uint64_t)gde * 512;

		st->gd[i] = gde;
		if (gde && (gt_off < st->meta_end || gt_off + COWD_GT_BYTES > e->file_size)) {
			vd_log_err("vmdk: %s: COWD GD entry %" PRIu32 " (sector %" PRIu32
				   ") outside [end of GD, EOF]",
				   e->path, i, gde);
			ret = -EINVAL;
			goto fail;
		}
	}
	e->grain_bytes = st->grain_bytes;
	return 0;
fail:
	cowd_close(e);
	return ret;
}

/* Looks up the grain holding byte off: returns VD_DATA with *phys = its file
 * offset, VD_UNALLOC, or -errno. */
static int cowd_lookup(struct vmdk_extent *e, uint64_t off, uint64_t *phys)
{
	struct cowd_state *st = e->priv;
	uint64_t gdi = off / st->gt_cover;
	uint64_t gti = off % st->gt_cover / st->grain_bytes;
	const uint32_t *gt;
	uint32_t gte;
	uint64_t p;
	int err;

	if (!st->gd[gdi])
		return VD_UNALLOC;
	gt = vd_tcache_get(&st->gts, gdi, &err);
	if (!gt)
		return err;
	gte = gt[gti];
	vd_tcache_put(&st->gts);
	if (!gte)
		return VD_UNALLOC;
	p = (uint64_t)gte * 512;
	if (p < st->meta_end || p + st->grain_bytes > e->file_size) {
		vd_log_err("vmdk: %s: COWD GT entry for grain %" PRIu64 " (sector %" PRIu32
			   ") outside [end of GD, EOF]",
			   e->path, off / st->grain_bytes, gte);
		return -EIO;
	}
	*phys = p;
	return VD_DATA;
}

static int cowd_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum)
{
	struct cowd_state *st = e->priv;
	uint64_t pos = off, end = off + len, phys;
	int state = -1;

	while (pos < end) {
		uint64_t next;
		int s;

		if (!st->gd[pos / st->gt_cover]) {
			s = VD_UNALLOC;
			next = (pos / st->gt_cover + 1) * st->gt_cover;
		} else {
			s = cowd_lookup(e, pos, &phys);
			if (s < 0)
				return s;
			next = (pos / st->grain_bytes + 1) * st->grain_bytes;
		}
		if (state >= 0 && s != state)
			break;
		state = s;
		pos = next;
	}
	*pnum = vd_min_u64(pos, end) - off;
	return state;
}

int vmdk_grains_read(struct vmdk_extent *e, uint64_t grain_bytes, void *buf, size_t len,
		     uint64_t off,
		     int (*lookup)(struct vmdk_extent *e, uint64_t off, uint64_t *phys))
{
	uint8_t *out = buf;

	while (len) {
		uint64_t phys = 0, run_phys = 0, n = 0;
		int s;

		/* Extend the run while the next grain follows in the file. */
		for (;;) {
			uint64_t in = (off + n) % grain_bytes;
			uint64_t chunk = vd_min_u64(grain_bytes - in, len - n);

			s = lookup(e, off + n, &phys);
			if (s < 0)
				return s;
			if (n && (s != VD_DATA || phys + in != run_phys + n))
				break;
			if (!n)
				run_phys = s == VD_DATA ? phys + in : 0;
			n += chunk;
			if (s != VD_DATA || n == len)
				break;
		}
		/* phys is never 0 for DATA: offset 0 holds the header */
		if (run_phys) {
			int ret = vd_pread_full(e->fd, out, n, run_phys);
			if (ret < 0) {
				vd_log_err("vmdk: %s: read of %" PRIu64 " bytes at %" PRIu64
					   " failed: %s",
					   e->path, n, run_phys, strerror(-ret));
				return ret;
			}
		} else {
			memset(out, 0, n); /* not DATA: the caller should not ask; never leak */
		}
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int cowd_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct cowd_state *st = e->priv;

	return vmdk_grains_read(e, st->grain_bytes, buf, len, off, cowd_lookup);
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

const struct vmdk_extent_ops vmdk_cowd_ops = {
    .name = "vmfsSparse",
    .open = cowd_open,
    .close = cowd_close,
    .block_status = cowd_block_status,
    .read = cowd_read,
    .describe = cowd_describe,
};
