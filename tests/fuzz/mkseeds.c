/* mkseeds: writes the tiny images the fuzz corpora start from, and the same
 * chains as plain files for the unit tests that open every format for real.
 *
 *   mkseeds corpus DIR   DIR/<harness>/<seed> for every harness (what is
 *                        committed in tests/fuzz/corpus); VHD checksums are
 *                        stored as 0, which the harnesses fill in
 *   mkseeds chains DIR   DIR/<chain>/<files>, checksums valid, and
 *                        DIR/chains.txt with one "<chain> <top file>" a line
 *
 * Every image is a few KiB: small grains, few tables, short disks, so that
 * a mutation is likely to land on metadata. The content is deterministic.
 * Layouts follow the writers they imitate (VMware hosted sparse and stream,
 * ESXi COWD and seSparse, Microsoft VHD), shrunk to the minimum the format
 * allows. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "disk/endian.h"
#include "disk/text.h"
#include "disk/part.h"
#include "disk/vhd.h"
#include "fuzz.h"
#include "../tools/vhdx_gen.h"

/* ---- growable buffers ------------------------------------------------- */

struct blob {
	uint8_t *p;
	size_t len;
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("mkseeds: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* Makes b at least len bytes long (new bytes zero). */
static void grow(struct blob *b, size_t len)
{
	if (len <= b->len)
		return;
	b->p = realloc(b->p, len);
	if (!b->p)
		die("out of memory");
	memset(b->p + b->len, 0, len - b->len);
	b->len = len;
}

static void put(struct blob *b, size_t off, const void *src, size_t n)
{
	grow(b, off + n);
	if (n)
		memcpy(b->p + off, src, n);
}

static void pad(struct blob *b, size_t unit)
{
	grow(b, (b->len + unit - 1) / unit * unit);
}

/* Deterministic, compressible-but-not-trivial content for byte off of a disk. */
static void pattern(uint8_t *p, size_t n, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = (off + i) / 64 * 2654435761u + seed * 97u;

		p[i] = (uint8_t)(v >> 7 ^ (off + i) % 7);
	}
}

/* Bytes that deflate cannot shrink (xorshift): it keeps them in stored
 * blocks. */
static void noise(uint8_t *p, size_t n, uint64_t x)
{
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

/* ---- VMDK ----------------------------------------------------------------- */

enum g_state { G_NONE, G_DATA, G_ZERO, G_UNMAP };

static const char *desc_text(const char *cid, const char *parent_cid, const char *type,
			     const char *hint, const char *extents)
{
	static char buf[4096];

	snprintf(buf, sizeof(buf),
		 "# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\ncreateType=\"%s\"\n%s%s%s"
		 "\n# Extent description\n%s\n# The Disk Data Base\n#DDB\n\n"
		 "ddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"1\"\n"
		 "ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n"
		 "ddb.virtualHWVersion = \"4\"\n",
		 cid, parent_cid, type, hint ? "parentFileNameHint=\"" : "", hint ? hint : "",
		 hint ? "\"\n" : "", extents);
	return buf;
}

/* A hosted sparse (KDMV) extent of cap sectors in grains of grain sectors:
 * header, optional embedded descriptor, GD, every GT, then the grains of
 * states[] (G_DATA: a grain, G_ZERO: GTE 1) in order. */
static void kdmv(struct blob *b, uint64_t cap, uint64_t grain, uint32_t version, uint32_t flags,
		 const char *desc, const uint8_t *states, unsigned n_states, unsigned seed)
{
	uint64_t grains = (cap + grain - 1) / grain, n_gt = (grains + 511) / 512;
	uint64_t desc_sec = desc ? (strlen(desc) + 511) / 512 : 0;
	uint64_t gd = 1 + desc_sec, gd_sec = (n_gt * 4 + 511) / 512, gt0 = gd + gd_sec;
	uint64_t overhead = gt0 + n_gt * 4;
	uint8_t h[512] = {0};

	for (unsigned g = 0; g < n_states; g++)
		if (states[g] == G_ZERO)
			flags |= VMDK_FLAG_ZERO_GTE;
	memcpy(h, "KDMV", 4);
	vd_put_le32(h + 4, version);
	vd_put_le32(h + 8, flags | 1); /* newline test */
	vd_put_le64(h + 12, cap);
	vd_put_le64(h + 20, grain);
	vd_put_le64(h + 28, desc ? 1 : 0);
	vd_put_le64(h + 36, desc_sec);
	vd_put_le32(h + 44, 512);
	vd_put_le64(h + 48, (flags & VMDK_FLAG_RGD) ? gd : 0);
	vd_put_le64(h + 56, gd);
	vd_put_le64(h + 64, overhead);
	memcpy(h + 73, "\n \r\n", 4);
	b->len = 0;
	put(b, 0, h, sizeof(h));
	if (desc)
		put(b, 512, desc, strlen(desc));
	grow(b, overhead * 512);
	for (uint64_t i = 0; i < n_gt; i++)
		vd_put_le32(b->p + gd * 512 + i * 4, (uint32_t)(gt0 + i * 4));
	for (unsigned g = 0; g < n_states && g < grains; g++) {
		uint64_t gte_at = (gt0 + g / 512 * 4) * 512 + g % 512 * 4;

		if (states[g] == G_ZERO) {
			vd_put_le32(b->p + gte_at, 1);
		} else if (states[g] == G_DATA) {
			size_t at = b->len;

			grow(b, at + grain * 512);
			pattern(b->p + at, grain * 512, g * grain * 512, seed);
			vd_put_le32(b->p + gte_at, (uint32_t)(at / 512));
		}
	}
}

/* A streamOptimized extent of the disk raw[0, cap*512): VMware layout
 * (footer, GT/GD markers) when footer is set, else no footer and the GD
 * only at the end (readers scan). Zero grains are left out. */
static void stream(struct blob *b, const uint8_t *raw, uint64_t cap, uint64_t grain, bool footer,
		   const char *desc)
{
	uint64_t gb = grain * 512, grains = (cap + grain - 1) / grain, n_gd = (grains + 511) / 512;
	uint64_t gd_sec = (n_gd * 4 + 511) / 512, desc_sec = desc ? (strlen(desc) + 511) / 512 : 0;
	uint64_t overhead = 1 + desc_sec, sec = overhead;
	uint8_t h[512] = {0}, m[512], *gd = calloc(gd_sec, 512), gt[2048];
	uLongf clen;
	uint8_t *cbuf = malloc(compressBound(gb) + 12);

	if (!gd || !cbuf)
		die("out of memory");
	memcpy(h, "KDMV", 4);
	vd_put_le32(h + 4, 3);
	vd_put_le32(h + 8, 0x30001 | VMDK_FLAG_ZERO_GTE);
	vd_put_le64(h + 12, cap);
	vd_put_le64(h + 20, grain);
	vd_put_le64(h + 28, desc ? 1 : 0);
	vd_put_le64(h + 36, desc_sec);
	vd_put_le32(h + 44, 512);
	vd_put_le64(h + 56, VMDK_GD_AT_END);
	vd_put_le64(h + 64, overhead);
	memcpy(h + 73, "\n \r\n", 4);
	vd_put_le16(h + 77, 1);
	b->len = 0;
	put(b, 0, h, 512);
	if (desc)
		put(b, 512, desc, strlen(desc));
	for (uint64_t t = 0; t < n_gd; t++) {
		memset(gt, 0, sizeof(gt));
		for (uint64_t k = 0; k < 512 && t * 512 + k < grains; k++) {
			uint64_t g = t * 512 + k, len = vd_min_u64(gb, cap * 512 - g * gb);

			if (vd_mem_is_zero(raw + g * gb, len))
				continue;
			clen = compressBound(gb);
			if (compress2(cbuf + 12, &clen, raw + g * gb, len, 9) != Z_OK)
				die("compress failed");
			vd_put_le64(cbuf, g * grain);
			vd_put_le32(cbuf + 8, (uint32_t)clen);
			vd_put_le32(gt + 4 * k, (uint32_t)sec);
			put(b, sec * 512, cbuf, clen + 12);
			pad(b, 512);
			sec = b->len / 512;
		}
		memset(m, 0, sizeof(m)); /* GT marker: numSectors 4, size 0, type 1 */
		vd_put_le64(m, 4);
		vd_put_le32(m + 12, 1);
		put(b, sec * 512, m, 512);
		vd_put_le32(gd + 4 * t, (uint32_t)(sec + 1));
		put(b, (sec + 1) * 512, gt, sizeof(gt));
		sec += 5;
	}
	memset(m, 0, sizeof(m));
	vd_put_le64(m, gd_sec);
	vd_put_le32(m + 12, 2);
	put(b, sec * 512, m, 512);
	put(b, (sec + 1) * 512, gd, gd_sec * 512);
	vd_put_le64(h + 56, sec + 1);
	sec += 1 + gd_sec;
	if (footer) {
		memset(m, 0, sizeof(m));
		vd_put_le64(m, 1);
		vd_put_le32(m + 12, 3);
		put(b, sec * 512, m, 512);
		put(b, (sec + 1) * 512, h, 512);
		sec += 2;
	}
	memset(m, 0, sizeof(m)); /* end of stream */
	put(b, sec * 512, m, 512);
	free(gd);
	free(cbuf);
}

/* A vmfsSparse (COWD) extent: 2 KiB header, GD at sector 4, then for each
 * GT that maps something the GT (4096 entries) and its grains. */
static void cowd(struct blob *b, uint32_t sectors, uint32_t grain, const uint8_t *states,
		 unsigned n_states, unsigned seed)
{
	uint64_t per_gt = 4096ull * grain, n_gd = (sectors + per_gt - 1) / per_gt;
	uint64_t gd_sec = (n_gd * 4 + 511) / 512, next = 4 + gd_sec;
	uint8_t h[2048] = {0};

	b->len = 0;
	grow(b, next * 512);
	for (uint64_t i = 0; i < n_gd; i++) {
		uint64_t gt = next;
		bool used = false;

		for (unsigned g = (unsigned)(i * 4096); g < n_states && g < (i + 1) * 4096; g++)
			used |= states[g] == G_DATA;
		if (!used)
			continue;
		next += 4096 * 4 / 512;
		grow(b, next * 512);
		for (unsigned g = (unsigned)(i * 4096); g < n_states && g < (i + 1) * 4096; g++) {
			if (states[g] != G_DATA)
				continue;
			vd_put_le32(b->p + gt * 512 + (g % 4096) * 4, (uint32_t)next);
			grow(b, (next + grain) * 512);
			pattern(b->p + next * 512, grain * 512, (uint64_t)g * grain * 512, seed);
			next += grain;
		}
		vd_put_le32(b->p + 4 * 512 + i * 4, (uint32_t)gt);
	}
	memcpy(h, "COWD", 4);
	vd_put_le32(h + 4, 1);
	vd_put_le32(h + 8, 3);
	vd_put_le32(h + 12, sectors);
	vd_put_le32(h + 16, grain);
	vd_put_le32(h + 20, 4);
	vd_put_le32(h + 24, (uint32_t)n_gd);
	vd_put_le32(h + 28, (uint32_t)next);
	vd_put_le32(h + 1060, 1); /* generation */
	put(b, 0, h, sizeof(h));
}

/* A seSparse extent (4 KiB grains): const header, volatile header, journal,
 * GD at sector 8, one GT, free bitmap, backmap, grains. */
static void sesparse(struct blob *b, uint64_t sectors, const uint8_t *states, unsigned n_states,
		     unsigned seed)
{
	uint64_t grains = (sectors + 7) / 8, n_gd = (grains + 4095) / 4096;
	uint64_t gd_sec = (n_gd * 8 + 511) / 512, gt_off = (8 + gd_sec + 7) & ~7ull;
	uint64_t bitmap = gt_off + 64 * n_gd, grains_off = (bitmap + 2 + 7) & ~7ull, cl = 0;
	uint64_t f[26] = {0};
	uint8_t v[512] = {0};

	b->len = 0;
	grow(b, grains_off * 512);
	for (uint64_t i = 0; i < n_gd; i++)
		vd_put_le64(b->p + 8 * 512 + i * 8, 0x10000000ull << 32 | i);
	for (unsigned g = 0; g < n_states && g < grains; g++) {
		uint64_t ent, at = gt_off * 512 + (g / 4096) * 64 * 512 + (g % 4096) * 8;

		if (states[g] == G_UNMAP) {
			ent = 1ull << 60;
		} else if (states[g] == G_ZERO) {
			ent = 2ull << 60;
		} else if (states[g] == G_DATA) {
			ent = 3ull << 60 | (cl & 0xfff) << 48 | cl >> 12;
			grow(b, (grains_off + (cl + 1) * 8) * 512);
			pattern(b->p + (grains_off + cl * 8) * 512, 4096, (uint64_t)g * 4096, seed);
			cl++;
		} else {
			continue;
		}
		vd_put_le64(b->p + at, ent);
	}
	f[0] = 0xcafebabe;
	f[1] = 0x0000000200000001ull;
	f[2] = sectors;
	f[3] = 8;
	f[4] = 64;
	f[10] = 1, f[11] = 1;
	f[12] = 2, f[13] = 2;
	f[14] = 4, f[15] = 4;
	f[16] = 8, f[17] = gd_sec;
	f[18] = gt_off, f[19] = bitmap - gt_off;
	f[20] = bitmap, f[21] = 1;
	f[22] = bitmap + 1, f[23] = 1;
	f[24] = grains_off, f[25] = (cl ? cl : 1) * 8;
	for (int i = 0; i < 26; i++)
		vd_put_le64(b->p + 8 * i, f[i]);
	vd_put_le64(v, 0xcafecafe);
	vd_put_le64(v + 8, n_gd);
	vd_put_le64(v + 16, 1);
	put(b, 512, v, 512);
	grow(b, (grains_off + f[25]) * 512);
}

/* ---- VHD --------------------------------------------------------------------- */

static void vhd_footer(uint8_t *out, uint32_t type, uint64_t size, uint64_t data_offset,
		       unsigned id)
{
	struct vhd_footer f = {0};

	f.features = 2;
	f.version = VHD_VERSION;
	f.data_offset = data_offset;
	f.timestamp = 0x2a000000u + id;
	memcpy(f.creator_app, "vdfz", 4);
	f.creator_ver = 0x000a0000;
	f.creator_os = 0x5769326b; /* "Wi2k" */
	f.orig_size = f.cur_size = size;
	vhd_chs(size, &f.cyls, &f.heads, &f.spt);
	f.type = type;
	for (int i = 0; i < 16; i++)
		f.uuid[i] = (uint8_t)(id * 16 + i);
	vhd_footer_encode(&f, out);
	vd_put_be32(out + VHD_FTR_CHECKSUM, 0); /* filled in by fz_vhd_fix_checksums */
}

struct vhd_loc {
	uint32_t code;
	const char *path; /* UTF-8 */
};

/* A dynamic (or, with parent_id, differencing) VHD: footer copy, header,
 * BAT, locator payloads, then the blocks of states[] (a block is G_DATA
 * with every bitmap bit set, or G_ZERO: allocated with a half-set bitmap),
 * then the footer. Checksums are left 0. */
static void vhd_dynamic(struct blob *b, uint64_t size, uint32_t block, const uint8_t *states,
			unsigned n_states, unsigned id, int parent_id, const char *parent_name,
			const struct vhd_loc *locs, unsigned n_locs)
{
	uint32_t n_blocks = (uint32_t)((size + block - 1) / block), spb = block / 512;
	uint32_t bm_bytes = ((spb + 7) / 8 + 511) / 512 * 512;
	uint64_t bat = 512 + 1024, pos = bat + vhd_bat_bytes(n_blocks);
	struct vhd_header h = {0};
	uint8_t hbuf[VHD_HEADER_SIZE], ftr[VHD_FOOTER_SIZE];

	h.table_offset = bat;
	h.version = VHD_VERSION;
	h.max_entries = n_blocks;
	h.block_size = block;
	b->len = 0;
	grow(b, pos);
	memset(b->p + bat, 0xff, n_blocks * 4);
	for (unsigned i = 0; i < n_locs; i++) {
		uint8_t u16[1024];
		long n;

		if (locs[i].code == VHD_PLAT_MACX) {
			n = (long)strlen(locs[i].path);
			memcpy(u16, locs[i].path, (size_t)n);
		} else {
			n = vd_utf8_to_utf16(locs[i].path, false, u16, sizeof(u16));
			if (n < 0)
				die("bad locator path %s", locs[i].path);
		}
		h.loc[i].code = locs[i].code;
		h.loc[i].space = 1; /* sectors */
		h.loc[i].length = (uint32_t)n;
		h.loc[i].offset = pos;
		put(b, pos, u16, (size_t)n);
		pos += 512;
		grow(b, pos);
	}
	if (parent_id >= 0) {
		for (int i = 0; i < 16; i++)
			h.parent_uuid[i] = (uint8_t)(parent_id * 16 + i);
		h.parent_stamp = 0x2a000000u + (unsigned)parent_id;
		if (vd_utf8_to_utf16(parent_name, true, h.parent_name, sizeof(h.parent_name)) < 0)
			die("bad parent name");
	}
	for (unsigned i = 0; i < n_states && i < n_blocks; i++) {
		if (states[i] == G_NONE)
			continue;
		vd_put_be32(b->p + bat + 4 * i, (uint32_t)(pos / 512));
		grow(b, pos + bm_bytes + block);
		memset(b->p + pos, 0xff, states[i] == G_DATA ? bm_bytes : bm_bytes / 2);
		if (states[i] == G_ZERO)
			b->p[pos + 1] = 0x5a; /* runs that end mid-byte */
		pattern(b->p + pos + bm_bytes, block, (uint64_t)i * block, id);
		pos += bm_bytes + block;
	}
	vhd_header_encode(&h, hbuf);
	vd_put_be32(hbuf + VHD_HDR_CHECKSUM, 0);
	put(b, 512, hbuf, sizeof(hbuf));
	vhd_footer(ftr, parent_id >= 0 ? VHD_TYPE_DIFF : VHD_TYPE_DYNAMIC, size, 512, id);
	put(b, 0, ftr, sizeof(ftr));
	put(b, pos, ftr, sizeof(ftr));
}

static void vhd_fixed(struct blob *b, uint64_t size, unsigned id)
{
	uint8_t ftr[VHD_FOOTER_SIZE];

	b->len = 0;
	grow(b, size);
	pattern(b->p, size, 0, id);
	memset(b->p + size / 2, 0, size / 4);
	vhd_footer(ftr, VHD_TYPE_FIXED, size, UINT64_MAX, id);
	put(b, size, ftr, sizeof(ftr));
}

/* ---- output ------------------------------------------------------------------ */

static const char *out_dir;
static bool plain; /* "chains": plain files with valid checksums */

static void mkdirs(const char *path)
{
	char tmp[4096];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		mkdir(tmp, 0755);
		*p = '/';
	}
	mkdir(tmp, 0755);
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f;
	char dir[4096];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = 0;
		mkdirs(dir);
	}
	f = fopen(path, "wb");
	if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f))
		die("%s: cannot write: %s", path, strerror(errno));
}

/* A seed of one harness (corpus mode only). */
static void seed(const char *harness, const char *name, const void *p, size_t n)
{
	char path[4096];

	if (plain)
		return;
	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, harness, name);
	write_file(path, p, n);
}

static void seed_text(const char *harness, const char *name, const char *text)
{
	seed(harness, name, text, strlen(text));
}

/* A chain: members as name/content pairs, the first is the top. In corpus
 * mode one archive of the chain harness; in chains mode a directory. */
#define MAX_MEMBERS 64
struct chain {
	const char *name;
	unsigned n;
	char *names[MAX_MEMBERS];
	struct blob data[MAX_MEMBERS];
};

static struct blob *member(struct chain *c, const char *name)
{
	if (c->n == MAX_MEMBERS)
		die("too many members in %s", c->name);
	c->names[c->n] = strdup(name);
	if (!c->names[c->n])
		die("out of memory");
	memset(&c->data[c->n], 0, sizeof(c->data[0]));
	return &c->data[c->n++];
}

static void member_text(struct chain *c, const char *name, const char *text)
{
	struct blob *b = member(c, name);

	put(b, 0, text, strlen(text));
}

static void chain_emit(struct chain *c)
{
	char path[4096];
	struct blob ar = {0};

	if (plain) {
		FILE *list;

		for (unsigned i = 0; i < c->n; i++) {
			snprintf(path, sizeof(path), "%s/%s/%s", out_dir, c->name, c->names[i]);
			fz_vhd_fix_checksums(c->data[i].p, c->data[i].len);
			write_file(path, c->data[i].p, c->data[i].len);
		}
		snprintf(path, sizeof(path), "%s/chains.txt", out_dir);
		list = fopen(path, "a");
		if (!list || fprintf(list, "%s %s\n", c->name, c->names[0]) < 0 || fclose(list))
			die("%s: cannot write", path);
	} else {
		for (unsigned i = 0; i < c->n; i++) {
			if (i)
				put(&ar, ar.len, FZ_SEP, strlen(FZ_SEP));
			put(&ar, ar.len, c->names[i], strlen(c->names[i]));
			put(&ar, ar.len, "\n", 1);
			put(&ar, ar.len, c->data[i].p, c->data[i].len);
		}
		snprintf(path, sizeof(path), "%s.fzar", c->name);
		seed("chain", path, ar.p, ar.len);
		free(ar.p);
	}
	for (unsigned i = 0; i < c->n; i++) {
		free(c->data[i].p);
		free(c->names[i]);
	}
}

/* Adds an ESXi base (b.vmdk, createType vmfs, CID 0badcafe, over
 * b-flat.vmdk) of sectors sectors to c. */
static void vmfs_base(struct chain *c, unsigned sectors, unsigned seed)
{
	char line[64];
	struct blob *flat;

	snprintf(line, sizeof(line), "RW %u VMFS \"b-flat.vmdk\"", sectors);
	member_text(c, "b.vmdk", desc_text("0badcafe", "ffffffff", "vmfs", NULL, line));
	flat = member(c, "b-flat.vmdk");
	grow(flat, sectors * 512);
	pattern(flat->p, sectors * 512, 0, seed);
}

/* ---- VHDX ------------------------------------------------------------------ */

/* Stores the checksum at p + 4 of each VHDX structure in the piece
 * data[0, len) at file offset off as 0 where the harness's
 * fz_vhdx_fix_checksums gives it back, and leaves it where not (an entry
 * split over pieces or wrapping the log). */
static void vhdx_zero_sums(uint8_t *data, size_t len, uint64_t off)
{
	for (size_t i = (size_t)((4096 - off % 4096) % 4096); i + 12 <= len; i += 4096) {
		uint32_t sum = vd_get_le32(data + i + 4);
		uint8_t *tmp;

		if (memcmp(data + i, "head", 4) && memcmp(data + i, "regi", 4) &&
		    memcmp(data + i, "loge", 4))
			continue;
		tmp = malloc(len);
		if (!tmp)
			die("out of memory");
		memcpy(tmp, data, len);
		vd_put_le32(tmp + i + 4, 0);
		fz_vhdx_fix_checksums(tmp, len, off);
		if (vd_get_le32(tmp + i + 4) == sum)
			vd_put_le32(data + i + 4, 0);
		free(tmp);
	}
}

/* Writes layer l as a VHDX file into *out (valid checksums). */
static void vhdx_image(struct vxg_layer *l, struct blob *out)
{
	char tmp[] = "/tmp/mkseeds-vhdx.XXXXXX";
	int fd = mkstemp(tmp);
	FILE *f;

	if (fd < 0)
		die("mkstemp: %s", strerror(errno));
	close(fd);
	if (vxg_file_write(l, tmp) < 0)
		die("%s: cannot write the VHDX", tmp);
	f = fopen(tmp, "rb");
	out->len = 0;
	grow(out, l->file_size);
	if (!f || fread(out->p, 1, out->len, f) != out->len)
		die("%s: cannot read the VHDX back", tmp);
	fclose(f);
	unlink(tmp);
}

/* Adds the image img as members "name@OFF" of c, one per run of non-zero
 * bytes (zero gaps under 256 bytes are kept), and an empty piece at the end
 * that gives the file its size; the longer zero runs are holes of the
 * served file. For a VHDX (l not NULL) the log is one piece, so its entries
 * stay whole (non-zero 4 KiB sectors in a row), and checksums are stored as
 * 0 where the harness restores them. In chains mode the whole file is one
 * member. */
static void image_members(struct chain *c, const char *name, const struct blob *img,
			  const struct vxg_layer *l)
{
	char mname[FZ_NAME_MAX + 1];
	size_t i = 0, n = img->len;

	if (plain) {
		put(member(c, name), 0, img->p, img->len);
		return;
	}
	while (i < n) {
		size_t a, b, z;

		while (i < n && !img->p[i])
			i++;
		if (i == n)
			break;
		a = i;
		if (l && a >= l->log_off && a < l->log_off + l->log_len) {
			/* whole non-zero 4 KiB sectors: an entry is never cut */
			for (b = a;
			     b < l->log_off + l->log_len && !vd_mem_is_zero(img->p + b, 4096);
			     b += 4096)
				;
			while (b > a && !img->p[b - 1])
				b--;
		} else {
			for (b = a, z = 0; b < n && z < 256; b++)
				z = img->p[b] ? 0 : z + 1;
			b -= z;
		}
		snprintf(mname, sizeof(mname), "%s@%zu", name, a);
		{
			struct blob *m = member(c, mname);

			put(m, 0, img->p + a, b - a);
			if (l)
				vhdx_zero_sums(m->p, m->len, a);
		}
		i = b;
	}
	snprintf(mname, sizeof(mname), "%s@%zu", name, n);
	member(c, mname);
}

/* One harness seed of a single VHDX (the vhdx harness's archives). */
static void vhdx_seed(const char *seed_name, const struct blob *img, const struct vxg_layer *l,
		      const char *file)
{
	struct chain c = {.name = seed_name};
	struct blob ar = {0};
	char path[256];

	if (plain)
		return;
	image_members(&c, file, img, l);
	for (unsigned i = 0; i < c.n; i++) {
		if (i)
			put(&ar, ar.len, FZ_SEP, strlen(FZ_SEP));
		put(&ar, ar.len, c.names[i], strlen(c.names[i]));
		put(&ar, ar.len, "\n", 1);
		put(&ar, ar.len, c.data[i].p, c.data[i].len);
		free(c.data[i].p);
		free(c.names[i]);
	}
	snprintf(path, sizeof(path), "%s.fzar", seed_name);
	seed("vhdx", path, ar.p, ar.len);
	free(ar.p);
}

/* The vhdx_log harness's input for the log of img (see fuzz_vhdx_log.c):
 * start sector, file megabytes, LogGuid, then the ring from the tail of its
 * newest entry on (wrapping), up to the first zero sector. */
static void vhdx_log_seed(const char *seed_name, const struct blob *img, const struct vxg_layer *l)
{
	const uint8_t *ring = img->p + l->log_off;
	uint32_t len = (uint32_t)l->log_len, first = UINT32_MAX, n = 0;
	uint64_t best = 0;
	struct blob b = {0};

	if (len != VHDX_MiB)
		die("%s: a log of %u bytes", seed_name, len);
	for (uint32_t k = 0; k < len; k += 4096)
		if (!memcmp(ring + k, "loge", 4) && !memcmp(ring + k + 32, l->log_guid, 16) &&
		    vd_get_le64(ring + k + 16) > best) {
			best = vd_get_le64(ring + k + 16);
			first = vd_get_le32(ring + k + 12);
		}
	if (first >= len)
		die("%s: no log entry to seed from", seed_name);
	grow(&b, 18 + len);
	b.p[0] = (uint8_t)(first / 4096);
	b.p[1] = 7; /* 2 + 7 MiB: past FlushedFileOffset */
	memcpy(b.p + 2, l->log_guid, 16);
	memcpy(b.p + 18, ring + first, len - first);
	memcpy(b.p + 18 + (len - first), ring, first);
	while (n < len && !vd_mem_is_zero(b.p + 18 + n, 4096))
		n += 4096;
	while (n > 0 && !b.p[18 + n - 1])
		n--;
	b.len = 18 + n;
	/* as the harness splits it: up to the end of the ring, the rest */
	{
		size_t head = n < len - first ? n : len - first;

		vhdx_zero_sums(b.p + 18, head, VHDX_MiB + first);
		vhdx_zero_sums(b.p + 18 + head, n - head, VHDX_MiB);
	}
	seed("vhdx_log", seed_name, b.p, b.len);
	free(b.p);
}

/* The seam tests' VHDX chain (chains mode): a dynamic base of three
 * blocks (ZERO, NOT_PRESENT and a 64 KiB tail with data) under a
 * differencing child with a pending log, sector runs that end mid-byte of
 * the bitmap in the first and last block and an UNMAPPED block between.
 * Small and mostly without payload reads on purpose: test_faults fails each
 * I/O call in turn, so its cost grows with the square of the calls a run
 * makes (the seeds above are kept out for that reason). */
static void seam_vhdx_chain(void)
{
	const uint64_t size = 2 * VHDX_MiB + 64 * 1024, tail = 2 * VHDX_MiB / 512;
	struct vxg_opts o = {.size = size, .block = VHDX_MiB, .seed = 60};
	struct vxg_layer base, child;
	struct blob bimg = {0}, cimg = {0};
	struct chain c = {.name = "vhdx-seam"};

	if (vxg_init(&base, &o) < 0)
		die("vxg_init");
	vxg_set_state(&base, 0, VHDX_PAYLOAD_ZERO);
	vxg_write(&base, tail, 128, 9);
	vhdx_image(&base, &bimg);
	o = (struct vxg_opts){.size = size,
			      .block = VHDX_MiB,
			      .seed = 61,
			      .diff = true,
			      .pending_log = true,
			      .relative_path = "sb.vhdx",
			      .absolute_path = "C:\\VMs\\sb.vhdx"};
	vxg_guid_text(base.data_write, o.linkage);
	if (vxg_init(&child, &o) < 0)
		die("vxg_init");
	vxg_write(&child, 3, 5, 10);
	vxg_write(&child, 700, 11, 11);
	vxg_set_state(&child, 1, VHDX_PAYLOAD_UNMAPPED);
	vxg_write(&child, tail + 9, 3, 12);
	vhdx_image(&child, &cimg);
	image_members(&c, "sc.avhdx", &cimg, &child);
	image_members(&c, "sb.vhdx", &bimg, &base);
	chain_emit(&c);
	vxg_free(&base);
	vxg_free(&child);
	free(bimg.p);
	free(cimg.p);
}

static void seeds_vhdx(void)
{
	struct vxg_opts o = {.size = 4 * VHDX_MiB, .block = VHDX_MiB, .seed = 50};
	struct vxg_layer base, child, l;
	struct blob bimg = {0}, cimg = {0}, img = {0};
	struct chain c;

	/* a dynamic base: data in three blocks, one ZERO block */
	if (vxg_init(&base, &o) < 0)
		die("vxg_init");
	vxg_write(&base, 0, 8, 1);
	vxg_write(&base, 2048 + 100, 3, 2);
	vxg_write(&base, 6000, 4, 3);
	vxg_set_state(&base, 3, VHDX_PAYLOAD_ZERO);
	vhdx_image(&base, &bimg);
	vhdx_seed("dynamic", &bimg, &base, "d.vhdx");

	/* a differencing child with a pending log: partial blocks, a sector
	 * bitmap, an UNMAPPED block; BAT, bitmap and metadata sectors in the log */
	o = (struct vxg_opts){.size = 4 * VHDX_MiB,
			      .block = VHDX_MiB,
			      .seed = 51,
			      .diff = true,
			      .pending_log = true,
			      .relative_path = "b.vhdx",
			      .volume_path =
				  "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\b.vhdx",
			      .absolute_path = "C:\\VMs\\b.vhdx"};
	vxg_guid_text(base.data_write, o.linkage);
	if (vxg_init(&child, &o) < 0)
		die("vxg_init");
	vxg_write(&child, 5, 2, 4);
	vxg_write(&child, 2048 + 7, 9, 5);
	vxg_set_state(&child, 2, VHDX_PAYLOAD_UNMAPPED);
	vhdx_image(&child, &cimg);
	vhdx_seed("diff-log", &cimg, &child, "c.avhdx");
	if (!plain)
		vhdx_log_seed("diff-log", &cimg, &child);

	/* 4096-byte logical sectors, a fixed disk, a log that cannot be
	 * replayed behind a bad header 1 */
	o = (struct vxg_opts){.size = 2 * VHDX_MiB, .block = VHDX_MiB, .lss = 4096, .seed = 52};
	if (vxg_init(&l, &o) < 0)
		die("vxg_init");
	vxg_write(&l, 3, 2, 6);
	vhdx_image(&l, &img);
	vhdx_seed("lss4096", &img, &l, "s.vhdx");
	vxg_free(&l);
	o = (struct vxg_opts){.size = 2 * VHDX_MiB, .block = VHDX_MiB, .fixed = true, .seed = 53};
	if (vxg_init(&l, &o) < 0)
		die("vxg_init");
	vxg_write(&l, 1, 1, 7);
	vhdx_image(&l, &img);
	vhdx_seed("fixed", &img, &l, "f.vhdx");
	vxg_free(&l);
	o = (struct vxg_opts){.size = 4 * VHDX_MiB,
			      .block = VHDX_MiB,
			      .seed = 54,
			      .pending_log = true,
			      .corrupt_log = true,
			      .bad_header = 1};
	if (vxg_init(&l, &o) < 0)
		die("vxg_init");
	vxg_write(&l, 17, 3, 8);
	vhdx_image(&l, &img);
	vhdx_seed("corrupt-log", &img, &l, "k.vhdx");
	if (!plain)
		vhdx_log_seed("corrupt-log", &img, &l);
	vxg_free(&l);

	/* chains: the child above over its base (found by relative_path), and
	 * the base alone. Not in chains mode: test_faults fails every I/O call
	 * of every seed chain in turn, and these 4-7 MiB files with a 1 MiB log
	 * took it from seconds to many minutes (VHDX has test_vhdx_chain). */
	if (!plain) {
		c = (struct chain){.name = "vhdx-diff-log"};
		image_members(&c, "c.avhdx", &cimg, &child);
		image_members(&c, "b.vhdx", &bimg, &base);
		chain_emit(&c);
		c = (struct chain){.name = "vhdx-dynamic"};
		image_members(&c, "d.vhdx", &bimg, &base);
		chain_emit(&c);
	}
	if (plain)
		seam_vhdx_chain();
	vxg_free(&base);
	vxg_free(&child);
	free(bimg.p);
	free(cimg.p);
	free(img.p);
}

/* ---- partition tables and VMware VM files ------------------------------------ */

static void mbr_entry(uint8_t *mbr, unsigned i, uint8_t status, uint8_t type, uint32_t lba,
		      uint32_t sectors)
{
	uint8_t *e = mbr + 446 + 16 * i;

	e[0] = status;
	e[4] = type;
	vd_put_le32(e + 8, lba);
	vd_put_le32(e + 12, sectors);
	mbr[510] = 0x55;
	mbr[511] = 0xaa;
}

/* A GPT header (CRCs left 0: the part harness fills them in) and its
 * entry array of 128 entries, two of them used. */
static void gpt_half(uint8_t *disk, uint32_t ss, uint64_t my, uint64_t alt, uint64_t first,
		     uint64_t last, uint64_t arr)
{
	static const uint8_t linux_fs[16] = {0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47,
					     0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4};
	static const uint8_t esp[16] = {0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
					0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b};
	uint8_t *h = disk + my * ss, *e = disk + arr * ss;

	memcpy(h, "EFI PART", 8);
	vd_put_le32(h + 8, 0x00010000);
	vd_put_le32(h + 12, 92);
	vd_put_le64(h + 24, my);
	vd_put_le64(h + 32, alt);
	vd_put_le64(h + 40, first);
	vd_put_le64(h + 48, last);
	memset(h + 56, 0x42, 16);
	vd_put_le64(h + 72, arr);
	vd_put_le32(h + 80, 128);
	vd_put_le32(h + 84, 128);
	memcpy(e, esp, 16);
	memset(e + 16, 0x11, 16);
	vd_put_le64(e + 32, first);
	vd_put_le64(e + 40, first + 3);
	vd_utf8_to_utf16("EFI system", false, e + 56, 72);
	memcpy(e + 128, linux_fs, 16);
	memset(e + 144, 0x22, 16);
	vd_put_le64(e + 160, first + 4);
	vd_put_le64(e + 168, last);
	vd_utf8_to_utf16("root \xc3\xa9", false, e + 184, 72);
}

/* A GPT disk of n sectors of ss bytes: protective MBR, both halves. */
static void gpt_disk(struct blob *b, uint32_t ss, uint64_t n)
{
	uint64_t arr_sec = 128 * 128 / ss;

	b->len = 0;
	grow(b, n * ss);
	mbr_entry(b->p, 0, 0, VD_MBR_TYPE_GPT, 1, (uint32_t)(n - 1));
	gpt_half(b->p, ss, 1, n - 1, 2 + arr_sec, n - 2 - arr_sec, 2);
	gpt_half(b->p, ss, n - 1, 1, 2 + arr_sec, n - 2 - arr_sec, n - 1 - arr_sec);
	/* an ext4 superblock magic in the second partition */
	vd_put_le16(b->p + (2 + arr_sec + 4) * ss + 1024 + 56, 0xef53);
}

static void seeds_part(void)
{
	struct blob b = {0};

	/* MBR: two primaries, an extended partition with two logicals
	 * (EBR chain), one entry overlapping another */
	grow(&b, 256 * 512);
	mbr_entry(b.p, 0, 0x80, 0x83, 8, 32);
	mbr_entry(b.p, 1, 0, 0x05, 64, 128);
	mbr_entry(b.p, 2, 0, 0x07, 200, 40);
	mbr_entry(b.p, 3, 0, 0x0c, 230, 20);
	vd_put_le32(b.p + 440, 0xdeadbeef);
	mbr_entry(b.p + 64 * 512, 0, 0, 0x83, 8, 16);
	mbr_entry(b.p + 64 * 512, 1, 0, 0x05, 32, 64);
	mbr_entry(b.p + 96 * 512, 0, 0, 0x0b, 8, 8);
	memcpy(b.p + 8 * 512 + 3, "NTFS    ", 8);
	memcpy(b.p + 104 * 512 + 82, "FAT32   ", 8);
	vd_put_le16(b.p + 104 * 512 + 510, 0xaa55);
	seed("part", "mbr-ebr.img", b.p, b.len);
	free(b.p);
	b = (struct blob){0};

	gpt_disk(&b, 512, 128);
	seed("part", "gpt512.img", b.p, b.len);
	/* a hybrid MBR */
	mbr_entry(b.p, 1, 0x80, 0x0c, 38, 4);
	seed("part", "gpt512-hybrid.img", b.p, b.len);
	/* a damaged primary header: the backup is used */
	gpt_disk(&b, 512, 128);
	b.p[512 + 8] ^= 1;
	seed("part", "gpt512-backup.img", b.p, b.len);
	gpt_disk(&b, 4096, 24);
	seed("part", "gpt4096.img", b.p, b.len);
	free(b.p);
}

static void seeds_vmx(void)
{
	seed_text("vmx", "vm.vmx",
		  ".encoding = \"UTF-8\"\nconfig.version = \"8\"\ndisplayName = \"Evidence "
		  "|22VM|22\"\nsnapshot.fileName = \"vm.vmsd\"\nscsi0.present = \"TRUE\"\n"
		  "scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"vm-000002.vmdk\"\n"
		  "scsi0:0.deviceType = \"scsi-hardDisk\"\nsata0:1.present = \"yes\"\n"
		  "sata0:1.fileName = \"/vmfs/volumes/ds1/vm/data.vmdk\"\n"
		  "ide1:0.present = \"TRUE\"\nide1:0.deviceType = \"cdrom-image\"\n"
		  "ide1:0.fileName = \"install.iso\"\nnvme0:0.present = \"FALSE\"\n"
		  "nvme0:0.fileName = \"gone.vmdk\"\n# a comment\n");
	seed_text("vmx", "vm.vmsd",
		  ".encoding = \"UTF-8\"\nsnapshot.lastUID = \"3\"\nsnapshot.current = \"3\"\n"
		  "snapshot0.uid = \"1\"\nsnapshot0.filename = \"vm-Snapshot1.vmsn\"\n"
		  "snapshot0.displayName = \"before\"\nsnapshot0.description = \"first|0Aline\"\n"
		  "snapshot0.createTimeLow = \"-1524414291\"\nsnapshot0.createTimeHigh = "
		  "\"398123\"\nsnapshot0.numDisks = \"2\"\nsnapshot0.disk0.fileName = "
		  "\"vm.vmdk\"\nsnapshot0.disk0.node = \"scsi0:0\"\nsnapshot0.disk1.fileName = "
		  "\"data.vmdk\"\nsnapshot0.disk1.node = \"sata0:1\"\nsnapshot1.uid = \"3\"\n"
		  "snapshot1.parent = \"1\"\nsnapshot1.displayName = \"after\"\n"
		  "snapshot1.disk0.fileName = \"vm-000001.vmdk\"\nsnapshot1.disk0.node = "
		  "\"scsi0:0\"\nsnapshot.numSnapshots = \"2\"\n");
}

/* ---- the seeds ------------------------------------------------------------ */

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const uint8_t st_small[] = {G_DATA, G_ZERO, G_NONE, G_DATA, G_DATA, G_NONE, G_NONE, G_DATA};

/* A stream of 32 KiB grains, three of noise (each in two stored blocks
 * whose sizes differ from grain to grain: disk/stored.c reads the second
 * and third straight into place) and one of text. */
static void stored_stream(struct blob *b, const char *desc)
{
	static uint8_t raw[256 * 512];

	noise(raw, 3 * 64 * 512, 31);
	pattern(raw + 3 * 64 * 512, 64 * 512, 3 * 64 * 512, 7);
	stream(b, raw, 256, 64, true, desc);
}

static void seeds_vmdk(void)
{
	static const uint8_t st_big[] = {
	    G_NONE, G_DATA, [511] = G_DATA, [512] = G_DATA, [513] = G_ZERO, [1030] = G_DATA};
	uint8_t raw[64 * 512];
	struct blob b = {0};
	struct chain c;

	/* extents on their own */
	kdmv(&b, 64, 8, 1, VMDK_FLAG_ZERO_GTE, NULL, st_small, N(st_small), 1);
	seed("vmdk_sparse", "grain8.vmdk", b.p, b.len);
	kdmv(&b, 1040, 1, 3, VMDK_FLAG_RGD | VMDK_FLAG_ZERO_GTE, NULL, st_big, N(st_big), 2);
	seed("vmdk_sparse", "grain1-3gt.vmdk", b.p, b.len);
	kdmv(&b, 100, 16, 2, 0,
	     desc_text("fffffffe", "ffffffff", "monolithicSparse", NULL,
		       "RW 100 SPARSE \"tail.vmdk\""),
	     st_small, N(st_small), 3);
	seed("vmdk_sparse", "partial-grain-desc.vmdk", b.p, b.len);

	memset(raw, 0, sizeof(raw));
	pattern(raw, 8 * 512, 0, 4);
	pattern(raw + 24 * 512, 16 * 512, 24 * 512, 5);
	pattern(raw + 63 * 512, 512, 63 * 512, 6);
	stream(&b, raw, 64, 8, true, NULL);
	seed("vmdk_stream", "vmware.vmdk", b.p, b.len);
	stream(&b, raw, 64, 8, false, NULL);
	seed("vmdk_stream", "nofooter.vmdk", b.p, b.len);
	stream(
	    &b, raw, 60, 16, true,
	    desc_text("0000abcd", "ffffffff", "streamOptimized", NULL, "RW 60 SPARSE \"s.vmdk\""));
	seed("vmdk_stream", "desc-partial.vmdk", b.p, b.len);
	stored_stream(&b, NULL);
	seed("vmdk_stream", "stored.vmdk", b.p, b.len);

	cowd(&b, 64, 2, st_small, N(st_small), 7);
	seed("vmdk_cowd", "grain2.vmdk", b.p, b.len);
	cowd(&b, 8200, 1, st_small, N(st_small), 8);
	seed("vmdk_cowd", "grain1-3gd.vmdk", b.p, b.len);

	{
		static const uint8_t ses[] = {G_DATA, G_ZERO, G_UNMAP, G_NONE, G_DATA, G_DATA};

		sesparse(&b, 48, ses, N(ses), 9);
		seed("vmdk_sesparse", "small.vmdk", b.p, b.len);
		sesparse(&b, 47, ses, N(ses), 10);
		seed("vmdk_sesparse", "partial.vmdk", b.p, b.len);
	}

	/* chains */
	c = (struct chain){.name = "sparse-delta"};
	kdmv(member(&c, "d.vmdk"), 64, 8, 1, VMDK_FLAG_ZERO_GTE,
	     desc_text("00000002", "00000001", "monolithicSparse", "b.vmdk",
		       "RW 64 SPARSE \"d.vmdk\""),
	     (const uint8_t[]){G_NONE, G_DATA, G_ZERO, G_NONE, G_DATA}, 5, 11);
	kdmv(member(&c, "b.vmdk"), 64, 8, 1, 0,
	     desc_text("00000001", "ffffffff", "monolithicSparse", NULL, "RW 64 SPARSE \"b.vmdk\""),
	     st_small, N(st_small), 12);
	chain_emit(&c);

	/* Tables in holes, as qemu-img leaves the preallocated GTs of a sparse
	 * extent: 8 GTs of which only the first holds entries (the others
	 * lie in holes of the served file, which the reader skips without
	 * reading them), and 4,100 GTs behind a GD of 16,400 bytes, paged
	 * rather than kept whole, whose entries past the eighth are 0 (the
	 * GD's tail is a hole too). */
	c = (struct chain){.name = "gt-holes"};
	kdmv(&b, 4096, 1, 1, VMDK_FLAG_ZERO_GTE,
	     desc_text("00000001", "ffffffff", "monolithicSparse", NULL,
		       "RW 4096 SPARSE \"h.vmdk\""),
	     st_small, N(st_small), 15);
	image_members(&c, "h.vmdk", &b, NULL);
	chain_emit(&c);
	if (!plain) { /* a 1 GiB disk: not a seam chain, read whole at every fault */
		c = (struct chain){.name = "gd-paged-holes"};
		kdmv(&b, 4100 * 512, 1, 1, 0,
		     desc_text("00000001", "ffffffff", "monolithicSparse", NULL,
			       "RW 2099200 SPARSE \"g.vmdk\""),
		     st_big, N(st_big), 16);
		/* the GD's tail */
		memset(b.p + vd_get_le64(b.p + 56) * 512 + 8 * 4, 0, (4100 - 8) * 4);
		image_members(&c, "g.vmdk", &b, NULL);
		chain_emit(&c);
	}

	c = (struct chain){.name = "deep"};
	kdmv(member(&c, "top.vmdk"), 64, 4, 1, 0,
	     desc_text("00000003", "00000002", "monolithicSparse", "sub/mid.vmdk",
		       "RW 64 SPARSE \"top.vmdk\""),
	     (const uint8_t[]){G_NONE, G_NONE, G_DATA}, 3, 13);
	kdmv(member(&c, "sub/mid.vmdk"), 64, 8, 1, 0,
	     desc_text("00000002", "00000001", "monolithicSparse", "../base.vmdk",
		       "RW 64 SPARSE \"mid.vmdk\""),
	     (const uint8_t[]){G_DATA}, 1, 14);
	kdmv(member(&c, "base.vmdk"), 60, 8, 1, 0,
	     desc_text("00000001", "ffffffff", "monolithicSparse", NULL,
		       "RW 60 SPARSE \"base.vmdk\""),
	     st_small, N(st_small), 15);
	chain_emit(&c);

	c = (struct chain){.name = "flat"};
	member_text(&c, "f.vmdk",
		    desc_text("0000f1a7", "ffffffff", "monolithicFlat", NULL,
			      "RW 16 FLAT \"f-flat.vmdk\" 0"));
	grow(member(&c, "f-flat.vmdk"), 16 * 512);
	pattern(c.data[1].p, 8 * 512, 0, 16);
	chain_emit(&c);

	c = (struct chain){.name = "split"};
	member_text(
	    &c, "s.vmdk",
	    desc_text("00005917", "ffffffff", "twoGbMaxExtentSparse", NULL,
		      "RW 32 SPARSE \"s-s001.vmdk\"\nRW 8 ZERO\nRW 16 FLAT \"s-f002.vmdk\" "
		      "2\nRDONLY 8 SPARSE \"s-s003.vmdk\"\nNOACCESS 8 FLAT \"s-f002.vmdk\""));
	kdmv(member(&c, "s-s001.vmdk"), 32, 4, 1, 0, NULL, st_small, N(st_small), 17);
	grow(member(&c, "s-f002.vmdk"), 18 * 512);
	pattern(c.data[2].p, 18 * 512, 0, 18);
	kdmv(member(&c, "s-s003.vmdk"), 8, 8, 1, 0, NULL, (const uint8_t[]){G_DATA}, 1, 19);
	chain_emit(&c);

	c = (struct chain){.name = "stream"};
	stream(member(&c, "s.vmdk"), raw, 64, 8, true,
	       desc_text("5754ea11", "ffffffff", "streamOptimized", NULL,
			 "RW 64 SPARSE \"other-name.vmdk\""));
	chain_emit(&c);

	/* the scan of a stream without footer, and a KDMV file opened alone */
	c = (struct chain){.name = "stream-nofooter"};
	stream(
	    member(&c, "n.vmdk"), raw, 64, 8, false,
	    desc_text("5754ea12", "ffffffff", "streamOptimized", NULL, "RW 64 SPARSE \"n.vmdk\""));
	chain_emit(&c);

	c = (struct chain){.name = "stream-stored"};
	stored_stream(member(&c, "t.vmdk"), desc_text("5754ea13", "ffffffff", "streamOptimized",
						      NULL, "RW 256 SPARSE \"t.vmdk\""));
	chain_emit(&c);

	c = (struct chain){.name = "kdmv-bare"};
	kdmv(member(&c, "piece-s001.vmdk"), 64, 8, 1, 0, NULL, st_small, N(st_small), 25);
	chain_emit(&c);

	c = (struct chain){.name = "cowd"};
	member_text(&c, "c.vmdk",
		    desc_text("00000c0d", "0badcafe", "vmfsSparse", "b.vmdk",
			      "RW 64 VMFSSPARSE \"c-delta.vmdk\""));
	cowd(member(&c, "c-delta.vmdk"), 64, 2, st_small, N(st_small), 20);
	vmfs_base(&c, 64, 21);
	chain_emit(&c);

	c = (struct chain){.name = "sesparse"};
	member_text(&c, "s.vmdk",
		    desc_text("0000005e", "0badcafe", "seSparse", "b.vmdk",
			      "RW 48 SESPARSE \"s-sesparse.vmdk\""));
	sesparse(member(&c, "s-sesparse.vmdk"), 48,
		 (const uint8_t[]){G_DATA, G_ZERO, G_UNMAP, G_NONE, G_DATA}, 5, 22);
	vmfs_base(&c, 48, 23);
	chain_emit(&c);

	/* a legacy charset: the name is written in windows-1252, the file has
	 * the UTF-8 spelling */
	c = (struct chain){.name = "encoding"};
	member_text(&c, "e.vmdk",
		    "# Disk DescriptorFile\nversion=1\nencoding=\"windows-1252\"\nCID=0000e1e1\n"
		    "parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
		    "RW 8 FLAT \"\xe9t\xe9-flat.vmdk\" 0\n");
	grow(member(&c, "\xc3\xa9t\xc3\xa9-flat.vmdk"), 8 * 512);
	pattern(c.data[1].p, 8 * 512, 0, 24);
	chain_emit(&c);
	free(b.p);
}

static void seeds_vhd(void)
{
	static const uint8_t blocks[] = {G_DATA, G_NONE, G_ZERO, G_DATA};
	static const struct vhd_loc locs[] = {
	    {VHD_PLAT_W2RU, ".\\p.vhd"},
	    {VHD_PLAT_W2KU, "C:\\vms\\p.vhd"},
	    {VHD_PLAT_MACX, "file://localhost/fz/p.vhd"},
	};
	struct blob b = {0};
	struct chain c;

	vhd_fixed(&b, 8192, 30);
	seed("vhd", "fixed.vhd", b.p, b.len);
	vhd_dynamic(&b, 16384, 4096, blocks, N(blocks), 31, -1, NULL, NULL, 0);
	seed("vhd", "dynamic.vhd", b.p, b.len);
	vhd_dynamic(&b, 15360, 4096, blocks, N(blocks), 32, 31, "p.vhd", locs, N(locs));
	seed("vhd", "diff.vhd", b.p, b.len);

	c = (struct chain){.name = "vhd-diff"};
	vhd_dynamic(member(&c, "c.vhd"), 16384, 4096, (const uint8_t[]){G_NONE, G_ZERO, G_DATA}, 3,
		    33, 34, "p.vhd", locs, N(locs));
	vhd_dynamic(member(&c, "p.vhd"), 16384, 4096, blocks, N(blocks), 34, -1, NULL, NULL, 0);
	chain_emit(&c);

	/* the footer at EOF is damaged: the copy at offset 0 is used */
	c = (struct chain){.name = "vhd-footer-copy"};
	vhd_dynamic(member(&c, "d.vhd"), 16384, 4096, blocks, N(blocks), 36, -1, NULL, NULL, 0);
	memcpy(c.data[0].p + c.data[0].len - 512, "damaged!", 8);
	chain_emit(&c);

	c = (struct chain){.name = "vhd-fixed"};
	vhd_fixed(member(&c, "f.vhd"), 4096, 35);
	chain_emit(&c);
	free(b.p);
}

static void seeds_meta(void)
{
	uint8_t buf[1 + VHD_HEADER_SIZE];
	struct blob b = {0};

	vhd_dynamic(&b, 16384, 4096, st_small, 4, 40, 41, "parent \xc3\xa9\xf0\x9f\x92\xbe.vhd",
		    NULL, 0);
	fz_vhd_fix_checksums(b.p, b.len);
	buf[0] = 0;
	memcpy(buf + 1, b.p + b.len - 512, 512);
	seed("vhd_meta", "footer", buf, 513);
	buf[0] = 1;
	memcpy(buf + 1, b.p + 512, 1024);
	seed("vhd_meta", "header", buf, 1025);
	seed_text("vhd_meta", "macx",
		  "\x02"
		  "file://localhost/Users/a%20b/p%C3%A9.vhd");
	seed("vhd_meta", "bitmap", "\x03\xff\xff\xf0\x00\x00\x0f\x5a\xff", 9);
	seed("vhd_meta", "chs", "\x04\x00\x00\x01\xfe\x00\x00\x00\x00", 9);

	/* fuzz_text: 0 UTF-8, 1/2 UTF-16 BE/LE, 3 charset + limit + text */
	buf[0] = 1;
	memcpy(buf + 1, b.p + 512 + VHD_HDR_PARENT_NAME, 64);
	seed("text", "utf16be", buf, 65);
	seed("text", "utf16le", "\x02.\0\\\0p\0.\0v\0h\0d\0\x3d\xd8\x4c\xdc\0\0", 21);
	{
		static const char u8[] = "\0ok \xc3\xa9 \xf0\x9f\x92\xbe \xe0\x80\x80 \xed\xa0\x80 "
					 "\xf4\x90\x80\x80 \xc0\xaf";

		seed("text", "utf8", u8, sizeof(u8) - 1);
	}
	seed_text("text", "iconv-cp1252", "\x03\x01\x40\xe9t\xe9-flat.vmdk");
	seed_text("text", "iconv-sjis", "\x03\x03\x40\x83\x65\x83\x58\x83\x67.vmdk");
	seed_text("text", "iconv-tscii", "\x03\x0c\x01\xab\xac\xad\xae\xaf\xb0\xb1\xb2");
	seed_text("text", "iconv-utf7", "\x03\x07\x10+AOk-t+AOk-.vmdk");
	free(b.p);
}

static void seeds_desc(void)
{
	seed_text("vmdk_desc", "sparse-delta.vmdk",
		  desc_text("00000002", "00000001", "monolithicSparse", "b.vmdk",
			    "RW 64 SPARSE \"d.vmdk\""));
	seed_text("vmdk_desc", "split.vmdk",
		  desc_text("00005917", "ffffffff", "twoGbMaxExtentSparse", NULL,
			    "RW 32 SPARSE \"s-s001.vmdk\"\nRW 8 ZERO\nRW 16 FLAT \"s-f002.vmdk\" "
			    "2\nRDONLY 8 SPARSE \"s-s003.vmdk\"\nNOACCESS 8 FLAT \"x y.vmdk\""));
	seed_text("vmdk_desc", "vmfs.vmdk",
		  desc_text("0badcafe", "ffffffff", "vmfs", NULL, "RW 64 VMFS \"b-flat.vmdk\""));
	seed_text("vmdk_desc", "sesparse.vmdk",
		  desc_text("0000005e", "0badcafe", "vmfsSeSparse", "/vmfs/volumes/ds1/b.vmdk",
			    "RW 48 SESPARSE \"s-sesparse.vmdk\""));
	seed_text("vmdk_desc", "crlf-encoding.vmdk",
		  "# Disk DescriptorFile\r\nversion=3\r\nencoding=\"Shift_JIS\"\r\nCID=fffffffe\r\n"
		  "parentCID=ffffffff\r\nisNativeSnapshot=\"no\"\r\ncreateType=\"custom\"\r\n\r\n"
		  "RW 2048 FLAT \"\\\\server\\share\\d.vmdk\" 0\r\n  RDONLY   10 VMFS  \"a\"\t7\r\n"
		  "ddb.uuid = \"60 00 C2 9b\"\r\nddb.longContentID = \"x\"\r\n"
		  "ddb.encoding = \"UTF-8\"\r\n");
}

/* A seed of the stored harness: n guessed block sizes, then a 12-byte
 * marker and a zlib stream of noise in m stored blocks of the sizes given
 * (tests/fuzz/fuzz_stored.c). */
static void stored_seed(const char *name, const uint16_t *guess, unsigned n, const uint16_t *len,
			unsigned m)
{
	static uint8_t data[65536];
	struct blob b = {0};
	size_t out = 0, p;
	uint8_t h[5];
	uLong a;

	for (unsigned i = 0; i < m; i++)
		out += len[i];
	noise(data, out, 77);
	h[0] = (uint8_t)n;
	vd_put_le16(h + 1, (uint16_t)(out - 1));
	put(&b, 0, h, 3);
	for (unsigned i = 0; i < n; i++)
		put(&b, b.len, (uint8_t[2]){(uint8_t)guess[i], (uint8_t)(guess[i] >> 8)}, 2);
	put(&b, b.len, "marker bytes", 12);
	put(&b, b.len, "\x78\x01", 2);
	for (unsigned i = 0, off = 0; i < m; off += len[i], i++) {
		h[0] = i + 1 == m;
		vd_put_le16(h + 1, len[i]);
		vd_put_le16(h + 3, (uint16_t)~len[i]);
		put(&b, b.len, h, 5);
		put(&b, b.len, data + off, len[i]);
	}
	a = adler32(adler32(0, Z_NULL, 0), data, (uInt)out);
	p = b.len;
	put(&b, p,
	    (uint8_t[4]){(uint8_t)(a >> 24), (uint8_t)(a >> 16), (uint8_t)(a >> 8), (uint8_t)a}, 4);
	seed("stored", name, b.p, b.len);
	free(b.p);
}

static void seeds_stored(void)
{
	stored_seed("exact", (const uint16_t[]){60, 70, 70}, 3, (const uint16_t[]){60, 70, 70}, 3);
	stored_seed("shifted", (const uint16_t[]){58, 75, 67}, 3, (const uint16_t[]){60, 70, 70},
		    3);
	stored_seed("empty-block", (const uint16_t[]){40, 5, 55}, 3, (const uint16_t[]){50, 0, 50},
		    3);
	stored_seed("other-count", (const uint16_t[]){100, 100}, 2, (const uint16_t[]){60, 70, 70},
		    3);
	stored_seed("far-guess", (const uint16_t[]){1, 65535}, 2, (const uint16_t[]){65535, 1}, 2);
	stored_seed("zlib-like", (const uint16_t[]){16389, 16391, 16395, 16361}, 4,
		    (const uint16_t[]){16391, 16389, 16393, 16363}, 4);
}

int main(int argc, char **argv)
{
	if (argc != 3 || (strcmp(argv[1], "corpus") && strcmp(argv[1], "chains"))) {
		fprintf(stderr, "usage: mkseeds corpus|chains DIR\n");
		return 2;
	}
	plain = !strcmp(argv[1], "chains");
	out_dir = argv[2];
	mkdirs(out_dir);
	if (plain) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/chains.txt", out_dir);
		write_file(path, "", 0);
	}
	seeds_vmdk();
	seeds_vhd();
	seeds_vhdx();
	if (!plain) {
		seeds_meta();
		seeds_desc();
		seeds_part();
		seeds_vmx();
		seeds_stored();
	}
	return 0;
}
