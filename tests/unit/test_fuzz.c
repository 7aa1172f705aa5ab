/* Deterministic corruption fuzz of every format driver through the chain API.
 *
 * At start-up small valid seed images of every format are built in a temp dir
 * (qemu-img/qemu-io and the project's generators next to this executable; a
 * seed whose tool is missing is skipped). Each seed is a directory of files
 * and a top file to open. For every seed, N mutants are derived from a
 * (seed name, mutant index) hash alone, so any one can be replayed with
 * VD_FUZZ_ONLY=name:index: one file of the seed gets 1-4 mutations aimed at
 * metadata (header fields, tables found by parsing the header, footers,
 * descriptor text, truncation). VHD checksums are usually recomputed after a
 * mutation so that the driver's deeper checks are reached.
 *
 * Each mutant is opened with vd_chain_open() (again with VD_CHAIN_FORCE if
 * that failed), read at every level in random chunks (bounded in bytes and
 * time), described and closed. It must not crash or trip a sanitizer, must
 * not take longer than VD_FUZZ_SLOW_MS, must return -errno values only, must
 * log an error naming a file of the seed when opening fails, must not leak a
 * descriptor, and must leave every file of the seed byte-identical.
 *
 * Knobs: VD_FUZZ_ITER (mutants per seed, default 160), VD_FUZZ_FIRST (index
 * of the first mutant, to hunt beyond the default range), VD_FUZZ_ONLY
 * ("seed" or "seed:index"), VD_FUZZ_SLOW_MS, VD_FUZZ_VERBOSE=1 (show logs).
 * The regression table at the bottom replays exact inputs that once failed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "disk/endian.h"
#include "disk/vhd.h"
#include "disk/vhdx.h"
#include "esx_helper.h"

#define FZ_MAX_FILES 8
#define FZ_READ_CAP (12u << 20)	 /* bytes read per mutant, all levels */
#define FZ_LOOP_NS 1000000000ull /* time cap of one level's read loop */
#define FZ_HANG_S 30		 /* hard limit per mutant (SIGALRM) */
#define FZ_BUF (1u << 20)
#define FZ_FIFO "fifo" /* a named pipe in every seed directory, not a seed file */

struct fz_file {
	char name[64];
	uint8_t *data; /* pristine content */
	size_t len;
};

struct fz_seed {
	const char *name;
	const char *top;    /* file vd_chain_open() gets */
	const char *tool;   /* command that must exist, or NULL */
	const char *script; /* builds the seed in its (current) directory */
};

/* A seed once built: its directory and pristine files. */
struct fz_set {
	const struct fz_seed *seed;
	char dir[PATH_MAX];
	struct fz_file files[FZ_MAX_FILES];
	unsigned n_files;
	int dirty; /* index of the file currently holding a mutant, or -1 */
};

/* Where a mutant may hit: a field of width 4 or 8 (or 1, 2) at off. */
struct fz_hot {
	uint64_t off;
	unsigned width;
	bool be;
};

#define FZ_MAX_HOT 96
struct fz_hots {
	struct fz_hot h[FZ_MAX_HOT];
	unsigned n;
	bool vhd;	   /* recompute VHD checksums after mutating */
	bool vhdx;	   /* recompute VHDX CRC-32Cs (headers, region tables, log) */
	uint64_t text_off; /* descriptor text region (embedded or whole file) */
	uint64_t text_len;
};

/* ---- the PRNG: splitmix64 for seeding, xorshift64* for the stream ------- */

static uint64_t fz_mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t fz_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* Uniform-enough value in [0, n); n == 0 gives 0. */
static uint64_t fz_below(uint64_t *s, uint64_t n)
{
	return n ? fz_rand(s) % n : 0;
}

static uint64_t fz_hash(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

/* ---- state the hang handler reports ------------------------------------ */

static char fz_current[128];
static int fz_saved_stderr = -1;

static void fz_on_alarm(int sig)
{
	char msg[200];
	int n = snprintf(msg, sizeof(msg), "\nfuzz: HANG (> %d s) in %s\n", FZ_HANG_S, fz_current);

	(void)sig;
	if (fz_saved_stderr >= 0)
		dup2(fz_saved_stderr, 2);
	if (n > 0 && write(2, msg, (size_t)n) < 0)
		_exit(3);
	abort();
}

/* Sanitizer reports go to the real stderr even while logs are captured, and
 * name the mutant. */
void __sanitizer_set_report_fd(void *fd) __attribute__((weak));
void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void fz_on_death(void)
{
	fprintf(stdout, "fuzz: CRASH in %s\n", fz_current);
	fflush(stdout);
}

static uint64_t fz_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned long fz_env(const char *name, unsigned long def)
{
	const char *v = getenv(name);

	return v && *v ? strtoul(v, NULL, 0) : def;
}

static unsigned long fz_slow_ms(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return fz_env("VD_FUZZ_SLOW_MS", 6000);
#else
	return fz_env("VD_FUZZ_SLOW_MS", 2000);
#endif
}

/* ---- files ------------------------------------------------------------- */

static char *fz_join(const struct fz_set *set, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", set->dir, name) < 0)
		abort();
	return p;
}

static void fz_write_file(const struct fz_set *set, const char *name, const void *buf, size_t len)
{
	char *p = fz_join(set, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || vd_pwrite_full(fd, buf, len, 0) < 0)
		fail_msg("fuzz: cannot write %s", p);
	close(fd);
	free(p);
}

/* True when the file name holds exactly len bytes equal to buf. */
static bool fz_file_equals(const struct fz_set *set, const char *name, const void *buf, size_t len)
{
	char *p = fz_join(set, name);
	size_t got_len = 0;
	uint8_t *got = esx_slurp(p, &got_len);
	bool same = got && got_len == len && memcmp(got, buf, len) == 0;

	free(got);
	free(p);
	return same;
}

static int fz_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fz_file *)a)->name, ((const struct fz_file *)b)->name);
}

/* Loads every regular file of the seed's directory, sorted by name so the
 * mutant stream does not depend on readdir order. */
static void fz_load(struct fz_set *set)
{
	DIR *d = opendir(set->dir);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d))) {
		struct fz_file *f;
		char *p;

		if (de->d_name[0] == '.')
			continue;
		assert_true(set->n_files < FZ_MAX_FILES);
		assert_true(strlen(de->d_name) < sizeof(f->name));
		f = &set->files[set->n_files++];
		strcpy(f->name, de->d_name);
		p = fz_join(set, f->name);
		f->data = esx_slurp(p, &f->len);
		assert_non_null(f->data);
		free(p);
	}
	closedir(d);
	qsort(set->files, set->n_files, sizeof(set->files[0]), fz_name_cmp);
}

/* ---- where the metadata is: parse the (pristine) file ------------------ */

static void fz_hot_add(struct fz_hots *hs, uint64_t off, unsigned width, bool be, size_t len)
{
	if (hs->n < FZ_MAX_HOT && off < len && width <= len - off)
		hs->h[hs->n++] = (struct fz_hot){off, width, be};
}

static void fz_hot_fields(struct fz_hots *hs, uint64_t base, const uint8_t *spec, unsigned n,
			  bool be, size_t len)
{
	for (unsigned i = 0; i < n; i += 2)
		fz_hot_add(hs, base + spec[i], spec[i + 1], be, len);
}

/* Adds the first entries of a table of entries of width w at off. */
static void fz_hot_table(struct fz_hots *hs, uint64_t off, unsigned w, unsigned n, bool be,
			 size_t len)
{
	for (unsigned i = 0; i < n; i++)
		fz_hot_add(hs, off + (uint64_t)i * w, w, be, len);
}

static void fz_hots_kdmv(struct fz_hots *hs, const uint8_t *b, size_t len, uint64_t hdr)
{
	static const uint8_t f[] = {4,	4, 8,  4, 12, 8, 20, 8, 28, 8, 36, 8,
				    44, 4, 48, 8, 56, 8, 64, 8, 72, 1, 77, 2};
	uint64_t gd, gt, desc;

	fz_hot_fields(hs, hdr, f, sizeof(f), false, len);
	desc = vd_get_le64(b + hdr + 28);
	if (desc && desc < len / 512) {
		hs->text_off = desc * 512;
		hs->text_len = vd_min_u64(vd_get_le64(b + hdr + 36) * 512, len - desc * 512);
	}
	gd = vd_get_le64(b + hdr + 56);
	if (gd == VMDK_GD_AT_END && len >= 1536) {
		/* VMware stream: footer marker, footer, EOS at the end */
		fz_hot_add(hs, len - 1536, 8, false, len);
		fz_hot_add(hs, len - 1536 + 12, 4, false, len);
		fz_hot_add(hs, len - 512 + 12, 4, false, len);
		if (!memcmp(b + len - 1024, "KDMV", 4))
			fz_hots_kdmv(hs, b, len, len - 1024);
		return;
	}
	if (gd >= len / 512)
		return;
	fz_hot_table(hs, gd * 512, 4, 4, false, len);
	gt = vd_get_le32(b + gd * 512);
	if (gt && gt < len / 512) {
		fz_hot_table(hs, gt * 512, 4, 12, false, len);
		for (unsigned i = 0; i < 4; i++) {
			/* a stream's GTE points at a grain marker: lba, size */
			uint64_t g = vd_get_le32(b + gt * 512 + i * 4);

			if (g > 1 && g < len / 512 && (vd_get_le32(b + 8) & VMDK_FLAG_MARKERS)) {
				fz_hot_add(hs, g * 512, 8, false, len);
				fz_hot_add(hs, g * 512 + 8, 4, false, len);
			}
		}
	}
}

static void fz_hots_cowd(struct fz_hots *hs, const uint8_t *b, size_t len)
{
	static const uint8_t f[] = {4, 4, 8, 4, 12, 4, 16, 4, 20, 4, 24, 4, 28, 4};
	uint64_t gd = vd_get_le32(b + 20), gt;

	fz_hot_fields(hs, 0, f, sizeof(f), false, len);
	fz_hot_add(hs, 1648, 4, false, len);
	if (gd >= len / 512)
		return;
	fz_hot_table(hs, gd * 512, 4, 4, false, len);
	gt = vd_get_le32(b + gd * 512);
	if (gt && gt < len / 512)
		fz_hot_table(hs, gt * 512, 4, 16, false, len);
}

static void fz_hots_sesparse(struct fz_hots *hs, const uint8_t *b, size_t len)
{
	uint64_t vol = vd_get_le64(b + 80), gd = vd_get_le64(b + 128), gt = vd_get_le64(b + 144);

	for (unsigned i = 1; i < 26; i++)
		fz_hot_add(hs, i * 8, 8, false, len);
	if (vol < len / 512)
		fz_hot_table(hs, vol * 512, 8, 4, false, len);
	if (gd < len / 512)
		fz_hot_table(hs, gd * 512, 8, 4, false, len);
	if (gt < len / 512)
		fz_hot_table(hs, gt * 512, 8, 12, false, len);
}

static void fz_hots_vhd(struct fz_hots *hs, const uint8_t *b, size_t len)
{
	static const uint8_t ftr[] = {8, 4, 12, 4, 16, 8, 24, 4, 40, 8, 48, 8, 56, 4, 60, 4, 64, 4};
	static const uint8_t hdr[] = {8, 8, 16, 8, 24, 4, 28, 4, 32, 4, 36, 4, 56, 4};
	uint64_t dyn, bat;

	hs->vhd = true;
	fz_hot_fields(hs, len - 512, ftr, sizeof(ftr), true, len);
	if (!memcmp(b, "conectix", 8))
		fz_hot_fields(hs, 0, ftr, sizeof(ftr), true, len);
	dyn = vd_get_be64(b + len - 512 + VHD_FTR_DATA_OFFSET);
	if (dyn >= len || len - dyn < 1024 || memcmp(b + dyn, "cxsparse", 8))
		return;
	fz_hot_fields(hs, dyn, hdr, sizeof(hdr), true, len);
	for (unsigned i = 0; i < 8; i += 2) /* UTF-16 parent name */
		fz_hot_add(hs, dyn + VHD_HDR_PARENT_NAME + i * 7, 2, true, len);
	for (unsigned i = 0; i < 3; i++) {
		uint64_t loc = dyn + VHD_HDR_LOCATORS + i * VHD_LOC_SIZE,
			 data = vd_get_be64(b + loc + 16);

		fz_hot_add(hs, loc, 4, true, len);
		fz_hot_add(hs, loc + 4, 4, true, len);
		fz_hot_add(hs, loc + 8, 4, true, len);
		fz_hot_add(hs, loc + 16, 8, true, len);
		for (unsigned k = 0; k < 4 && data < len; k++) /* the path it holds */
			fz_hot_add(hs, data + k * 5, 2, false, len);
	}
	bat = vd_get_be64(b + dyn + VHD_HDR_TABLE_OFFSET);
	if (bat < len) {
		uint64_t blk = vd_get_be32(b + bat);

		fz_hot_table(hs, bat, 4, 8, true, len);
		if (blk != VHD_BAT_UNUSED && blk < len / 512)
			fz_hot_table(hs, blk * 512, 4, 4, true, len);
	}
}

/* VHDX: header fields, region table entries, the metadata table and
 * items, the first BAT entries, the first log entry and its descriptor. */
static void fz_hots_vhdx(struct fz_hots *hs, const uint8_t *b, size_t len)
{
	static const uint8_t hdr[] = {8, 8, 48, 4, 64, 2, 66, 2, 68, 4, 72, 8};
	static const uint8_t rte[] = {0, 4, 16, 8, 24, 4, 28, 4};
	static const uint8_t mte[] = {16, 4, 20, 4, 24, 4};
	static const uint8_t loge[] = {8,  4, 12, 4, 16, 8, 24, 4, 48, 8,
				       56, 8, 64, 4, 72, 8, 80, 8, 88, 8};
	uint64_t meta = 0, bat = 0, log = vd_get_le64(b + VHDX_HEADER1_OFF + VHDX_HDR_LOG_OFFSET);

	hs->vhdx = true;
	fz_hot_fields(hs, VHDX_HEADER1_OFF, hdr, sizeof(hdr), false, len);
	fz_hot_fields(hs, VHDX_HEADER2_OFF, hdr, sizeof(hdr), false, len);
	fz_hot_add(hs, VHDX_RT1_OFF + VHDX_RT_COUNT, 4, false, len);
	for (unsigned i = 0; i < 2; i++) {
		uint64_t e = VHDX_RT1_OFF + VHDX_RT_ENTRIES + i * VHDX_RT_ENTRY_SIZE;
		fz_hot_fields(hs, e, rte, sizeof(rte), false, len);
		if (e + 32 <= len && !memcmp(b + e, vhdx_guid_metadata, 16))
			meta = vd_get_le64(b + e + 16);
		if (e + 32 <= len && !memcmp(b + e, vhdx_guid_bat, 16))
			bat = vd_get_le64(b + e + 16);
	}
	if (meta && meta < len) {
		fz_hot_add(hs, meta + VHDX_MT_COUNT, 2, false, len);
		for (unsigned i = 0; i < 6; i++) {
			uint64_t e = meta + VHDX_MT_ENTRIES + i * VHDX_MT_ENTRY_SIZE;
			fz_hot_fields(hs, e, mte, sizeof(mte), false, len);
			if (e + 32 <= len) {
				uint64_t it = meta + vd_get_le32(b + e + 16);
				fz_hot_add(hs, it, 4, false, len);	/* block size, size, ... */
				fz_hot_add(hs, it + 4, 4, false, len);	/* flags */
				fz_hot_add(hs, it + 18, 2, false, len); /* locator count */
				fz_hot_table(hs, it + 20, 4, 6, false, len); /* locator entries */
			}
		}
	}
	if (bat && bat < len)
		fz_hot_table(hs, bat, 8, 6, false, len);
	if (log && log < len && !memcmp(b + log, "loge", 4))
		fz_hot_fields(hs, log, loge, sizeof(loge), false, len);
}

static bool fz_is_text(const uint8_t *b, size_t len)
{
	size_t n = vd_min_u64(len, 512);

	for (size_t i = 0; i < n; i++)
		if (b[i] == 0 || (b[i] < 0x20 && b[i] != '\n' && b[i] != '\r' && b[i] != '\t'))
			return false;
	return n > 0;
}

static void fz_hots_find(struct fz_hots *hs, const uint8_t *b, size_t len)
{
	memset(hs, 0, sizeof(*hs));
	if (len >= 512 && !memcmp(b, "KDMV", 4))
		fz_hots_kdmv(hs, b, len, 0);
	else if (len >= 2048 && !memcmp(b, "COWD", 4))
		fz_hots_cowd(hs, b, len);
	else if (len >= 512 && vd_get_le64(b) == 0xcafebabeull)
		fz_hots_sesparse(hs, b, len);
	else if (len >= 512 && !memcmp(b + len - 512, "conectix", 8))
		fz_hots_vhd(hs, b, len);
	else if (len >= VHDX_HEADER_SECTION && !memcmp(b, "vhdxfile", 8))
		fz_hots_vhdx(hs, b, len);
	else if (fz_is_text(b, len)) {
		hs->text_off = 0;
		hs->text_len = len;
	}
}

/* ---- mutations ---------------------------------------------------------- */

struct fz_mut {
	uint8_t *data;
	size_t len, cap;
};

static void fz_grow(struct fz_mut *m, size_t len)
{
	if (len > m->cap) {
		m->data = realloc(m->data, len);
		assert_non_null(m->data);
		m->cap = len;
	}
	if (len > m->len)
		memset(m->data + m->len, 0, len - m->len);
	m->len = len;
}

static void fz_put(struct fz_mut *m, uint64_t off, unsigned w, bool be, uint64_t v)
{
	if (off >= m->len || w > m->len - off)
		return;
	switch (w) {
	case 1:
		m->data[off] = (uint8_t)v;
		break;
	case 2:
		be ? vd_put_be16(m->data + off, (uint16_t)v)
		   : vd_put_le16(m->data + off, (uint16_t)v);
		break;
	case 4:
		be ? vd_put_be32(m->data + off, (uint32_t)v)
		   : vd_put_le32(m->data + off, (uint32_t)v);
		break;
	default:
		be ? vd_put_be64(m->data + off, v) : vd_put_le64(m->data + off, v);
	}
}

static uint64_t fz_get(const struct fz_mut *m, uint64_t off, unsigned w, bool be)
{
	if (off >= m->len || w > m->len - off)
		return 0;
	switch (w) {
	case 1:
		return m->data[off];
	case 2:
		return be ? vd_get_be16(m->data + off) : vd_get_le16(m->data + off);
	case 4:
		return be ? vd_get_be32(m->data + off) : vd_get_le32(m->data + off);
	default:
		return be ? vd_get_be64(m->data + off) : vd_get_le64(m->data + off);
	}
}

/* A value likely to sit on a boundary of some check. */
static uint64_t fz_interesting(uint64_t *s, uint64_t old, size_t len)
{
	static const uint64_t v[] = {0,
				     1,
				     2,
				     3,
				     8,
				     0x7f,
				     0x80,
				     0xff,
				     0x100,
				     0x200,
				     0x1000,
				     0xffff,
				     0x10000,
				     0x7fffffff,
				     0x80000000,
				     0xfffffffe,
				     0xffffffff,
				     0x100000000ull,
				     0x7fffffffffffffffull,
				     0x8000000000000000ull,
				     0xffffffffffffffffull};

	switch (fz_below(s, 10)) {
	case 0:
		return len;
	case 1:
		return len + 1 - fz_below(s, 3);
	case 2:
		return len / 512 + 1 - fz_below(s, 3);
	case 3:
		return old + 1 - fz_below(s, 3);
	case 4:
		return fz_below(s, 2) ? old << fz_below(s, 12) : old >> fz_below(s, 12);
	case 5:
		return fz_rand(s);
	case 6:
		return fz_below(s, len / 512 + 2);
	default:
		return v[fz_below(s, sizeof(v) / sizeof(v[0]))];
	}
}

/* Replaces del bytes at a with the n bytes at ins. A whole-file text (lim ==
 * m->len) grows or shrinks; an embedded descriptor shifts inside its region
 * [.., lim), cut or NUL-padded at lim, so the tables after it stay put. */
static void fz_splice(struct fz_mut *m, uint64_t a, uint64_t del, const uint8_t *ins, uint64_t n,
		      uint64_t lim)
{
	uint64_t old = m->len, keep;

	del = vd_min_u64(del, lim - a);
	if (lim == old) {
		if (n > del)
			fz_grow(m, old + n - del);
		memmove(m->data + a + n, m->data + a + del, old - a - del);
		memcpy(m->data + a, ins, n);
		m->len = old - del + n;
		return;
	}
	n = vd_min_u64(n, lim - a);
	keep = lim - a - (n > del ? n : del);
	memmove(m->data + a + n, m->data + a + del, keep);
	memcpy(m->data + a, ins, n);
	if (n < del)
		memset(m->data + lim - (del - n), 0, del - n);
}

/* Names of the files of the seed being mutated, for fz_other_name(). */
static const char *fz_names[FZ_MAX_FILES];
static unsigned fz_n_names;

/* A file name a hostile descriptor might hold instead of the right one:
 * another file of the seed (cycles, wrong formats), a FIFO (an open must not
 * block on it), a directory, a device, nothing. */
static const char *fz_other_name(uint64_t *s)
{
	static const char *const odd[] = {FZ_FIFO,	".",	      "..", "/",
					  "/dev/zero",	"/dev/null",  "",   "missing.vmdk",
					  "./" FZ_FIFO, "../" FZ_FIFO};
	uint64_t i = fz_below(s, fz_n_names * 2 + sizeof(odd) / sizeof(odd[0]));

	return i < fz_n_names * 2 ? fz_names[i / 2] : odd[i - fz_n_names * 2];
}

/* Text edits on [off, off+tlen) of the buffer (a descriptor). */
static void fz_mutate_text(uint64_t *s, struct fz_mut *m, uint64_t off, uint64_t tlen)
{
	static const char *const junk[] = {
	    "\"",     "\\",	    "=",     " ",    "\n",
	    "#",      "\"\"",	    "RW ",   "ZERO", "FLAT",
	    "SPARSE", "parentCID=", "CID=",  "-1",   "99999999999999999999",
	    "0x",     "\t",	    "../../"};
	uint64_t lim = off == 0 ? m->len : vd_min_u64(off + tlen, m->len), a, b, n;
	uint8_t tmp[24000];
	size_t textlen;

	if (lim <= off)
		return;
	/* the text ends at the first NUL */
	textlen = strnlen((char *)m->data + off, lim - off);
	if (!textlen)
		return;
	a = off + fz_below(s, textlen);
	b = a;
	switch (fz_below(s, 8)) {
	case 0: /* delete a line (from a to the next newline) */
		while (b < off + textlen && m->data[b] != '\n')
			b++;
		fz_splice(m, a, b - a, tmp, 0, lim);
		break;
	case 1: /* duplicate a stretch (a line, roughly) */
		n = vd_min_u64(fz_below(s, 120) + 1, off + textlen - a);
		memcpy(tmp, m->data + a, n);
		fz_splice(m, a, 0, tmp, n, lim);
		break;
	case 2: /* a number becomes something else */
		while (a < off + textlen && (m->data[a] < '0' || m->data[a] > '9'))
			a++;
		for (b = a; b < off + textlen && m->data[b] >= '0' && m->data[b] <= '9'; b++)
			;
		n = (uint64_t)snprintf((char *)tmp, sizeof(tmp), "%" PRIu64,
				       fz_interesting(s, 0, m->len));
		fz_splice(m, a, b - a, tmp, n, lim);
		break;
	case 3: /* insert a token */
		b = fz_below(s, sizeof(junk) / sizeof(junk[0]));
		n = strlen(junk[b]);
		memcpy(tmp, junk[b], n);
		fz_splice(m, a, 0, tmp, n, lim);
		break;
	case 4: /* a very long line */
		n = 1000 + fz_below(s, sizeof(tmp) - 1000);
		memset(tmp, fz_below(s, 2) ? 'A' : '"', n);
		fz_splice(m, a, 0, tmp, n, lim);
		break;
	case 6: /* a quoted name (extent, parent hint) becomes another file */
		n = 0;
		for (b = off; b < off + textlen; b++)
			n += m->data[b] == '"';
		n = fz_below(s, n / 2) * 2; /* quotes before the opening one */
		for (a = off; a < off + textlen && (m->data[a] != '"' || n--); a++)
			;
		for (b = a + 1; b < off + textlen && m->data[b] != '"'; b++)
			;
		if (b < off + textlen) {
			const char *name = fz_other_name(s);

			n = strlen(name);
			memcpy(tmp, name, n);
			fz_splice(m, a + 1, b - a - 1, tmp, n, lim);
		}
		break;
	case 5: /* embedded NUL or a control byte */
		m->data[a] = fz_below(s, 2) ? 0 : (uint8_t)fz_below(s, 32);
		break;
	default: /* cut the text here */
		fz_splice(m, a, lim - a, tmp, 0, lim);
	}
}

/* Ones' complement of the byte sum with the checksum field taken as zero. */
static void fz_vhd_sum(struct fz_mut *m, uint64_t off, size_t size, unsigned sum_at)
{
	uint32_t sum = 0;

	if (off >= m->len || size > m->len - off)
		return;
	vd_put_be32(m->data + off + sum_at, 0);
	for (size_t i = 0; i < size; i++)
		sum += m->data[off + i];
	vd_put_be32(m->data + off + sum_at, ~sum);
}

static void fz_vhd_fix(struct fz_mut *m)
{
	uint64_t dyn;

	if (m->len < 512)
		return;
	if (!memcmp(m->data, "conectix", 8))
		fz_vhd_sum(m, 0, 512, VHD_FTR_CHECKSUM);
	if (memcmp(m->data + m->len - 512, "conectix", 8))
		return;
	fz_vhd_sum(m, m->len - 512, 512, VHD_FTR_CHECKSUM);
	dyn = vd_get_be64(m->data + m->len - 512 + VHD_FTR_DATA_OFFSET);
	if (dyn < m->len && m->len - dyn >= 1024 && !memcmp(m->data + dyn, "cxsparse", 8))
		fz_vhd_sum(m, dyn, 1024, VHD_HDR_CHECKSUM);
}

/* Recomputes the CRC-32C of both headers, both region tables and every log
 * entry of the current header's log whose length fits, so that mutants get
 * past the checksums to the checks behind them. */
static void fz_vhdx_fix(struct fz_mut *m)
{
	uint64_t log, loglen;

	if (m->len < VHDX_HEADER_SECTION)
		return;
	for (uint64_t h = VHDX_HEADER1_OFF; h <= VHDX_HEADER2_OFF; h += VHDX_HEADER1_OFF)
		vd_put_le32(m->data + h + VHDX_HDR_CHECKSUM,
			    vhdx_checksum(m->data + h, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
	for (uint64_t t = VHDX_RT1_OFF; t <= VHDX_RT2_OFF; t += VHDX_RT2_OFF - VHDX_RT1_OFF)
		vd_put_le32(m->data + t + VHDX_RT_CHECKSUM,
			    vhdx_checksum(m->data + t, VHDX_RT_SIZE, VHDX_RT_CHECKSUM));
	log = vd_get_le64(m->data + VHDX_HEADER1_OFF + VHDX_HDR_LOG_OFFSET);
	loglen = vd_get_le32(m->data + VHDX_HEADER1_OFF + VHDX_HDR_LOG_LENGTH);
	if (log >= m->len || loglen > m->len - log)
		return;
	for (uint64_t k = 0; k + 4096 <= loglen; k += 4096) {
		uint8_t *e = m->data + log + k;
		uint32_t el = vd_get_le32(e + VHDX_LOG_ENTRY_LENGTH);
		if (!memcmp(e, "loge", 4) && el >= 4096 && el <= loglen - k)
			vd_put_le32(e + VHDX_LOG_ENTRY_CHECKSUM,
				    vhdx_checksum(e, el, VHDX_LOG_ENTRY_CHECKSUM));
	}
}

/* One mutation of m (a copy of a file whose metadata map is hs). */
static void fz_mutate_once(uint64_t *s, struct fz_mut *m, const struct fz_hots *hs)
{
	unsigned op = (unsigned)fz_below(s, 12);

	if (!m->len)
		return;
	if (op < 4 && hs->n) { /* a field of the header or a table */
		const struct fz_hot *h = &hs->h[fz_below(s, hs->n)];

		fz_put(m, h->off, h->width, h->be,
		       fz_interesting(s, fz_get(m, h->off, h->width, h->be), m->len));
	} else if (op < 6 && hs->text_len) {
		fz_mutate_text(s, m, hs->text_off, hs->text_len);
	} else if (op == 6) { /* truncate, often inside the metadata */
		m->len =
		    fz_below(s, 2) ? fz_below(s, vd_min_u64(m->len, 65536)) : fz_below(s, m->len);
	} else if (op == 7) { /* bytes of the footer area */
		uint64_t tail = vd_min_u64(m->len, 2048);

		for (unsigned n = (unsigned)fz_below(s, 8) + 1; n; n--)
			m->data[m->len - tail + fz_below(s, tail)] = (uint8_t)fz_rand(s);
	} else if (op == 8) { /* an aligned word anywhere in the first 64 KiB */
		uint64_t span = vd_min_u64(m->len, 65536);
		unsigned w = fz_below(s, 2) ? 4 : 8;
		uint64_t off = fz_below(s, span) & ~(uint64_t)(w - 1);

		fz_put(m, off, w, hs->vhd, fz_interesting(s, fz_get(m, off, w, hs->vhd), m->len));
	} else if (op == 9) { /* copy one sector over another (stale tables) */
		uint64_t sectors = m->len / 512, a = fz_below(s, sectors), b = fz_below(s, sectors);

		if (sectors)
			memmove(m->data + b * 512, m->data + a * 512, 512);
	} else { /* random bytes in the first 64 KiB */
		uint64_t span = vd_min_u64(m->len, 65536);

		for (unsigned n = (unsigned)fz_below(s, 8) + 1; n; n--)
			m->data[fz_below(s, span)] ^= (uint8_t)(1u << fz_below(s, 8));
	}
}

/* ---- running one mutant ------------------------------------------------- */

struct fz_stats {
	unsigned mutants, opened, failed_open, read_errors;
	uint64_t bytes_read;
};

static bool fz_is_errno(int r)
{
	return r < 0 && r >= -4095;
}

static int fz_fail(const char *what, int r)
{
	fprintf(stdout, "fuzz: FAIL %s: %s (%d)\n", fz_current, what, r);
	fflush(stdout);
	return 1;
}

/* Reads level in chunks of random sizes: from the start, then at random
 * offsets and at the end. Returns 1 on a contract violation. */
static int fz_read_level(uint64_t *s, struct vd_chain *c, unsigned level, uint8_t *buf,
			 uint64_t budget, struct fz_stats *st)
{
	uint64_t size = vd_chain_size(c, level), off = 0, t0 = fz_now_ns();
	unsigned errors = 0;

	while (budget && errors < 8 && fz_now_ns() - t0 < FZ_LOOP_NS) {
		size_t len = (size_t)fz_below(s, fz_below(s, 4) ? 70000 : FZ_BUF) + 1;
		int r;

		if (off >= size || off >= budget) { /* then hop around, also across the end */
			uint64_t r3 = fz_below(s, 4);

			off = r3 > 1 ? fz_below(s, size) : size - vd_min_u64(size, len >> r3);
		}
		if (fz_below(s, 4) == 0)
			off &= ~(uint64_t)511;
		len = (size_t)vd_min_u64(len, budget);
		memset(buf, 0xa5, len);
		r = vd_chain_read(c, level, buf, len, off);
		if (r < 0) {
			if (!fz_is_errno(r))
				return fz_fail("vd_chain_read returned a non-errno", r);
			errors++;
			st->read_errors++;
		} else if (r > 0) {
			return fz_fail("vd_chain_read returned > 0", r);
		} else {
			st->bytes_read += len;
		}
		off += len;
		budget -= len;
	}
	return 0;
}

static int fz_exercise(uint64_t *s, struct vd_chain *c, uint8_t *buf, struct fz_stats *st)
{
	unsigned depth = vd_chain_depth(c);
	struct vd_json j = {0};
	int bad = 0, r;

	for (unsigned lv = 0; lv < depth && !bad; lv++) {
		uint64_t pnum = 0, size = vd_chain_size(c, lv);
		int owner;

		bad = fz_read_level(s, c, lv, buf, FZ_READ_CAP / depth, st);
		if (!bad && size) {
			r = vd_chain_block_status(c, lv, fz_below(s, size), size, &pnum, &owner);
			if (r < 0 && !fz_is_errno(r))
				bad = fz_fail("vd_chain_block_status returned a non-errno", r);
		}
	}
	r = vd_chain_describe(c, &j);
	if (!bad && r < 0 && !fz_is_errno(r))
		bad = fz_fail("vd_chain_describe returned a non-errno", r);
	vd_buf_free(&j.buf);
	return bad;
}

/* Every error line logged while the mutant ran must name a file of the seed
 * (by its directory or its base name). The log is read with pread: a stdio
 * stream over a file that another descriptor rewrites may serve stale
 * buffered bytes after a rewind. */
static int fz_check_log(const struct fz_set *set, FILE *log)
{
	static char text[1 << 20];
	ssize_t n = pread(fileno(log), text, sizeof(text) - 1, 0);
	char *line, *save = NULL;

	text[n > 0 ? n : 0] = 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		bool named = strstr(line, set->dir) != NULL;

		if (!strstr(line, "error: "))
			continue;
		for (unsigned i = 0; i < set->n_files && !named; i++)
			named = strstr(line, set->files[i].name) != NULL;
		if (!named) {
			printf("fuzz: unnamed error line: %s\n", line);
			return fz_fail("error line names no file", 0);
		}
	}
	return 0;
}

static int fz_lowest_fd(void)
{
	int fd = open("/dev/null", O_RDONLY);

	close(fd);
	return fd;
}

/* Opens the seed's top file as it now is on disk and puts it through its
 * paces. Returns the number of contract violations (0 or 1). */
static int fz_run_open(struct fz_set *set, uint64_t *s, uint8_t *buf, struct fz_stats *st,
		       FILE *log)
{
	char *top = fz_join(set, set->seed->top);
	int bad = 0, fd0 = fz_lowest_fd(), r = 0;
	bool verbose = fz_env("VD_FUZZ_VERBOSE", 0);
	uint64_t t0 = fz_now_ns(), ms;
	unsigned flags[] = {0, VD_CHAIN_FORCE};

	if (!verbose) {
		fflush(stderr);
		if (ftruncate(fileno(log), 0) < 0 || dup2(fileno(log), 2) < 0 ||
		    lseek(2, 0, SEEK_SET) < 0)
			fail_msg("fuzz: cannot capture stderr");
	}
	alarm(FZ_HANG_S);
	for (unsigned i = 0; i < 2 && !bad; i++) {
		struct vd_chain *c = NULL;
		unsigned errs = vd_log_error_count();

		r = vd_chain_open(top, flags[i], &c);
		if (r < 0) {
			if (!fz_is_errno(r))
				bad = fz_fail("vd_chain_open returned a non-errno", r);
			else if (vd_log_error_count() == errs)
				bad = fz_fail("vd_chain_open failed without logging an error", r);
			st->failed_open += i == 0;
			continue;
		}
		if (r > 0 || !c || !vd_chain_depth(c))
			bad = fz_fail("vd_chain_open: bad success", r);
		else
			bad = fz_exercise(s, c, buf, st);
		st->opened += i == 0;
		vd_chain_close(c);
		break;
	}
	alarm(0);
	if (!verbose) {
		fflush(stderr);
		dup2(fz_saved_stderr, 2);
		if (!bad)
			bad = fz_check_log(set, log);
	}
	ms = (fz_now_ns() - t0) / 1000000;
	if (!bad && ms > fz_slow_ms())
		bad = fz_fail("too slow (ms)", (int)ms);
	if (!bad && fz_lowest_fd() != fd0)
		bad = fz_fail("file descriptor leaked", fz_lowest_fd());
	free(top);
	return bad;
}

/* Rewrites the file that holds the previous mutant with its pristine bytes. */
static void fz_restore(struct fz_set *set)
{
	if (set->dirty >= 0) {
		const struct fz_file *f = &set->files[set->dirty];

		fz_write_file(set, f->name, f->data, f->len);
		set->dirty = -1;
	}
}

/* Writes m as file fi, runs it and checks that no file changed. */
static int fz_run_mutant(struct fz_set *set, unsigned fi, struct fz_mut *m, uint64_t *s,
			 uint8_t *buf, struct fz_stats *st, FILE *log)
{
	int bad;

	fz_restore(set);
	fz_write_file(set, set->files[fi].name, m->data, m->len);
	set->dirty = (int)fi;
	st->mutants++;
	bad = fz_run_open(set, s, buf, st, log);
	for (unsigned i = 0; i < set->n_files && !bad; i++) {
		const struct fz_file *f = &set->files[i];
		bool same = i == fi ? fz_file_equals(set, f->name, m->data, m->len)
				    : fz_file_equals(set, f->name, f->data, f->len);

		if (!same)
			bad = fz_fail("an input file was modified", (int)i);
	}
	return bad;
}

/* Mutant idx of a seed: pick a file, apply 1-4 mutations. */
static int fz_mutant(struct fz_set *set, unsigned idx, struct fz_mut *m, uint8_t *buf,
		     struct fz_stats *st, FILE *log)
{
	uint64_t s = fz_mix(fz_hash(set->seed->name, strlen(set->seed->name)) ^ fz_mix(idx)) | 1;
	unsigned fi = (unsigned)fz_below(&s, set->n_files);
	const struct fz_file *f = &set->files[fi];
	struct fz_hots hs;

	snprintf(fz_current, sizeof(fz_current), "seed %s mutant %u (file %s)", set->seed->name,
		 idx, f->name);
	fz_hots_find(&hs, f->data, f->len);
	m->len = 0;
	fz_grow(m, f->len);
	memcpy(m->data, f->data, f->len);
	for (unsigned n = (unsigned)fz_below(&s, 4) + 1; n; n--)
		fz_mutate_once(&s, m, &hs);
	if (hs.vhd && fz_below(&s, 4))
		fz_vhd_fix(m);
	if (hs.vhdx && fz_below(&s, 5))
		fz_vhdx_fix(m);
	return fz_run_mutant(set, fi, m, &s, buf, st, log);
}

/* ---- regression inputs ---------------------------------------------------- */

enum fz_reg_op { FZ_LE32, FZ_LE64, FZ_BE32, FZ_BE64, FZ_TRUNC, FZ_BYTES, FZ_REPLACE };

/* One exact input that once failed: a poke into a file of a seed. off < 0
 * counts from the end of the file. */
struct fz_reg {
	const char *seed, *file;
	enum fz_reg_op op;
	int64_t off;
	uint64_t val;
	const char *bytes; /* FZ_BYTES: written at off; FZ_REPLACE: replaces find */
	const char *find;  /* FZ_REPLACE: its first occurrence (text files) */
	bool vhd_fix;
};

static const struct fz_reg fz_regressions[] = {
    /* capacity 2^64-1 sectors */
    {"vmdk_sparse", "b.vmdk", FZ_LE64, 12, 0xffffffffffffffffull, NULL, NULL, false},
    /* an extent that is a FIFO: open() blocked forever */
    {"vmdk_flat", "f.vmdk", FZ_REPLACE, 0, 0, FZ_FIFO, "f-flat.vmdk", false},
    /* a parent hint that is a FIFO */
    {"vmdk_sparse", "d.vmdk", FZ_REPLACE, 0, 0, FZ_FIFO, "b.vmdk", false},
    /* a parent hint naming a device: the error named only /dev/null */
    {"vmdk_sparse", "d.vmdk", FZ_REPLACE, 0, 0, "/dev/null", "b.vmdk", false},
    /* grain of 2 sectors: the first 4 KiB read of a grain overflowed its buffer */
    {"stream_qemu", "q.vmdk", FZ_LE64, 20, 2, NULL, NULL, false},
};

static int fz_regress(struct fz_set *set, uint8_t *buf, struct fz_stats *st, FILE *log)
{
	struct fz_mut m = {0};
	int bad = 0;

	for (size_t r = 0; r < sizeof(fz_regressions) / sizeof(fz_regressions[0]); r++) {
		const struct fz_reg *g = &fz_regressions[r];
		uint64_t s = 1, off;
		unsigned fi;

		if (strcmp(g->seed, set->seed->name))
			continue;
		for (fi = 0; fi < set->n_files && strcmp(set->files[fi].name, g->file); fi++)
			;
		assert_true(fi < set->n_files);
		m.len = 0;
		fz_grow(&m, set->files[fi].len);
		memcpy(m.data, set->files[fi].data, m.len);
		off = g->off < 0 ? m.len - (uint64_t)-g->off : (uint64_t)g->off;
		switch (g->op) {
		case FZ_LE32:
		case FZ_LE64:
		case FZ_BE32:
		case FZ_BE64:
			fz_put(&m, off, g->op == FZ_LE32 || g->op == FZ_BE32 ? 4 : 8,
			       g->op == FZ_BE32 || g->op == FZ_BE64, g->val);
			break;
		case FZ_TRUNC:
			m.len = vd_min_u64(off, m.len);
			break;
		case FZ_BYTES:
			if (off < m.len && strlen(g->bytes) <= m.len - off)
				memcpy(m.data + off, g->bytes, strlen(g->bytes));
			break;
		case FZ_REPLACE: {
			uint8_t *at = memmem(m.data, m.len, g->find, strlen(g->find));

			assert_non_null(at);
			fz_splice(&m, (uint64_t)(at - m.data), strlen(g->find),
				  (const uint8_t *)g->bytes, strlen(g->bytes), m.len);
		}
		}
		if (g->vhd_fix)
			fz_vhd_fix(&m);
		snprintf(fz_current, sizeof(fz_current), "seed %s regression %zu", g->seed, r);
		bad += fz_run_mutant(set, fi, &m, &s, buf, st, log);
	}
	free(m.data);
	return bad;
}

/* ---- the seeds ------------------------------------------------------------ */

/* 4 MiB raw disk with a few patterned runs, the source of converted seeds. */
#define FZ_RAW                                                                                     \
	"qemu-img create -q -f raw r.raw 4M && qemu-io -f raw -c 'write -P 0x5a 0 300k' "          \
	"-c 'write -P 0xa5 1M 200k' -c 'write -P 0x11 4128768 65536' r.raw >/dev/null && "

#define FZ_DESC_HEAD                                                                               \
	"# Disk DescriptorFile\\nversion=1\\nCID=%s\\nparentCID=%s\\ncreateType=\"%s\"\\n"

static const struct fz_seed fz_seeds[] = {
    {"vmdk_sparse", "d.vmdk", "qemu-img",
     "qemu-img create -q -f vmdk -o subformat=monolithicSparse b.vmdk 4M && "
     "qemu-io -f vmdk -c 'write -P 0x11 0 300k' -c 'write -P 0x22 3M 64k' b.vmdk >/dev/null && "
     "qemu-img create -q -f vmdk -o zeroed_grain=on -b b.vmdk -F vmdk d.vmdk && "
     "qemu-io -f vmdk -c 'write -P 0x33 200k 1M' -c 'write -z 2M 128k' d.vmdk >/dev/null"},
    {"vmdk_split", "s.vmdk", "qemu-img",
     "qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse s.vmdk 4M && "
     "qemu-io -f vmdk -c 'write -P 0x44 0 100k' -c 'write -P 0x55 3M 200k' s.vmdk >/dev/null"},
    {"vmdk_flat", "f.vmdk", "qemu-img",
     "qemu-img create -q -f vmdk -o subformat=monolithicFlat f.vmdk 1M && "
     "qemu-io -f vmdk -c 'write -P 0x66 4096 8192' f.vmdk >/dev/null"},
    {"vmdk_multi", "m.vmdk", "qemu-img",
     "qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse x.vmdk 2M && "
     "qemu-io -f vmdk -c 'write -P 0x77 0 70k' x.vmdk >/dev/null && mv x-s001.vmdk m-s001.vmdk && "
     "rm x.vmdk && yes fuzz | head -c 1048576 >m-flat.vmdk && yes 2 | head -c 524288 >m2-flat.vmdk "
     "&& "
     "printf '" FZ_DESC_HEAD "RW 2048 FLAT \"m-flat.vmdk\" 0\\nRDONLY 1024 ZERO\\n"
     "RW 4096 SPARSE \"m-s001.vmdk\"\\nRDONLY 1024 FLAT \"m2-flat.vmdk\" 0\\n' "
     "12345678 ffffffff twoGbMaxExtentSparse >m.vmdk"},
    {"stream_qemu", "q.vmdk", "qemu-img",
     FZ_RAW "qemu-img convert -O vmdk -o subformat=streamOptimized r.raw q.vmdk && rm r.raw"},
    {"stream_vmware", "s.vmdk", "qemu-img",
     FZ_RAW "\"$T/mkstream\" r.raw s.vmdk --grain 16 && rm r.raw"},
    {"cowd", "c.vmdk", NULL,
     "yes base | head -c 1048576 >b-flat.vmdk && printf '" FZ_DESC_HEAD
     "RW 2048 VMFS \"b-flat.vmdk\"\\n' 0badcafe ffffffff vmfs >b.vmdk && "
     "\"$T/mkcowd\" c-delta.vmdk 2048 1 --write 0:4096:1 --write 300000:70000:2 "
     "--descriptor c.vmdk --parent b.vmdk --parent-cid 0badcafe --cid 1 >/dev/null"},
    {"sesparse", "s.vmdk", NULL,
     "yes base | head -c 1048576 >b-flat.vmdk && printf '" FZ_DESC_HEAD
     "RW 2048 VMFS \"b-flat.vmdk\"\\n' 0badcafe ffffffff vmfs >b.vmdk && "
     "\"$T/mksesparse\" s-sesparse.vmdk 2048 --write 0:8192:1 --zero 65536:4096 "
     "--unmap 131072:4096 --write 500000:20000:2 --descriptor s.vmdk --parent b.vmdk "
     "--parent-cid 0badcafe --cid 2 >/dev/null"},
    {"vhd_fixed", "f.vhd", "qemu-img",
     FZ_RAW "qemu-img convert -O vpc -o subformat=fixed r.raw f.vhd && rm r.raw"},
    {"vhd_dynamic", "d.vhd", "qemu-img", FZ_RAW "qemu-img convert -O vpc r.raw d.vhd && rm r.raw"},
    {"vhd_diff", "c.vhd", NULL,
     "\"$T/mkvhd\" dynamic p.vhd 4194304 --block 524288 && "
     "\"$T/mkvhd\" write p.vhd --seed 1 --count 12 && \"$T/mkvhd\" child p.vhd c.vhd && "
     "\"$T/mkvhd\" write c.vhd --seed 2 --count 12"},
    {"vhdx_diff_log", "c.avhdx", NULL,
     "\"$T/mkvhdx\" p.vhdx 4194304 --block 1048576 --writes 8 --zero-blocks 1 && "
     "\"$T/mkvhdx\" c.avhdx 4194304 --block 1048576 --parent p.vhdx --writes 12 --max-len 20 "
     "--log --seed 2"},
};

static int fz_build(struct fz_set *set, const struct fz_seed *seed)
{
	memset(set, 0, sizeof(*set));
	set->seed = seed;
	set->dirty = -1;
	snprintf(set->dir, sizeof(set->dir), "%s/%s", esx_tmpdir(), seed->name);
	if (seed->tool && esx_run("command -v %s >/dev/null", seed->tool) != 0)
		return 1;
	if (esx_run("mkdir -p %s && cd %s && %s", seed->name, seed->name, seed->script) != 0) {
		fprintf(stdout, "fuzz: cannot build seed %s\n", seed->name);
		return -1;
	}
	fz_load(set);
	/* made after loading: slurping a FIFO would block */
	if (esx_run("mkfifo %s/" FZ_FIFO, seed->name) != 0)
		return -1;
	fz_n_names = set->n_files;
	for (unsigned i = 0; i < set->n_files; i++)
		fz_names[i] = set->files[i].name;
	return 0;
}

static void fz_free(struct fz_set *set)
{
	for (unsigned i = 0; i < set->n_files; i++)
		free(set->files[i].data);
	set->n_files = 0;
}

/* Runs one seed: the pristine image must open and read, then the regression
 * inputs and the mutants. */
static void fz_seed_run(const struct fz_seed *seed)
{
	const char *only = getenv("VD_FUZZ_ONLY");
	unsigned first = (unsigned)fz_env("VD_FUZZ_FIRST", 0), bad = 0;
	unsigned iter = first + (unsigned)fz_env("VD_FUZZ_ITER", 160);
	struct fz_stats st = {0};
	struct fz_mut m = {0};
	struct fz_set set;
	uint8_t *buf;
	FILE *log;
	uint64_t t0 = fz_now_ns(), s = 7;
	int r;

	if (only && *only) {
		size_t n = strcspn(only, ":");

		if (strncmp(only, seed->name, n) || seed->name[n])
			skip();
		if (only[n] == ':') {
			first = (unsigned)strtoul(only + n + 1, NULL, 0);
			iter = first + 1;
		}
	}
	r = fz_build(&set, seed);
	if (r > 0)
		skip();
	assert_int_equal(r, 0);
	buf = malloc(FZ_BUF);
	log = tmpfile();
	assert_non_null(buf);
	assert_non_null(log);

	snprintf(fz_current, sizeof(fz_current), "seed %s unmutated", seed->name);
	assert_int_equal(fz_run_open(&set, &s, buf, &st, log), 0);
	assert_int_equal(st.opened, 1);
	assert_int_equal(st.read_errors, 0);
	if (!only || !strchr(only, ':'))
		bad += (unsigned)fz_regress(&set, buf, &st, log);
	for (unsigned i = first; i < iter; i++)
		bad += (unsigned)fz_mutant(&set, i, &m, buf, &st, log);
	fz_restore(&set);
	printf("fuzz: %-13s %u mutants: %u opened, %u refused, %u read errors, %u failures, "
	       "%" PRIu64 " MiB read, %.1f s\n",
	       seed->name, st.mutants, st.opened - 1, st.failed_open, st.read_errors, bad,
	       st.bytes_read >> 20, (double)(fz_now_ns() - t0) / 1e9);
	fflush(stdout);
	fclose(log);
	free(buf);
	free(m.data);
	fz_free(&set);
	assert_int_equal(bad, 0);
}

#define FZ_TEST(i)                                                                                 \
	static void test_##i(void **st)                                                            \
	{                                                                                          \
		(void)st;                                                                          \
		fz_seed_run(&fz_seeds[i]);                                                         \
	}
FZ_TEST(0)
FZ_TEST(1)
FZ_TEST(2)
FZ_TEST(3)
FZ_TEST(4)
FZ_TEST(5)
FZ_TEST(6)
FZ_TEST(7)
FZ_TEST(8)
FZ_TEST(9)
FZ_TEST(10)
FZ_TEST(11)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_0), cmocka_unit_test(test_1),	 cmocka_unit_test(test_2),
	    cmocka_unit_test(test_3), cmocka_unit_test(test_4),	 cmocka_unit_test(test_5),
	    cmocka_unit_test(test_6), cmocka_unit_test(test_7),	 cmocka_unit_test(test_8),
	    cmocka_unit_test(test_9), cmocka_unit_test(test_10), cmocka_unit_test(test_11),
	};
	struct sigaction sa = {.sa_handler = fz_on_alarm};
	int ret;

	_Static_assert(sizeof(fz_seeds) / sizeof(fz_seeds[0]) == 12, "one test per seed");
	fz_saved_stderr = dup(2);
	if (__sanitizer_set_report_fd)
		__sanitizer_set_report_fd((void *)(intptr_t)fz_saved_stderr);
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(fz_on_death);
	sigaction(SIGALRM, &sa, NULL);
	vd_log_set_level(VD_LOG_ERR);
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	esx_run("rm -rf \"$PWD\"");
	return ret;
}
