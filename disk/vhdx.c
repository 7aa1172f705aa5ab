/* VHDX reader: fixed, dynamic and differencing disks (.vhdx, .avhdx),
 * read-only ([MS-VHDX] v8.0; section numbers below are its).
 *
 * Open: file type identifier (2.2.1); both headers, the valid one with the
 * higher sequence number current, a bad one falling back to the other with a
 * warning (2.2.2); a dirty log replayed in memory (vhdx_log.c, 2.3.3); both
 * region table copies (2.2.3), then every later read through the replay
 * overlay (vhdx_file_read); metadata table and items (2.6); the parent
 * locator (2.6.2.6.3) becomes parent hints and ids; one pass over the whole
 * BAT validates every entry (2.5.1) and that no block overlaps another or a
 * region, and records where each chunk's sector bitmap lives.
 *
 * Layer semantics (STYLE.md 2), per payload block state (2.5.1.1):
 *   NOT_PRESENT             VD_UNALLOC (a differencing disk's parent decides;
 *                           below a base chain/ gives zeros)
 *   UNDEFINED, UNMAPPED,    VD_ZERO: the spec lets a reader return zeros for
 *   ZERO                    all three, and zeros are the only answer that
 *                           neither leaks stale data (footnote 11) nor
 *                           changes between readers
 *   FULLY_PRESENT           VD_DATA at FileOffsetMB (bitmap not consulted)
 *   PARTIALLY_PRESENT       per logical sector: bitmap bit set = VD_DATA,
 *                           clear = VD_UNALLOC (2.4), runs ending mid-byte
 *
 * Everything goes through vhdx_lookup(), the one function that answers
 * (state, run length, file offset) for a range; block_status() hands the
 * file offset back as the run's vd_map, and read() serves only the runs the
 * replay overlay touches.
 *
 * State after open is immutable except two users of the process-wide metadata
 * cache (disk/tcache): BAT pages of 8192 entries and 64 KiB slices of sector
 * bitmaps, loaded on first use through the overlay. A lookup holds at most one cache's read
 * lock at a time, and data reads happen outside any lock (the mapping of an
 * allocated block never changes in a read-only image). */
#include "disk/vhdx.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/formats.h"
#include "disk/text.h"

#define VHDX_SPANS_MAX (4u << 20) /* allocated blocks checked for overlaps at open */

static int vhdx_probe(const uint8_t *head, size_t len, uint64_t file_size)
{
	return len >= 8 && !memcmp(head, "vhdxfile", 8) ? 100 : 0;
}

/* Reads through the replay overlay; logs a failure naming what was read. */
static int meta_read(struct vd_image *img, void *buf, size_t len, uint64_t off, const char *what)
{
	struct vhdx_state *st = img->priv;
	int r = vhdx_file_read(img->fd, img->file_size, &st->ov, buf, len, off);

	if (r < 0)
		vd_log_err("vhdx: %s: cannot read the %s at %" PRIu64 ": %s", img->path, what, off,
			   r == -EIO ? "past the end of the file" : strerror(-r));
	return r;
}

/* 2.2.1 and 2.2.2: identifier, then the current header. */
static int headers_load(struct vd_image *img, struct vhdx_state *st)
{
	uint8_t *buf = malloc(2 * VHDX_HEADER_SIZE);
	struct vhdx_header h[2];
	const char *why[2] = {NULL, NULL};
	int rr[2], r;
	char *creator = NULL;

	if (!buf)
		return -ENOMEM;
	r = vd_pread_full(img->fd, buf, 8 + 512, VHDX_IDENT_OFF);
	if (r < 0 || memcmp(buf, "vhdxfile", 8)) {
		vd_log_err("vhdx: %s: no \"vhdxfile\" file type identifier", img->path);
		r = -EINVAL;
		goto out;
	}
	if (vd_utf16_to_utf8(buf + 8, 512, false, &creator) == 0) {
		snprintf(st->creator, sizeof(st->creator), "%s", creator);
		free(creator);
	}
	if (img->file_size < VHDX_HEADER_SECTION) {
		vd_log_err("vhdx: %s: file shorter than the 1 MiB header section", img->path);
		r = -EINVAL;
		goto out;
	}
	for (int i = 0; i < 2; i++) {
		r = vd_pread_full(img->fd, buf + i * VHDX_HEADER_SIZE, VHDX_HEADER_SIZE,
				  i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
		if (r < 0) {
			vd_log_err("vhdx: %s: cannot read header %d: %s", img->path, i + 1,
				   strerror(-r));
			goto out;
		}
		rr[i] =
		    vhdx_header_decode(buf + i * VHDX_HEADER_SIZE, img->file_size, &h[i], &why[i]);
	}
	if (rr[0] < 0 && rr[1] < 0) {
		vd_log_err("vhdx: %s: no valid header (header 1: %s; header 2: %s)", img->path,
			   why[0], why[1]);
		r = -EINVAL;
		goto out;
	}
	if (rr[0] == 0 && rr[1] == 0) {
		/* 2.2.2: the higher sequence number is current. Disk2VHD writes two
		 * identical headers with equal numbers: accept that (as QEMU). */
		if (h[0].seq == h[1].seq && memcmp(buf, buf + VHDX_HEADER_SIZE, VHDX_HEADER_SIZE)) {
			vd_log_err("vhdx: %s: both headers valid with sequence number %" PRIu64
				   " but different: no current header",
				   img->path, h[0].seq);
			r = -EINVAL;
			goto out;
		}
		st->hdr_index = h[1].seq > h[0].seq ? 2 : 1;
	} else {
		st->hdr_index = rr[0] == 0 ? 1 : 2;
		vd_log_warn("%s: VHDX header %d is bad (%s); using header %d", img->path,
			    3 - st->hdr_index, why[2 - st->hdr_index], st->hdr_index);
	}
	st->hdr = h[st->hdr_index - 1];
	r = 0;
out:
	free(buf);
	return r;
}

/* The log (2.3.3): replayed in memory, or skipped with a warning under
 * VD_OPEN_FORCE when it is corrupt. */
static int log_load(struct vd_image *img, struct vhdx_state *st, unsigned flags)
{
	char why[256];
	int r;

	if (vhdx_guid_is_zero(st->hdr.log_guid))
		return 0;
	r = vhdx_log_replay(img, &st->hdr, &st->ov, &st->log, why, sizeof(why));
	if (r == 0) {
		vd_log_info("%s: VHDX log replayed in memory: %" PRIu32
			    " entries (sequence %" PRIu64 "-%" PRIu64 "), the file is unchanged",
			    img->path, st->log.entries, st->log.tail_seq, st->log.head_seq);
		return 0;
	}
	if (r == -ENOMEM)
		return r;
	if (!(flags & VD_OPEN_FORCE)) {
		vd_log_err("vhdx: %s: corrupt log: %s (--force opens it without replay; content "
			   "may then be stale)",
			   img->path, why);
		return r == -ENOTSUP ? r : -EINVAL;
	}
	vd_log_warn("%s: VHDX log not replayed (%s): opened anyway (--force); content may be "
		    "stale",
		    img->path, why);
	st->log.ignored = true;
	return 0;
}

/* 2.2.3: region table 1, else 2 with a warning. */
static int regions_load(struct vd_image *img, struct vhdx_state *st)
{
	uint8_t *buf = malloc(VHDX_RT_SIZE);
	struct vhdx_regions rt[2];
	const char *why[2] = {NULL, NULL};
	int rr[2], r = 0;

	if (!buf)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		r = meta_read(img, buf, VHDX_RT_SIZE, i ? VHDX_RT2_OFF : VHDX_RT1_OFF,
			      "region table");
		if (r < 0)
			goto out;
		rr[i] = vhdx_region_table_decode(buf, &rt[i], &why[i]);
		if (rr[i] == -ENOTSUP) {
			vd_log_err("vhdx: %s: region table %d: %s (refused as the specification "
				   "requires)",
				   img->path, i + 1, why[i]);
			r = rr[i];
			goto out;
		}
	}
	if (rr[0] < 0 && rr[1] < 0) {
		vd_log_err("vhdx: %s: no valid region table (table 1: %s; table 2: %s)", img->path,
			   why[0], why[1]);
		r = -EINVAL;
		goto out;
	}
	st->rt_index = rr[0] == 0 ? 1 : 2;
	if (rr[0] < 0)
		vd_log_warn("%s: VHDX region table 1 is bad (%s); using table 2", img->path,
			    why[0]);
	st->rt = rt[st->rt_index - 1];
	if (st->rt.bat.offset + st->rt.bat.length > st->vfile_size ||
	    st->rt.meta.offset + st->rt.meta.length > st->vfile_size) {
		/* offsets <= VHDX_MAX_OFFSET, lengths < 2^32: no overflow */
		vd_log_err("vhdx: %s: %s region ends past the end of the file", img->path,
			   st->rt.bat.offset + st->rt.bat.length > st->vfile_size ? "BAT"
										  : "metadata");
		r = -EINVAL;
	}
out:
	free(buf);
	return r;
}

/* Metadata table and known items (2.6). */
static int metadata_load(struct vd_image *img, struct vhdx_state *st)
{
	const struct vhdx_region *m = &st->rt.meta;
	uint8_t *table = malloc(VHDX_MT_SIZE), *items[6] = {NULL};
	struct vhdx_item_map map;
	const char *why;
	int r;

	if (!table)
		return -ENOMEM;
	if (m->length < VHDX_MT_SIZE) {
		vd_log_err("vhdx: %s: metadata region smaller than its table", img->path);
		r = -EINVAL;
		goto out;
	}
	r = meta_read(img, table, VHDX_MT_SIZE, m->offset, "metadata table");
	if (r < 0)
		goto out;
	r = vhdx_metadata_table_decode(table, m->length, &map, &why);
	if (r < 0) {
		vd_log_err("vhdx: %s: %s", img->path, why);
		goto out;
	}
	for (int k = 0; k < 6; k++) {
		items[k] = calloc(1, map.len[k] ? map.len[k] : 1);
		if (!items[k]) {
			r = -ENOMEM;
			goto out;
		}
		if (map.present[k] && map.len[k]) {
			r = meta_read(img, items[k], map.len[k], m->offset + map.off[k],
				      "metadata item");
			if (r < 0)
				goto out;
		}
	}
	r = vhdx_params_decode((const uint8_t *const *)items, &map, &st->par, &why);
	if (r == 0)
		r = vhdx_geom_compute(&st->par, st->rt.bat.length, &st->geom, &why);
	if (r == 0 && st->par.has_parent) {
		r = vhdx_locator_decode(items[VHDX_IT_LOCATOR], map.len[VHDX_IT_LOCATOR], &st->loc,
					&why);
		if (r == -ENOMEM)
			goto out;
	}
	if (r < 0)
		vd_log_err("vhdx: %s: %s", img->path, why);
out:
	for (int k = 0; k < 6; k++)
		free(items[k]);
	free(table);
	return r;
}

/* Parent identity and hints, in the order 2.6.2.6.3 prescribes. */
static int parent_setup(struct vd_image *img, struct vhdx_state *st)
{
	const struct vhdx_locator *l = &st->loc;
	int r = 0;

	img->has_parent = true;
	vhdx_guid_parse(l->linkage, &img->parent_id); /* checked by the decoder */
	if (l->linkage2 && vhdx_guid_parse(l->linkage2, &img->parent_id2) < 0) {
		vd_log_warn("%s: VHDX parent_linkage2 \"%s\" is not a GUID; ignored", img->path,
			    l->linkage2);
		img->parent_id2.len = 0;
	}
	if (l->relative_path)
		r = vd_image_add_hint(img, "relative_path", l->relative_path);
	if (r == 0 && l->volume_path)
		r = vd_image_add_hint(img, "volume_path", l->volume_path);
	if (r == 0 && l->absolute_win32_path)
		r = vd_image_add_hint(img, "absolute_win32_path", l->absolute_win32_path);
	return r;
}

/* A region of the file claimed by a structure, for the overlap check. */
struct vhdx_span {
	uint64_t start, end;
	int64_t tag; /* >= 0: BAT index; -1 header section, -2 log, -3 BAT, -4 metadata */
};

static int span_cmp(const void *a, const void *b)
{
	const struct vhdx_span *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void span_name(const struct vhdx_span *s, char *buf, size_t len)
{
	static const char *const names[] = {"the header section", "the log", "the BAT region",
					    "the metadata region"};

	if (s->tag >= 0)
		snprintf(buf, len, "BAT entry %" PRId64, s->tag);
	else
		snprintf(buf, len, "%s", names[-1 - s->tag]);
}

/* 2.1, 2.2.3.2, 2.5.1: structures and blocks never overlap. */
static int spans_check(struct vd_image *img, struct vhdx_span *sp, size_t n)
{
	char a[48], b[48];

	qsort(sp, n, sizeof(*sp), span_cmp);
	for (size_t i = 1; i < n; i++)
		if (sp[i].start < sp[i - 1].end) {
			span_name(&sp[i - 1], a, sizeof(a));
			span_name(&sp[i], b, sizeof(b));
			vd_log_err("vhdx: %s: %s and %s overlap (at %" PRIu64 " and %" PRIu64 ")",
				   img->path, a, b, sp[i - 1].start, sp[i].start);
			return -EINVAL;
		}
	return 0;
}

/* One pass over the whole BAT (2.5): checks every entry, counts block
 * states, records each chunk's sector bitmap offset, and checks that no two
 * allocated blocks or regions overlap. Kept as one function (over 80 lines)
 * on purpose: it is the one loop over a table that may hold millions of
 * entries, and each entry kind's check reads best beside the others. */
static int bat_scan(struct vd_image *img, struct vhdx_state *st)
{
	const struct vhdx_geom *g = &st->geom;
	const size_t chunk = VHDX_MiB / 8; /* entries read at a time */
	uint64_t *raw = malloc(VHDX_MiB), bs = st->par.block_size;
	struct vhdx_span *spans = NULL;
	size_t n_spans = 0, cap_spans = 64;
	bool diff = st->par.has_parent, check_spans = true, chunk_partial = false;
	const char *why;
	int r = 0;

	spans = malloc(cap_spans * sizeof(*spans));
	if (diff)
		st->sb_off = calloc(g->sb_blocks ? g->sb_blocks : 1, sizeof(*st->sb_off));
	if (!raw || !spans || (diff && !st->sb_off)) {
		r = -ENOMEM;
		goto out;
	}
	spans[n_spans++] = (struct vhdx_span){0, VHDX_HEADER_SECTION, -1};
	if (!vhdx_guid_is_zero(st->hdr.log_guid) || st->hdr.log_length)
		spans[n_spans++] = (struct vhdx_span){st->hdr.log_offset,
						      st->hdr.log_offset + st->hdr.log_length, -2};
	spans[n_spans++] =
	    (struct vhdx_span){st->rt.bat.offset, st->rt.bat.offset + st->rt.bat.length, -3};
	spans[n_spans++] =
	    (struct vhdx_span){st->rt.meta.offset, st->rt.meta.offset + st->rt.meta.length, -4};
	for (uint64_t base = 0; base < g->bat_entries; base += chunk) {
		size_t n = (size_t)vd_min_u64(chunk, g->bat_entries - base);
		uint8_t *b = (uint8_t *)raw;

		r = meta_read(img, raw, n * 8, st->rt.bat.offset + base * 8, "BAT");
		if (r < 0)
			goto out;
		for (size_t i = 0; i < n; i++) {
			uint64_t idx = base + i, e = vd_get_le64(b + 8 * i), need;
			uint64_t c = idx / (g->chunk_ratio + 1), k = idx % (g->chunk_ratio + 1);
			bool payload = k < g->chunk_ratio;
			unsigned state = (unsigned)(e & VHDX_BAT_STATE_MASK);

			if (payload) {
				uint64_t blk = c * g->chunk_ratio + k;
				if (blk >= g->data_blocks)
					continue; /* padding past the last block (differencing) */
				need =
				    vd_round_up(vd_min_u64(bs, st->par.size - blk * bs), VHDX_MiB);
			} else {
				if (!diff)
					continue; /* 2.5: unused in fixed and dynamic disks */
				need = VHDX_SB_SIZE;
			}
			r = vhdx_bat_entry_check(e, payload, diff, need, st->vfile_size, &why);
			if (r < 0) {
				vd_log_err("vhdx: %s: BAT entry %" PRIu64 " (0x%016" PRIx64 "): %s",
					   img->path, idx, e, why);
				goto out;
			}
			if (payload) {
				st->blocks_present += state == VHDX_PAYLOAD_FULLY_PRESENT;
				st->blocks_partial += state == VHDX_PAYLOAD_PARTIALLY_PRESENT;
				st->blocks_zero += state == VHDX_PAYLOAD_ZERO ||
						   state == VHDX_PAYLOAD_UNMAPPED ||
						   state == VHDX_PAYLOAD_UNMAPPED_V095 ||
						   state == VHDX_PAYLOAD_UNDEFINED;
				chunk_partial |= state == VHDX_PAYLOAD_PARTIALLY_PRESENT;
				if (state != VHDX_PAYLOAD_FULLY_PRESENT &&
				    state != VHDX_PAYLOAD_PARTIALLY_PRESENT)
					continue;
			} else {
				/* 2.5.1.2: a chunk with a partial block has its bitmap. */
				if (chunk_partial && state != VHDX_SB_PRESENT) {
					vd_log_err("vhdx: %s: BAT entry %" PRIu64 ": chunk %" PRIu64
						   " has PARTIALLY_PRESENT blocks but no sector "
						   "bitmap",
						   img->path, idx, c);
					r = -EINVAL;
					goto out;
				}
				chunk_partial = false;
				if (state != VHDX_SB_PRESENT)
					continue;
				st->sb_off[c] = e & VHDX_BAT_OFFSET_MASK;
			}
			if (!check_spans)
				continue;
			if (n_spans == cap_spans) {
				struct vhdx_span *ns;
				if (cap_spans >= VHDX_SPANS_MAX) {
					vd_log_debug("%s: over %u allocated blocks: not checking "
						     "them for overlaps",
						     img->path, VHDX_SPANS_MAX);
					check_spans = false;
					continue;
				}
				ns = realloc(spans, 2 * cap_spans * sizeof(*spans));
				if (!ns) {
					r = -ENOMEM;
					goto out;
				}
				spans = ns;
				cap_spans *= 2;
			}
			spans[n_spans++] =
			    (struct vhdx_span){e & VHDX_BAT_OFFSET_MASK,
					       (e & VHDX_BAT_OFFSET_MASK) + need, (int64_t)idx};
		}
	}
	if (check_spans)
		r = spans_check(img, spans, n_spans);
out:
	free(raw);
	free(spans);
	return r;
}

/* tcache loaders: a BAT page (native u64) and a sector bitmap slice. */
static int bat_page_load(void *ctx, uint64_t page, void *table)
{
	struct vhdx_state *st = ctx;
	uint64_t first = page * VHDX_BAT_PAGE, *t = table;
	size_t n = (size_t)vd_min_u64(VHDX_BAT_PAGE, st->geom.bat_entries - first);
	uint8_t *raw = malloc(n * 8);
	bool zero = true;
	int r;

	if (!raw)
		return -ENOMEM;
	r = meta_read(st->img, raw, n * 8, st->rt.bat.offset + first * 8, "BAT");
	for (size_t i = 0; r == 0 && i < VHDX_BAT_PAGE; i++) {
		t[i] = i < n ? vd_get_le64(raw + 8 * i) : 0;
		zero &= t[i] == 0;
	}
	free(raw);
	return r < 0 ? r : zero ? VD_TCACHE_ZERO : 0;
}

static int sb_slice_load(void *ctx, uint64_t idx, void *table)
{
	struct vhdx_state *st = ctx;
	uint64_t c = idx / (VHDX_SB_SIZE / VHDX_SB_SLICE), k = idx % (VHDX_SB_SIZE / VHDX_SB_SLICE);
	int r;

	if (st->w) {
		/* every bitmap of a writable delta is one it allocated (the file
		 * was empty when opened): zeros until bits are set in the cache */
		memset(table, 0, VHDX_SB_SLICE);
		return VD_TCACHE_ZERO;
	}
	if (!st->sb_off[c]) {
		/* bat_scan() guarantees a bitmap for chunks with partial blocks */
		vd_log_err("vhdx: %s: chunk %" PRIu64 " has no sector bitmap", st->img->path, c);
		return -EIO;
	}
	r = meta_read(st->img, table, VHDX_SB_SLICE, st->sb_off[c] + k * VHDX_SB_SLICE,
		      "sector bitmap");
	if (r < 0)
		return r;
	return vd_mem_is_zero(table, VHDX_SB_SLICE) ? VD_TCACHE_ZERO : 0;
}

static void vhdx_close(struct vd_image *img)
{
	struct vhdx_state *st = img->priv;

	if (!st)
		return;
	vhdx_write_close(img);
	vd_tcache_destroy(&st->bat);
	vd_tcache_destroy(&st->sb);
	vhdx_locator_free(&st->loc);
	vhdx_overlay_free(&st->ov);
	free(st->sb_off);
	free(st);
	img->priv = NULL;
}

static int vhdx_open(struct vd_image *img, unsigned flags)
{
	struct vhdx_state *st;
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	img->priv = st;
	st->img = img;
	r = headers_load(img, st);
	if (r == 0)
		r = log_load(img, st, flags);
	if (r < 0)
		return r;
	st->vfile_size = st->ov.file_end > img->file_size ? st->ov.file_end : img->file_size;
	r = regions_load(img, st);
	if (r == 0)
		r = metadata_load(img, st);
	if (r == 0)
		r = bat_scan(img, st);
	if (r < 0)
		return r;
	img->size = st->par.size;
	img->cow_unit = st->par.logical;
	img->alloc_unit = st->par.block_size;
	img->subformat = st->par.has_parent	   ? "differencing"
			 : st->par.leave_allocated ? "fixed"
						   : "dynamic";
	vhdx_guid_to_id(st->hdr.data_write, &img->id);
	st->sectors_per_block = st->par.block_size / st->par.logical;
	if (st->par.has_parent) {
		r = parent_setup(img, st);
		if (r < 0)
			return r;
	}
	r = vd_tcache_init(&st->bat, VHDX_BAT_PAGE * 8, bat_page_load, st);
	if (r == 0 && st->par.has_parent)
		r = vd_tcache_init(&st->sb, VHDX_SB_SLICE, sb_slice_load, st);
	if (r == 0 && (flags & VD_OPEN_RDWR))
		r = vhdx_write_open(img);
	return r;
}

int vhdx_bat_get(struct vhdx_state *st, uint64_t idx, uint64_t *e)
{
	int r = 0;
	const uint64_t *t = vd_tcache_get(&st->bat, idx / VHDX_BAT_PAGE, &r);

	if (!t)
		return r;
	*e = t[idx % VHDX_BAT_PAGE];
	vd_tcache_put(&st->bat, idx / VHDX_BAT_PAGE);
	return 0;
}

/* The one lookup: the state of [off, off + len) in this layer (off < size,
 * len > 0, off + len <= size), the length *pnum of the run from off that
 * shares it (never past the block), and for VD_DATA the file offset *foff
 * of off. Returns a vd_block_state or -errno. Thread-safe. */
static int vhdx_lookup(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
		       uint64_t *foff)
{
	struct vhdx_state *st = img->priv;
	const struct vhdx_geom *g = &st->geom;
	uint64_t bs = st->par.block_size, b = off / bs, in = off % bs, e = 0, lss = st->par.logical;
	uint64_t run = vd_min_u64(len, bs - in);
	int r = vhdx_bat_get(st, vhdx_bat_payload_index(g, b), &e);

	if (r < 0)
		return r;
	*pnum = run;
	switch (e & VHDX_BAT_STATE_MASK) {
	case VHDX_PAYLOAD_NOT_PRESENT:
		return VD_UNALLOC;
	case VHDX_PAYLOAD_FULLY_PRESENT:
		*foff = (e & VHDX_BAT_OFFSET_MASK) + in;
		return VD_DATA;
	case VHDX_PAYLOAD_PARTIALLY_PRESENT: {
		/* The block's bits lie inside one slice: a block has at most
		 * 2^19 sectors = 64 KiB of bits, and slices are aligned. */
		uint64_t bit = (b % g->chunk_ratio) * st->sectors_per_block;
		uint64_t slice =
		    (b / g->chunk_ratio) * (VHDX_SB_SIZE / VHDX_SB_SLICE) + bit / 8 / VHDX_SB_SLICE;
		uint64_t k = in / lss, limit = vd_div_round_up(in + run, lss), count, end;
		const uint8_t *bm = vd_tcache_get(&st->sb, slice, &r);
		int state;

		if (!bm)
			return r;
		state = vhdx_bitmap_run(bm + (bit / 8) % VHDX_SB_SLICE, k, limit, &count);
		vd_tcache_put(&st->sb, slice);
		end = (k + count) * lss; /* runs end on a sector boundary or at off + len */
		*pnum = vd_min_u64(end, in + run) - in;
		*foff = (e & VHDX_BAT_OFFSET_MASK) + in;
		return state;
	}
	default: /* UNDEFINED, ZERO, UNMAPPED (see the top of the file) */
		return VD_ZERO;
	}
}

/* DATA maps to the file itself unless the replay overlay touches the run or
 * the run lies (partly) past the real end of the file: then read() serves
 * it through the overlay. */
static int vhdx_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	struct vhdx_state *st = img->priv;
	uint64_t foff = 0;
	int r = vhdx_lookup(img, off, len, pnum, &foff);

	if (r == VD_DATA) {
		/* a writable delta has no overlay (its log was clean) but grows */
		bool direct = st->w || !vhdx_overlay_touches(&st->ov, img->file_size, foff, *pnum);
		map->fd = direct ? img->fd : -1;
		map->off = direct ? foff : 0;
	}
	return r;
}

/* Reads a VD_DATA run that block_status() did not map (see above). */
static int vhdx_read(struct vd_image *img, void *buf, size_t len, uint64_t off)
{
	struct vhdx_state *st = img->priv;
	uint8_t *p = buf;

	while (len) {
		uint64_t n, foff = 0;
		int r = vhdx_lookup(img, off, len, &n, &foff);

		if (r >= 0 && r != VD_DATA) {
			vd_log_err("vhdx: %s: read of a range not held by this layer at %" PRIu64,
				   img->path, off);
			return -EIO;
		}
		if (r < 0)
			return r;
		if (st->w)
			r = vd_pread_full(img->fd, p, (size_t)n, foff);
		else
			r = vhdx_file_read(img->fd, img->file_size, &st->ov, p, (size_t)n, foff);
		if (r < 0) {
			vd_log_err("vhdx: %s: read at %" PRIu64 " (file offset %" PRIu64
				   ") failed: %s",
				   img->path, off, foff, strerror(-r));
			return r;
		}
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

static void json_guid(struct vd_json *j, const char *key, const uint8_t raw[16])
{
	struct vd_id id;
	char b[37];

	vhdx_guid_to_id(raw, &id);
	vd_json_str(j, key, vd_id_format(&id, b));
}

static void vhdx_describe(struct vd_image *img, struct vd_json *j)
{
	struct vhdx_state *st = img->priv;
	struct vhdx_header hdr;
	uint64_t held, loads;
	int hdr_index;

	vhdx_write_header_get(img, &hdr, &hdr_index);
	vd_json_obj_begin(j, "vhdx");
	vd_json_str(j, "disk_type", img->subformat);
	vd_json_str(j, "creator", st->creator);
	vd_json_u64(j, "header_used", (uint64_t)hdr_index);
	vd_json_u64(j, "header_sequence", hdr.seq);
	json_guid(j, "file_write_guid", hdr.file_write);
	json_guid(j, "data_write_guid", hdr.data_write);
	json_guid(j, "page83_id", st->par.page83);
	vd_json_u64(j, "region_table_used", (uint64_t)st->rt_index);
	vd_json_u64(j, "block_size", st->par.block_size);
	vd_json_u64(j, "logical_sector_size", st->par.logical);
	vd_json_u64(j, "physical_sector_size", st->par.physical);
	vd_json_bool(j, "has_parent", st->par.has_parent);
	vd_json_bool(j, "leave_block_allocated", st->par.leave_allocated);
	vd_json_u64(j, "chunk_ratio", st->geom.chunk_ratio);
	vd_json_u64(j, "bat_entries", st->geom.bat_entries);
	vd_json_u64(j, "blocks_fully_present", st->blocks_present);
	vd_json_u64(j, "blocks_partially_present", st->blocks_partial);
	vd_json_u64(j, "blocks_zero_unmapped_or_undefined", st->blocks_zero);
	vd_json_obj_begin(j, "log");
	json_guid(j, "log_guid", hdr.log_guid);
	vd_json_bool(j, "needed_replay", st->log.dirty);
	vd_json_bool(j, "replayed_in_memory", st->log.replayed);
	vd_json_bool(j, "corrupt_log_ignored", st->log.ignored);
	vd_json_u64(j, "entries_replayed", st->log.entries);
	vd_json_u64(j, "data_descriptors", st->log.data_desc);
	vd_json_u64(j, "zero_descriptors", st->log.zero_desc);
	vd_json_obj_end(j);
	if (st->par.has_parent) {
		vd_json_obj_begin(j, "parent_locator");
		vd_json_str(j, "parent_linkage", st->loc.linkage);
		vd_json_str(j, "parent_linkage2", st->loc.linkage2);
		vd_json_str(j, "relative_path", st->loc.relative_path);
		vd_json_str(j, "volume_path", st->loc.volume_path);
		vd_json_str(j, "absolute_win32_path", st->loc.absolute_win32_path);
		vd_json_obj_end(j);
	}
	vd_tcache_stats(&st->bat, &held, &loads);
	vd_json_u64(j, "bat_pages_loaded", loads);
	vhdx_write_describe(img, j);
	vd_json_obj_end(j);
}

const struct vd_format_ops vd_vhdx_ops = {
    .name = "vhdx",
    .probe = vhdx_probe,
    .open = vhdx_open,
    .close = vhdx_close,
    .block_status = vhdx_block_status,
    .read = vhdx_read,
    .write = vhdx_write,
    .flush = vhdx_flush,
    .create_child = vhdx_create_child,
    .describe = vhdx_describe,
    .discard = vhdx_discard,
};
