/* Sector bitmaps of differencing VHD blocks (VHD spec, "Block Format"): one
 * bit per sector, MSB first, in the sectors before the block's data. They go
 * through the process-wide metadata cache (disk/tcache.h), keyed by block
 * number; a writable image pins them there, because the cached copy is the
 * only one holding bits set since the last flush. */
#include "disk/vhd_drv.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

/* Cache loader: the bitmap of allocated block b, read from the file. Every
 * caller of the functions below holds st->lock, so the BAT entry is stable. */
static int bitmap_load(void *ctx, uint64_t b, void *table)
{
	struct vhd_state *st = ctx;
	uint32_t sector = st->bat[b];
	int r;

	if (sector == VHD_BAT_UNUSED)
		return -EIO; /* callers ask only for allocated blocks */
	r = vd_pread_full(st->img->fd, table, st->bitmap_bytes, (uint64_t)sector * VHD_SECTOR);
	if (r < 0) {
		vd_log_err("vhd: %s: cannot read the bitmap of block %" PRIu64 ": %s",
			   st->img->path, b, strerror(-r));
		return r;
	}
	return vd_mem_is_zero(table, st->bitmap_bytes) ? VD_TCACHE_ZERO : 0;
}

int vhd_bitmaps_init(struct vhd_state *st, bool writable)
{
	int r = vd_tcache_init(&st->bitmaps, st->bitmap_bytes, bitmap_load, st);

	if (r == 0 && writable)
		vd_tcache_pin(&st->bitmaps);
	return r;
}

int vhd_bitmap_state(struct vhd_state *st, uint32_t b, uint32_t k, uint32_t limit, uint32_t *count)
{
	int err = 0, r;
	const uint8_t *bits = vd_tcache_get(&st->bitmaps, b, &err);

	if (!bits)
		return err;
	r = vhd_bitmap_run(bits, k, limit, count);
	vd_tcache_put(&st->bitmaps, b);
	return r;
}

int vhd_bitmap_mark(struct vhd_state *st, uint32_t b, uint32_t first, uint32_t count)
{
	int err = 0;
	uint8_t *bits = vd_tcache_get_mut(&st->bitmaps, b, &err);

	if (!bits)
		return err;
	for (uint32_t k = first; k < first + count; k++)
		bits[k / 8] |= (uint8_t)(0x80u >> (k % 8));
	vd_tcache_put(&st->bitmaps, b);
	return 0;
}

int vhd_bitmap_fresh(struct vhd_state *st, uint32_t b)
{
	uint8_t zero[VHD_MAX_BLOCK / VHD_SECTOR / 8];

	memset(zero, 0, st->bitmap_bytes);
	return vd_tcache_set(&st->bitmaps, b, zero);
}

int vhd_bitmap_copy(struct vhd_state *st, uint32_t b, uint8_t *out)
{
	int err = 0;
	const uint8_t *bits = vd_tcache_get(&st->bitmaps, b, &err);

	if (!bits)
		return err;
	memcpy(out, bits, st->bitmap_bytes);
	vd_tcache_put(&st->bitmaps, b);
	return 0;
}
