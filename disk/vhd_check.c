/* VHD metadata check (vd_format_ops.check). open() already refuses BAT
 * entries that leave the file, overlap each other, a locator or the
 * header/BAT; this looks at what open() tolerates or never reads: the two
 * footer copies, checksums accepted leniently, the saved-state flag, BAT
 * entries past the disk's end, differencing bitmaps that mark no sector or
 * sectors past the disk's end, and space between blocks that nothing uses.
 * Everything is read from the file again. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/space.h"
#include "disk/vhd_drv.h"

enum { VS_LOCATOR, VS_BLOCK };
static const char *const vhd_kinds[] = {"parent locator", "block"};

static void footers_check(struct vd_image *img, struct vhd_state *st, struct vd_check *chk)
{
	uint8_t eof[VHD_FOOTER_SIZE], copy[VHD_FOOTER_SIZE];
	struct vhd_footer f;
	const char *why;

	if (st->sums_lax)
		vd_check_report(chk, img->path, "footer checksum wrong (in both copies)");
	else if (!st->eof_ftr_ok)
		vd_check_report(chk, img->path,
				"footer at the end of the file is damaged (the "
				"copy at offset 0 was used)");
	if (st->ftr.saved_state)
		vd_check_report(chk, img->path,
				"saved-state flag set (the disk was in use by a saved VM)");
	if (st->ftr.type != VHD_TYPE_FIXED && !st->hdr.checksum_ok)
		vd_check_report(chk, img->path, "dynamic header checksum wrong");
	if (st->ftr.type == VHD_TYPE_FIXED || !st->eof_ftr_ok)
		return;
	if (vd_pread_full(img->fd, copy, sizeof(copy), 0) < 0 ||
	    vd_pread_full(img->fd, eof, sizeof(eof), st->ftr_off) < 0)
		return; /* both were read by open(): a failure now is not a finding */
	if (vhd_footer_decode(copy, &f, &why) < 0)
		vd_check_report(chk, img->path, "footer copy at offset 0: %s", why);
	else if (!f.checksum_ok && !st->sums_lax)
		vd_check_report(chk, img->path, "footer copy at offset 0: checksum mismatch");
	else if (memcmp(copy, eof, sizeof(copy)))
		vd_check_report(chk, img->path,
				"footer copy at offset 0 differs from the footer at the end");
}

/* BAT entries from n_blocks to max_entries must be unused. */
static int bat_tail_check(struct vd_image *img, struct vhd_state *st, struct vd_check *chk)
{
	uint32_t extra =
	    st->hdr.max_entries > st->n_blocks ? st->hdr.max_entries - st->n_blocks : 0;
	uint8_t raw[4];

	for (uint32_t i = 0; i < extra; i++) {
		uint64_t off = st->hdr.table_offset + 4ull * (st->n_blocks + i);
		int r = vd_pread_full(img->fd, raw, 4, off);
		if (r < 0) {
			vd_log_err("vhd: %s: cannot read the block table: %s", img->path,
				   strerror(-r));
			return r;
		}
		if (vd_get_be32(raw) != VHD_BAT_UNUSED)
			vd_check_report(chk, img->path,
					"BAT entry %" PRIu32
					" past the disk's end is used (sector %" PRIu32 ")",
					st->n_blocks + i, vd_get_be32(raw));
	}
	return 0;
}

/* A differencing block must mark some sector, and none past the disk's end. */
static int bitmap_check(struct vd_image *img, struct vhd_state *st, uint32_t block, uint8_t *bits,
			struct vd_check *chk)
{
	uint64_t first = (uint64_t)block * st->spb, valid = img->size / VHD_SECTOR - first;
	int r =
	    vd_pread_full(img->fd, bits, st->bitmap_bytes, (uint64_t)st->bat[block] * VHD_SECTOR);

	if (r < 0) {
		vd_log_err("vhd: %s: cannot read the bitmap of block %" PRIu32 ": %s", img->path,
			   block, strerror(-r));
		return r;
	}
	if (vd_mem_is_zero(bits, st->bitmap_bytes)) {
		vd_check_report(chk, img->path,
				"block %" PRIu32 " is allocated but its bitmap marks no sector",
				block);
		return 0;
	}
	for (uint64_t k = valid; k < st->spb; k++) {
		if (bits[k / 8] & (0x80u >> (k % 8))) {
			vd_check_report(chk, img->path,
					"block %" PRIu32 " bitmap marks sector %" PRIu64
					", past the disk's end",
					block, first + k);
			break;
		}
	}
	return 0;
}

int vhd_check(struct vd_image *img, struct vd_check *chk)
{
	struct vhd_state *st = img->priv;
	struct vd_space sp = {.kinds = vhd_kinds};
	uint64_t first = st->data_end;
	uint8_t *bits = NULL;
	int r = 0;

	footers_check(img, st, chk);
	if (st->ftr.type == VHD_TYPE_FIXED)
		return 0;
	r = bat_tail_check(img, st, chk);
	bits = malloc(st->bitmap_bytes);
	if (!bits)
		r = -ENOMEM;
	for (int i = 0; r == 0 && i < VHD_NUM_LOCATORS; i++) {
		uint64_t bytes;
		if (!st->locs[i].code || vhd_locator_span(st->hdr.loc[i].space, &bytes) < 0)
			continue;
		r = vd_space_add(&sp, VS_LOCATOR, (uint32_t)i, st->hdr.loc[i].offset, bytes);
	}
	/* open() holds no lock for this: a check runs on a read-only image. */
	for (uint32_t b = 0; r == 0 && b < st->n_blocks; b++) {
		uint64_t start = (uint64_t)st->bat[b] * VHD_SECTOR;
		if (st->bat[b] == VHD_BAT_UNUSED)
			continue;
		if (start < first)
			first = start;
		r = vd_space_add(&sp, VS_BLOCK, b, start, st->bitmap_bytes + st->block_size);
		if (r == 0 && st->ftr.type == VHD_TYPE_DIFF)
			r = bitmap_check(img, st, b, bits, chk);
	}
	/* Leaks: from the first block on (writers may pad before it), gaps that
	 * could have held a block. */
	if (r == 0)
		r = vd_space_check(&sp, first, st->data_end, st->bitmap_bytes + st->block_size, chk,
				   img->path);
	vd_space_free(&sp);
	free(bits);
	return r;
}
