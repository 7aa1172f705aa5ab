/* Partition discovery on the disk as seen from a chain level.
 *
 * Sector 0 must be an MBR (55 AA, sane status bytes). An 0xEE entry makes it
 * a GPT disk: the header is looked for at LBA 1 of 512- and then 4096-byte
 * sectors; a damaged primary (signature, CRC, MyLBA, entry-array CRC) falls
 * back to the backup header in the last sector, with a warning. Otherwise
 * the MBR's primaries are partitions 1-4 and the logicals of the first
 * extended partition are 5, 6, ... in EBR-chain order, as Linux numbers them
 * (an EBR without a data entry takes no number). The extended container
 * itself gets no file: it holds only EBRs.
 *
 * Entries that overlap an earlier one or leave the disk (or the GPT usable
 * area) are skipped with a warning; nothing here ever fails on bad content.
 * Only allocation and read errors are errors.
 *
 * A scan notes every range it read (t->reads): in a writable mount a write
 * there, or to sector 0 / LBA 1, may change the table (vd_part_table_touched),
 * and the front end scans again. */
#include "chain/part.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LOGICALS 128 /* EBRs followed at most (Linux stops far earlier in practice) */

static void table_warn(struct vd_part_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void table_warn(struct vd_part_table *t, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	vd_strv_add(&t->warnings, &t->n_warnings, msg);
}

static int table_note(struct vd_part_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int table_note(struct vd_part_table *t, const char *fmt, ...)
{
	va_list ap;
	int r;

	free(t->note);
	va_start(ap, fmt);
	r = vasprintf(&t->note, fmt, ap);
	va_end(ap);
	if (r < 0) {
		t->note = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Reads through the chain and notes the range in t->reads (the table's
 * footprint: a write there may change it). */
static int part_read(struct vd_chain *c, unsigned level, struct vd_part_table *t, void *buf,
		     size_t len, uint64_t off)
{
	struct vd_part_read *nr = realloc(t->reads, (t->n_reads + 1) * sizeof(*nr));

	if (!nr)
		return -ENOMEM;
	t->reads = nr;
	t->reads[t->n_reads++] = (struct vd_part_read){.off = off, .len = len};
	return vd_chain_read(c, level, buf, len, off);
}

/* Adds p unless it leaves [0, disk) or overlaps an accepted partition. */
static int part_add(struct vd_part_table *t, const struct vd_part *p, uint64_t disk)
{
	struct vd_part *np;

	if (p->size == 0 || p->start == 0 || p->start >= disk || p->size > disk - p->start) {
		table_warn(t,
			   "partition %u (start %" PRIu64 ", %" PRIu64 " bytes) leaves the "
			   "%" PRIu64 "-byte disk: skipped",
			   p->number, p->start, p->size, disk);
		return 0;
	}
	for (unsigned i = 0; i < t->n; i++) {
		const struct vd_part *q = &t->parts[i];
		if (p->start < q->start + q->size && q->start < p->start + p->size) {
			table_warn(t, "partition %u overlaps partition %u: skipped", p->number,
				   q->number);
			return 0;
		}
	}
	np = realloc(t->parts, (t->n + 1) * sizeof(*np));
	if (!np)
		return -ENOMEM;
	t->parts = np;
	t->parts[t->n++] = *p;
	return 0;
}

static int part_cmp(const void *a, const void *b)
{
	const struct vd_part *x = a, *y = b;

	return (x->number > y->number) - (x->number < y->number);
}

/* The logicals of the extended partition at [ext, ext + ext_sectors) (512-byte sectors). */
static int mbr_logicals(struct vd_chain *c, unsigned level, struct vd_part_table *t, uint64_t ext,
			uint64_t ext_sectors, uint64_t disk)
{
	uint8_t sec[VD_MBR_SIZE];
	uint64_t ebr = ext;
	unsigned number = 5;

	for (unsigned k = 0; k < MAX_LOGICALS; k++) {
		struct vd_mbr m;
		const char *why;
		const struct vd_mbr_entry *next = NULL;
		int r;

		if ((ebr + 1) * VD_MBR_SIZE > disk) {
			table_warn(t, "EBR at sector %" PRIu64 " past the end of the disk", ebr);
			return 0;
		}
		r = part_read(c, level, t, sec, sizeof(sec), ebr * VD_MBR_SIZE);
		if (r < 0)
			return r;
		if (vd_mbr_decode(sec, &m, &why) < 0) {
			table_warn(t,
				   "EBR at sector %" PRIu64 ": %s: logical partitions after it "
				   "skipped",
				   ebr, why);
			return 0;
		}
		for (unsigned i = 0; i < 2; i++) {
			const struct vd_mbr_entry *e = &m.e[i];
			if (!e->sectors)
				continue;
			if (vd_mbr_type_is_extended(e->type)) {
				if (!next)
					next = e;
				continue;
			}
			struct vd_part p = {.number = number++,
					    .start = (ebr + e->lba) * VD_MBR_SIZE,
					    .size = (uint64_t)e->sectors * VD_MBR_SIZE,
					    .logical = true,
					    .bootable = e->status == 0x80,
					    .mbr_type = e->type};
			if (ebr + e->lba + e->sectors > ext + ext_sectors) {
				table_warn(t,
					   "logical partition %u leaves its extended partition: "
					   "skipped",
					   p.number);
				continue;
			}
			r = part_add(t, &p, disk);
			if (r < 0)
				return r;
		}
		if (!next)
			return 0;
		if (ext + next->lba <= ebr || next->lba >= ext_sectors) {
			table_warn(t,
				   "EBR chain at sector %" PRIu64 " points backwards or outside "
				   "the extended partition: stopped",
				   ebr);
			return 0;
		}
		ebr = ext + next->lba;
	}
	table_warn(t, "more than %d logical partitions: the rest skipped", MAX_LOGICALS);
	return 0;
}

static int mbr_scan(struct vd_chain *c, unsigned level, struct vd_part_table *t,
		    const struct vd_mbr *m, uint64_t disk)
{
	bool have_ext = false;
	int r;

	t->scheme = VD_PART_MBR;
	t->disk_sig = m->disk_sig;
	for (unsigned i = 0; i < VD_MBR_ENTRIES; i++) {
		const struct vd_mbr_entry *e = &m->e[i];
		if (!e->sectors)
			continue;
		if (vd_mbr_type_is_extended(e->type)) {
			if (have_ext) {
				table_warn(t, "second extended partition (entry %u) ignored",
					   i + 1);
				continue;
			}
			have_ext = true;
			if ((uint64_t)e->lba + e->sectors > disk / VD_MBR_SIZE || e->lba == 0) {
				table_warn(t,
					   "extended partition %u leaves the disk: its logical "
					   "partitions are skipped",
					   i + 1);
				continue;
			}
			r = mbr_logicals(c, level, t, e->lba, e->sectors, disk);
			if (r < 0)
				return r;
			continue;
		}
		struct vd_part p = {.number = i + 1,
				    .start = (uint64_t)e->lba * VD_MBR_SIZE,
				    .size = (uint64_t)e->sectors * VD_MBR_SIZE,
				    .bootable = e->status == 0x80,
				    .mbr_type = e->type};
		r = part_add(t, &p, disk);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Reads and checks the GPT header at lba and its entry array (*arr, malloc'd).
 * Returns 0, -EINVAL with *why, or -errno of a read. */
static int gpt_load(struct vd_chain *c, unsigned level, struct vd_part_table *t, uint32_t ss,
		    uint64_t lba, uint64_t n_sectors, struct vd_gpt_header *h, uint8_t **arr,
		    const char **why)
{
	uint8_t *sec = malloc(ss);
	size_t alen;
	int r;

	*arr = NULL;
	if (!sec)
		return -ENOMEM;
	r = part_read(c, level, t, sec, ss, lba * ss);
	if (r == 0)
		r = vd_gpt_header_decode(sec, ss, h, why);
	free(sec);
	if (r == 0)
		r = vd_gpt_header_check(h, lba, n_sectors, ss, why);
	if (r < 0)
		return r;
	alen = (size_t)h->n_entries * h->entry_size;
	*arr = malloc(alen);
	if (!*arr)
		return -ENOMEM;
	r = part_read(c, level, t, *arr, alen, h->entries_lba * ss);
	if (r == 0)
		r = vd_gpt_entries_check(h, *arr, why);
	if (r < 0) {
		free(*arr);
		*arr = NULL;
	}
	return r;
}

static int gpt_scan(struct vd_chain *c, unsigned level, struct vd_part_table *t,
		    const struct vd_mbr *m, uint64_t disk)
{
	uint8_t sig[8];
	uint32_t ss = 0;
	struct vd_gpt_header h;
	const char *why1 = NULL, *why2 = NULL;
	uint8_t *arr = NULL;
	uint64_t n_sectors;
	int r;

	for (unsigned i = 0; i < VD_MBR_ENTRIES; i++)
		if (m->e[i].sectors && m->e[i].type != VD_MBR_TYPE_GPT)
			t->hybrid = true;
	/* The header sits at LBA 1: byte 512 or byte 4096. */
	for (uint32_t try = 512; try <= 4096 && !ss; try *= 8) {
		if (disk < 2ull * try)
			break;
		r = part_read(c, level, t, sig, sizeof(sig), try);
		if (r < 0)
			return r;
		if (!memcmp(sig, "EFI PART", 8))
			ss = try;
	}
	if (!ss)
		ss = 512; /* the primary is gone: look for a 512-byte-sector backup */
	n_sectors = disk / ss;
	r = gpt_load(c, level, t, ss, 1, n_sectors, &h, &arr, &why1);
	if (r == -EINVAL) {
		r = gpt_load(c, level, t, ss, n_sectors - 1, n_sectors, &h, &arr, &why2);
		if (r == -EINVAL)
			return table_note(t,
					  "protective MBR but no valid GPT (primary header: %s; "
					  "backup header: %s)",
					  why1, why2);
		if (r == 0) {
			t->backup_used = true;
			table_warn(t, "primary GPT header damaged (%s): using the backup header",
				   why1);
		}
	}
	if (r < 0)
		return r;
	t->scheme = VD_PART_GPT;
	t->sector_size = ss;
	memcpy(t->disk_guid, h.disk_guid, 16);
	if (t->hybrid)
		table_warn(t, "hybrid MBR: the MBR lists partitions besides the GPT protective "
			      "entry; the GPT is used");
	for (uint32_t i = 0; i < h.n_entries; i++) {
		struct vd_part p = {.number = i + 1};
		const char *why;
		int used = vd_gpt_entry_decode(arr + (size_t)i * h.entry_size, &p.gpt, &why);

		if (used == 0)
			continue;
		if (used < 0) {
			table_warn(t, "GPT entry %u: %s: skipped", i + 1, why);
			continue;
		}
		if (p.gpt.first_lba < h.first_usable || p.gpt.last_lba > h.last_usable) {
			table_warn(t,
				   "GPT entry %u lies outside the usable LBAs %" PRIu64 "-%" PRIu64
				   ": skipped",
				   i + 1, h.first_usable, h.last_usable);
			continue;
		}
		p.start = p.gpt.first_lba * ss;
		p.size = (p.gpt.last_lba - p.gpt.first_lba + 1) * ss;
		r = part_add(t, &p, disk);
		if (r < 0)
			break;
	}
	free(arr);
	return r;
}

int vd_part_scan(struct vd_chain *c, unsigned level, struct vd_part_table **out)
{
	struct vd_part_table *t = calloc(1, sizeof(*t));
	uint64_t disk = vd_chain_size(c, level);
	uint8_t sec[VD_MBR_SIZE];
	struct vd_mbr m;
	const char *why;
	bool gpt = false;
	int r;

	if (!t)
		return -ENOMEM;
	t->sector_size = 512;
	if (disk < 2 * VD_MBR_SIZE) {
		r = table_note(t, "disk too small for a partition table");
		goto out;
	}
	r = part_read(c, level, t, sec, sizeof(sec), 0);
	if (r < 0)
		goto out;
	if (vd_mbr_decode(sec, &m, &why) < 0) {
		r = table_note(t, "no partition table in sector 0 (%s)", why);
		goto out;
	}
	for (unsigned i = 0; i < VD_MBR_ENTRIES; i++)
		gpt |= m.e[i].sectors && m.e[i].type == VD_MBR_TYPE_GPT;
	r = gpt ? gpt_scan(c, level, t, &m, disk) : mbr_scan(c, level, t, &m, disk);
	if (r == 0 && t->scheme != VD_PART_NONE && t->n == 0 && !t->note)
		r = table_note(t, "partition table with no usable entry");
	if (r == 0 && t->n > 1)
		qsort(t->parts, t->n, sizeof(*t->parts), part_cmp);
out:
	if (r < 0) {
		vd_part_table_free(t);
		return r;
	}
	*out = t;
	return 0;
}

void vd_part_table_free(struct vd_part_table *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->n_warnings; i++)
		free(t->warnings[i]);
	free(t->warnings);
	free(t->parts);
	free(t->note);
	free(t->reads);
	free(t);
}

static bool range_overlaps(uint64_t off, uint64_t len, uint64_t start, uint64_t n)
{
	return len && n && off < start + n && start < off + len;
}

bool vd_part_table_touched(const struct vd_part_table *t, uint64_t off, uint64_t len)
{
	/* MBR / protective MBR; the GPT header at LBA 1 of either sector size
	 * (UEFI 2.10 section 5.3.2: the primary header is always at LBA 1). */
	if (range_overlaps(off, len, 0, 2 * VD_MBR_SIZE) || range_overlaps(off, len, 4096, 4096))
		return true;
	for (unsigned i = 0; t && i < t->n_reads; i++)
		if (range_overlaps(off, len, t->reads[i].off, t->reads[i].len))
			return true;
	return false;
}

static bool str_equal(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

bool vd_part_table_equal(const struct vd_part_table *a, const struct vd_part_table *b)
{
	if (a->scheme != b->scheme || a->sector_size != b->sector_size || a->hybrid != b->hybrid ||
	    a->backup_used != b->backup_used || a->disk_sig != b->disk_sig ||
	    memcmp(a->disk_guid, b->disk_guid, 16) || a->n != b->n ||
	    a->n_warnings != b->n_warnings || !str_equal(a->note, b->note))
		return false;
	for (unsigned i = 0; i < a->n_warnings; i++)
		if (strcmp(a->warnings[i], b->warnings[i]))
			return false;
	for (unsigned i = 0; i < a->n; i++) {
		const struct vd_part *p = &a->parts[i], *q = &b->parts[i];
		if (!vd_part_same_place(p, q) || p->logical != q->logical ||
		    p->bootable != q->bootable || p->mbr_type != q->mbr_type ||
		    memcmp(p->gpt.type_guid, q->gpt.type_guid, 16) ||
		    memcmp(p->gpt.uuid, q->gpt.uuid, 16) || p->gpt.first_lba != q->gpt.first_lba ||
		    p->gpt.last_lba != q->gpt.last_lba || p->gpt.attributes != q->gpt.attributes ||
		    strcmp(p->gpt.name, q->gpt.name))
			return false;
	}
	return true;
}

void vd_part_describe(struct vd_chain *c, unsigned level, const struct vd_part_table *t,
		      struct vd_json *j, const char *key)
{
	static const char *const schemes[] = {"none", "mbr", "gpt"};
	char g[37];

	vd_json_obj_begin(j, key);
	vd_json_str(j, "scheme", schemes[t->scheme]);
	vd_json_u64(j, "sector_size", t->sector_size);
	if (t->scheme == VD_PART_GPT) {
		vd_json_str(j, "disk_guid", vd_guid_format(t->disk_guid, g));
		vd_json_bool(j, "hybrid_mbr", t->hybrid);
		vd_json_bool(j, "backup_header_used", t->backup_used);
	} else if (t->scheme == VD_PART_MBR) {
		snprintf(g, sizeof(g), "%08" PRIx32, t->disk_sig);
		vd_json_str(j, "disk_signature", g);
	}
	vd_json_str(j, "note", t->note);
	vd_json_arr_begin(j, "warnings");
	for (unsigned i = 0; i < t->n_warnings; i++)
		vd_json_str(j, NULL, t->warnings[i]);
	vd_json_arr_end(j);
	vd_json_arr_begin(j, "entries");
	for (unsigned i = 0; i < t->n; i++) {
		const struct vd_part *p = &t->parts[i];
		struct vd_view v = vd_view_part(c, level, p);

		vd_json_obj_begin(j, NULL);
		vd_json_u64(j, "number", p->number);
		vd_json_u64(j, "start", p->start);
		vd_json_u64(j, "size", p->size);
		if (t->scheme == VD_PART_GPT) {
			vd_json_str(j, "type", vd_guid_format(p->gpt.type_guid, g));
			vd_json_str(j, "type_name", vd_gpt_type_name(p->gpt.type_guid));
			vd_json_str(j, "uuid", vd_guid_format(p->gpt.uuid, g));
			vd_json_str(j, "name", p->gpt.name);
		} else {
			snprintf(g, sizeof(g), "%02x", p->mbr_type);
			vd_json_str(j, "type", g);
			vd_json_str(j, "type_name", vd_mbr_type_name(p->mbr_type));
			vd_json_bool(j, "bootable", p->bootable);
			vd_json_bool(j, "logical", p->logical);
		}
		vd_json_str(j, "filesystem", vd_view_fs_sniff(&v));
		vd_json_obj_end(j);
	}
	vd_json_arr_end(j);
	vd_json_obj_end(j);
}
