/* Flat (FLAT, VMFS) and ZERO extent backends (VMware Virtual Disk Format 5.0, "Extent
 * Descriptions").
 *
 * A flat extent is the raw data at flat_offset in its file; all of it is DATA
 * in this layer. A file shorter than flat_offset + SECTORS*512 is refused at
 * open: reading the missing tail as zeros would present an incomplete copy
 * (a truncated download or evidence transfer) as a whole disk, which a
 * forensic examiner must not get silently. Host-sparse files are fine: their
 * apparent size is complete. A ZERO extent has no file and reads as zeros. */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

static int flat_open(struct vmdk_extent *e)
{
	uint64_t bytes, end;

	if (vd_mul_ovf(e->sectors, 512, &bytes) || vd_add_ovf(e->flat_offset, bytes, &end)) {
		vd_log_err("vmdk: %s: flat extent size overflows", e->path);
		return -EINVAL;
	}
	if (end > e->file_size) {
		vd_log_err("vmdk: %s: flat extent file is %" PRIu64
			   " bytes, shorter than the %" PRIu64
			   " the descriptor needs (offset %" PRIu64 " + %" PRIu64
			   " sectors): file truncated",
			   e->path, e->file_size, end, e->flat_offset / 512, e->sectors);
		return -EINVAL;
	}
	e->grain_bytes = 0;
	return 0;
}

static void flat_close(struct vmdk_extent *e)
{
	(void)e;
}

static int flat_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	*pnum = len;
	map->fd = e->fd;
	map->off = e->flat_offset + off;
	return VD_DATA;
}

const struct vmdk_extent_ops vmdk_flat_ops = {
    .name = "flat",
    .open = flat_open,
    .close = flat_close,
    .block_status = flat_block_status,
};

static int zero_open(struct vmdk_extent *e)
{
	e->grain_bytes = 0;
	return 0;
}

static int zero_block_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	(void)e;
	(void)off;
	(void)map;
	*pnum = len;
	return VD_ZERO;
}

const struct vmdk_extent_ops vmdk_zero_ops = {
    .name = "zero",
    .open = zero_open,
    .close = flat_close,
    .block_status = zero_block_status,
};
