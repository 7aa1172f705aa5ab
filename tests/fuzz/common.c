/* Oracles and exercisers shared by the harnesses; see fuzz.h. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/vhd.h"
#include "disk/vhdx.h"
#include "esx_helper.h"
#include "fuzz.h"

/* Work per target, kept small so that an execution stays well under a
 * millisecond: the fuzzer gains more from many inputs than from long walks.
 * Requests stay within what FUSE asks for (at most 1 MiB here). */
#define FZ_STEPS 64		    /* block_status calls of the walk from 0 */
#define FZ_JUMPS 16		    /* random probes after it */
#define FZ_LEN_MAX (1ull << 20)	    /* length asked of block_status */
#define FZ_READ_MAX (128u << 10)    /* bytes of one read */
#define FZ_READ_BUDGET (512u << 10) /* bytes read per target */

static bool verbose;

void fz_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz: ORACLE: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* Every error line must name the file it is about (STYLE.md 5): here that
 * is a path below FZ_ROOT, the only files there are. */
static void fz_sink(void *ctx, enum vd_log_level lvl, const char *msg)
{
	(void)ctx;
	if (verbose)
		fprintf(stderr, "vdmount: [%d] %s\n", (int)lvl, msg);
	if (lvl == VD_LOG_ERR && !strstr(msg, FZ_ROOT "/"))
		fz_fail("error line names no file: %s", msg);
}

void fz_init(void)
{
	static bool done;
	const char *v = getenv("FZ_VERBOSE");

	if (done)
		return;
	done = true;
	verbose = v && *v == '1';
	/* every message is formatted (a bad argument shows), few are printed */
	vd_log_set_level(VD_LOG_DEBUG);
	vd_log_set_sink(fz_sink, NULL);
}

void fz_rng_init(struct fz_rng *r, const uint8_t *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ data[i]) * 0x100000001b3ull;
	r->s = h | 1;
}

uint64_t fz_rng_below(struct fz_rng *r, uint64_t n)
{
	/* xorshift64* */
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return n ? (r->s * 0x2545f4914f6cdd1dull) % n : 0;
}

void fz_check_ret(int r, const char *what)
{
	if (r > 0 || r < -4095)
		fz_fail("%s returned %d, not 0 or -errno", what, r);
}

void fz_check_open_failed(int r, unsigned errs, const char *what)
{
	if (r >= 0 || r < -4095)
		fz_fail("%s failed with %d, not -errno", what, r);
	if (vd_log_error_count() == errs)
		fz_fail("%s failed (%s) without logging an error", what, strerror(-r));
}

/* One block_status call, its contract checked: a state, a run length in
 * (0, len], and for DATA a map that is either "the driver reads it" (fd < 0,
 * and then the driver has a read()) or a range inside an open file. */
static int target_status(const struct fz_target *t, uint64_t off, uint64_t len, uint64_t *pnum,
			 struct vd_map *map)
{
	uint64_t fsize, end;
	int st;

	*pnum = 0;
	*map = (struct vd_map){.fd = -1};
	st = t->status(t->ctx, off, len, pnum, map);
	if (st < 0) {
		fz_check_ret(st, "block_status");
		return st;
	}
	if (st != VD_UNALLOC && st != VD_DATA && st != VD_ZERO)
		fz_fail("%s: block_status(%" PRIu64 ", %" PRIu64 ") returned state %d", t->what,
			off, len, st);
	if (*pnum == 0 || *pnum > len)
		fz_fail("%s: block_status(%" PRIu64 ", %" PRIu64 ") gave run length %" PRIu64,
			t->what, off, len, *pnum);
	if (st == VD_DATA && map->fd >= 0 &&
	    (vd_fd_size(map->fd, &fsize) < 0 || vd_add_ovf(map->off, *pnum, &end) || end > fsize))
		fz_fail("%s: DATA run at %" PRIu64 " mapped to %" PRIu64 "+%" PRIu64
			", outside its file",
			t->what, off, map->off, *pnum);
	return st;
}

/* Reads [off, off+len) (a DATA range mapped as map) into a buffer of exactly
 * len bytes, so ASan sees any write past it. With check set it reads again
 * over another pattern: a byte the read did not fill, or a read that does
 * not repeat (a cache serving something else), shows up as a difference. */
static void target_read(const struct fz_target *t, uint64_t off, size_t len,
			const struct vd_map *map, bool check, uint64_t *budget)
{
	uint8_t *a, *b;
	int r;

	if (len == 0 || *budget < len)
		return;
	*budget -= len;
	a = malloc(len);
	if (!a)
		fz_fail("out of memory");
	memset(a, 0xa5, len);
	r = t->read(t->ctx, a, len, off, map);
	fz_check_ret(r, "read");
	if (r == 0 && check && *budget >= len) {
		*budget -= len;
		b = malloc(len);
		if (!b)
			fz_fail("out of memory");
		memset(b, 0x5a, len);
		r = t->read(t->ctx, b, len, off, map);
		fz_check_ret(r, "read");
		if (r == 0 && memcmp(a, b, len))
			fz_fail("%s: two reads of %zu bytes at %" PRIu64
				" differ (unfilled bytes or a stale cache)",
				t->what, len, off);
		free(b);
	}
	free(a);
}

/* The state at off; on DATA reads a random piece of the run. */
static uint64_t target_probe(const struct fz_target *t, struct fz_rng *r, uint64_t off,
			     uint64_t len, uint64_t *budget)
{
	struct vd_map map, sub;
	uint64_t pnum, a, n;
	int st = target_status(t, off, len, &pnum, &map);

	if (st < 0)
		return 0;
	if (st == VD_DATA) {
		a = fz_rng_below(r, 4) ? 0 : fz_rng_below(r, pnum);
		n = pnum - a;
		if (n > FZ_READ_MAX)
			n = 1 + fz_rng_below(r, FZ_READ_MAX);
		/* a piece of a mapped run lies as far into the file */
		sub = map;
		if (sub.fd >= 0)
			sub.off += a;
		target_read(t, off + a, (size_t)n, &sub, fz_rng_below(r, 4) == 0, budget);
	}
	return pnum;
}

unsigned fz_exercised;

void fz_target_exercise(const struct fz_target *t, struct fz_rng *r)
{
	uint64_t off = 0, budget = FZ_READ_BUDGET;

	fz_exercised++;
	if (t->size == 0)
		return;
	/* The walk from 0 asks for the rest of the target or a random length;
	 * a failed lookup (corrupt entry: -EIO) moves on by one sector. */
	for (unsigned i = 0; i < FZ_STEPS && off < t->size; i++) {
		uint64_t left = t->size - off, max = vd_min_u64(left, FZ_LEN_MAX);
		uint64_t len = fz_rng_below(r, 2) ? max : 1 + fz_rng_below(r, max);
		uint64_t n = target_probe(t, r, off, len, &budget);

		off += n ? n : vd_min_u64(512 - off % 512, left);
	}
	for (unsigned i = 0; i < FZ_JUMPS; i++) {
		uint64_t a = fz_rng_below(r, 3) ? fz_rng_below(r, t->size)
						: t->size - 1 - fz_rng_below(r, 4096) % t->size;

		target_probe(t, r, a, 1 + fz_rng_below(r, vd_min_u64(t->size - a, FZ_LEN_MAX)),
			     &budget);
	}
}

/* ---- metadata checks (vdmount --check) ----------------------------------- */

/* What --check says of hostile input: a problem or note must say something,
 * and the walk must end (the harness's timeout) with 0 or a negative errno. */
static void check_msg(void *ctx, const char *path, const char *msg)
{
	(void)ctx;
	if (!path || !msg || !*msg)
		fz_fail("check: a report without a path or a message");
}

/* ---- extents ------------------------------------------------------------- */

static int extent_status(void *ctx, uint64_t off, uint64_t len, uint64_t *pnum, struct vd_map *map)
{
	struct vmdk_extent *e = ctx;

	return e->ops->block_status(e, off, len, pnum, map);
}

/* As chain/ reads a run through vd_image_read(): a pread of the mapped file,
 * or the backend's read() for a run it does not store verbatim. */
static int extent_read(void *ctx, void *buf, size_t len, uint64_t off, const struct vd_map *map)
{
	struct vmdk_extent *e = ctx;

	if (map->fd >= 0)
		return vd_pread_full(map->fd, buf, len, map->off);
	if (!e->ops->read)
		fz_fail("%s: a DATA run at %" PRIu64 " is not mapped and there is no read()",
			e->ops->name, off);
	return e->ops->read(e, buf, len, off);
}

void fz_extent_run(struct vmdk_extent *e, struct fz_rng *r)
{
	struct fz_target t = {e->ops->name, e->sectors * 512, extent_status, extent_read, e};
	struct vd_json j = {0};
	struct vd_check chk = {.report = check_msg, .note = check_msg};

	if (e->ops->check)
		fz_check_ret(e->ops->check(e, &chk), "extent check");

	fz_target_exercise(&t, r);
	if (e->ops->describe) {
		vd_json_obj_begin(&j, NULL);
		e->ops->describe(e, &j);
		vd_json_obj_end(&j);
		vd_buf_free(&j.buf);
	}
	esx_extent_close(e);
}

/* ---- images and chains -------------------------------------------------- */

static int image_status(void *ctx, uint64_t off, uint64_t len, uint64_t *pnum, struct vd_map *map)
{
	struct vd_image *img = ctx;

	return img->ops->block_status(img, off, len, pnum, map);
}

static int image_read(void *ctx, void *buf, size_t len, uint64_t off, const struct vd_map *map)
{
	struct vd_image *img = ctx;

	if (map->fd < 0 && !img->ops->read)
		fz_fail("%s: a DATA run at %" PRIu64 " is not mapped and there is no read()",
			img->ops->name, off);
	return vd_image_read(img, buf, len, off, map);
}

void fz_image_run(struct vd_image *img, struct fz_rng *r)
{
	struct fz_target t = {img->ops->name, img->size, image_status, image_read, img};
	struct vd_json j = {0};
	struct vd_check chk = {.report = check_msg, .note = check_msg};

	if (img->ops->check)
		fz_check_ret(img->ops->check(img, &chk), "image check");

	fz_target_exercise(&t, r);
	if (img->ops->describe) {
		vd_json_obj_begin(&j, NULL);
		img->ops->describe(img, &j);
		vd_json_obj_end(&j);
		vd_buf_free(&j.buf);
	}
	vd_image_close(img);
}

/* ---- a strict JSON check (RFC 8259, UTF-8 per RFC 3629) ------------------ */

struct json_in {
	const unsigned char *p;
	int depth;
};

static void json_ws(struct json_in *in)
{
	while (*in->p == ' ' || *in->p == '\t' || *in->p == '\n' || *in->p == '\r')
		in->p++;
}

/* One UTF-8 sequence at p: its length, or 0 when it is not the shortest
 * form of a scalar value (overlong, surrogate, above U+10FFFF, cut). */
static size_t json_utf8(const unsigned char *p)
{
	uint32_t c = p[0], min;
	size_t n;

	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0)
		n = 2, c &= 0x1f, min = 0x80;
	else if ((c & 0xf0) == 0xe0)
		n = 3, c &= 0x0f, min = 0x800;
	else if ((c & 0xf8) == 0xf0)
		n = 4, c &= 0x07, min = 0x10000;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	return c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) ? 0 : n;
}

static const char *json_value(struct json_in *in);

static const char *json_string(struct json_in *in)
{
	for (in->p++; *in->p != '"';) {
		if (*in->p < 0x20)
			return "control character or end inside a string";
		if (*in->p == '\\') {
			in->p++;
			if (*in->p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!strchr("0123456789abcdefABCDEF", in->p[i]) ||
					    !in->p[i])
						return "bad \\u escape";
				in->p += 5;
			} else if (*in->p && strchr("\"\\/bfnrt", *in->p)) {
				in->p++;
			} else {
				return "bad escape";
			}
		} else {
			size_t n = json_utf8(in->p);

			if (!n)
				return "invalid UTF-8 in a string";
			in->p += n;
		}
	}
	in->p++;
	return NULL;
}

static const char *json_number(struct json_in *in)
{
	const unsigned char *s = in->p;

	if (*in->p == '-')
		in->p++;
	if (!(*in->p >= '0' && *in->p <= '9'))
		return "bad number";
	while (*in->p >= '0' && *in->p <= '9')
		in->p++;
	if (*in->p == '.' || *in->p == 'e' || *in->p == 'E')
		return "vdmount writes integers only";
	return in->p > s ? NULL : "bad number";
}

static const char *json_list(struct json_in *in, char close, bool keys)
{
	const char *why;

	if (++in->depth > 64)
		return "nested too deep";
	in->p++;
	json_ws(in);
	if (*in->p == close) {
		in->p++;
		in->depth--;
		return NULL;
	}
	for (;;) {
		json_ws(in);
		if (keys) {
			if (*in->p != '"')
				return "object key is not a string";
			if ((why = json_string(in)))
				return why;
			json_ws(in);
			if (*in->p++ != ':')
				return "no ':' after a key";
		}
		if ((why = json_value(in)))
			return why;
		json_ws(in);
		if (*in->p == ',') {
			in->p++;
			continue;
		}
		if (*in->p++ != close)
			return "no ',' or closing bracket";
		in->depth--;
		return NULL;
	}
}

static const char *json_value(struct json_in *in)
{
	json_ws(in);
	switch (*in->p) {
	case '{':
		return json_list(in, '}', true);
	case '[':
		return json_list(in, ']', false);
	case '"':
		return json_string(in);
	case 't':
		return strncmp((const char *)in->p, "true", 4) ? "bad literal" : (in->p += 4, NULL);
	case 'f':
		return strncmp((const char *)in->p, "false", 5) ? "bad literal"
								: (in->p += 5, NULL);
	case 'n':
		return strncmp((const char *)in->p, "null", 4) ? "bad literal" : (in->p += 4, NULL);
	default:
		return json_number(in);
	}
}

/* NULL when text is one valid JSON value (and nothing after it), else why. */
static const char *json_check(const char *text)
{
	struct json_in in = {(const unsigned char *)text, 0};
	const char *why = json_value(&in);

	if (!why) {
		json_ws(&in);
		if (*in.p)
			why = "text after the value";
	}
	return why;
}

const char *fz_json_check(const char *text)
{
	return json_check(text);
}

struct chain_level {
	struct vd_chain *c;
	unsigned level;
};

static int chain_status(void *ctx, uint64_t off, uint64_t len, uint64_t *pnum, struct vd_map *map)
{
	struct chain_level *cl = ctx;

	(void)map; /* the chain does not map: chain_read() looks runs up again */
	int owner, st = vd_chain_block_status(cl->c, cl->level, off, len, pnum, &owner);

	if (st >= 0 && (owner < -1 || owner > (int)cl->level))
		fz_fail("chain: block_status at level %u names layer %d", cl->level, owner);
	return st;
}

static int chain_read(void *ctx, void *buf, size_t len, uint64_t off, const struct vd_map *map)
{
	struct chain_level *cl = ctx;

	(void)map;
	return vd_chain_read(cl->c, cl->level, buf, len, off);
}

void fz_chain_run(struct vd_chain *c, struct fz_rng *r)
{
	unsigned depth = vd_chain_depth(c);
	struct vd_json j = {0};
	int ret;

	if (depth == 0 || depth > VD_CHAIN_MAX_DEPTH)
		fz_fail("chain: depth %u", depth);
	for (unsigned i = 0; i < depth; i++) {
		struct chain_level cl = {c, i};
		struct fz_target t = {"chain", vd_chain_size(c, i), chain_status, chain_read, &cl};
		char *name = vd_chain_layer_name(c, i);

		if (!name)
			fz_fail("chain: no name for layer %u", i);
		free(name);
		fz_target_exercise(&t, r);
		/* past the end: zeros, full length */
		if (t.size < UINT64_MAX - 4096) {
			uint8_t tail[1024];

			ret = vd_chain_read(c, i, tail, sizeof(tail),
					    t.size - (t.size > 512 ? 512 : 0));
			fz_check_ret(ret, "vd_chain_read across the end");
		}
	}
	for (unsigned i = 0; i < depth; i++) {
		struct vd_image *img = vd_chain_layer(c, i);
		struct vd_check chk = {.report = check_msg, .note = check_msg};

		if (img->ops->check)
			fz_check_ret(img->ops->check(img, &chk), "layer check");
	}
	ret = vd_chain_describe(c, &j);
	fz_check_ret(ret, "vd_chain_describe");
	if (ret == 0 && (!j.buf.data || j.buf.data[0] != '{'))
		fz_fail("chain: describe wrote no JSON object");
	/* chain.json promises strict JSON in valid UTF-8 whatever the input
	 * (issue 7, class 4); checked here by an independent reader */
	if (ret == 0) {
		const char *why = json_check(j.buf.data);

		if (why)
			fz_fail("chain.json is not valid JSON: %s:\n%s", why, j.buf.data);
	}
	vd_buf_free(&j.buf);
}

/* ---- VHD checksums ------------------------------------------------------- */

static void vhd_fix(uint8_t *p, size_t size, size_t sum_at)
{
	if (vd_get_be32(p + sum_at) == 0)
		vd_put_be32(p + sum_at, vhd_checksum(p, size, sum_at));
}

void fz_vhd_fix_checksums(uint8_t *data, size_t len)
{
	uint64_t dyn = UINT64_MAX;

	if (len < VHD_FOOTER_SIZE)
		return;
	if (!memcmp(data, "conectix", 8)) {
		dyn = vd_get_be64(data + VHD_FTR_DATA_OFFSET);
		vhd_fix(data, VHD_FOOTER_SIZE, VHD_FTR_CHECKSUM);
	}
	if (!memcmp(data + len - VHD_FOOTER_SIZE, "conectix", 8)) {
		dyn = vd_get_be64(data + len - VHD_FOOTER_SIZE + VHD_FTR_DATA_OFFSET);
		vhd_fix(data + len - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, VHD_FTR_CHECKSUM);
	}
	if (dyn < len && len - dyn >= VHD_HEADER_SIZE && !memcmp(data + dyn, "cxsparse", 8))
		vhd_fix(data + dyn, VHD_HEADER_SIZE, VHD_HDR_CHECKSUM);
}

/* ---- archives ------------------------------------------------------------ */

/* The offset of a placed member "name@N" (N decimal or 0x hex), with the
 * file name's length in *nlen; UINT64_MAX for an ordinary name. */
static uint64_t member_offset(const char *name, size_t *nlen)
{
	const char *at = strrchr(name, '@');
	char *end;
	uint64_t off;

	*nlen = strlen(name);
	if (!at || at == name || !at[1] || at[1] == '-' || at[1] == '+' || at[1] == ' ')
		return UINT64_MAX;
	errno = 0;
	off = strtoull(at + 1, &end, 0);
	if (*end || errno)
		return UINT64_MAX;
	*nlen = (size_t)(at - name);
	return off;
}

unsigned fz_archive_unpack(const uint8_t *data, size_t len, char *top)
{
	const size_t seplen = sizeof(FZ_SEP) - 1;
	const uint8_t *p = data, *end = data + len;
	unsigned n = 0;

	top[0] = '\0';
	while (p < end) {
		const uint8_t *next = memmem(p, (size_t)(end - p), FZ_SEP, seplen);
		const uint8_t *stop = next ? next : end;
		const uint8_t *nl = memchr(p, '\n', (size_t)(stop - p));
		char path[PATH_MAX], name[FZ_NAME_MAX + 1];
		size_t nlen = nl ? (size_t)(nl - p) : 0;

		if (nl && nlen > 0 && nlen <= FZ_NAME_MAX && !memchr(p, '\0', nlen)) {
			size_t clen = (size_t)(stop - nl - 1);
			uint8_t *copy = malloc(clen ? clen : 1);
			uint64_t off;
			int r;

			if (!copy)
				fz_fail("out of memory");
			memcpy(copy, nl + 1, clen);
			memcpy(name, p, nlen);
			name[nlen] = '\0';
			off = member_offset(name, &nlen);
			if (off == 0 || off == UINT64_MAX)
				fz_vhd_fix_checksums(copy, clen);
			fz_vhdx_fix_checksums(copy, clen, off == UINT64_MAX ? 0 : off);
			snprintf(path, sizeof(path), FZ_ROOT "/%.*s", (int)nlen, name);
			r = off == UINT64_MAX ? fz_fs_add(path, copy, clen)
					      : fz_fs_place(path, off, copy, clen);
			if (r == 0 && n++ == 0)
				snprintf(top, PATH_MAX, "%s", path);
			free(copy);
		}
		p = next ? next + seplen : end;
	}
	return n;
}

/* ---- VHDX checksums ------------------------------------------------------ */

/* CRC-32C over zeros without reading them: the CRC register after k zero
 * bytes is a linear map of the register before (GF(2) 32x32 matrices, as
 * zlib's crc32_combine); zop[i] is the map for 2^i bytes. A region table's
 * 64 KiB cost the harness as much as the driver otherwise. */
static uint32_t zop[32][32];

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;

	for (int i = 0; vec; i++, vec >>= 1)
		if (vec & 1)
			sum ^= mat[i];
	return sum;
}

static uint32_t crc_zeros(uint32_t crc, uint64_t k)
{
	static bool ready;
	uint32_t reg;

	if (!ready) {
		static const uint8_t z[1000];
		uint32_t bit[32], t[32];

		bit[0] = 0x82F63B78u; /* one zero bit, reflected */
		for (int n = 1; n < 32; n++)
			bit[n] = 1u << (n - 1);
		for (int sq = 0; sq < 3; sq++) { /* 2, 4, 8 bits */
			for (int n = 0; n < 32; n++)
				t[n] = gf2_times(bit, bit[n]);
			memcpy(bit, t, sizeof(t));
		}
		memcpy(zop[0], bit, sizeof(bit));
		for (int i = 1; i < 32; i++)
			for (int n = 0; n < 32; n++)
				zop[i][n] = gf2_times(zop[i - 1], zop[i - 1][n]);
		ready = true;
		if (crc_zeros(0x1234567u, sizeof(z)) != vhdx_crc32c(0x1234567u, z, sizeof(z)))
			fz_fail("crc_zeros disagrees with vhdx_crc32c");
	}
	reg = ~crc;
	for (int i = 0; k; i++, k >>= 1)
		if (k & 1)
			reg = gf2_times(zop[i], reg);
	return ~reg;
}

/* CRC-32C of buf[0, len) (the checksum at 4 taken as zero) followed by
 * zeros up to size bytes. */
static uint32_t vhdx_sum_padded(const uint8_t *buf, size_t len, size_t size)
{
	return crc_zeros(vhdx_checksum(buf, len, 4), size - len);
}

void fz_vhdx_fix_checksums(uint8_t *data, size_t len, uint64_t off)
{
	for (size_t i = (size_t)((4096 - off % 4096) % 4096); i + 12 <= len; i += 4096) {
		uint8_t *p = data + i;
		uint64_t at = off + i;
		size_t size = 0;

		if (!memcmp(p, "head", 4) && (at == VHDX_HEADER1_OFF || at == VHDX_HEADER2_OFF))
			size = VHDX_HEADER_SIZE;
		else if (!memcmp(p, "regi", 4) && (at == VHDX_RT1_OFF || at == VHDX_RT2_OFF))
			size = VHDX_RT_SIZE;
		else if (!memcmp(p, "loge", 4))
			size = vd_get_le32(p + VHDX_LOG_ENTRY_LENGTH);
		if (size < 12 || size > VHDX_MiB || vd_get_le32(p + 4) != 0)
			continue;
		vd_put_le32(p + 4, vhdx_sum_padded(p, size < len - i ? size : len - i, size));
	}
}
