/* VMDK seSparse extent backend (ESXi >= 6.5), read-only. seSparse has no public
 * specification: the reference is QEMU's block/vmdk.c (vmdk_open_se_sparse),
 * whose checks are all made here.
 *
 * Layout (all LE u64, offsets and sizes in sectors): a const header at sector
 * 0 (26 fields + zero padding), a volatile header (magic 0xCAFECAFE, journal
 * state), a grain directory of u64 entries, a region of grain tables (4096
 * u64 entries = 64 sectors each) and a region of 4 KiB grains.
 *
 * GD entry: 0 = no GT (whole range unallocated), else 0x10000000 in the top
 * 32 bits and a GT index in the low 32. GT entry, by top nibble: 0
 * unallocated (parent), 1 SCSI-unmapped (zeros, as QEMU does), 2 zero grain,
 * 3 allocated (cluster number split across two fields), anything else is
 * corrupt.
 *
 * The GD is read and checked at open. GTs are loaded on first touch into a
 * bounded table cache (disk/tcache.h); raw entries are re-validated on every
 * lookup because the file may be shorter than the regions it declares.
 * A journal that needs replay is refused: its format is unknown. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/tcache.h"
#include "disk/vmdk.h"

#define SES_CONST_MAGIC 0xcafebabeull
#define SES_VOLATILE_MAGIC 0xcafecafeull
#define SES_VERSION 0x0000000200000001ull
#define SES_GRAIN_SECTORS 8ull
#define SES_GT_SECTORS 64ull
#define SES_GT_ENTRIES 4096u
#define SES_FIELDS 26
#define SES_GDE_TAG 0x10000000ull
#define SES_GD_CAP (1u << 22) /* 4 Mi GD entries (32 MiB) covers 64 TiB */

/* Const header field indexes (QEMU block/vmdk.c, VMDKSESparseConstHeader). */
enum ses_field {
	SES_MAGIC,
	SES_VERS,
	SES_CAPACITY,
	SES_GRAIN,
	SES_GT_SIZE,
	SES_FLAGS,
	SES_RSVD0,
	SES_RSVD3 = SES_RSVD0 + 3,
	SES_VOL_OFF,
	SES_VOL_SIZE,
	SES_JHDR_OFF,
	SES_JHDR_SIZE,
	SES_JOURNAL_OFF,
	SES_JOURNAL_SIZE,
	SES_GD_OFF,
	SES_GD_SIZE,
	SES_GTS_OFF,
	SES_GTS_SIZE,
	SES_BITMAP_OFF,
	SES_BITMAP_SIZE,
	SES_BACKMAP_OFF,
	SES_BACKMAP_SIZE,
	SES_GRAINS_OFF,
	SES_GRAINS_SIZE,
};
_Static_assert(SES_GRAINS_SIZE == SES_FIELDS - 1, "26 const header fields");

static const char *const ses_field_names[SES_FIELDS] = {
    "magic",
    "version",
    "capacity",
    "grain_size",
    "grain_table_size",
    "flags",
    "reserved[0]",
    "reserved[1]",
    "reserved[2]",
    "reserved[3]",
    "volatile_header_offset",
    "volatile_header_size",
    "journal_header_offset",
    "journal_header_size",
    "journal_offset",
    "journal_size",
    "grain_dir_offset",
    "grain_dir_size",
    "grain_tables_offset",
    "grain_tables_size",
    "free_bitmap_offset",
    "free_bitmap_size",
    "backmap_offset",
    "backmap_size",
    "grains_offset",
    "grains_size",
};

struct ses_state {
	uint64_t f[SES_FIELDS];
	uint64_t free_gt, next_txn;
	uint64_t gd_entries;   /* entries used: ceil(capacity / GT coverage) */
	uint64_t n_gts;	       /* GTs the region can hold */
	struct vmdk_gd gd;     /* read lazily */
	struct vd_tcache gts;  /* by GT index (not GD index), native order */
	struct vmdk_extent *e; /* back pointer for the GT loader */
};

/* Decodes and checks the const header against every constant QEMU requires.
 * No I/O. */
static int ses_const_decode(const uint8_t *buf, const char *path, uint64_t *f)
{
	static const struct {
		enum ses_field i;
		uint64_t want;
	} fixed[] = {
	    {SES_MAGIC, SES_CONST_MAGIC},
	    {SES_VERS, SES_VERSION},
	    {SES_GRAIN, SES_GRAIN_SECTORS},
	    {SES_GT_SIZE, SES_GT_SECTORS},
	    {SES_FLAGS, 0},
	    {SES_RSVD0, 0},
	    {SES_RSVD0 + 1, 0},
	    {SES_RSVD0 + 2, 0},
	    {SES_RSVD3, 0},
	};

	for (int i = 0; i < SES_FIELDS; i++)
		f[i] = vd_get_le64(buf + 8 * i);
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		if (f[fixed[i].i] != fixed[i].want) {
			vd_log_err("vmdk: %s: seSparse %s is 0x%" PRIx64 ", expected 0x%" PRIx64,
				   path, ses_field_names[fixed[i].i], f[fixed[i].i], fixed[i].want);
			return -EINVAL;
		}
	}
	for (int i = SES_CAPACITY; i < SES_FIELDS; i++) {
		if ((i >= SES_VOL_OFF || i == SES_CAPACITY) && f[i] == 0) {
			vd_log_err("vmdk: %s: seSparse %s is 0", path, ses_field_names[i]);
			return -EINVAL;
		}
	}
	for (int i = 8 * SES_FIELDS; i < 512; i++) {
		if (buf[i]) {
			vd_log_err("vmdk: %s: seSparse const header padding byte %d is not zero",
				   path, i);
			return -EINVAL;
		}
	}
	return 0;
}

/* Checks that region [off, off+size) sectors lies within max_bytes. */
static bool ses_region_ok(uint64_t off, uint64_t size, uint64_t max_bytes)
{
	uint64_t end;

	return !vd_add_ovf(off, size, &end) && end <= max_bytes / 512;
}

/* vmdk_gd.check: the tag, and a GT number inside the GT region. */
static int ses_gde_check(struct vmdk_extent *e, uint64_t i, uint64_t gde)
{
	struct ses_state *st = e->priv;

	if (gde >> 32 == SES_GDE_TAG && (gde & 0xffffffffu) < st->n_gts)
		return 0;
	vd_log_err("vmdk: %s: seSparse GD entry %" PRIu64 " is 0x%016" PRIx64
		   " (bad tag or GT index >= %" PRIu64 ")",
		   e->path, i, gde, st->n_gts);
	return -EINVAL;
}

/* Table loader for st->gts: reads GT number idx. */
static int ses_gt_load(void *ctx, uint64_t idx, void *table)
{
	struct ses_state *st = ctx;
	struct vmdk_extent *e = st->e;
	uint64_t sec = st->f[SES_GTS_OFF] + idx * SES_GT_SECTORS;

	if (!ses_region_ok(sec, SES_GT_SECTORS, e->file_size)) {
		vd_log_err("vmdk: %s: seSparse grain table %" PRIu64 " (sector %" PRIu64
			   ") past EOF",
			   e->path, idx, sec);
		return -EIO;
	}
	return vmdk_gt_read(e, sec * 512, SES_GT_ENTRIES, 8, table, "seSparse grain table", idx);
}

static void ses_close(struct vmdk_extent *e)
{
	struct ses_state *st = e->priv;

	if (!st)
		return;
	vd_tcache_destroy(&st->gts);
	vmdk_gd_destroy(&st->gd);
	free(st);
	e->priv = NULL;
}

static int ses_volatile_check(struct vmdk_extent *e, struct ses_state *st)
{
	uint8_t v[512];
	int ret;

	if (!ses_region_ok(st->f[SES_VOL_OFF], 1, e->file_size)) {
		vd_log_err("vmdk: %s: seSparse volatile header past EOF", e->path);
		return -EINVAL;
	}
	ret = vd_pread_full(e->fd, v, sizeof(v), st->f[SES_VOL_OFF] * 512);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the seSparse volatile header: %s", e->path,
			   strerror(-ret));
		return ret;
	}
	if (vd_get_le64(v) != SES_VOLATILE_MAGIC) {
		vd_log_err("vmdk: %s: seSparse volatile header magic 0x%" PRIx64
			   ", expected 0xcafecafe",
			   e->path, vd_get_le64(v));
		return -EINVAL;
	}
	st->free_gt = vd_get_le64(v + 8);
	st->next_txn = vd_get_le64(v + 16);
	if (vd_get_le64(v + 24) != 0) {
		vd_log_err("vmdk: %s: seSparse journal needs replay (replay_journal = %" PRIu64
			   "); open it in ESXi first",
			   e->path, vd_get_le64(v + 24));
		return -EINVAL;
	}
	for (int i = 32; i < 512; i++) {
		if (v[i]) {
			vd_log_err("vmdk: %s: seSparse volatile header padding byte %d is not zero",
				   e->path, i);
			return -EINVAL;
		}
	}
	return 0;
}

static int ses_open(struct vmdk_extent *e)
{
	uint8_t buf[512];
	struct ses_state *st;
	uint64_t cover = SES_GT_ENTRIES * SES_GRAIN_SECTORS, gd_bytes;
	int ret;

	ret = vd_fd_size(e->fd, &e->file_size);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot get the size: %s", e->path, strerror(-ret));
		return ret;
	}
	ret = vd_pread_full(e->fd, buf, sizeof(buf), 0);
	if (ret < 0) {
		vd_log_err("vmdk: %s: cannot read the seSparse header: %s", e->path,
			   ret == -EIO ? "file too short" : strerror(-ret));
		return ret == -EIO ? -EINVAL : ret;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->e = e;
	e->priv = st;
	ret = ses_const_decode(buf, e->path, st->f);
	if (ret < 0)
		goto fail;
	ret = -EINVAL;
	if (st->f[SES_CAPACITY] < e->sectors) {
		vd_log_err("vmdk: %s: seSparse capacity %" PRIu64 " < descriptor SECTORS %" PRIu64,
			   e->path, st->f[SES_CAPACITY], e->sectors);
		goto fail;
	}
	if (st->f[SES_CAPACITY] > e->sectors)
		vd_log_warn("vmdk: %s: seSparse capacity %" PRIu64 " > descriptor SECTORS %" PRIu64
			    ", using the descriptor",
			    e->path, st->f[SES_CAPACITY], e->sectors);
	ret = ses_volatile_check(e, st);
	if (ret < 0)
		goto fail;

	ret = -EINVAL;
	st->gd_entries = e->sectors / cover + (e->sectors % cover != 0);
	if (st->gd_entries > SES_GD_CAP || st->gd_entries > st->f[SES_GD_SIZE] * 64) {
		vd_log_err("vmdk: %s: seSparse grain_dir_size %" PRIu64
			   " sectors too small or too large for %" PRIu64 " GD entries",
			   e->path, st->f[SES_GD_SIZE], st->gd_entries);
		goto fail;
	}
	gd_bytes = st->gd_entries * 8;
	if (!ses_region_ok(st->f[SES_GD_OFF], vd_div_round_up(gd_bytes, 512), e->file_size)) {
		vd_log_err("vmdk: %s: seSparse grain directory at sector %" PRIu64 " past EOF",
			   e->path, st->f[SES_GD_OFF]);
		goto fail;
	}
	if (st->f[SES_GTS_SIZE] % SES_GT_SECTORS ||
	    st->f[SES_GTS_SIZE] / SES_GT_SECTORS > (uint64_t)SES_GD_CAP) {
		vd_log_err("vmdk: %s: seSparse grain_tables_size %" PRIu64
			   " is not a sane multiple "
			   "of 64",
			   e->path, st->f[SES_GTS_SIZE]);
		goto fail;
	}
	st->n_gts = st->f[SES_GTS_SIZE] / SES_GT_SECTORS;
	st->gd = (struct vmdk_gd){.e = e,
				  .off = st->f[SES_GD_OFF] * 512,
				  .n = st->gd_entries,
				  .width = 8,
				  .what = "seSparse grain directory",
				  .check = ses_gde_check};
	ret = vd_tcache_init(&st->gts, SES_GT_ENTRIES * 8, ses_gt_load, st);
	if (ret == 0)
		ret = vmdk_gd_init(&st->gd);
	if (ret < 0)
		goto fail;
	e->grain_bytes = SES_GRAIN_SECTORS * 512;
	return 0;
fail:
	ses_close(e);
	return ret;
}

/* vmdk_gte_fn. A GT entry, by top nibble: 0 unallocated (parent), 1
 * SCSI-unmapped (zeros, as QEMU reads it), 2 zero grain, 3 allocated (cluster
 * number split across two fields), anything else corrupt. */
static int ses_gte(struct vmdk_extent *e, uint64_t g, uint64_t ent, bool log, uint64_t *phys)
{
	struct ses_state *st = e->priv;
	uint64_t cluster, sec;

	switch (ent >> 60) {
	case 0:
		if (ent) {
			if (log)
				vd_log_err("vmdk: %s: seSparse GT entry for grain %" PRIu64
					   " is 0x%016" PRIx64 " (type 0 with bits set)",
					   e->path, g, ent);
			return -EIO;
		}
		return VD_UNALLOC;
	case 1:
	case 2:
		return VD_ZERO;
	case 3:
		cluster = ((ent >> 48) & 0xfff) | ((ent & 0xffffffffffffull) << 12);
		sec = st->f[SES_GRAINS_OFF] + cluster * SES_GRAIN_SECTORS;
		if (cluster >= st->f[SES_GRAINS_SIZE] / SES_GRAIN_SECTORS ||
		    !ses_region_ok(sec, SES_GRAIN_SECTORS, e->file_size)) {
			if (log)
				vd_log_err("vmdk: %s: seSparse grain %" PRIu64
					   " maps to cluster %" PRIu64
					   ", outside the grains region or past EOF",
					   e->path, g, cluster);
			return -EIO;
		}
		*phys = sec * 512;
		return VD_DATA;
	default:
		if (log)
			vd_log_err("vmdk: %s: seSparse GT entry for grain %" PRIu64
				   " has unknown type %" PRIu64,
				   e->path, g, ent >> 60);
		return -EIO;
	}
}

static int ses_gt_of(struct vmdk_extent *e, uint64_t g, uint64_t *gt, uint64_t *absent)
{
	struct ses_state *st = e->priv;

	/* GD entries name GTs by number (checked when their page loads) */
	return vmdk_gd_gt(&st->gd, g / SES_GT_ENTRIES, 0xffffffffu, gt, absent);
}

static uint64_t ses_gt_pos(const struct vmdk_extent *e, uint64_t gt)
{
	const struct ses_state *st = e->priv;

	return (st->f[SES_GTS_OFF] + gt * SES_GT_SECTORS) * 512;
}

static const struct vmdk_gt_format ses_gt_format = {8, SES_GT_ENTRIES, ses_gt_of, ses_gte,
						    ses_gt_pos};

static int ses_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			    struct vd_map *map)
{
	struct ses_state *st = e->priv;

	return vmdk_gt_block_status(e, &ses_gt_format, &st->gts, SES_GRAIN_SECTORS * 512, off, len,
				    pnum, map);
}

static void ses_describe(struct vmdk_extent *e, struct vd_json *j)
{
	struct ses_state *st = e->priv;
	uint64_t held, loads;

	vd_tcache_stats(&st->gts, &held, &loads);
	vd_json_u64(j, "grain_sectors", SES_GRAIN_SECTORS);
	vd_json_u64(j, "capacity_sectors", st->f[SES_CAPACITY]);
	vd_json_u64(j, "gd_entries", st->gd_entries);
	vd_json_u64(j, "grain_tables", st->n_gts);
	vd_json_u64(j, "grains_offset_sector", st->f[SES_GRAINS_OFF]);
	vd_json_u64(j, "free_gt_number", st->free_gt);
	vd_json_u64(j, "next_txn_seq_number", st->next_txn);
	vd_json_u64(j, "gts_cached", held);
	vd_json_u64(j, "gts_loaded", loads);
}

static int ses_check(struct vmdk_extent *e, struct vd_check *chk)
{
	struct ses_state *st = e->priv;

	return vmdk_gt_check(e, &ses_gt_format, &st->gts, SES_GRAIN_SECTORS * 512, chk);
}

const struct vmdk_extent_ops vmdk_sesparse_ops = {
    .name = "seSparse",
    .open = ses_open,
    .close = ses_close,
    .block_status = ses_block_status,
    .describe = ses_describe,
    .check = ses_check,
};
