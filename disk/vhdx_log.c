/* VHDX log: validation of log entries and replay IN MEMORY ([MS-VHDX] 2.3).
 *
 * vdmount never writes an input file, yet 2.3.3 forbids reading a file with
 * a non-empty log without replaying it (footnote 5: a read-only opener
 * replays in memory). So the log is read once at open, the active sequence
 * is found as 2.3.3 describes, and its data and zero descriptors become an
 * overlay: a sorted array of non-overlapping file extents (data or zeros)
 * that vhdx_file_read() lays over every metadata and payload read.
 *
 * The log is read into a buffer holding it twice in a row, so an entry that
 * wraps around the end of the ring is contiguous at buf + pos. Entry
 * validity does not depend on the sequence it is in, so each 4 KiB position
 * is validated at most once (memo), which keeps the 2.3.3 scan linear in
 * CRC work even on a hostile log full of short entries.
 *
 * Overlay construction: the descriptors of the active sequence, in replay
 * order, are intervals where a later one wins. A sweep over their sorted
 * end points with a max-heap of the intervals covering the current point
 * (lazy deletion) gives, for every elementary segment, its newest writer in
 * O(n log n); adjacent pieces of one writer, and adjacent zeros, merge. */
#include "disk/vhdx.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"

/* Descriptor sectors of an entry with n descriptors (2.3.1: 64-byte header
 * then 32-byte descriptors, contiguous across 4 KiB sectors). */
static uint64_t desc_sectors(uint64_t n)
{
	return vd_div_round_up(VHDX_LOG_HDR_SIZE + n * VHDX_LOG_DESC_SIZE, VHDX_LOG_SECTOR);
}

/* (Over 80 lines on purpose: one check per field of the entry header and
 * of each descriptor, in the order of the specification's 2.3.1, so the
 * function reads against it line by line.) */
int vhdx_log_entry_check(const uint8_t *entry, size_t len, uint32_t log_len,
			 const uint8_t log_guid[16], struct vhdx_log_entry *h, const char **why)
{
	uint64_t dsec, data = 0;

	memset(h, 0, sizeof(*h));
	if (len < VHDX_LOG_SECTOR || memcmp(entry + VHDX_LOG_ENTRY_SIG, "loge", 4)) {
		*why = "no \"loge\" signature";
		return -EINVAL;
	}
	h->checksum = vd_get_le32(entry + VHDX_LOG_ENTRY_CHECKSUM);
	h->length = vd_get_le32(entry + VHDX_LOG_ENTRY_LENGTH);
	h->tail = vd_get_le32(entry + VHDX_LOG_ENTRY_TAIL);
	h->seq = vd_get_le64(entry + VHDX_LOG_ENTRY_SEQ);
	h->n_desc = vd_get_le32(entry + VHDX_LOG_ENTRY_DESCS);
	memcpy(h->log_guid, entry + VHDX_LOG_ENTRY_GUID, 16);
	h->flushed = vd_get_le64(entry + VHDX_LOG_ENTRY_FLUSHED);
	h->last = vd_get_le64(entry + VHDX_LOG_ENTRY_LAST);
	/* 2.3.1.1 */
	if (h->length == 0 || h->length % VHDX_LOG_SECTOR || h->length > len ||
	    h->length > log_len) {
		*why = "entry length not a non-zero multiple of 4 KiB inside the log";
		return -EINVAL;
	}
	if (h->tail % VHDX_LOG_SECTOR || h->tail >= log_len) {
		*why = "tail not a multiple of 4 KiB inside the log";
		return -EINVAL;
	}
	if (h->seq == 0) {
		*why = "sequence number 0";
		return -EINVAL;
	}
	if (memcmp(h->log_guid, log_guid, 16)) {
		*why = "log GUID differs from the header's";
		return -EINVAL;
	}
	dsec = desc_sectors(h->n_desc);
	if (dsec > h->length / VHDX_LOG_SECTOR) {
		*why = "descriptors do not fit in the entry";
		return -EINVAL;
	}
	if (h->checksum != vhdx_checksum(entry, h->length, VHDX_LOG_ENTRY_CHECKSUM)) {
		*why = "CRC-32C mismatch";
		return -EINVAL;
	}
	for (uint64_t i = 0; i < h->n_desc; i++) {
		const uint8_t *d = entry + VHDX_LOG_HDR_SIZE + i * VHDX_LOG_DESC_SIZE;
		uint64_t off = vd_get_le64(d + 16), end;

		if (vd_get_le64(d + 24) != h->seq) {
			*why = "descriptor sequence number differs from the entry's";
			return -EINVAL;
		}
		if (!memcmp(d, "zero", 4)) {
			/* 2.3.1.2 */
			uint64_t zl = vd_get_le64(d + 8);
			if (zl % VHDX_LOG_SECTOR || off % VHDX_LOG_SECTOR ||
			    vd_add_ovf(off, zl, &end) || end > 2 * VHDX_MAX_SIZE) {
				*why = "zero descriptor not 4 KiB-aligned or too far";
				return -EINVAL;
			}
		} else if (!memcmp(d, "desc", 4)) {
			/* 2.3.1.3, 2.3.1.4: one data sector per data descriptor, in order. */
			const uint8_t *s;

			if (off % VHDX_LOG_SECTOR || off > 2 * VHDX_MAX_SIZE) {
				*why = "data descriptor not 4 KiB-aligned or too far";
				return -EINVAL;
			}
			if (dsec + data + 1 > h->length / VHDX_LOG_SECTOR) {
				*why = "data sectors do not fit in the entry";
				return -EINVAL;
			}
			s = entry + (dsec + data) * VHDX_LOG_SECTOR;
			if (memcmp(s, "data", 4) ||
			    vd_get_le32(s + 4) != (uint32_t)(h->seq >> 32) ||
			    vd_get_le32(s + 4092) != (uint32_t)h->seq) {
				*why = "data sector signature or sequence number mismatch";
				return -EINVAL;
			}
			data++;
		} else {
			*why = "descriptor with an unknown signature";
			return -EINVAL;
		}
	}
	return 0;
}

/* Validity of the entry at each 4 KiB position, computed on demand. */
enum { MEMO_UNKNOWN = 0, MEMO_BAD, MEMO_OK };

struct log_scan {
	const uint8_t *ring; /* the log twice in a row */
	uint32_t len;
	const uint8_t *guid;
	uint8_t *memo;
	struct vhdx_log_entry *ent; /* valid where memo == MEMO_OK */
	const char *first_why;	    /* reason the first rejected entry was rejected */
	uint64_t first_bad;
};

static const struct vhdx_log_entry *scan_entry(struct log_scan *s, uint32_t pos)
{
	uint32_t k = pos / VHDX_LOG_SECTOR;

	if (s->memo[k] == MEMO_UNKNOWN) {
		const char *why;
		bool sig = !memcmp(s->ring + pos, "loge", 4);
		int r =
		    vhdx_log_entry_check(s->ring + pos, s->len, s->len, s->guid, &s->ent[k], &why);
		s->memo[k] = r == 0 ? MEMO_OK : MEMO_BAD;
		if (r < 0 && sig && !s->first_why) {
			s->first_why = why;
			s->first_bad = pos;
		}
	}
	return s->memo[k] == MEMO_OK ? &s->ent[k] : NULL;
}

/* A sequence: entries starting at pos[0..n), consecutive in the ring. */
struct log_seq {
	uint32_t *pos;
	size_t n;
	uint64_t head_seq;
};

/* Finds the active sequence (2.3.3). best->pos is allocated (n entries from
 * the tail entry). Returns 0, or -ENOMEM. best->n == 0: none found. */
static int scan_log(struct log_scan *s, struct log_seq *best)
{
	size_t cap = s->len / VHDX_LOG_SECTOR + 1;
	uint32_t *cur = malloc(cap * sizeof(*cur));
	uint32_t tail = 0, old_tail = 0;

	memset(best, 0, sizeof(*best));
	best->pos = malloc(cap * sizeof(*best->pos));
	if (!cur || !best->pos) {
		free(cur);
		free(best->pos);
		best->pos = NULL;
		return -ENOMEM;
	}
	for (size_t iter = 0; iter < cap; iter++) {
		uint32_t head = tail;
		uint64_t used = 0, last_seq = 0;
		const struct vhdx_log_entry *e, *h = NULL;
		size_t n = 0, from = 0;
		bool valid = false;

		/* Extend while entries are valid and numbered consecutively; the
		 * sequence cannot be longer than the ring. */
		while ((e = scan_entry(s, head)) && (n == 0 || e->seq == last_seq + 1) &&
		       used + e->length <= s->len) {
			cur[n++] = head;
			last_seq = e->seq;
			used += e->length;
			h = e;
			head = (uint32_t)((head + e->length) % s->len);
		}
		/* Valid when the head's tail is the start of one of its entries. */
		for (size_t i = 0; h && i < n && !valid; i++)
			if (cur[i] == h->tail) {
				valid = true;
				from = i;
			}
		if (valid && h->seq > best->head_seq) {
			best->n = n - from;
			memcpy(best->pos, cur + from, best->n * sizeof(*cur));
			best->head_seq = h->seq;
		}
		if (!valid)
			tail = (uint32_t)((tail + VHDX_LOG_SECTOR) % s->len);
		else
			tail = head;
		if (tail <= old_tail)
			break;
		old_tail = tail;
	}
	free(cur);
	return 0;
}

/* One descriptor's effect, in replay order. */
struct ov_item {
	uint64_t off, end;
	const uint8_t *data; /* NULL for zeros */
};

struct ov_event {
	uint64_t pos;
	uint32_t idx;
	bool start;
};

static int event_cmp(const void *a, const void *b)
{
	const struct ov_event *x = a, *y = b;

	if (x->pos != y->pos)
		return x->pos < y->pos ? -1 : 1;
	return (int)x->start - (int)y->start; /* ends before starts at one point */
}

static void heap_push(uint32_t *h, size_t *n, uint32_t v)
{
	size_t i = (*n)++;

	h[i] = v;
	while (i && h[(i - 1) / 2] < h[i]) {
		uint32_t t = h[i];
		h[i] = h[(i - 1) / 2];
		h[(i - 1) / 2] = t;
		i = (i - 1) / 2;
	}
}

static void heap_pop(uint32_t *h, size_t *n)
{
	size_t i = 0;

	h[0] = h[--(*n)];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < *n && h[l] > h[m])
			m = l;
		if (r < *n && h[r] > h[m])
			m = r;
		if (m == i)
			break;
		uint32_t t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

/* Resolves items (later wins) into ov->ext. Returns 0 or -ENOMEM. */
static int overlay_build(const struct ov_item *it, size_t n, struct vhdx_overlay *ov)
{
	struct ov_event *ev = malloc((2 * n + 1) * sizeof(*ev));
	uint32_t *heap = malloc((n + 1) * sizeof(*heap));
	bool *gone = calloc(n + 1, 1);
	size_t nh = 0, ne = 0;
	int r = -ENOMEM;

	ov->ext = malloc((2 * n + 1) * sizeof(*ov->ext));
	ov->n = 0;
	if (!ev || !heap || !gone || !ov->ext)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (it[i].end == it[i].off)
			continue;
		ev[ne++] = (struct ov_event){it[i].off, (uint32_t)i, true};
		ev[ne++] = (struct ov_event){it[i].end, (uint32_t)i, false};
	}
	qsort(ev, ne, sizeof(*ev), event_cmp);
	for (size_t i = 0; i < ne;) {
		uint64_t p = ev[i].pos;

		for (; i < ne && ev[i].pos == p; i++) {
			if (ev[i].start)
				heap_push(heap, &nh, ev[i].idx);
			else
				gone[ev[i].idx] = true;
		}
		while (nh && gone[heap[0]])
			heap_pop(heap, &nh);
		if (!nh || i == ne)
			continue;
		{
			const struct ov_item *w = &it[heap[0]];
			uint64_t q = ev[i].pos;
			const uint8_t *d = w->data ? w->data + (p - w->off) : NULL;
			struct vhdx_extent *last = ov->n ? &ov->ext[ov->n - 1] : NULL;

			if (last && last->off + last->len == p &&
			    ((!d && !last->data) ||
			     (d && last->data && last->data + last->len == d)))
				last->len += q - p;
			else
				ov->ext[ov->n++] = (struct vhdx_extent){p, q - p, d};
		}
	}
	r = 0;
out:
	free(ev);
	free(heap);
	free(gone);
	return r;
}

/* Turns the active sequence into overlay items; data sectors are rebuilt
 * (2.3.1.4: bytes 0-7 and 4092-4095 come from the descriptor) into
 * ov->store. Returns 0 or -ENOMEM. */
static int sequence_apply(const struct log_scan *s, const struct log_seq *q,
			  struct vhdx_overlay *ov, struct vhdx_log_info *info)
{
	size_t n_items = 0, n_data = 0, k = 0, di = 0;
	struct ov_item *it;
	int r;

	for (size_t i = 0; i < q->n; i++) {
		const struct vhdx_log_entry *e = &s->ent[q->pos[i] / VHDX_LOG_SECTOR];
		const uint8_t *b = s->ring + q->pos[i];
		n_items += e->n_desc;
		for (uint32_t j = 0; j < e->n_desc; j++)
			n_data +=
			    !memcmp(b + VHDX_LOG_HDR_SIZE + j * VHDX_LOG_DESC_SIZE, "desc", 4);
	}
	it = malloc((n_items + 1) * sizeof(*it));
	ov->store = malloc(n_data ? n_data * VHDX_LOG_SECTOR : 1);
	if (!it || !ov->store) {
		free(it);
		return -ENOMEM;
	}
	for (size_t i = 0; i < q->n; i++) {
		const struct vhdx_log_entry *e = &s->ent[q->pos[i] / VHDX_LOG_SECTOR];
		const uint8_t *b = s->ring + q->pos[i];
		uint64_t dsec = desc_sectors(e->n_desc), data = 0;

		for (uint32_t j = 0; j < e->n_desc; j++) {
			const uint8_t *d = b + VHDX_LOG_HDR_SIZE + j * VHDX_LOG_DESC_SIZE;
			uint64_t off = vd_get_le64(d + 16);

			if (!memcmp(d, "zero", 4)) {
				it[k++] = (struct ov_item){off, off + vd_get_le64(d + 8), NULL};
				info->zero_desc++;
				continue;
			}
			uint8_t *o = ov->store + di * VHDX_LOG_SECTOR;
			const uint8_t *sec = b + (dsec + data) * VHDX_LOG_SECTOR;
			memcpy(o, d + 8, 8);	      /* LeadingBytes */
			memcpy(o + 8, sec + 8, 4084); /* Data */
			memcpy(o + 4092, d + 4, 4);   /* TrailingBytes */
			it[k++] = (struct ov_item){off, off + VHDX_LOG_SECTOR, o};
			di++;
			data++;
			info->data_desc++;
		}
	}
	r = overlay_build(it, k, ov);
	for (size_t i = 0; r == 0 && i < k; i++)
		if (it[i].end > ov->file_end)
			ov->file_end = it[i].end;
	free(it);
	return r;
}

int vhdx_log_replay(struct vd_image *img, const struct vhdx_header *h, struct vhdx_overlay *ov,
		    struct vhdx_log_info *info, char *why, size_t why_len)
{
	struct log_scan s = {.len = h->log_length, .guid = h->log_guid};
	struct log_seq q = {0};
	uint8_t *ring = NULL;
	int r;

	memset(ov, 0, sizeof(*ov));
	info->dirty = true;
	if (h->log_length > VHDX_MAX_LOG) {
		snprintf(why, why_len,
			 "log of %" PRIu32 " bytes is larger than the %u MiB we replay",
			 h->log_length, VHDX_MAX_LOG >> 20);
		return -ENOTSUP;
	}
	ring = malloc(2 * (size_t)h->log_length);
	s.memo = calloc(h->log_length / VHDX_LOG_SECTOR, 1);
	s.ent = malloc(h->log_length / VHDX_LOG_SECTOR * sizeof(*s.ent));
	if (!ring || !s.memo || !s.ent) {
		r = -ENOMEM;
		goto out;
	}
	r = vd_pread_full(img->fd, ring, h->log_length, h->log_offset);
	if (r < 0) {
		snprintf(why, why_len, "cannot read the log: %s", strerror(-r));
		goto out;
	}
	memcpy(ring + h->log_length, ring, h->log_length);
	s.ring = ring;
	r = scan_log(&s, &q);
	if (r < 0)
		goto out;
	if (q.n == 0) {
		if (s.first_why)
			snprintf(why, why_len,
				 "log needs replay but has no valid entry sequence (entry at log "
				 "offset %" PRIu64 ": %s)",
				 s.first_bad, s.first_why);
		else
			snprintf(why, why_len,
				 "log needs replay (LogGuid set) but holds no log entry");
		r = -EINVAL;
		goto out;
	}
	{
		const struct vhdx_log_entry *head = &s.ent[q.pos[q.n - 1] / VHDX_LOG_SECTOR];
		/* 2.3.3: a file shorter than FlushedFileOffset was truncated. */
		if (img->file_size < head->flushed) {
			snprintf(why, why_len,
				 "file truncated: %" PRIu64
				 " bytes, the log says at least %" PRIu64,
				 img->file_size, head->flushed);
			r = -EINVAL;
			goto out;
		}
		ov->file_end = head->last > img->file_size ? head->last : img->file_size;
		info->head_seq = head->seq;
		info->tail_seq = s.ent[q.pos[0] / VHDX_LOG_SECTOR].seq;
	}
	info->entries = (uint32_t)q.n;
	r = sequence_apply(&s, &q, ov, info);
	if (r == 0)
		info->replayed = true;
out:
	if (r == -ENOMEM)
		snprintf(why, why_len, "out of memory replaying the log");
	if (r < 0)
		vhdx_overlay_free(ov);
	free(q.pos);
	free(ring);
	free(s.memo);
	free(s.ent);
	return r;
}

void vhdx_overlay_free(struct vhdx_overlay *ov)
{
	free(ov->ext);
	free(ov->store);
	memset(ov, 0, sizeof(*ov));
}

/* Index of the first extent ending after off. */
static size_t overlay_first(const struct vhdx_overlay *ov, uint64_t off)
{
	size_t lo = 0, hi = ov->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ov->ext[mid].off + ov->ext[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool vhdx_overlay_touches(const struct vhdx_overlay *ov, uint64_t file_size, uint64_t off,
			  uint64_t len)
{
	size_t i;

	if (off + len > file_size) /* off, len bounded by the BAT checks: no overflow */
		return true;
	i = overlay_first(ov, off);
	return i < ov->n && ov->ext[i].off < off + len;
}

int vhdx_file_read(int fd, uint64_t file_size, const struct vhdx_overlay *ov, void *buf, size_t len,
		   uint64_t off)
{
	uint8_t *p = buf;
	uint64_t end, limit = ov->file_end > file_size ? ov->file_end : file_size;
	int r;

	if (vd_add_ovf(off, len, &end) || end > limit)
		return -EIO;
	if (off < file_size) {
		size_t n = (size_t)(vd_min_u64(end, file_size) - off);
		r = vd_pread_full(fd, p, n, off);
		if (r < 0)
			return r;
		if (n < len)
			memset(p + n, 0, len - n);
	} else {
		memset(p, 0, len);
	}
	for (size_t i = overlay_first(ov, off); i < ov->n && ov->ext[i].off < end; i++) {
		const struct vhdx_extent *x = &ov->ext[i];
		uint64_t a = x->off > off ? x->off : off;
		uint64_t b = vd_min_u64(x->off + x->len, end);

		if (x->data)
			memcpy(p + (a - off), x->data + (a - x->off), (size_t)(b - a));
		else
			memset(p + (a - off), 0, (size_t)(b - a));
	}
	return 0;
}

size_t vhdx_log_entry_size(uint32_t n)
{
	return (size_t)(desc_sectors(n) + n) * VHDX_LOG_SECTOR;
}

uint32_t vhdx_log_entry_max_desc(uint32_t bytes)
{
	uint32_t n = bytes / VHDX_LOG_SECTOR;

	while (n && vhdx_log_entry_size(n) > bytes)
		n--;
	return n;
}

void vhdx_log_entry_encode(const struct vhdx_log_entry *h, const uint64_t *off,
			   const uint8_t *const *data, uint8_t *out)
{
	uint64_t dsec = desc_sectors(h->n_desc);
	size_t len = vhdx_log_entry_size(h->n_desc);

	memset(out, 0, dsec * VHDX_LOG_SECTOR);
	memcpy(out + VHDX_LOG_ENTRY_SIG, "loge", 4);
	vd_put_le32(out + VHDX_LOG_ENTRY_LENGTH, (uint32_t)len);
	vd_put_le32(out + VHDX_LOG_ENTRY_TAIL, h->tail);
	vd_put_le64(out + VHDX_LOG_ENTRY_SEQ, h->seq);
	vd_put_le32(out + VHDX_LOG_ENTRY_DESCS, h->n_desc);
	memcpy(out + VHDX_LOG_ENTRY_GUID, h->log_guid, 16);
	vd_put_le64(out + VHDX_LOG_ENTRY_FLUSHED, h->flushed);
	vd_put_le64(out + VHDX_LOG_ENTRY_LAST, h->last);
	for (uint32_t i = 0; i < h->n_desc; i++) {
		uint8_t *d = out + VHDX_LOG_HDR_SIZE + (size_t)i * VHDX_LOG_DESC_SIZE;
		uint8_t *s = out + (dsec + i) * VHDX_LOG_SECTOR;

		/* 2.3.1.3, 2.3.1.4: the sector's first 8 and last 4 bytes travel
		 * in the descriptor; the data sector carries the split number. */
		memcpy(d, "desc", 4);
		memcpy(d + 4, data[i] + 4092, 4);
		memcpy(d + 8, data[i], 8);
		vd_put_le64(d + 16, off[i]);
		vd_put_le64(d + 24, h->seq);
		memcpy(s, "data", 4);
		vd_put_le32(s + 4, (uint32_t)(h->seq >> 32));
		memcpy(s + 8, data[i] + 8, 4084);
		vd_put_le32(s + 4092, (uint32_t)h->seq);
	}
	vd_put_le32(out + VHDX_LOG_ENTRY_CHECKSUM,
		    vhdx_checksum(out, len, VHDX_LOG_ENTRY_CHECKSUM));
}
