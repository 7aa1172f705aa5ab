/* VHDX test image writer and exact model, shared by the mkvhdx generator
 * and the unit tests (header-only: each generator is its own executable).
 * qemu-img can write neither differencing VHDX nor a pending log, so the
 * tests make their own; they are checked against this model, and the
 * writer's layout against qemu-img and the corpus's real images.
 *
 * Model of one layer: per payload block a [MS-VHDX] 2.5.1.1 state, per
 * logical sector "held here" (PARTIALLY_PRESENT uses it as the bitmap), and
 * the layer's bytes. vxg_view() turns the view from below (the parent's
 * model, or zeros) into this layer's view, exactly as a reader must.
 *
 * File layout (all 1 MiB aligned, 2.1): header section; log @1 MiB
 * (1 MiB); BAT @2 MiB; metadata region (1 MiB); then payload and sector
 * bitmap blocks in a seeded shuffled order, so file order differs from
 * virtual order. A pending log (--log) moves the final content of some BAT
 * and bitmap sectors into log entries and leaves stale bytes in place: a
 * reader that does not replay the log reads the wrong disk. */
#ifndef VD_VHDX_GEN_H
#define VD_VHDX_GEN_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/text.h"
#include "disk/vhd.h"
#include "disk/vhdx.h"

struct vxg_opts {
	uint64_t size;
	uint32_t block, lss, pss;
	bool fixed;	  /* LeaveBlockAllocated, every block FULLY_PRESENT */
	bool diff;	  /* HasParent: parent locator below */
	uint64_t seed;	  /* GUIDs and layout shuffle */
	char linkage[40]; /* "{guid}" of the parent's DataWriteGuid */
	char linkage2[40];
	const char *relative_path, *volume_path, *absolute_path; /* UTF-8, NULL = absent */
	bool pending_log;					 /* see the top of the file */
	bool corrupt_log; /* with pending_log: metadata in place stays current and every log
			     entry's CRC is broken (a log that cannot be replayed) */
	int bad_header;	  /* 1 or 2: that header gets a bad checksum */
	bool old_headers; /* header 2 current (higher sequence number) unless this is set */
};

struct vxg_layer {
	struct vxg_opts o;
	uint64_t blocks, spb, sectors, chunk_ratio, sb_blocks, bat_entries;
	uint8_t *state; /* per block */
	uint8_t *held;	/* per logical sector: 1 = this layer holds it */
	uint8_t *data;	/* size bytes */
	uint8_t data_write[16], file_write[16], page83[16], log_guid[16];
	/* where the writer put things (for tests that poke fields) */
	uint64_t bat_off, bat_len, meta_off, log_off, log_len, file_size;
	uint64_t *bat; /* the final BAT, bat_entries */
};

static inline uint64_t vxg_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static inline void vxg_guid(uint64_t *s, uint8_t g[16])
{
	vd_put_le64(g, vxg_rand(s));
	vd_put_le64(g + 8, vxg_rand(s));
	g[7] = (uint8_t)((g[7] & 0x0F) | 0x40); /* version 4 */
	g[8] = (uint8_t)((g[8] & 0x3F) | 0x80);
}

/* "{xxxxxxxx-...}" of an on-disk GUID, lower case (2.6.2.6.3). */
static inline void vxg_guid_text(const uint8_t raw[16], char out[40])
{
	struct vd_id id;
	char b[37];

	vhdx_guid_to_id(raw, &id);
	snprintf(out, 40, "{%s}", vd_id_format(&id, b));
}

static inline int vxg_init(struct vxg_layer *l, const struct vxg_opts *o)
{
	uint64_t s = o->seed * 7919 + 17;

	memset(l, 0, sizeof(*l));
	l->o = *o;
	if (!o->lss)
		l->o.lss = 512;
	if (!o->pss)
		l->o.pss = 4096;
	if (!o->block)
		l->o.block = 2u << 20;
	if (!o->size || o->size % l->o.lss)
		return -EINVAL;
	l->spb = l->o.block / l->o.lss;
	l->sectors = o->size / l->o.lss;
	l->blocks = (o->size + l->o.block - 1) / l->o.block;
	l->chunk_ratio = (1ull << 23) * l->o.lss / l->o.block;
	l->sb_blocks = (l->blocks + l->chunk_ratio - 1) / l->chunk_ratio;
	l->bat_entries = o->diff ? l->sb_blocks * (l->chunk_ratio + 1)
				 : l->blocks + (l->blocks - 1) / l->chunk_ratio;
	l->state = calloc(l->blocks, 1);
	l->held = calloc(l->sectors, 1);
	l->data = calloc(o->size, 1);
	if (!l->state || !l->held || !l->data)
		return -ENOMEM;
	vxg_guid(&s, l->data_write);
	vxg_guid(&s, l->file_write);
	vxg_guid(&s, l->page83);
	vxg_guid(&s, l->log_guid);
	if (o->fixed)
		memset(l->state, VHDX_PAYLOAD_FULLY_PRESENT, l->blocks);
	return 0;
}

static inline void vxg_free(struct vxg_layer *l)
{
	free(l->state);
	free(l->held);
	free(l->data);
	free(l->bat);
	memset(l, 0, sizeof(*l));
}

/* Writes n sectors at sector s with data drawn from seed. A base block
 * becomes FULLY_PRESENT (its other sectors read as zeros); a differencing
 * block PARTIALLY_PRESENT, or FULLY_PRESENT once every sector is held. */
static inline void vxg_write(struct vxg_layer *l, uint64_t s, uint64_t n, uint64_t seed)
{
	for (uint64_t i = s; i < s + n && i < l->sectors; i++) {
		uint64_t b = i / l->spb, z = seed ^ (i * 0x9E3779B97F4A7C15ull);
		uint8_t *p = l->data + i * l->o.lss;

		if (l->state[b] != VHDX_PAYLOAD_FULLY_PRESENT &&
		    l->state[b] != VHDX_PAYLOAD_PARTIALLY_PRESENT) {
			/* a block becoming allocated: its other sectors are zeros */
			uint64_t a = b * l->spb,
				 e = a + l->spb < l->sectors ? a + l->spb : l->sectors;
			memset(l->data + a * l->o.lss, 0, (e - a) * l->o.lss);
			memset(l->held + a, !l->o.diff, e - a);
			l->state[b] =
			    l->o.diff ? VHDX_PAYLOAD_PARTIALLY_PRESENT : VHDX_PAYLOAD_FULLY_PRESENT;
		}
		for (uint32_t k = 0; k < l->o.lss; k += 8)
			vd_put_le64(p + k, vxg_rand(&z));
		l->held[i] = 1;
	}
	for (uint64_t b = s / l->spb; b <= (s + n - 1) / l->spb && b < l->blocks; b++) {
		uint64_t a = b * l->spb, e = a + l->spb, k;
		if (l->state[b] != VHDX_PAYLOAD_PARTIALLY_PRESENT)
			continue;
		for (k = a; k < e && k < l->sectors && l->held[k]; k++)
			;
		if (k == e) /* a whole (not tail) block written: fully present */
			l->state[b] = VHDX_PAYLOAD_FULLY_PRESENT;
	}
}

/* Sets block b to ZERO, UNMAPPED or UNDEFINED (all read as zeros here). */
static inline void vxg_set_state(struct vxg_layer *l, uint64_t b, uint8_t state)
{
	uint64_t a = b * l->spb, e = a + l->spb < l->sectors ? a + l->spb : l->sectors;

	l->state[b] = state;
	memset(l->data + a * l->o.lss, 0, (e - a) * l->o.lss);
	for (uint64_t k = a; k < e; k++)
		l->held[k] = 0;
}

/* Applies this layer to view (size bytes: the disk as seen from below). */
static inline void vxg_view(const struct vxg_layer *l, uint8_t *view)
{
	for (uint64_t b = 0; b < l->blocks; b++) {
		uint64_t a = b * l->spb, e = a + l->spb < l->sectors ? a + l->spb : l->sectors;
		uint8_t st = l->state[b];

		if (st == VHDX_PAYLOAD_NOT_PRESENT)
			continue;
		if (st == VHDX_PAYLOAD_FULLY_PRESENT) {
			memcpy(view + a * l->o.lss, l->data + a * l->o.lss, (e - a) * l->o.lss);
		} else if (st == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
			for (uint64_t k = a; k < e; k++)
				if (l->held[k])
					memcpy(view + k * l->o.lss, l->data + k * l->o.lss,
					       l->o.lss);
		} else {
			memset(view + a * l->o.lss, 0, (e - a) * l->o.lss);
		}
	}
}

/* Random writes (short runs ending mid-bitmap-byte, whole blocks, runs
 * across block boundaries) and n_zero blocks set to ZERO/UNMAPPED/UNDEFINED. */
static inline void vxg_random(struct vxg_layer *l, uint64_t seed, unsigned n_writes,
			      uint64_t max_len, unsigned n_zero)
{
	static const uint8_t zs[] = {VHDX_PAYLOAD_ZERO, VHDX_PAYLOAD_UNMAPPED,
				     VHDX_PAYLOAD_UNDEFINED};
	uint64_t s = seed * 0x100000001B3ull + 1;

	for (unsigned w = 0; w < n_writes; w++) {
		uint64_t kind = vxg_rand(&s) % 4, off, len;
		if (kind == 0) {
			off = vxg_rand(&s) % l->blocks * l->spb;
			len = l->spb;
		} else if (kind == 1) {
			uint64_t b = 1 + vxg_rand(&s) % l->blocks,
				 back = 1 + vxg_rand(&s) % max_len;
			off = b * l->spb > back ? b * l->spb - back : 0;
			len = 1 + vxg_rand(&s) % max_len;
		} else {
			off = vxg_rand(&s) % l->sectors;
			len = 1 + vxg_rand(&s) % max_len;
		}
		if (off >= l->sectors)
			off = l->sectors - 1;
		if (len > l->sectors - off)
			len = l->sectors - off;
		vxg_write(l, off, len, vxg_rand(&s));
	}
	for (unsigned z = 0; z < n_zero; z++)
		vxg_set_state(l, vxg_rand(&s) % l->blocks, zs[z % 3]);
}

static inline int vxg_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	return vd_pwrite_full(fd, buf, len, off);
}

/* Writes buf as the whole file path (tests poking copies). Returns 0 or -errno. */
static inline int vxg_file_put(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), r;

	if (fd < 0)
		return -errno;
	r = vd_pwrite_full(fd, buf, len, 0);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* UTF-16LE of s at p; returns bytes written. */
static inline size_t vxg_utf16(const char *s, uint8_t *p, size_t cap)
{
	long n = vd_utf8_to_utf16(s, false, p, cap);

	return n < 0 ? 0 : (size_t)n;
}

/* The metadata region (1 MiB) of l into buf. */
static inline void vxg_metadata(const struct vxg_layer *l, uint8_t *buf)
{
	const uint8_t *guids[] = {vhdx_guid_file_params, vhdx_guid_disk_size, vhdx_guid_page83,
				  vhdx_guid_logical,	 vhdx_guid_physical,  vhdx_guid_locator};
	uint32_t offs[] = {65536, 65544, 65552, 65568, 65572, 69632}, lens[] = {8, 8, 16, 4, 4, 0};
	uint32_t flags[] = {4, 6, 6, 6, 6, 4};
	unsigned n = l->o.diff ? 6 : 5;
	uint8_t *loc = buf + offs[5];

	memset(buf, 0, VHDX_MiB);
	memcpy(buf, "metadata", 8);
	vd_put_le16(buf + VHDX_MT_COUNT, (uint16_t)n);
	vd_put_le32(buf + offs[0], l->o.block);
	vd_put_le32(buf + offs[0] + 4, (l->o.fixed ? VHDX_PARAM_LEAVE_ALLOCATED : 0) |
					   (l->o.diff ? VHDX_PARAM_HAS_PARENT : 0));
	vd_put_le64(buf + offs[1], l->o.size);
	memcpy(buf + offs[2], l->page83, 16);
	vd_put_le32(buf + offs[3], l->o.lss);
	vd_put_le32(buf + offs[4], l->o.pss);
	if (l->o.diff) {
		const char *keys[] = {"parent_linkage", "parent_linkage2", "relative_path",
				      "volume_path", "absolute_win32_path"};
		const char *vals[] = {l->o.linkage, l->o.linkage2[0] ? l->o.linkage2 : NULL,
				      l->o.relative_path, l->o.volume_path, l->o.absolute_path};
		uint16_t cnt = 0;
		uint32_t pos = 20 + 5 * 12;

		memcpy(loc, vhdx_guid_locator_vhdx, 16);
		for (int k = 0; k < 5; k++) {
			size_t kl, vl;
			if (!vals[k])
				continue;
			kl = vxg_utf16(keys[k], loc + pos, 4096);
			vd_put_le32(loc + 20 + cnt * 12, pos);
			pos += (uint32_t)kl;
			vl = vxg_utf16(vals[k], loc + pos, 8192);
			vd_put_le32(loc + 20 + cnt * 12 + 4, pos);
			vd_put_le16(loc + 20 + cnt * 12 + 8, (uint16_t)kl);
			vd_put_le16(loc + 20 + cnt * 12 + 10, (uint16_t)vl);
			pos += (uint32_t)vl;
			cnt++;
		}
		vd_put_le16(loc + 18, cnt);
		lens[5] = pos;
	}
	for (unsigned k = 0; k < n; k++) {
		uint8_t *e = buf + VHDX_MT_ENTRIES + k * VHDX_MT_ENTRY_SIZE;
		memcpy(e, guids[k], 16);
		vd_put_le32(e + 16, offs[k]);
		vd_put_le32(e + 20, lens[k]);
		vd_put_le32(e + 24, flags[k]);
	}
}

/* A log entry of n descriptors (targets off[i], 4 KiB of data[i] each,
 * NULL data = a 4 KiB zero descriptor) into out (cap bytes); returns its
 * length. */
static inline uint32_t vxg_log_entry(const struct vxg_layer *l, uint8_t *out, uint64_t seq,
				     uint32_t tail, unsigned n, const uint64_t *off,
				     const uint8_t *const *data, const uint8_t guid[16])
{
	uint32_t dsec = (uint32_t)((64 + 32 * n + 4095) / 4096), nd = 0, len;

	for (unsigned i = 0; i < n; i++)
		nd += data[i] != NULL;
	len = (dsec + nd) * 4096;
	memset(out, 0, len);
	memcpy(out, "loge", 4);
	vd_put_le32(out + VHDX_LOG_ENTRY_LENGTH, len);
	vd_put_le32(out + VHDX_LOG_ENTRY_TAIL, tail);
	vd_put_le64(out + VHDX_LOG_ENTRY_SEQ, seq);
	vd_put_le32(out + VHDX_LOG_ENTRY_DESCS, n);
	memcpy(out + VHDX_LOG_ENTRY_GUID, guid, 16);
	vd_put_le64(out + VHDX_LOG_ENTRY_FLUSHED, l->file_size);
	vd_put_le64(out + VHDX_LOG_ENTRY_LAST, l->file_size);
	nd = 0;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *d = out + 64 + 32 * i;
		if (!data[i]) {
			memcpy(d, "zero", 4);
			vd_put_le64(d + 8, 4096);
		} else {
			uint8_t *s = out + (dsec + nd++) * 4096;
			memcpy(d, "desc", 4);
			memcpy(d + 4, data[i] + 4092, 4);
			memcpy(d + 8, data[i], 8);
			memcpy(s, "data", 4);
			vd_put_le32(s + 4, (uint32_t)(seq >> 32));
			memcpy(s + 8, data[i] + 8, 4084);
			vd_put_le32(s + 4092, (uint32_t)seq);
		}
		vd_put_le64(d + 16, off[i]);
		vd_put_le64(d + 24, seq);
	}
	vd_put_le32(out + VHDX_LOG_ENTRY_CHECKSUM,
		    vhdx_checksum(out, len, VHDX_LOG_ENTRY_CHECKSUM));
	return len;
}

/* A pending log over the BAT (and bitmaps): the final content of up to 40
 * non-zero 4 KiB sectors goes into entries of 1-3 descriptors, placed
 * consecutively from a random 4 KiB offset of the ring (so the sequence may
 * wrap); the sectors on disk are zeroed (stale); one sector is first logged
 * with junk and later with its real content (later wins); a zero descriptor
 * clears 4 KiB of payload left full of junk (the spec keeps payload out of
 * the log, but a reader applies what the log says, 2.3.3); an older
 * sequence with junk, an entry with a foreign LogGuid and a torn entry
 * after the head must all be ignored. */
struct vxg_region {
	uint8_t *img;
	uint64_t base, len;
};

static inline int vxg_log_write(struct vxg_layer *l, int fd, const struct vxg_region *rg,
				unsigned n_rg)
{
	uint64_t s = l->o.seed * 31 + 5, offs[48], seq = 1000 + vxg_rand(&s) % 1000;
	const uint8_t *datas[48];
	uint8_t *ring = calloc(1, l->log_len), *ent = malloc(1u << 20), junk[4096];
	uint64_t zoff = 0;
	unsigned n = 0;
	uint32_t pos, tail, used = 0;
	int r = -ENOMEM;

	if (!ring || !ent)
		goto out;
	memset(junk, 0xA5, sizeof(junk));
	for (unsigned g = 0; g < n_rg; g++)
		for (uint64_t o = 0; o < rg[g].len && n < 40; o += 4096)
			if (!vd_mem_is_zero(rg[g].img + o, 4096) && vxg_rand(&s) % 3) {
				offs[n] = rg[g].base + o;
				datas[n++] = rg[g].img + o;
			}
	if (n == 0) {
		r = 0;
		goto out;
	}
	/* the zero descriptor's target: the first 4 KiB of the first allocated
	 * payload block, junk in the file, zeros in the model */
	for (uint64_t b = 0; b < l->blocks && !zoff; b++) {
		uint64_t e = l->bat[b + b / l->chunk_ratio], a = b * l->spb;
		if ((e & 7) != VHDX_PAYLOAD_FULLY_PRESENT &&
		    (e & 7) != VHDX_PAYLOAD_PARTIALLY_PRESENT)
			continue;
		zoff = e & VHDX_BAT_OFFSET_MASK;
		for (uint64_t k = a; k < a + 4096 / l->o.lss && k < l->sectors && !l->o.corrupt_log;
		     k++)
			memset(l->data + k * l->o.lss, 0, l->o.lss);
	}
	pos = (uint32_t)(vxg_rand(&s) % (l->log_len / 4096)) * 4096;
	tail = pos;
	/* stale sequence elsewhere (lower numbers): junk over the first target */
	{
		uint64_t o1 = offs[0];
		const uint8_t *j1 = junk;
		uint32_t opos = (pos + l->log_len / 2) % (uint32_t)l->log_len;
		uint32_t len = vxg_log_entry(l, ent, seq - 10, opos, 1, &o1, &j1, l->log_guid);
		for (uint32_t k = 0; k < len; k++)
			ring[(opos + k) % l->log_len] = ent[k];
	}
	/* junk first, real content later */
	{
		uint64_t o1 = offs[0];
		const uint8_t *j1 = junk;
		uint32_t len = vxg_log_entry(l, ent, seq, tail, 1, &o1, &j1, l->log_guid);
		for (uint32_t k = 0; k < len; k++)
			ring[(pos + used + k) % l->log_len] = ent[k];
		used += len;
		seq++;
	}
	for (unsigned i = 0; i < n;) {
		unsigned k = 1 + (unsigned)(vxg_rand(&s) % 3);
		uint64_t o[4];
		const uint8_t *d[4];
		unsigned m = 0;
		uint32_t len;

		for (; m < k && i < n; m++, i++) {
			o[m] = offs[i];
			d[m] = datas[i];
		}
		if (i == n && zoff) {
			o[m] = zoff;
			d[m++] = NULL;
		}
		len = vxg_log_entry(l, ent, seq++, tail, m, o, d, l->log_guid);
		for (uint32_t b = 0; b < len; b++)
			ring[(pos + used + b) % l->log_len] = ent[b];
		used += len;
	}
	/* after the head: a torn entry (bad CRC) numbered head + 1 */
	{
		uint64_t o1 = offs[0];
		const uint8_t *j1 = junk;
		uint32_t len = vxg_log_entry(l, ent, seq, tail, 1, &o1, &j1, l->log_guid);
		ent[100] ^= 1;
		for (uint32_t b = 0; b < len; b++)
			ring[(pos + used + b) % l->log_len] = ent[b];
		used += len;
	}
	/* a foreign LogGuid entry, higher number, right after */
	{
		uint8_t g[16];
		uint64_t o1 = offs[0], gs = s;
		const uint8_t *j1 = junk;
		uint32_t len;
		vxg_guid(&gs, g);
		len = vxg_log_entry(l, ent, seq + 5, (pos + used) % (uint32_t)l->log_len, 1, &o1,
				    &j1, g);
		for (uint32_t b = 0; b < len; b++)
			ring[(pos + used + b) % l->log_len] = ent[b];
	}
	if (l->o.corrupt_log) {
		for (uint64_t k = 0; k < l->log_len; k += 4096)
			if (!memcmp(ring + k, "loge", 4))
				ring[k + 200] ^= 0x99;
		r = vxg_pwrite(fd, ring, l->log_len, l->log_off);
		goto out;
	}
	/* stale on-disk content: the logged sectors are zeroed */
	for (unsigned i = 0; i < n; i++)
		memset((uint8_t *)datas[i], 0, 4096);
	r = vxg_pwrite(fd, ring, l->log_len, l->log_off);
	if (r == 0 && zoff)
		r = vxg_pwrite(fd, junk, 4096, zoff);
out:
	free(ring);
	free(ent);
	return r;
}

/* Writes the layer as a VHDX file at path. Returns 0 or -errno. */
static inline int vxg_file_write(struct vxg_layer *l, const char *path)
{
	uint64_t s = l->o.seed * 104729 + 3, next, *order = NULL, n_alloc = 0;
	uint8_t *hdr = calloc(1, 65536), *meta = malloc(VHDX_MiB), *batimg = NULL;
	uint8_t *sb = NULL;
	int fd = -1, r = -ENOMEM;

	l->log_off = VHDX_MiB;
	l->log_len = VHDX_MiB;
	l->bat_off = 2 * VHDX_MiB;
	l->bat_len = vd_round_up(l->bat_entries * 8, VHDX_MiB);
	l->meta_off = l->bat_off + l->bat_len;
	next = l->meta_off + VHDX_MiB;
	l->bat = calloc(l->bat_entries, 8);
	batimg = calloc(1, l->bat_len);
	order = malloc((l->blocks + l->sb_blocks) * sizeof(*order));
	sb = calloc(l->sb_blocks ? l->sb_blocks : 1, VHDX_MiB);
	if (!hdr || !meta || !l->bat || !batimg || !order || !sb)
		goto out;
	/* allocation order: payload blocks (index b) and bitmaps (blocks + c) */
	for (uint64_t b = 0; b < l->blocks; b++)
		if (l->state[b] == VHDX_PAYLOAD_FULLY_PRESENT ||
		    l->state[b] == VHDX_PAYLOAD_PARTIALLY_PRESENT)
			order[n_alloc++] = b;
	for (uint64_t c = 0; l->o.diff && c < l->sb_blocks; c++) {
		bool need = false;
		for (uint64_t b = c * l->chunk_ratio; b < (c + 1) * l->chunk_ratio && b < l->blocks;
		     b++)
			need |= l->state[b] == VHDX_PAYLOAD_PARTIALLY_PRESENT;
		if (need)
			order[n_alloc++] = l->blocks + c;
	}
	if (!l->o.fixed)
		for (uint64_t i = n_alloc; i > 1; i--) {
			uint64_t j = vxg_rand(&s) % i, t = order[i - 1];
			order[i - 1] = order[j];
			order[j] = t;
		}
	for (uint64_t b = 0; b < l->blocks; b++)
		l->bat[b + b / l->chunk_ratio] = l->state[b];
	for (uint64_t i = 0; i < n_alloc; i++) {
		uint64_t x = order[i];
		if (x < l->blocks) {
			l->bat[x + x / l->chunk_ratio] = next | l->state[x];
			next += l->o.block;
		} else {
			uint64_t c = x - l->blocks;
			l->bat[c * (l->chunk_ratio + 1) + l->chunk_ratio] = next | VHDX_SB_PRESENT;
			next += VHDX_MiB;
		}
	}
	l->file_size = next;
	for (uint64_t i = 0; i < l->bat_entries; i++)
		vd_put_le64(batimg + 8 * i, l->bat[i]);
	/* sector bitmaps (2.4: LSB-first, one bit per logical sector) */
	for (uint64_t k = 0; l->o.diff && k < l->sectors; k++) {
		uint64_t b = k / l->spb;
		if (l->state[b] == VHDX_PAYLOAD_PARTIALLY_PRESENT && l->held[k]) {
			uint64_t c = b / l->chunk_ratio, bit = k - c * l->chunk_ratio * l->spb;
			sb[c * VHDX_MiB + bit / 8] |= (uint8_t)(1u << (bit % 8));
		}
	}
	vxg_metadata(l, meta);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (ftruncate(fd, (off_t)l->file_size) < 0) {
		r = -errno;
		goto out;
	}
	/* payload data (only the sectors held: the rest stays a hole = zeros) */
	for (uint64_t b = 0; b < l->blocks; b++) {
		uint64_t e = l->bat[b + b / l->chunk_ratio], a = b * l->spb;
		if ((e & 7) != VHDX_PAYLOAD_FULLY_PRESENT &&
		    (e & 7) != VHDX_PAYLOAD_PARTIALLY_PRESENT)
			continue;
		for (uint64_t k = a; k < a + l->spb && k < l->sectors;) {
			uint64_t j = k;
			while (j < a + l->spb && j < l->sectors && l->held[j])
				j++;
			if (j > k) {
				r = vxg_pwrite(fd, l->data + k * l->o.lss, (j - k) * l->o.lss,
					       (e & VHDX_BAT_OFFSET_MASK) + (k - a) * l->o.lss);
				if (r < 0)
					goto out;
			}
			k = j + 1;
		}
	}
	if (l->o.pending_log) {
		struct vxg_region rg[2 + 64];
		unsigned n_rg = 0;
		rg[n_rg++] = (struct vxg_region){meta, l->meta_off, VHDX_MiB};
		rg[n_rg++] = (struct vxg_region){batimg, l->bat_off, l->bat_len};
		for (uint64_t c = 0; l->o.diff && c < l->sb_blocks && n_rg < 66; c++) {
			uint64_t e = l->bat[c * (l->chunk_ratio + 1) + l->chunk_ratio];
			if ((e & 7) == VHDX_SB_PRESENT)
				rg[n_rg++] = (struct vxg_region){
				    sb + c * VHDX_MiB, e & VHDX_BAT_OFFSET_MASK, VHDX_MiB};
		}
		r = vxg_log_write(l, fd, rg, n_rg);
		if (r < 0)
			goto out;
	}
	for (uint64_t c = 0; l->o.diff && c < l->sb_blocks; c++) {
		uint64_t e = l->bat[c * (l->chunk_ratio + 1) + l->chunk_ratio];
		if ((e & 7) == VHDX_SB_PRESENT &&
		    (r = vxg_pwrite(fd, sb + c * VHDX_MiB, VHDX_MiB, e & VHDX_BAT_OFFSET_MASK)) < 0)
			goto out;
	}
	if ((r = vxg_pwrite(fd, batimg, l->bat_len, l->bat_off)) < 0 ||
	    (r = vxg_pwrite(fd, meta, VHDX_MiB, l->meta_off)) < 0)
		goto out;
	/* header section: identifier, two headers, two region tables */
	memcpy(hdr, "vhdxfile", 8);
	vxg_utf16("vdmount mkvhdx", hdr + 8, 512);
	if ((r = vxg_pwrite(fd, hdr, 65536, 0)) < 0)
		goto out;
	for (int i = 0; i < 2; i++) {
		struct vhdx_header h = {.seq = 10 + (uint64_t)i,
					.version = 1,
					.log_length = (uint32_t)l->log_len,
					.log_offset = l->log_off};
		if (l->o.old_headers)
			h.seq = 11 - (uint64_t)i;
		memcpy(h.file_write, l->file_write, 16);
		memcpy(h.data_write, l->data_write, 16);
		if (l->o.pending_log)
			memcpy(h.log_guid, l->log_guid, 16);
		memset(hdr, 0, 65536);
		vhdx_header_encode(&h, hdr);
		if (l->o.bad_header == i + 1)
			hdr[200] ^= 0x55;
		if ((r = vxg_pwrite(fd, hdr, 65536, i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF)) < 0)
			goto out;
	}
	memset(hdr, 0, 65536);
	memcpy(hdr, "regi", 4);
	vd_put_le32(hdr + VHDX_RT_COUNT, 2);
	memcpy(hdr + 16, vhdx_guid_bat, 16);
	vd_put_le64(hdr + 32, l->bat_off);
	vd_put_le32(hdr + 40, (uint32_t)l->bat_len);
	vd_put_le32(hdr + 44, 1);
	memcpy(hdr + 48, vhdx_guid_metadata, 16);
	vd_put_le64(hdr + 64, l->meta_off);
	vd_put_le32(hdr + 72, VHDX_MiB);
	vd_put_le32(hdr + 76, 1);
	vd_put_le32(hdr + VHDX_RT_CHECKSUM, vhdx_checksum(hdr, 65536, VHDX_RT_CHECKSUM));
	if ((r = vxg_pwrite(fd, hdr, 65536, VHDX_RT1_OFF)) < 0 ||
	    (r = vxg_pwrite(fd, hdr, 65536, VHDX_RT2_OFF)) < 0)
		goto out;
	r = 0;
out:
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	free(hdr);
	free(meta);
	free(batimg);
	free(order);
	free(sb);
	return r;
}

#endif
