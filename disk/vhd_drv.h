/* The VHD driver's state, shared by its files (not a public API):
 *   vhd.c        probe, open (footer, header, BAT, locators), block_status,
 *                describe, close, and the ops table;
 *   vhd_bitmap.c the sector bitmaps of differencing blocks, through the
 *                metadata cache;
 *   vhd_write.c  creating files, and writing into one opened VD_OPEN_RDWR;
 *   vhd_check.c  the metadata check (--check), reading the file again.
 * Dependencies run one way: vhd.c -> vhd_write.c -> vhd_bitmap.c -> vhd.h.
 *
 * Lock order: st->lock (BAT, allocation, dirty lists), then the metadata
 * cache's shard locks (bitmaps). Data I/O happens under neither. */
#ifndef VD_VHD_DRV_H
#define VD_VHD_DRV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "disk/disk.h"
#include "disk/tcache.h"
#include "disk/vhd.h"

/* Decoded locator kept for describe(). */
struct vhd_loc_info {
	uint32_t code;
	char *path; /* UTF-8, NULL when undecodable */
};

struct vhd_state {
	struct vd_image *img; /* back pointer for the bitmap loader */
	struct vhd_footer ftr;
	struct vhd_header hdr;
	uint64_t ftr_off;   /* where the footer used was read */
	bool ftr_from_copy; /* EOF footer bad: using the copy at offset 0 */
	bool eof_ftr_ok;    /* the footer at EOF was valid */
	bool sums_lax;	    /* both footers identical with the same wrong checksum */
	char *parent_name;  /* decoded header parent name or NULL */
	struct vhd_loc_info locs[VHD_NUM_LOCATORS];

	uint32_t block_size, spb, bitmap_bytes;
	uint32_t n_blocks; /* ceil(size / block_size): BAT entries in use */

	pthread_rwlock_t lock; /* protects the fields below */
	bool lock_init;
	uint32_t *bat;	   /* sector of each block or VHD_BAT_UNUSED (in memory: may be ahead
			      of the file until flush) */
	uint64_t data_end; /* where the next block goes (the footer's position) */
	bool written;	   /* written since open: close() refreshes the footers */
	uint32_t *dirty;   /* blocks whose BAT entry or bitmap changed since the last flush */
	uint32_t n_dirty, cap_dirty;
	uint8_t *dirty_map; /* bit per block: in dirty[] already */

	struct vd_tcache bitmaps;   /* sector bitmaps by block (differencing; pinned when RDWR) */
	pthread_mutex_t flush_lock; /* one flush at a time */
	bool flush_lock_init;
};

/* --- vhd_bitmap.c: callers hold st->lock (read or write) --------------- */

/* Sets up st->bitmaps (pinned for a writable image). Returns 0 or -errno. */
int vhd_bitmaps_init(struct vhd_state *st, bool writable);

/* The run of sector k (< limit) of allocated block b: VD_DATA or VD_UNALLOC
 * and the number of sectors from k sharing it (*count). Caller holds
 * st->lock for reading (the BAT entry must not change). Returns the state or
 * -errno (logged). */
int vhd_bitmap_state(struct vhd_state *st, uint32_t b, uint32_t k, uint32_t limit, uint32_t *count);

/* Sets the bits of sectors [first, first + count) of block b in the cached
 * bitmap of a writable image. Returns 0 or -errno. */
int vhd_bitmap_mark(struct vhd_state *st, uint32_t b, uint32_t first, uint32_t count);

/* Installs an all-zero bitmap for a block just allocated (writable image). */
int vhd_bitmap_fresh(struct vhd_state *st, uint32_t b);

/* Copies the cached bitmap of block b into out (bitmap_bytes). */
int vhd_bitmap_copy(struct vhd_state *st, uint32_t b, uint8_t *out);

/* --- vhd_check.c ------------------------------------------------------ */

/* vd_format_ops.check for VHD (a read-only image: the BAT in memory is the
 * file's). */
int vhd_check(struct vd_image *img, struct vd_check *chk);

/* --- vhd_write.c: the write ops ---------------------------------------- */

int vhd_write(struct vd_image *img, const void *buf, size_t len, uint64_t off);
int vhd_flush(struct vd_image *img);
int vhd_create_child(struct vd_image *parent, const char *path);

/* For close(): flushes a written image and refreshes both footer copies
 * with a fresh timestamp. Returns 0 or -errno (logged). */
int vhd_close_update(struct vd_image *img);

/* Sets up the writer's state for an image opened VD_OPEN_RDWR. */
int vhd_write_init(struct vhd_state *st);

/* Frees the writer's state (dirty lists, locks). */
void vhd_write_free(struct vhd_state *st);

#endif
