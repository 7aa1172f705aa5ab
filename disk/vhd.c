/* VHD reader: fixed, dynamic and differencing disks (VHD spec sections 3-5).
 *
 * Fixed: data is [0, size) and the footer follows it. Dynamic/differencing:
 * footer copy @0, header at the footer's data offset, BAT of u32 sector
 * numbers; block n lives at BAT[n]*512 as [sector bitmap][block data].
 *
 * Layer semantics (STYLE.md 2): an unallocated block is VD_UNALLOC. For a
 * dynamic disk (type 3) an allocated block is DATA as a whole: the spec says
 * bitmap-0 sectors of a dynamic disk hold zeros, so ignoring the bitmap (as
 * QEMU does) gives the same bytes and saves the bitmap reads. For a
 * differencing disk (type 4) a set bit is DATA and a clear bit is UNALLOC
 * (read the parent), reported as runs that may end mid-byte.
 *
 * State (vhd_drv.h): the BAT is loaded and validated at open (entries inside
 * the file, past the header/BAT, not overlapping each other or a locator)
 * and kept in memory under st->lock; it costs 4 bytes per block of the
 * disk, and the overlap check costs what the file holds. Bitmaps are loaded
 * lazily through the metadata cache (vhd_bitmap.c), so a lookup on the hot
 * path does disk I/O only on a cache miss. An allocated BAT entry never
 * changes, so data reads happen outside any lock. */
#include "disk/vhd_drv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/formats.h"

static int vhd_probe(const uint8_t *head, size_t len, uint64_t file_size)
{
	if (len >= VHD_FOOTER_SIZE && !memcmp(head, "conectix", 8))
		return 100;
	if (file_size == len && len >= VHD_FOOTER_SIZE &&
	    !memcmp(head + len - VHD_FOOTER_SIZE, "conectix", 8))
		return 100;
	/* A fixed disk is only recognisable at EOF, which the probe cannot see:
	 * claim everything weakly so open() gives the final word. */
	return file_size >= VHD_FOOTER_SIZE ? 1 : 0;
}

#define VHD_WHY_CHECKSUM "footer checksum mismatch"

/* Reads the footer at off into raw and decodes it; *why explains a failure.
 * A checksum mismatch is reported only for footers whose fields are sane. */
static int footer_try(struct vd_image *img, uint64_t off, uint64_t data_end, struct vhd_footer *f,
		      uint8_t *raw, const char **why)
{
	int r = vd_pread_full(img->fd, raw, VHD_FOOTER_SIZE, off);

	if (r < 0) {
		*why = "cannot read the footer";
		return r;
	}
	r = vhd_footer_decode(raw, f, why);
	if (r == 0)
		r = vhd_footer_check(f, data_end, why);
	if (r == 0 && !f->checksum_ok) {
		*why = VHD_WHY_CHECKSUM;
		r = -EINVAL;
	}
	return r;
}

/* Finds a usable footer: EOF-512, EOF-511 (pre-2004 Virtual PC), then for
 * dynamic/differencing disks the copy at offset 0 (with a warning). Two
 * byte-identical copies whose only fault is the checksum are accepted with a
 * warning: that is a writer that summed wrongly (dfvfs' hand-edited test
 * images, readable by libvhdi), not a torn or corrupted footer. A fixed disk
 * has no second copy, so its checksum must match. */
static int footer_find(struct vd_image *img, struct vhd_state *st)
{
	uint8_t raw[VHD_FOOTER_SIZE], raw0[VHD_FOOTER_SIZE], raw511[VHD_FOOTER_SIZE];
	const char *why = NULL, *why0 = NULL;
	uint64_t fs = img->file_size;
	struct vhd_footer f0;
	int r, r0;

	/* Probed weakly (a fixed disk shows itself only at EOF): not a VHD at
	 * all is for vd_image_open() to explain. */
	if (fs < VHD_FOOTER_SIZE)
		return -EMEDIUMTYPE;
	st->ftr_off = fs - VHD_FOOTER_SIZE;
	r = footer_try(img, st->ftr_off, st->ftr_off, &st->ftr, raw, &why);
	if (r < 0 && fs % VHD_SECTOR == VHD_SECTOR - 1) {
		const char *why511;
		if (footer_try(img, fs - 511, fs - 511, &st->ftr, raw511, &why511) == 0) {
			st->ftr_off = fs - 511;
			r = 0;
		}
	}
	if (r == 0) {
		st->eof_ftr_ok = true;
		return 0;
	}
	r0 = footer_try(img, 0, fs - VHD_FOOTER_SIZE, &f0, raw0, &why0);
	if (r0 == 0 && f0.type != VHD_TYPE_FIXED) {
		vd_log_warn("%s: VHD footer at EOF is bad (%s); using the copy at offset 0",
			    img->path, why);
		st->ftr = f0;
		st->ftr_off = 0;
		st->ftr_from_copy = true;
		return 0;
	}
	if (r0 < 0 && !strcmp(why, VHD_WHY_CHECKSUM) && !strcmp(why0, VHD_WHY_CHECKSUM) &&
	    f0.type != VHD_TYPE_FIXED && !memcmp(raw, raw0, VHD_FOOTER_SIZE)) {
		vd_log_warn("%s: VHD footer checksum 0x%08" PRIx32 " should be 0x%08" PRIx32
			    " in both identical copies; using the footer anyway",
			    img->path, f0.checksum,
			    vhd_checksum(raw0, VHD_FOOTER_SIZE, VHD_FTR_CHECKSUM));
		st->ftr = f0;
		st->sums_lax = true;
		return 0;
	}
	if (!strcmp(why, VHD_WHY_NO_COOKIE) && (r0 == 0 || !strcmp(why0, VHD_WHY_NO_COOKIE)))
		return -EMEDIUMTYPE;
	if (r0 < 0 && strcmp(why0, VHD_WHY_NO_COOKIE))
		vd_log_err("vhd: %s: bad footer at EOF (%s) and at offset 0 (%s)", img->path, why,
			   why0);
	else
		vd_log_err("vhd: %s: bad footer at EOF: %s", img->path, why);
	return -EINVAL;
}

/* A region of the file claimed by a block (tag >= 0) or a locator (-1 - i). */
struct vhd_span {
	uint64_t start, end;
	int64_t tag;
};

static int span_cmp(const void *a, const void *b)
{
	const struct vhd_span *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void span_name(const struct vhd_span *s, char *buf, size_t len)
{
	if (s->tag >= 0)
		snprintf(buf, len, "BAT entry %" PRId64, s->tag);
	else
		snprintf(buf, len, "locator %" PRId64, -1 - s->tag);
}

/* No two claimed regions may overlap (sorted sweep). */
static int spans_check(struct vd_image *img, struct vhd_span *sp, size_t n)
{
	char a[48], b[48];

	qsort(sp, n, sizeof(*sp), span_cmp);
	for (size_t i = 1; i < n; i++) {
		if (sp[i].start < sp[i - 1].end) {
			span_name(&sp[i - 1], a, sizeof(a));
			span_name(&sp[i], b, sizeof(b));
			vd_log_err("vhd: %s: %s and %s overlap (bytes %" PRIu64 " and %" PRIu64 ")",
				   img->path, a, b, sp[i - 1].start, sp[i].start);
			return -EINVAL;
		}
	}
	return 0;
}

/* Validates one locator slot and adds its decoded path to st->locs[i]. */
static int locator_load(struct vd_image *img, struct vhd_state *st, int i, uint64_t data_end,
			struct vhd_span *span)
{
	const struct vhd_locator *l = &st->hdr.loc[i];
	const char *kind = vhd_plat_name(l->code);
	uint64_t bytes, end, hdr_end = st->ftr.data_offset + VHD_HEADER_SIZE;
	uint8_t *buf = NULL;
	int r;

	if (!kind) {
		vd_log_err("vhd: %s: locator %d has unknown platform code 0x%08" PRIx32, img->path,
			   i, l->code);
		return -EINVAL;
	}
	if (vhd_locator_span(l->space, &bytes) < 0 || l->length > bytes ||
	    l->length > VHD_MAX_LOCATOR || vd_add_ovf(l->offset, bytes, &end)) {
		vd_log_err("vhd: %s: locator %d (%s): locator length overflow (length %" PRIu32
			   ", space %" PRIu32 ")",
			   img->path, i, kind, l->length, l->space);
		return -EINVAL;
	}
	if (l->offset < hdr_end || end > data_end) {
		vd_log_err("vhd: %s: locator %d (%s): data at %" PRIu64 "+%" PRIu64
			   " outside the file or inside the header",
			   img->path, i, kind, l->offset, bytes);
		return -EINVAL;
	}
	span->start = l->offset;
	span->end = end;
	span->tag = -1 - i;
	st->locs[i].code = l->code;
	if (!l->length ||
	    (l->code != VHD_PLAT_W2RU && l->code != VHD_PLAT_W2KU && l->code != VHD_PLAT_MACX))
		return 0; /* deprecated ANSI and Mac alias locators are not used */
	buf = malloc(l->length);
	if (!buf)
		return -ENOMEM;
	r = vd_pread_full(img->fd, buf, l->length, l->offset);
	if (r < 0) {
		vd_log_err("vhd: %s: locator %d (%s): cannot read: %s", img->path, i, kind,
			   strerror(-r));
		goto out;
	}
	if (l->code == VHD_PLAT_MACX)
		r = vhd_macx_decode(buf, l->length, &st->locs[i].path);
	else
		r = vd_utf16_to_utf8(buf, l->length, false, &st->locs[i].path);
	if (r == -EINVAL)
		vd_log_err("vhd: %s: locator %d (%s): invalid %s path", img->path, i, kind,
			   l->code == VHD_PLAT_MACX ? "file URL" : "UTF-16");
out:
	free(buf);
	return r;
}

/* Locators and parent name of a differencing disk, added as hints in the
 * order W2ru, W2ku, MacX, parent name (VHD spec, "Parent Locator Entries"). */
static int parent_load(struct vd_image *img, struct vhd_state *st, uint64_t data_end,
		       struct vhd_span *spans, size_t *n_spans)
{
	static const uint32_t order[] = {VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX};
	int r;

	for (int i = 0; i < VHD_NUM_LOCATORS; i++) {
		if (st->hdr.loc[i].code == VHD_PLAT_NONE)
			continue;
		r = locator_load(img, st, i, data_end, &spans[*n_spans]);
		if (r < 0)
			return r;
		(*n_spans)++;
	}
	r = vd_utf16_to_utf8(st->hdr.parent_name, VHD_HDR_PARENT_NAME_LEN, true, &st->parent_name);
	if (r == -EINVAL)
		vd_log_err("vhd: %s: parent unicode name is not valid UTF-16BE", img->path);
	if (r < 0)
		return r;
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)
		for (int i = 0; i < VHD_NUM_LOCATORS; i++)
			if (st->locs[i].code == order[k] && st->locs[i].path &&
			    st->locs[i].path[0]) {
				r = vd_image_add_hint(img, vhd_plat_name(order[k]),
						      st->locs[i].path);
				if (r < 0)
					return r;
			}
	if (st->parent_name[0])
		return vd_image_add_hint(img, "parentName", st->parent_name);
	return 0;
}

/* The dynamic header: decoded, checked, block geometry derived. */
static int header_load(struct vd_image *img, struct vhd_state *st)
{
	uint8_t hbuf[VHD_HEADER_SIZE];
	const char *why;
	int r = vd_pread_full(img->fd, hbuf, sizeof(hbuf), st->ftr.data_offset);

	if (r < 0) {
		vd_log_err("vhd: %s: cannot read the dynamic header: %s", img->path, strerror(-r));
		return r;
	}
	r = vhd_header_decode(hbuf, &st->hdr, &why);
	if (r == 0)
		r = vhd_header_check(&st->hdr, img->size, &why);
	if (r < 0) {
		vd_log_err("vhd: %s: %s", img->path, why);
		return r;
	}
	if (!st->hdr.checksum_ok) {
		/* Tolerated only from a writer already known to sum wrongly. */
		if (!st->sums_lax) {
			vd_log_err("vhd: %s: dynamic header checksum mismatch", img->path);
			return -EINVAL;
		}
		vd_log_warn("%s: VHD dynamic header checksum mismatch too; using it anyway",
			    img->path);
	}
	st->block_size = st->hdr.block_size;
	st->spb = st->block_size / VHD_SECTOR;
	st->bitmap_bytes = vd_round_up(vd_div_round_up(st->spb, 8), VHD_SECTOR);
	st->n_blocks = (uint32_t)vd_div_round_up(img->size, st->block_size);
	if (st->hdr.max_entries > img->size / st->block_size + 1) {
		vd_log_err("vhd: %s: max table entries %" PRIu32 " larger than the disk needs",
			   img->path, st->hdr.max_entries);
		return -EINVAL;
	}
	return 0;
}

/* Reads the BAT into st->bat and checks each entry lies between the
 * metadata (bat_end) and data_end; adds a span per block in use to *spans
 * (allocated here, with room for the locators). */
static int bat_load(struct vd_image *img, struct vhd_state *st, uint64_t data_end,
		    struct vhd_span **spans, size_t *n_spans)
{
	uint64_t bat_bytes = vhd_bat_bytes(st->n_blocks);
	uint64_t bat_end = st->hdr.table_offset + bat_bytes; /* both bounded: no overflow */
	uint64_t hdr_end = st->ftr.data_offset + VHD_HEADER_SIZE;
	uint8_t *raw;
	size_t n = 0;
	int r;

	if (st->hdr.table_offset < VHD_FOOTER_SIZE || bat_end > data_end ||
	    (st->hdr.table_offset < hdr_end && bat_end > st->ftr.data_offset)) {
		vd_log_err("vhd: %s: block table at %" PRIu64 " (%" PRIu64
			   " bytes) outside the file or overlapping the header",
			   img->path, st->hdr.table_offset, bat_bytes);
		return -EINVAL;
	}
	st->bat = malloc(st->n_blocks ? (size_t)st->n_blocks * 4 : 4);
	raw = malloc(bat_bytes ? bat_bytes : 1);
	if (!st->bat || !raw) {
		free(raw);
		return -ENOMEM;
	}
	r = vd_pread_full(img->fd, raw, bat_bytes, st->hdr.table_offset);
	if (r < 0) {
		vd_log_err("vhd: %s: cannot read the block table: %s", img->path, strerror(-r));
		goto out;
	}
	/* Spans only for the blocks in use: the overlap check costs what the
	 * file holds, not what the header claims. */
	for (uint32_t i = 0; i < st->n_blocks; i++)
		n += vd_get_be32(raw + 4 * (size_t)i) != VHD_BAT_UNUSED;
	*spans = calloc(n + VHD_NUM_LOCATORS, sizeof(**spans));
	if (!*spans) {
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < st->n_blocks; i++) {
		uint64_t start, end;

		st->bat[i] = vd_get_be32(raw + 4 * (size_t)i);
		if (st->bat[i] == VHD_BAT_UNUSED)
			continue;
		start = (uint64_t)st->bat[i] * VHD_SECTOR;
		end = start + st->bitmap_bytes + st->block_size;
		if (start < hdr_end || start < bat_end || end > data_end) {
			vd_log_err("vhd: %s: BAT entry %" PRIu32 " (sector %" PRIu32
				   ") points inside the metadata or past EOF",
				   img->path, i, st->bat[i]);
			r = -EINVAL;
			goto out;
		}
		(*spans)[(*n_spans)++] = (struct vhd_span){start, end, i};
	}
out:
	free(raw);
	return r;
}

/* Header, BAT and locators of a dynamic or differencing disk. */
static int sparse_open(struct vd_image *img, struct vhd_state *st)
{
	/* Without a footer at EOF (a writer appending a block when it crashed,
	 * see vhd_write.c) the last block may run to the end of the file. */
	uint64_t data_end = st->ftr_from_copy ? img->file_size : st->ftr_off;
	struct vhd_span *spans = NULL;
	size_t n_spans = 0;
	int r = header_load(img, st);

	if (r == 0)
		r = bat_load(img, st, data_end, &spans, &n_spans);
	if (r == 0 && st->ftr.type == VHD_TYPE_DIFF)
		r = parent_load(img, st, data_end, spans, &n_spans);
	if (r == 0)
		r = spans_check(img, spans, n_spans);
	if (r == 0) {
		st->data_end = data_end;
		r = vhd_bitmaps_init(st, img->flags & VD_OPEN_RDWR);
	}
	free(spans);
	return r;
}

static void vhd_close(struct vd_image *img)
{
	struct vhd_state *st = img->priv;

	if (!st)
		return;
	if (st->written)
		vhd_close_update(img);
	vd_tcache_destroy(&st->bitmaps);
	vhd_write_free(st);
	for (int i = 0; i < VHD_NUM_LOCATORS; i++)
		free(st->locs[i].path);
	free(st->parent_name);
	free(st->bat);
	if (st->lock_init)
		pthread_rwlock_destroy(&st->lock);
	free(st);
	img->priv = NULL;
}

static int vhd_open(struct vd_image *img, unsigned flags)
{
	static const char *const names[] = {"", "", "fixed", "dynamic", "differencing"};
	struct vhd_state *st = calloc(1, sizeof(*st));
	int r;

	if (!st)
		return -ENOMEM;
	img->priv = st;
	st->img = img;
	if (pthread_rwlock_init(&st->lock, NULL))
		return -ENOMEM; /* close() destroys only what was initialised */
	st->lock_init = true;
	r = footer_find(img, st);
	if (r < 0)
		return r;
	img->size = st->ftr.cur_size;
	img->cow_unit = VHD_SECTOR;
	img->subformat = names[st->ftr.type];
	img->id.len = 16;
	memcpy(img->id.bytes, st->ftr.uuid, 16);
	img->has_stamp = true;
	img->stamp = st->ftr.timestamp;
	if ((flags & VD_OPEN_RDWR) && (!st->eof_ftr_ok || st->ftr_off % VHD_SECTOR)) {
		vd_log_err("vhd: %s: will not write an image whose footer at EOF is damaged",
			   img->path);
		return -ENOTSUP;
	}
	if (st->ftr.type == VHD_TYPE_FIXED) {
		img->alloc_unit = VHD_SECTOR;
		return 0;
	}
	r = sparse_open(img, st);
	if (r == 0 && (flags & VD_OPEN_RDWR))
		r = vhd_write_init(st);
	if (r < 0)
		return r;
	img->alloc_unit = st->block_size;
	if (st->ftr.type == VHD_TYPE_DIFF) {
		img->has_parent = true;
		img->parent_id.len = 16;
		memcpy(img->parent_id.bytes, st->hdr.parent_uuid, 16);
		img->parent_stamp = st->hdr.parent_stamp;
	}
	return 0;
}

static int vhd_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			    struct vd_map *map)
{
	struct vhd_state *st = img->priv;
	uint64_t block, in, run;
	uint32_t sector, k, count;
	int r;

	if (st->ftr.type == VHD_TYPE_FIXED) {
		*pnum = len;
		map->fd = img->fd;
		map->off = off;
		return VD_DATA;
	}
	block = off / st->block_size;
	in = off % st->block_size;
	run = vd_min_u64(len, st->block_size - in);
	pthread_rwlock_rdlock(&st->lock);
	sector = st->bat[block];
	if (sector == VHD_BAT_UNUSED) {
		pthread_rwlock_unlock(&st->lock);
		*pnum = run;
		return VD_UNALLOC;
	}
	/* An allocated BAT entry never moves: the map stays valid after unlock. */
	map->fd = img->fd;
	map->off = (uint64_t)sector * VHD_SECTOR + st->bitmap_bytes + in;
	if (st->ftr.type == VHD_TYPE_DYNAMIC) {
		pthread_rwlock_unlock(&st->lock);
		*pnum = run;
		return VD_DATA;
	}
	k = (uint32_t)(in / VHD_SECTOR);
	r = vhd_bitmap_state(st, (uint32_t)block, k,
			     (uint32_t)vd_div_round_up(in + run, VHD_SECTOR), &count);
	/* The run ends on a sector boundary (or at off + len). */
	if (r >= 0)
		*pnum = vd_min_u64((uint64_t)(k + count) * VHD_SECTOR, in + run) - in;
	pthread_rwlock_unlock(&st->lock);
	return r;
}

static void vhd_describe(struct vd_image *img, struct vd_json *j)
{
	struct vhd_state *st = img->priv;
	char os[5];
	uint32_t used = 0;

	for (int i = 0; i < 4; i++) {
		char c = (char)(st->ftr.creator_os >> (24 - 8 * i));
		os[i] = c >= 0x20 && c < 0x7F ? c : '?';
	}
	os[4] = 0;
	vd_json_obj_begin(j, "vhd");
	vd_json_str(j, "disk_type", img->subformat);
	vd_json_str(j, "creator_app", st->ftr.creator_app);
	vd_json_u64(j, "creator_version_major", st->ftr.creator_ver >> 16);
	vd_json_u64(j, "creator_version_minor", st->ftr.creator_ver & 0xFFFF);
	vd_json_str(j, "creator_host", os);
	vd_json_obj_begin(j, "geometry");
	vd_json_u64(j, "cylinders", st->ftr.cyls);
	vd_json_u64(j, "heads", st->ftr.heads);
	vd_json_u64(j, "sectors_per_track", st->ftr.spt);
	vd_json_obj_end(j);
	vd_json_u64(j, "timestamp", st->ftr.timestamp);
	vd_json_bool(j, "footer_checksum_ok", st->ftr.checksum_ok);
	vd_json_str(j, "footer_used",
		    st->ftr_from_copy	       ? "copy at offset 0"
		    : st->ftr_off % VHD_SECTOR ? "EOF-511"
					       : "EOF-512");
	if (st->ftr.type != VHD_TYPE_FIXED) {
		pthread_rwlock_rdlock(&st->lock);
		for (uint32_t i = 0; i < st->n_blocks; i++)
			used += st->bat[i] != VHD_BAT_UNUSED;
		pthread_rwlock_unlock(&st->lock);
		vd_json_bool(j, "header_checksum_ok", st->hdr.checksum_ok);
		vd_json_u64(j, "block_size", st->block_size);
		vd_json_u64(j, "bat_entries", st->n_blocks);
		vd_json_u64(j, "bat_entries_used", used);
	}
	if (st->ftr.type == VHD_TYPE_DIFF) {
		vd_json_str(j, "parent_name", st->parent_name);
		vd_json_arr_begin(j, "locators");
		for (int i = 0; i < VHD_NUM_LOCATORS; i++) {
			if (!st->locs[i].code)
				continue;
			vd_json_obj_begin(j, NULL);
			vd_json_str(j, "kind", vhd_plat_name(st->locs[i].code));
			vd_json_str(j, "path", st->locs[i].path);
			vd_json_obj_end(j);
		}
		vd_json_arr_end(j);
	}
	vd_json_obj_end(j);
}

const struct vd_format_ops vd_vhd_ops = {
    .name = "vhd",
    .probe = vhd_probe,
    .open = vhd_open,
    .close = vhd_close,
    .block_status = vhd_block_status,
    .write = vhd_write,
    .flush = vhd_flush,
    .create_child = vhd_create_child,
    .describe = vhd_describe,
    .check = vhd_check,
};
