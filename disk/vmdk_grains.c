/* What the grain-table extent backends share (hosted sparse, COWD, seSparse):
 * turning per-grain answers into runs, and reading a grain table.
 *
 * A backend answers for a grain (and as many following grains as it can
 * without another lookup); vmdk_gt_block_status() strings the answers into the
 * longest run that shares a state and, for DATA, lies contiguously in the
 * file, so one block_status call maps a whole multi-grain request and the read
 * that follows is a single pread. */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/space.h"
#include "disk/tcache.h"

static uint64_t gt_entry(const void *gt, bool compact, unsigned width, uint64_t i)
{
	if (compact) {
		const struct vmdk_gt_run *run = gt;

		return i < run->count ? run->base + i * run->step : 0;
	}
	return width == 4 ? ((const uint32_t *)gt)[i] : ((const uint64_t *)gt)[i];
}

int vmdk_gt_compact(void *table, unsigned n, unsigned width, uint64_t step)
{
	struct vmdk_gt_run run = {.base = gt_entry(table, false, width, 0), .step = (uint32_t)step};
	unsigned i = 1;

	if (!run.base || !step || step > UINT32_MAX)
		return 0;
	while (i < n && gt_entry(table, false, width, i) == run.base + i * step)
		i++;
	run.count = i;
	while (i < n && !gt_entry(table, false, width, i))
		i++;
	if (i < n)
		return 0;
	memcpy(table, &run, sizeof(run));
	return VD_TCACHE_COMPACT;
}

/* The most GD entries an extent keeps "known all zero" bits for (32 KiB of
 * bits); past that, tables are looked up in the cache as usual. */
#define ZERO_GTS_MAX (1u << 18)

/* True when the table of GD entry i is known to be all zero. */
static bool zero_gt_known(const struct vmdk_extent *e, uint64_t i)
{
	const uint64_t *z = __atomic_load_n(&e->zero_gts, __ATOMIC_ACQUIRE);

	return z && i < e->n_gts && (__atomic_load_n(&z[i / 64], __ATOMIC_RELAXED) >> (i % 64) & 1);
}

/* Records that the table of GD entry i is all zero: best effort (without
 * memory the table is simply looked up again next time). */
static void zero_gt_mark(struct vmdk_extent *e, uint64_t i)
{
	uint64_t *z = __atomic_load_n(&e->zero_gts, __ATOMIC_ACQUIRE);

	if (i >= e->n_gts || e->n_gts > ZERO_GTS_MAX)
		return;
	if (!z) {
		uint64_t *none = NULL;

		z = calloc((e->n_gts + 63) / 64, sizeof(*z));
		if (!z)
			return;
		if (!__atomic_compare_exchange_n(&e->zero_gts, &none, z, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) {
			free(z);
			z = none;
		}
	}
	__atomic_fetch_or(&z[i / 64], 1ull << (i % 64), __ATOMIC_RELAXED);
}

uint64_t vmdk_gt_pos_sectors(const struct vmdk_extent *e, uint64_t gt)
{
	(void)e;
	return gt * 512;
}

/* How many seeks (vd_seek_data) one extent's hole scan may make. */
#define HOLE_SEEKS_MAX 64

/* Marks in e->zero_gts every table of a read-only extent whose bytes lie in
 * a hole of the file, asking the file system (SEEK_DATA, SEEK_HOLE) rather
 * than reading each table: a twoGbMaxExtentSparse disk that qemu-img made
 * has 64 preallocated, never written tables in each of its extent files, and
 * a 2 TiB disk of two layers thus 131,072 tables to read on a first sweep
 * (an nbdcopy of it spent most of its time reading them). Runs once per
 * extent, on its first table lookup, and only over a GD kept whole, with at
 * most HOLE_SEEKS_MAX seeks, so its cost is bounded whatever the file. A
 * file system without hole reporting says "all data": nothing is marked. */
static void gt_holes_scan(struct vmdk_extent *e, const struct vmdk_gt_format *f)
{
	uint64_t bytes = (uint64_t)f->per_gt * f->width, data_lo = 0, data_hi = 0;
	uint64_t hole_lo = 0, hole_hi = 0;
	unsigned seeks = 0;

	for (uint64_t i = 0; i < e->n_gts; i++) {
		uint64_t gt, absent = 1, pos, d, h;
		int r;

		if (f->gt_of(e, i * f->per_gt, &gt, &absent) < 0 || gt == VMDK_NO_GT)
			continue;
		pos = f->gt_pos(e, gt);
		if (pos >= hole_lo && pos + bytes <= hole_hi) {
			zero_gt_mark(e, i);
			continue;
		}
		if (pos < data_hi && pos + bytes > data_lo)
			continue; /* overlaps data known from an earlier seek */
		if (seeks + 2 > HOLE_SEEKS_MAX)
			return;
		seeks++;
		r = vd_seek_data(e->fd, pos, SEEK_DATA, &d);
		if (r == -ENXIO) /* a hole up to EOF; a table past EOF is no
				  * hole but an error, which its load reports */
			d = __atomic_load_n(&e->file_size, __ATOMIC_RELAXED);
		else if (r < 0)
			return;
		if (d >= pos + bytes) {
			hole_lo = pos;
			hole_hi = d;
			zero_gt_mark(e, i);
			continue;
		}
		seeks++;
		if (vd_seek_data(e->fd, d, SEEK_HOLE, &h) < 0)
			return;
		data_lo = d;
		data_hi = h;
	}
}

/* Grain g and up to max - 1 following grains of the same table that share
 * its state (and, for DATA, lie contiguously from *phys): the state, or
 * -errno; *count grains. */
static int gt_grains(struct vmdk_extent *e, const struct vmdk_gt_format *f, struct vd_tcache *gts,
		     uint64_t grain_bytes, uint64_t g, uint64_t max, uint64_t *phys,
		     uint64_t *count)
{
	uint64_t i = g % f->per_gt, n = 1, limit = vd_min_u64(f->per_gt - i, max), p;
	uint64_t gt_idx, absent = 1;
	const void *gt;
	bool compact;
	int s, err = f->gt_of(e, g, &gt_idx, &absent);

	if (err < 0)
		return err;
	if (gt_idx == VMDK_NO_GT) {
		/* absent (<= a GD page of) tables from g's */
		*count = vd_min_u64(absent * f->per_gt - i, max);
		return VD_UNALLOC;
	}
	if (f->gt_pos && !e->writable && !gts->pinned && e->n_gts <= VMDK_GD_WHOLE_BYTES / 4 &&
	    !__atomic_load_n(&e->holes_scanned, __ATOMIC_ACQUIRE) &&
	    !__atomic_exchange_n(&e->holes_scanned, 1, __ATOMIC_ACQ_REL))
		gt_holes_scan(e, f);
	if (zero_gt_known(e, g / f->per_gt)) {
		/* every entry is 0, which each backend decodes alike
		 * (unallocated), whatever the grain */
		*count = limit;
		return f->decode(e, g, 0, true, phys);
	}
	gt = vd_tcache_get_ex(gts, gt_idx, &err, &compact);
	if (!gt)
		return err;
	s = f->decode(e, g, gt_entry(gt, compact, f->width, i), true, phys);
	/* a read-only extent's all-zero table (the user's shared zero copy)
	 * never changes: remember it */
	if (!compact && !gts->pinned && !e->writable &&
	    gt == __atomic_load_n(&gts->zero, __ATOMIC_ACQUIRE)) {
		zero_gt_mark(e, g / f->per_gt);
		n = s >= 0 ? limit : n;
	}
	while (s >= 0 && n < limit) {
		if (f->decode(e, g + n, gt_entry(gt, compact, f->width, i + n), false, &p) != s ||
		    (s == VD_DATA && p != *phys + n * grain_bytes))
			break;
		n++;
	}
	vd_tcache_put(gts, gt_idx);
	*count = n;
	return s;
}

int vmdk_gt_block_status(struct vmdk_extent *e, const struct vmdk_gt_format *f,
			 struct vd_tcache *gts, uint64_t grain_bytes, uint64_t off, uint64_t len,
			 uint64_t *pnum, struct vd_map *map)
{
	uint64_t g = off / grain_bytes, end = off + len, pos = off;
	uint64_t next_phys = 0, first_phys = 0;
	int state = -1;

	for (unsigned steps = 0; pos < end && steps < VMDK_GT_STEPS; steps++) {
		uint64_t phys = 0, count = 0;
		uint64_t max = vd_div_round_up(end - g * grain_bytes, grain_bytes);
		int s = gt_grains(e, f, gts, grain_bytes, g, max, &phys, &count);

		if (s < 0) {
			if (state < 0)
				return s;
			break; /* the run ends before a bad grain; asked again, it fails */
		}
		if (state >= 0 && (s != state || (s == VD_DATA && phys != next_phys)))
			break;
		if (state < 0) {
			state = s;
			first_phys = phys + off % grain_bytes;
		}
		next_phys = phys + count * grain_bytes;
		g += count;
		pos = g * grain_bytes;
	}
	*pnum = vd_min_u64(pos, end) - off;
	if (state == VD_DATA) {
		map->fd = e->fd;
		map->off = first_phys;
	}
	return state;
}

int vmdk_gt_read(struct vmdk_extent *e, uint64_t off, unsigned n, unsigned width, void *table,
		 const char *what, uint64_t idx)
{
	uint8_t *raw = table;
	int r = vd_pread_full(e->fd, table, (size_t)n * width, off);

	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read %s %" PRIu64 " at offset %" PRIu64 ": %s",
			   e->path, what, idx, off, strerror(-r));
		return r;
	}
	if (width == 4)
		for (unsigned i = 0; i < n; i++)
			((uint32_t *)table)[i] = vd_get_le32(raw + (size_t)i * 4);
	else
		for (unsigned i = 0; i < n; i++)
			((uint64_t *)table)[i] = vd_get_le64(raw + (size_t)i * 8);
	return vd_mem_is_zero(table, (size_t)n * width) ? VD_TCACHE_ZERO : 0;
}

int vmdk_extent_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		struct vd_map map = {.fd = -1};
		uint64_t n;
		int st = e->ops->block_status(e, off, len, &n, &map), r = 0;

		if (st < 0)
			return st;
		if (n == 0 || n > len)
			return -EIO;
		if (st != VD_DATA)
			memset(p, 0, n);
		else if (map.fd >= 0)
			r = vd_pread_full(map.fd, p, n, map.off);
		else
			r = e->ops->read ? e->ops->read(e, p, n, off) : -EIO;
		if (r < 0)
			return r;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

#define GD_PAGE_ENTRIES 512u /* 4 KiB of native u64 per cached page */
#define GDE_BAD UINT64_MAX   /* an entry that failed its check */

/* Page loader: decodes up to GD_PAGE_ENTRIES entries; entries that fail the
 * check become GDE_BAD so only the grains they cover fail. */
static int gd_page_load(void *ctx, uint64_t page, void *table)
{
	struct vmdk_gd *gd = ctx;
	uint64_t first = page * GD_PAGE_ENTRIES, *out = table;
	unsigned n = (unsigned)vd_min_u64(GD_PAGE_ENTRIES, gd->n - first);
	uint8_t raw[GD_PAGE_ENTRIES * 8];
	int r = vd_pread_full(gd->e->fd, raw, (size_t)n * gd->width, gd->off + first * gd->width);

	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read the %s at offset %" PRIu64 ": %s", gd->e->path,
			   gd->what, gd->off + first * gd->width, strerror(-r));
		return r;
	}
	memset(out, 0, GD_PAGE_ENTRIES * 8);
	for (unsigned i = 0; i < n; i++) {
		out[i] = gd->width == 4 ? vd_get_le32(raw + i * 4) : vd_get_le64(raw + i * 8);
		if (out[i] && gd->check(gd->e, first + i, out[i]) < 0)
			out[i] = GDE_BAD;
	}
	return vd_mem_is_zero(out, GD_PAGE_ENTRIES * 8) ? VD_TCACHE_ZERO : 0;
}

int vmdk_gd_init(struct vmdk_gd *gd)
{
	uint64_t bytes = gd->n * gd->width;
	uint8_t *raw;
	int r;

	gd->e->n_gts = gd->n;
	r = vd_tcache_init(&gd->pages, GD_PAGE_ENTRIES * 8, gd_page_load, gd);
	if (r < 0 || bytes > VMDK_GD_EAGER_BYTES)
		return r;
	raw = malloc(bytes ? bytes : 1);
	if (!raw)
		return -ENOMEM;
	r = vd_pread_full(gd->e->fd, raw, bytes, gd->off);
	if (r < 0)
		vd_log_err("vmdk: %s: cannot read the %s: %s", gd->e->path, gd->what, strerror(-r));
	for (uint64_t i = 0; r == 0 && i < gd->n; i++) {
		uint64_t gde = gd->width == 4 ? vd_get_le32(raw + i * 4) : vd_get_le64(raw + i * 8);

		if (gd->width == 4)
			((uint32_t *)raw)[i] = (uint32_t)gde;
		else
			((uint64_t *)raw)[i] = gde;
		if (gde)
			r = gd->check(gd->e, i, gde);
	}
	if (r == 0 && bytes <= VMDK_GD_WHOLE_BYTES) {
		gd->whole = raw; /* checked and in native order now */
		return 0;
	}
	free(raw);
	return r;
}

static uint64_t gd_whole_entry(const struct vmdk_gd *gd, uint64_t i)
{
	return gd->width == 4 ? ((const uint32_t *)gd->whole)[i] : ((const uint64_t *)gd->whole)[i];
}

/* vmdk_gd_get() of a GD kept whole. */
static int gd_whole_get(struct vmdk_gd *gd, uint64_t i, uint64_t *gde, uint64_t *absent)
{
	*gde = gd_whole_entry(gd, i);
	if (!*gde && absent) {
		uint64_t end = vd_min_u64(gd->n, vd_round_up(i + 1, GD_PAGE_ENTRIES)), z = i + 1;

		while (z < end && !gd_whole_entry(gd, z))
			z++;
		*absent = z - i;
	}
	return 0;
}

/* Zero GD entries from i, the first of a page that reads as all zero: when
 * the file has a hole there, every entry up to the next data the file holds
 * (SEEK_DATA) is zero too, so a GD that is mostly hole, as a few KiB of file
 * claiming a huge disk has, is skipped in one step. The seek moves the file
 * offset of a shared descriptor, which is harmless: every read and write of
 * image files is a pread/pwrite at an explicit offset. */
static uint64_t gd_hole_run(struct vmdk_gd *gd, uint64_t i)
{
	uint64_t from = gd->off + i * gd->width, data, end;
	int r = vd_seek_data(gd->e->fd, from, SEEK_DATA, &data);

	if (r == -ENXIO)
		return gd->n - i; /* a hole up to EOF */
	if (r < 0 || data <= from)
		return GD_PAGE_ENTRIES;
	end = (data - gd->off) / gd->width;
	return vd_min_u64(gd->n, vd_round_up(end, GD_PAGE_ENTRIES)) - i;
}

int vmdk_gd_get(struct vmdk_gd *gd, uint64_t i, uint64_t *gde, uint64_t *absent)
{
	uint64_t page = i / GD_PAGE_ENTRIES, k = i % GD_PAGE_ENTRIES;
	const uint64_t *t;
	int err = 0;

	if (gd->whole)
		return gd_whole_get(gd, i, gde, absent);
	t = vd_tcache_get(&gd->pages, page, &err);
	if (!t)
		return err;
	*gde = t[k];
	if (!*gde && absent) {
		uint64_t z = k + 1;

		/* The shared zero page needs no look at its entries. */
		if (t == __atomic_load_n(&gd->pages.zero, __ATOMIC_ACQUIRE))
			z = GD_PAGE_ENTRIES;
		while (z < GD_PAGE_ENTRIES && !t[z])
			z++;
		*absent = z - k;
		if (z == GD_PAGE_ENTRIES && k == 0)
			*absent = gd_hole_run(gd, i);
	}
	vd_tcache_put(&gd->pages, page);
	return *gde == GDE_BAD ? -EIO : 0;
}

int vmdk_gd_gt(struct vmdk_gd *gd, uint64_t i, uint64_t mask, uint64_t *gt, uint64_t *absent)
{
	uint64_t gde;
	int r = vmdk_gd_get(gd, i, &gde, absent);

	*gt = gde ? gde & mask : VMDK_NO_GT;
	return r;
}

void vmdk_gd_destroy(struct vmdk_gd *gd)
{
	vd_tcache_destroy(&gd->pages);
	free(gd->whole);
	gd->whole = NULL;
	if (gd->e) { /* the extent's zero-table bits belong with its GD */
		free(gd->e->zero_gts);
		gd->e->zero_gts = NULL;
	}
}

int vmdk_gt_check(struct vmdk_extent *e, const struct vmdk_gt_format *f, struct vd_tcache *gts,
		  uint64_t grain_bytes, struct vd_check *chk)
{
	static const char *const kinds[] = {"grain"};
	struct vd_space sp = {.kinds = kinds};
	uint64_t n = vd_div_round_up(e->sectors * 512, grain_bytes);
	unsigned bad = 0;
	int r = 0;

	for (uint64_t g0 = 0; g0 < n && r == 0; g0 += f->per_gt) {
		uint64_t gt_idx, absent = 1;
		const void *gt;
		bool compact;
		int err = f->gt_of(e, g0, &gt_idx, &absent);

		if (err == -EIO) {
			vd_check_report(chk, e->path,
					"grain directory entry %" PRIu64
					" points outside the file's metadata area",
					g0 / f->per_gt);
			continue;
		}
		if (err < 0) {
			r = err;
			break;
		}
		if (gt_idx == VMDK_NO_GT) {
			g0 += (absent - 1) * f->per_gt; /* a missing GD page in one step */
			continue;
		}
		gt = vd_tcache_get_ex(gts, gt_idx, &err, &compact);
		if (!gt) {
			r = err;
			break;
		}
		for (uint64_t i = 0; i < f->per_gt && g0 + i < n && r == 0; i++) {
			uint64_t ent = gt_entry(gt, compact, f->width, i), phys = 0;
			int st = f->decode(e, g0 + i, ent, false, &phys);

			if (st < 0) {
				if (++bad <= 10)
					vd_check_report(chk, e->path,
							"grain %" PRIu64 ": table entry 0x%" PRIx64
							" points outside the file's grain area",
							g0 + i, ent);
				continue;
			}
			if (st == VD_DATA)
				r = vd_space_add(&sp, 0, (uint32_t)(g0 + i), phys,
						 vd_min_u64(grain_bytes, e->file_size - phys));
		}
		vd_tcache_put(gts, gt_idx);
	}
	if (bad > 10)
		vd_check_report(chk, e->path, "%u more bad grain table entries not listed",
				bad - 10);
	/* Grains only (no leak accounting: from == to). */
	if (r == 0)
		r = vd_space_check(&sp, 0, 0, 1, chk, e->path);
	vd_space_free(&sp);
	return r;
}
