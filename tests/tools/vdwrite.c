/* vdwrite: drives a format's write side (create_child, write, discard,
 * flush, close) through libvdcore with a seeded random stream of writes,
 * and writes out what the new delta must read as, for end-to-end tests.
 *
 *   vdwrite [options] PARENT DELTA
 *     --seed N         random stream (default 1)
 *     --ops N          operations (default 200)
 *     --flush-every N  one flush every N operations on average (default 10;
 *                      0: only the one at close)
 *     --max-write N    largest random write in bytes (default 3 MiB)
 *     --model FILE     the raw disk DELTA must read as (written at the end)
 *     --kill-after N   after N operations write FILE as the disk must read
 *                      after a crash (the state of the last flush) and
 *                      SIGKILL itself: no flush, no close
 *     --crash-on-error on the first failing write or flush, do the same
 *                      and exit 3 for ENOSPC, 4 for anything else; when
 *                      the failure was a flush, FILE.alt holds the state
 *                      that flush would have made (each unit may show
 *                      either)
 *     --check N        every N operations compare a random range read
 *                      through DELTA (its parent for what it does not hold)
 *                      with the model; and the whole disk at the end,
 *                      reopened read-only as a chain
 *   vdwrite --cmp UNIT A B [C]   A must equal B, or, unit by unit, C
 *
 * PARENT is opened as a chain (the top layer is the new delta's parent);
 * DELTA is made with vd_image_create_child() and opened VD_OPEN_RDWR. The
 * stream plays the copy-on-write layer's part itself: a write that covers a
 * unit (the delta's cow_unit) that the delta does not hold only in part is
 * widened to whole units, filled from the model; other units take any
 * range (sector-aligned for VHD). Discards are whole units (zeros written
 * where the driver has no discard). Writes are 1, 511, 512, 4096, 65537 and
 * 2 MiB + 3 bytes, random sizes, the last sector, and overlaps of the
 * previous write.
 *
 * The model is exact, also after a crash: each unit maps to the parent, to
 * zeros, or to one stored content, both as the delta says now and as of the
 * last flush; after a crash the disk reads as that flushed map, with the
 * stored contents as last written (an in-place overwrite reaches the file
 * at once, the table entries only at flush).
 *
 * Exit: 0 ok, 1 error, 2 usage, 3/4 see --crash-on-error, 5 model mismatch. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"
#include "disk/disk.h"

#define M_PARENT (-1)
#define M_ZERO (-2)

struct blob {
	uint8_t *data; /* unit bytes */
	int refs;      /* from cur[] and flushed[] */
};

struct ctx {
	struct vd_chain *parent;
	unsigned top;
	struct vd_image *delta;
	uint64_t size, unit, n_units, align;
	int32_t *cur, *flushed; /* per unit: M_PARENT, M_ZERO or a blob index */
	struct blob *blobs;
	int32_t n_blobs, cap_blobs, free_head;
	uint64_t rng;
	uint64_t last_off;
};

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("vdwrite: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void *xcalloc(size_t n, size_t s)
{
	void *p = calloc(n ? n : 1, s);

	if (!p)
		die("out of memory");
	return p;
}

static uint64_t rnd(struct ctx *c)
{
	uint64_t z = (c->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(struct ctx *c, uint64_t n)
{
	return n ? rnd(c) % n : 0;
}

/* --- the model ----------------------------------------------------------- */

static uint64_t unit_len(const struct ctx *c, uint64_t u)
{
	uint64_t start = u * c->unit;

	return c->size - start < c->unit ? c->size - start : c->unit;
}

static int32_t blob_new(struct ctx *c)
{
	int32_t id;

	if (c->free_head >= 0) {
		id = c->free_head;
		c->free_head = (int32_t)(intptr_t)c->blobs[id].data;
	} else {
		if (c->n_blobs == c->cap_blobs) {
			c->cap_blobs = c->cap_blobs ? c->cap_blobs * 2 : 64;
			c->blobs = realloc(c->blobs, (size_t)c->cap_blobs * sizeof(*c->blobs));
			if (!c->blobs)
				die("out of memory");
		}
		id = c->n_blobs++;
	}
	c->blobs[id].data = xcalloc(1, c->unit);
	c->blobs[id].refs = 0;
	return id;
}

static void ref(struct ctx *c, int32_t v)
{
	if (v >= 0)
		c->blobs[v].refs++;
}

static void unref(struct ctx *c, int32_t v)
{
	if (v < 0 || --c->blobs[v].refs > 0)
		return;
	free(c->blobs[v].data);
	c->blobs[v].data = (uint8_t *)(intptr_t)c->free_head;
	c->free_head = v;
}

static void map_set(struct ctx *c, int32_t *map, uint64_t u, int32_t v)
{
	ref(c, v);
	unref(c, map[u]);
	map[u] = v;
}

/* What unit u reads as when the delta maps it to v. */
static void unit_content(struct ctx *c, int32_t v, uint64_t u, uint8_t *out)
{
	int r;

	if (v >= 0) {
		memcpy(out, c->blobs[v].data, unit_len(c, u));
	} else if (v == M_ZERO) {
		memset(out, 0, unit_len(c, u));
	} else {
		r = vd_chain_read(c->parent, c->top, out, unit_len(c, u), u * c->unit);
		if (r < 0)
			die("reading the parent: %s", strerror(-r));
	}
}

/* Writes the disk as map says it reads into path (sparse where zero). */
static void model_write(struct ctx *c, const int32_t *map, const char *path)
{
	uint8_t *buf = xcalloc(1, c->unit);
	char *tmp;
	int fd;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		die("out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)c->size) < 0)
		die("%s: %s", tmp, strerror(errno));
	for (uint64_t u = 0; u < c->n_units; u++) {
		unit_content(c, map[u], u, buf);
		if (!vd_mem_is_zero(buf, unit_len(c, u)) &&
		    vd_pwrite_full(fd, buf, unit_len(c, u), u * c->unit) < 0)
			die("%s: %s", tmp, strerror(errno));
	}
	if (close(fd) < 0 || rename(tmp, path) < 0)
		die("%s: %s", path, strerror(errno));
	free(tmp);
	free(buf);
}

/* Reads [off, off + len) as the delta's chain would: the delta where it
 * holds data or zeros, the parent elsewhere. */
static int view_read(struct ctx *c, uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len) {
		struct vd_map map;
		uint64_t n;
		int st = vd_image_block_status(c->delta, off, len, &n, &map), r = 0;

		if (st < 0)
			return st;
		if (st == VD_DATA)
			r = vd_image_read(c->delta, buf, n, off, &map);
		else if (st == VD_ZERO)
			memset(buf, 0, n);
		else
			r = vd_chain_read(c->parent, c->top, buf, n, off);
		if (r < 0)
			return r;
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Compares [off, off + len) of the view with the current model. */
static void check_range(struct ctx *c, uint64_t off, uint64_t len)
{
	uint8_t *got = xcalloc(1, len), *want = xcalloc(1, c->unit);
	int r = view_read(c, got, len, off);

	if (r < 0)
		die("reading back [%" PRIu64 ", +%" PRIu64 "): %s", off, len, strerror(-r));
	for (uint64_t u = off / c->unit; u * c->unit < off + len; u++) {
		uint64_t s = u * c->unit, a = s > off ? s : off;
		uint64_t b = s + unit_len(c, u) < off + len ? s + unit_len(c, u) : off + len;

		unit_content(c, c->cur[u], u, want);
		if (memcmp(got + (a - off), want + (a - s), b - a) != 0) {
			fprintf(stderr,
				"vdwrite: read-back differs from the model in unit %" PRIu64
				" ([%" PRIu64 ", %" PRIu64 "))\n",
				u, a, b);
			exit(5);
		}
	}
	free(got);
	free(want);
}

static void model_free(struct ctx *c)
{
	for (uint64_t u = 0; u < c->n_units; u++) {
		map_set(c, c->cur, u, M_PARENT);
		map_set(c, c->flushed, u, M_PARENT);
	}
	free(c->cur);
	free(c->flushed);
	free(c->blobs);
	vd_chain_close(c->parent);
}

/* --- operations ---------------------------------------------------------- */

/* Writes data at [off, off + len) into the model and the delta, widening it
 * to whole units where the delta does not hold them. Returns the driver's
 * result. */
static int op_write(struct ctx *c, uint64_t off, uint64_t len, uint64_t seed)
{
	uint64_t end = off + len, xoff = off, xend = end;
	uint64_t u0 = off / c->unit, u1 = (end - 1) / c->unit;
	uint8_t *buf;
	int r;

	if (c->cur[u0] < 0)
		xoff = u0 * c->unit;
	if (c->cur[u1] < 0)
		xend = u1 * c->unit + unit_len(c, u1);
	for (uint64_t u = u0; u <= u1; u++) {
		uint64_t s = u * c->unit, a = s > off ? s : off;
		uint64_t b = s + unit_len(c, u) < end ? s + unit_len(c, u) : end;

		if (c->cur[u] < 0) {
			int32_t id = blob_new(c);

			unit_content(c, c->cur[u], u, c->blobs[id].data);
			map_set(c, c->cur, u, id);
		}
		for (uint64_t i = a; i < b; i++)
			c->blobs[c->cur[u]].data[i - s] =
			    (uint8_t)(seed * 131 + i * 7 + (i >> 9) + (i >> 16));
	}
	buf = xcalloc(1, xend - xoff);
	for (uint64_t u = xoff / c->unit; u * c->unit < xend; u++) {
		uint64_t s = u * c->unit, a = s > xoff ? s : xoff;
		uint64_t b = s + unit_len(c, u) < xend ? s + unit_len(c, u) : xend;

		memcpy(buf + (a - xoff), c->blobs[c->cur[u]].data + (a - s), b - a);
	}
	r = vd_image_write(c->delta, buf, xend - xoff, xoff);
	free(buf);
	return r;
}

/* Makes whole units [u, u + n) read as zeros: a discard, or zeros written
 * where the driver has none. */
static int op_discard(struct ctx *c, uint64_t u, uint64_t n)
{
	uint64_t off = u * c->unit, len = 0;
	uint8_t *zero;
	int r;

	for (uint64_t k = u; k < u + n; k++)
		len += unit_len(c, k);
	r = vd_image_discard(c->delta, off, len);
	if (r != -ENOTSUP) {
		for (uint64_t k = u; k < u + n; k++)
			map_set(c, c->cur, k, M_ZERO);
		return r;
	}
	for (uint64_t k = u; k < u + n; k++) {
		if (c->cur[k] < 0)
			map_set(c, c->cur, k, blob_new(c));
		memset(c->blobs[c->cur[k]].data, 0, c->unit);
	}
	zero = xcalloc(1, len);
	r = vd_image_write(c->delta, zero, len, off);
	free(zero);
	return r;
}

static void flushed_take(struct ctx *c, int32_t *from)
{
	for (uint64_t u = 0; u < c->n_units; u++)
		map_set(c, c->flushed, u, from[u]);
}

/* A random write: its offset and length. */
static void pick_write(struct ctx *c, uint64_t max, uint64_t *off, uint64_t *len)
{
	static const uint64_t sizes[] = {1, 511, 512, 4096, 65537, (2u << 20) + 3};
	uint64_t k = rnd_below(c, 10);

	if (k < 6)
		*len = sizes[k];
	else
		*len = 1 + rnd_below(c, max);
	if (*len > c->size)
		*len = c->size;
	if (k == 6) { /* the last sector */
		*len = *len < 512 ? *len : 512;
		*off = c->size - *len;
	} else if (k == 7 && c->last_off < c->size) { /* overlapping the previous one */
		*off = c->last_off + rnd_below(c, 4096);
		if (*off + *len > c->size)
			*off = c->size - *len;
	} else {
		*off = rnd_below(c, c->size - *len + 1);
	}
	if (c->align > 1) {
		*off -= *off % c->align;
		*len = vd_round_up(*len, c->align);
		if (*off + *len > c->size)
			*len = c->size - *off;
	}
	c->last_off = *off;
}

/* On a failure: as if the process died here. */
static void __attribute__((noreturn)) crash(struct ctx *c, const char *model, int r, bool flush)
{
	char *alt;

	fprintf(stderr, "vdwrite: %s failed: %s; stopping as a crash would\n",
		flush ? "flush" : "write", strerror(-r));
	if (flush && model) {
		if (asprintf(&alt, "%s.alt", model) < 0)
			die("out of memory");
		model_write(c, c->cur, alt);
		free(alt);
	}
	if (model)
		model_write(c, c->flushed, model);
	_exit(r == -ENOSPC ? 3 : 4);
}

/* --- unit-wise comparison ------------------------------------------------ */

static int cmp_files(int argc, char **argv)
{
	uint64_t unit = strtoull(argv[2], NULL, 0), off = 0, bad = 0;
	FILE *f[3] = {0};
	uint8_t *b[3];

	if (!unit)
		return 2;
	for (int i = 0; i < argc - 3 && i < 3; i++) {
		f[i] = fopen(argv[3 + i], "rb");
		if (!f[i])
			die("%s: %s", argv[3 + i], strerror(errno));
		b[i] = xcalloc(1, unit);
	}
	for (;; off += unit) {
		size_t n0 = fread(b[0], 1, unit, f[0]), n1 = fread(b[1], 1, unit, f[1]);
		size_t n2 = f[2] ? fread(b[2], 1, unit, f[2]) : 0;

		if (n0 != n1) {
			fprintf(stderr, "vdwrite: %s and %s differ in size\n", argv[3], argv[4]);
			return 5;
		}
		if (n0 == 0)
			break;
		if (memcmp(b[0], b[1], n0) != 0 && (n2 != n0 || memcmp(b[0], b[2], n0) != 0)) {
			fprintf(stderr, "vdwrite: unit at %" PRIu64 " matches no model\n", off);
			bad++;
		}
	}
	return bad ? 5 : 0;
}

/* --- main ---------------------------------------------------------------- */

static int usage(void)
{
	fprintf(stderr, "usage: vdwrite [--seed N] [--ops N] [--flush-every N] [--max-write N] "
			"[--model FILE] [--kill-after N] [--crash-on-error] [--check N] "
			"PARENT DELTA\n       vdwrite --cmp UNIT A B [C]\n");
	return 2;
}

static void setup(struct ctx *c, const char *parent, const char *delta)
{
	struct vd_image *top;
	int r = vd_chain_open(parent, 0, &c->parent);

	if (r < 0)
		exit(1);
	c->top = vd_chain_depth(c->parent) - 1;
	top = vd_chain_layer(c->parent, c->top);
	if (vd_image_create_child(top, delta) < 0 ||
	    vd_image_open(delta, VD_OPEN_RDWR, &c->delta) < 0)
		exit(1);
	c->size = c->delta->size;
	if (c->size != vd_chain_size(c->parent, c->top))
		die("the delta's size %" PRIu64 " differs from its parent's", c->size);
	c->unit = c->delta->cow_unit;
	c->align = strcmp(c->delta->ops->name, "vmdk") ? 512 : 1;
	c->n_units = vd_div_round_up(c->size, c->unit);
	c->cur = xcalloc(c->n_units, sizeof(*c->cur));
	c->flushed = xcalloc(c->n_units, sizeof(*c->flushed));
	for (uint64_t u = 0; u < c->n_units; u++)
		c->cur[u] = c->flushed[u] = M_PARENT;
	c->free_head = -1;
}

/* The whole disk, reopened read-only as a chain from the delta, against the
 * model. */
static void check_reopened(struct ctx *c, const char *delta)
{
	struct vd_chain *ch;
	uint8_t *got = xcalloc(1, c->unit), *want = xcalloc(1, c->unit);

	if (vd_chain_open(delta, 0, &ch) < 0)
		exit(1);
	if (vd_chain_depth(ch) != c->top + 2)
		die("%s reopens as a chain of %u layers, expected %u", delta, vd_chain_depth(ch),
		    c->top + 2);
	for (uint64_t u = 0; u < c->n_units; u++) {
		if (vd_chain_read(ch, c->top + 1, got, unit_len(c, u), u * c->unit) < 0)
			exit(1);
		unit_content(c, c->cur[u], u, want);
		if (memcmp(got, want, unit_len(c, u)) != 0) {
			fprintf(stderr,
				"vdwrite: reopened %s differs from the model in unit %" PRIu64 "\n",
				delta, u);
			exit(5);
		}
	}
	vd_chain_close(ch);
	free(got);
	free(want);
}

int main(int argc, char **argv)
{
	struct ctx c = {0};
	uint64_t seed = 1, ops = 200, flush_every = 10, max_write = 3u << 20, kill_after = 0;
	uint64_t check = 0;
	const char *model = NULL, *args[2];
	bool crash_on_error = false;
	int n_args = 0, r = 0;

	if (argc >= 5 && strcmp(argv[1], "--cmp") == 0)
		return argc <= 6 ? cmp_files(argc, argv) : usage();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		uint64_t *num = !strcmp(a, "--seed")	      ? &seed
				: !strcmp(a, "--ops")	      ? &ops
				: !strcmp(a, "--flush-every") ? &flush_every
				: !strcmp(a, "--max-write")   ? &max_write
				: !strcmp(a, "--kill-after")  ? &kill_after
				: !strcmp(a, "--check")	      ? &check
							      : NULL;

		if (num && i + 1 < argc)
			*num = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(a, "--model") && i + 1 < argc)
			model = argv[++i];
		else if (!strcmp(a, "--crash-on-error"))
			crash_on_error = true;
		else if (a[0] != '-' && n_args < 2)
			args[n_args++] = a;
		else
			return usage();
	}
	if (n_args != 2 || !max_write)
		return usage();
	c.rng = seed;
	setup(&c, args[0], args[1]);
	for (uint64_t i = 0; i < ops; i++) {
		uint64_t k = rnd_below(&c, 100), off, len;
		bool flush = flush_every && rnd_below(&c, flush_every) == 0;

		if (kill_after && i == kill_after) {
			if (model)
				model_write(&c, c.flushed, model);
			fflush(NULL);
			raise(SIGKILL);
		}
		if (flush) {
			r = vd_image_flush(c.delta);
			if (r == 0)
				flushed_take(&c, c.cur);
		} else if (k < 12) {
			uint64_t u = rnd_below(&c, c.n_units);

			r = op_discard(&c, u,
				       1 + rnd_below(&c, c.n_units - u < 40 ? c.n_units - u : 40));
		} else {
			pick_write(&c, max_write, &off, &len);
			r = op_write(&c, off, len, i + seed * 1000);
		}
		if (r < 0 && crash_on_error)
			crash(&c, model, r, flush);
		if (r < 0)
			die("operation %" PRIu64 " failed: %s", i, strerror(-r));
		if (check && i % check == check - 1) {
			uint64_t o = rnd_below(&c, c.size), n = 1 + rnd_below(&c, 4u << 20);

			check_range(&c, o, o + n > c.size ? c.size - o : n);
		}
	}
	if (check)
		check_range(&c, 0, c.size);
	vd_image_close(c.delta);
	flushed_take(&c, c.cur);
	if (check)
		check_reopened(&c, args[1]);
	if (model)
		model_write(&c, c.cur, model);
	model_free(&c);
	return 0;
}
