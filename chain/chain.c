/* Chain discovery and top-down resolution.
 *
 * Discovery walks from the top image down: each layer's hints are resolved
 * in the driver's order, the first existing candidate is opened read-only,
 * and its (st_dev, st_ino) goes into a uthash set so a hint that leads back
 * into the chain is a loop, not an endless walk. Identity (CID / UUID) is
 * checked on every link.
 *
 * Resolution: a read at level L walks its range run by run. block_status of
 * layer L says DATA (read it), ZERO (zero-fill) or UNALLOC (the same sub-range
 * one level down). Below the base, and past the end of a shorter layer, the
 * answer is zeros. Drivers keep their tables in memory, so a lookup that falls
 * through 32 layers costs 32 in-memory lookups, not 32 disk reads. */
#include "chain/chain_int.h"
#include "chain/part.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

/* uthash's answer to a failed allocation is exit(-1); with this it leaves
 * the element out (hh.tbl NULL) and seen_add() returns -ENOMEM. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

struct seen_file {
	struct {
		dev_t dev;
		ino_t ino;
	} key;
	UT_hash_handle hh;
};

static int seen_add(struct seen_file **set, struct vd_image *img, bool *dup)
{
	struct seen_file *s, *f;
	struct stat st;
	int r = vd_fstat(img->fd, &st);

	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->key.dev = st.st_dev;
	s->key.ino = st.st_ino;
	HASH_FIND(hh, *set, &s->key, sizeof(s->key), f);
	if (f) {
		free(s);
		*dup = true;
		return 0;
	}
	*dup = false;
	HASH_ADD(hh, *set, key, sizeof(s->key), s);
	if (!s->hh.tbl) {
		free(s);
		return -ENOMEM;
	}
	return 0;
}

static void seen_free(struct seen_file **set)
{
	struct seen_file *s, *t;

	HASH_ITER(hh, *set, s, t)
	{
		HASH_DEL(*set, s);
		free(s);
	}
}

/* Every warning logged while a chain opens, by a driver or by this file,
 * goes into the chain's list for chain.json (vd_log_collect): stderr and
 * validation.warnings say the same. */
static void chain_collect(void *ctx, enum vd_log_level lvl, const char *msg)
{
	struct vd_chain *c = ctx;

	(void)lvl;
	vd_strv_add(&c->warnings, &c->n_warnings, msg);
}

static bool id_equal(const struct vd_id *a, const struct vd_id *b)
{
	return a->len == b->len && !memcmp(a->bytes, b->bytes, a->len);
}

/* Driver open flags for every layer: --force reaches the drivers too (a
 * corrupt VHDX log is then skipped with a warning). */
static unsigned chain_open_flags(const struct vd_chain *c)
{
	return c->flags & VD_CHAIN_FORCE ? VD_OPEN_FORCE : 0;
}

/* Opens a --parent file whose identity is the one child expects. Returns 0
 * and *out, or -ENOENT when none matches. */
static int parent_from_list(struct vd_chain *c, struct vd_image *child, struct vd_image **out)
{
	for (unsigned i = 0; i < c->opts->n_parents; i++) {
		struct vd_image *p = NULL;

		if (vd_image_open_in(c->opts->parents[i], chain_open_flags(c), c->policy, NULL,
				     &p) < 0)
			continue;
		if (id_equal(&child->parent_id, &p->id) ||
		    (child->parent_id2.len && id_equal(&child->parent_id2, &p->id))) {
			*out = p;
			return 0;
		}
		vd_image_close(p);
	}
	return -ENOENT;
}

/* Finds and opens the parent of child: its hints in the driver's order, then
 * the --parent files. Returns 0 and *out, or -errno (logged). */
static int parent_open(struct vd_chain *c, struct vd_image *child, struct vd_image **out,
		       struct vd_chain_link *link)
{
	struct vd_buf all = {0};
	int r = -ENOENT;

	for (unsigned i = 0; i < child->n_hints; i++) {
		char *tried = NULL, *how = NULL, *p = NULL;
		int hr = vd_chain_resolve_hint(child->path, child->hints[i].path, c->policy, &p,
					       &how, &tried);

		if (hr == -ENOMEM) {
			vd_log_err("%s: out of memory looking for its parent", child->path);
			vd_buf_free(&all);
			return hr;
		}
		if (p) {
			char *role = NULL;

			free(tried);
			/* errors about the parent say whose parent it is and how it was found */
			if (asprintf(&role, "parent of %s, found by %s%s%s%s", child->path,
				     child->hints[i].kind, how ? " (" : "", how ? how : "",
				     how ? ")" : "") < 0)
				role = NULL;
			if (role)
				vd_log_context_push(role);
			r = vd_image_open_in(p, chain_open_flags(c), c->policy, child->path, out);
			if (role)
				vd_log_context_pop();
			free(role);
			free(p);
			if (r == 0) {
				link->hint_kind = child->hints[i].kind;
				link->how = how;
			} else {
				free(how);
			}
			vd_buf_free(&all);
			return r;
		}
		vd_buf_printf(&all, "%s%s \"%s\" (tried %s)", all.len ? "; " : "",
			      child->hints[i].kind, child->hints[i].path, tried ? tried : "-");
		free(tried);
	}
	if (parent_from_list(c, child, out) == 0) {
		link->hint_kind = "--parent";
		link->how = strdup("named on the command line, identity matches");
		vd_buf_free(&all);
		return 0;
	}
	vd_log_err("%s: parent not found: %s%s", child->path, all.data ? all.data : "no hint",
		   c->opts->n_parents ? "; no --parent file has the expected identity" : "");
	vd_buf_free(&all);
	return r;
}

static int link_check(struct vd_chain *c, struct vd_image *child, struct vd_image *parent,
		      struct vd_chain_link *link)
{
	char a[37], b[37];

	if (child->ops != parent->ops && !(c->flags & VD_CHAIN_ALLOW_MIXED)) {
		vd_log_err("%s: parent %s is %s, not %s: mixed-format chains are not supported",
			   child->path, parent->path, parent->ops->name, child->ops->name);
		return -EINVAL;
	}
	link->id_match = id_equal(&child->parent_id, &parent->id) ||
			 (child->parent_id2.len && id_equal(&child->parent_id2, &parent->id));
	if (!link->id_match) {
		const char *what = child->parent_id.len == 4 ? "CID" : "unique id";
		if (!(c->flags & VD_CHAIN_FORCE)) {
			vd_log_err("%s expects parent %s %s but %s has %s %s (parent changed "
				   "since the snapshot; --force mounts anyway)",
				   child->path, what, vd_id_format(&child->parent_id, a),
				   parent->path, what, vd_id_format(&parent->id, b));
			return -EINVAL;
		}
		vd_log_warn("%s expects parent %s %s but %s has %s %s (mounted with --force)",
			    child->path, what, vd_id_format(&child->parent_id, a), parent->path,
			    what, vd_id_format(&parent->id, b));
	}
	link->stamp_match = true;
	if (child->has_stamp && parent->has_stamp && child->parent_stamp != parent->stamp) {
		link->stamp_match = false;
		vd_log_warn("%s records parent timestamp %" PRIu32 " but %s has %" PRIu32,
			    child->path, child->parent_stamp, parent->path, parent->stamp);
	}
	if (parent->size < child->size)
		vd_log_debug("%s: parent %s is shorter (%" PRIu64 " < %" PRIu64 "): zeros past it",
			     child->path, parent->path, parent->size, child->size);
	return 0;
}

int vd_chain_open(const char *top_path, unsigned flags, struct vd_chain **out)
{
	struct vd_chain_opts o = {.flags = flags};

	return vd_chain_open_opts(top_path, &o, out);
}

/* Opens top_path and walks its parents: stack[0] is the top, links[k] how
 * stack[k] found stack[k+1]. On failure the images opened so far are in
 * stack[0..*n) for the caller to close. Returns 0 or -errno (logged). */
static int chain_walk(struct vd_chain *c, const char *top_path, struct vd_image **stack,
		      struct vd_chain_link *links, unsigned *n)
{
	struct seen_file *seen = NULL;
	struct vd_image *img = NULL;
	bool dup;
	int r = vd_image_open_in(top_path, chain_open_flags(c), c->policy, NULL, &img);

	while (r == 0) {
		r = seen_add(&seen, img, &dup);
		if (r < 0)
			vd_log_err("%s: stat: %s", img->path, strerror(-r));
		else if (dup)
			vd_log_err("%s: loop in the chain: %s is already a layer above it",
				   stack[*n - 1]->path, img->path);
		else if (*n == VD_CHAIN_MAX_DEPTH)
			vd_log_err("%s: chain deeper than %d layers", top_path, VD_CHAIN_MAX_DEPTH);
		if (r < 0 || dup || *n == VD_CHAIN_MAX_DEPTH) {
			vd_image_close(img);
			r = r < 0 ? r : -ELOOP;
			break;
		}
		stack[(*n)++] = img;
		if (*n > 1)
			r = link_check(c, stack[*n - 2], img, &links[*n - 2]);
		if (r < 0 || !img->has_parent)
			break;
		r = parent_open(c, img, &img, &links[*n - 1]);
	}
	seen_free(&seen);
	return r;
}

int vd_chain_open_opts(const char *top_path, const struct vd_chain_opts *opts,
		       struct vd_chain **out)
{
	struct vd_image *stack[VD_CHAIN_MAX_DEPTH];
	struct vd_chain_link links[VD_CHAIN_MAX_DEPTH];
	struct vd_chain *c;
	unsigned n = 0, errs = vd_log_error_count();
	int r = 0;

	c = calloc(1, sizeof(*c));
	if (!c) {
		r = -ENOMEM;
		goto fail;
	}
	c->flags = opts->flags;
	c->opts = opts;
	c->policy = opts->policy;
	if (!c->policy) {
		vd_policy_init(&c->own_policy);
		c->policy = &c->own_policy;
		r = vd_policy_add_image(c->policy, top_path);
	}
	memset(links, 0, sizeof(links));
	vd_log_collect(chain_collect, c);
	if (r == 0)
		r = chain_walk(c, top_path, stack, links, &n);
	if (r == 0) {
		c->layers = calloc(n, sizeof(*c->layers));
		c->links = calloc(n, sizeof(*c->links));
		r = c->layers && c->links ? 0 : -ENOMEM;
	}
	if (r < 0)
		goto fail;
	/* stack[0] is the top; layers[0] must be the base. links[k] describes how
	 * stack[k+1] was found from stack[k]; store it with the child, which is the
	 * layer whose hint was used. */
	for (unsigned i = 0; i < n; i++) {
		c->layers[i] = stack[n - 1 - i];
		c->links[i] = links[n - 1 - i];
	}
	c->depth = n;
	c->opts = NULL;
	vd_log_collect(NULL, NULL);
	*out = c;
	return 0;
fail:
	vd_log_collect(NULL, NULL);
	/* Every failure is logged where it is found; this catches the paths
	 * that only pass a code up (allocation failures), so that a front end
	 * never fails without a word. */
	if (vd_log_error_count() == errs)
		vd_log_err("%s: cannot open the chain: %s", top_path, strerror(-r));
	for (unsigned i = 0; i < n; i++) {
		vd_image_close(stack[i]);
		free(links[i].how);
	}
	if (c) {
		free(c->layers);
		c->layers = NULL;
		c->depth = 0;
	}
	vd_chain_close(c);
	return r;
}

void vd_chain_close(struct vd_chain *c)
{
	if (!c)
		return;
	vd_cow_close(c);
	for (unsigned i = 0; i < c->depth; i++) {
		vd_image_close(c->layers[i]);
		free(c->links[i].how);
	}
	if (c->policy == &c->own_policy)
		vd_policy_free(&c->own_policy);
	for (unsigned i = 0; i < c->n_warnings; i++)
		free(c->warnings[i]);
	free(c->warnings);
	free(c->layers);
	free(c->links);
	free(c->skip);
	free(c);
}

void vd_chain_set_mount_time(struct vd_chain *c, const struct timespec *t)
{
	c->mount_time = *t;
	c->has_mount_time = true;
}

unsigned vd_chain_depth(const struct vd_chain *c)
{
	return c->depth;
}

struct vd_image *vd_chain_layer(const struct vd_chain *c, unsigned i)
{
	return i < c->depth ? c->layers[i] : NULL;
}

const struct vd_chain_link *vd_chain_link(const struct vd_chain *c, unsigned i)
{
	return i > 0 && i < c->depth ? &c->links[i] : NULL;
}

int vd_chain_inputs_check(struct vd_chain *c)
{
	int64_t now, last;
	char why[512];

	if (__atomic_load_n(&c->inputs_changed, __ATOMIC_ACQUIRE))
		return -EIO;
	now = vd_mono_ns();
	last = __atomic_load_n(&c->inputs_checked_ns, __ATOMIC_RELAXED);
	if (last && now - last < 1000000000)
		return 0;
	/* one checker at a time; the others take the last answer */
	if (!__atomic_compare_exchange_n(&c->inputs_checked_ns, &last, now, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		return 0;
	for (unsigned i = 0; i < c->depth; i++) {
		int r = vd_image_inputs_changed(c->layers[i], why, sizeof(why));

		if (r == 0)
			continue;
		if (r < 0)
			snprintf(why, sizeof(why), "%s: cannot stat: %s", c->layers[i]->path,
				 strerror(-r));
		if (!__atomic_exchange_n(&c->inputs_changed, 1, __ATOMIC_ACQ_REL))
			vd_log_err("%s; the mount serves tables read before the change, so new "
				   "opens fail with EIO: unmount and mount again",
				   why);
		return -EIO;
	}
	return 0;
}

unsigned vd_chain_warning_count(const struct vd_chain *c)
{
	return c->n_warnings;
}

const char *vd_chain_warning(const struct vd_chain *c, unsigned i)
{
	return i < c->n_warnings ? c->warnings[i] : NULL;
}

uint64_t vd_chain_size(const struct vd_chain *c, unsigned level)
{
	return level < c->depth ? c->layers[level]->size : 0;
}

/* The skip map (chain_int.h): resolving the top level of a deep chain asks
 * every layer, top down, until one holds the block; a grain of the base
 * under 254 deltas costs 255 lookups on every read. The map remembers, per
 * block, the highest layer holding anything there, found once by asking each
 * layer about the whole block; a read then starts at that layer. A block's
 * entry only ever goes from unknown to a layer (compare-and-swap) or, when
 * the top is written, to the top: a probe that raced with a write cannot
 * leave a stale answer behind, and "start at the top" is always right.
 * At most SKIP_MAX_BLOCKS bytes a chain (blocks of at least SKIP_MIN_BLOCK). */
#define VD_SKIP_UNKNOWN 0xffu
#define SKIP_MAX_BLOCKS (64u << 10)
#define SKIP_MIN_SHIFT 16 /* 64 KiB */

/* A new map, all unknown, or NULL (no memory, or nothing to skip). */
static uint8_t *skip_new(struct vd_chain *c)
{
	uint64_t size = c->layers[c->depth - 1]->size;
	unsigned shift = SKIP_MIN_SHIFT;
	uint8_t *m;

	if (c->depth < 2 || c->depth > VD_SKIP_UNKNOWN)
		return NULL;
	while (shift < 63 && (size >> shift) >= SKIP_MAX_BLOCKS)
		shift++;
	/* the same value from every racer, set before the map is seen */
	__atomic_store_n(&c->skip_shift, shift, __ATOMIC_RELAXED);
	if (!size)
		return NULL;
	m = malloc(((size - 1) >> shift) + 1);
	if (m)
		memset(m, VD_SKIP_UNKNOWN, ((size - 1) >> shift) + 1);
	return m;
}

/* The map; a read-only chain makes it on first use. A writable chain has
 * had its own since its delta was added (vd_chain_skip_reset), or has none:
 * a map made while a write is under way could miss what it writes. */
static uint8_t *skip_map(struct vd_chain *c)
{
	uint8_t *m = __atomic_load_n(&c->skip, __ATOMIC_ACQUIRE), *none = NULL;

	if (m || c->cow)
		return m;
	m = skip_new(c);
	if (m && !__atomic_compare_exchange_n(&c->skip, &none, m, false, __ATOMIC_ACQ_REL,
					      __ATOMIC_ACQUIRE)) {
		free(m);
		m = none;
	}
	return m; /* NULL: resolution simply starts at the top */
}

/* Fills found[] (UNKNOWN on entry) for layer img = layers[l]: every block
 * of [a, e) (blocks from b0) that l holds anything in, or that l ends
 * inside of (what lies past its end reads as zeros: resolution must reach
 * it), and that no higher layer claimed, gets l. Returns 0 or -errno. */
static int probe_layer(struct vd_chain *c, unsigned l, uint64_t b0, uint64_t a, uint64_t e,
		       uint8_t *found)
{
	struct vd_image *img = c->layers[l];
	unsigned sh = c->skip_shift;

	for (uint64_t pos = a; pos < e;) {
		struct vd_map map;
		uint64_t n, end;
		int st;

		if (pos >= img->size) {
			st = VD_DATA; /* past its end: it answers */
			n = e - pos;
		} else {
			end = vd_min_u64(e, img->size);
			st = vd_image_block_status(img, pos, end - pos, &n, &map);
			if (st < 0)
				return st;
			if (!n)
				return -EIO;
			if (pos + n == img->size && img->size % (1ull << sh))
				st = VD_DATA; /* the block it ends inside */
		}
		if (st != VD_UNALLOC)
			for (uint64_t b = pos >> sh; b <= (pos + n - 1) >> sh; b++)
				if (found[b - b0] == VD_SKIP_UNKNOWN)
					found[b - b0] = (uint8_t)l;
		pos += n;
	}
	return 0;
}

/* Finds where to start resolving the unknown blocks b0 .. b0 + nb - 1 of
 * the top level, asking each layer top down about all of them at once (a
 * call or so per layer, as resolving one run costs), and records it. */
#define SKIP_PROBE_MAX 64u
static void skip_probe(struct vd_chain *c, uint8_t *m, uint64_t b0, unsigned nb)
{
	unsigned top = c->depth - 1, sh = c->skip_shift;
	uint64_t a = b0 << sh, e = vd_min_u64((b0 + nb) << sh, c->layers[top]->size);
	uint8_t found[SKIP_PROBE_MAX];
	unsigned open = nb;

	memset(found, VD_SKIP_UNKNOWN, sizeof(found));
	for (unsigned l = top; l > 0 && open; l--) {
		if (probe_layer(c, l, b0, a, e, found) < 0)
			return; /* nothing recorded: the read meets the error */
		open = 0;
		for (unsigned i = 0; i < nb; i++)
			open += found[i] == VD_SKIP_UNKNOWN;
	}
	for (unsigned i = 0; i < nb; i++) {
		uint8_t want = VD_SKIP_UNKNOWN;

		__atomic_compare_exchange_n(&m[b0 + i], &want,
					    found[i] == VD_SKIP_UNKNOWN ? 0 : found[i], false,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
}

/* The layer to start resolving [off, off + *len) of the top level at, with
 * *len cut to the blocks that share it. */
static unsigned skip_from(struct vd_chain *c, uint64_t off, uint64_t *len)
{
	uint8_t *m = skip_map(c);
	uint64_t b, end, last;
	unsigned l, sh;

	if (!m)
		return c->depth - 1;
	sh = c->skip_shift;
	b = off >> sh;
	last = (off + *len - 1) >> sh;
	l = __atomic_load_n(&m[b], __ATOMIC_RELAXED);
	if (l == VD_SKIP_UNKNOWN) {
		unsigned nb = 1;

		while (nb < SKIP_PROBE_MAX && b + nb <= last &&
		       __atomic_load_n(&m[b + nb], __ATOMIC_RELAXED) == VD_SKIP_UNKNOWN)
			nb++;
		skip_probe(c, m, b, nb);
		l = __atomic_load_n(&m[b], __ATOMIC_RELAXED);
	}
	if (l >= c->depth - 1)
		return c->depth - 1;
	end = (b + 1) << sh;
	while (end < off + *len && __atomic_load_n(&m[end >> sh], __ATOMIC_RELAXED) == l)
		end += 1ull << sh;
	*len = vd_min_u64(*len, end - off);
	return l;
}

void vd_chain_skip_touch(struct vd_chain *c, uint64_t off, uint64_t len)
{
	uint8_t *m = __atomic_load_n(&c->skip, __ATOMIC_ACQUIRE);

	if (!m || !len)
		return;
	for (uint64_t b = off >> c->skip_shift; b <= (off + len - 1) >> c->skip_shift; b++)
		__atomic_store_n(&m[b], (uint8_t)(c->depth - 1), __ATOMIC_SEQ_CST);
}

void vd_chain_skip_reset(struct vd_chain *c)
{
	free(c->skip);
	c->skip = skip_new(c);
}

/* One step of resolution: the run at off as seen from level. Returns the
 * state (DATA: *owner holds it, at *map) or -errno. */
static int chain_status(struct vd_chain *c, unsigned level, uint64_t off, uint64_t len,
			uint64_t *pnum, int *owner, struct vd_map *map)
{
	int from = (int)level;

	if (level == c->depth - 1 && level > 0)
		from = (int)skip_from(c, off, &len);
	for (int l = from; l >= 0; l--) {
		struct vd_image *img = c->layers[l];
		uint64_t n;
		int st;

		if (off >= img->size) {
			/* Past a shorter layer's end: zeros, whatever lies below. */
			*pnum = len;
			*owner = -1;
			return VD_ZERO;
		}
		if (len > img->size - off)
			len = img->size - off;
		st = vd_image_block_status(img, off, len, &n, map);
		if (st < 0)
			return st;
		len = n;
		if (st == VD_DATA || st == VD_ZERO) {
			*pnum = len;
			*owner = l;
			return st;
		}
	}
	*pnum = len;
	*owner = -1;
	return VD_ZERO;
}

/* How far ahead of a sequential reader of a chain the kernel is asked to
 * read the layers' files, and in steps of at least half of it. */
#define PREFETCH_BYTES (8u << 20)
/* A request starting this close to where the last one ended is sequential
 * (concurrent requests of a readahead arrive out of order). */
#define PREFETCH_NEAR (2u << 20)
/* Runs of one layer at most this far apart in its file are one run. */
#define PREFETCH_GAP (256u << 10)
/* A run of a file this long is read in order, and the kernel reads ahead of
 * it by itself: asking for it too only competes with that. */
#define PREFETCH_RUN_MAX (1u << 20)

struct prefetch_run {
	int fd;
	uint64_t off, end;
};

/* Asks the kernel (vd_advise_willneed) for run r unless it is empty or long
 * enough for the kernel's own readahead, and empties it. */
static void prefetch_flush(struct prefetch_run *r)
{
	if (r->fd >= 0 && r->end > r->off && r->end - r->off < PREFETCH_RUN_MAX)
		vd_advise_willneed(r->fd, r->off, r->end - r->off);
	r->fd = -1;
}

/* A sequential read of a chain meets the deltas' data as short runs
 * scattered in their files, each a synchronous read and, on a cold cache, a
 * seek, while the kernel reads ahead only in a file read in order (the
 * base): bench.sh's 3-layer VHD chain read cold at 0.56 of the raw file, the
 * same disk as one VHD at 0.88, and under strace the top delta's reads took
 * 0.4 ms each. So for a sequential reader of a chain, the runs of the next
 * PREFETCH_BYTES are resolved, gathered per layer (runs of a layer close
 * together in its file are one) and the short ones asked of the kernel
 * (POSIX_FADV_WILLNEED), each once: the delta's reads then took 0.03 ms. A
 * single image is left to the kernel's readahead, and a random reader asks
 * nothing. */
static void chain_prefetch(struct vd_chain *c, unsigned level, uint64_t off, uint64_t len)
{
	uint64_t end = off + len, size = c->layers[level]->size, last, done, to, pos;
	struct prefetch_run runs[VD_CHAIN_MAX_DEPTH];

	if (c->depth < 2)
		return;
	last = __atomic_exchange_n(&c->ra_next, end, __ATOMIC_RELAXED);
	if (off + PREFETCH_NEAR < last || off > last + PREFETCH_NEAR)
		return;
	done = __atomic_load_n(&c->ra_done, __ATOMIC_RELAXED);
	if (done < end || done > end + PREFETCH_BYTES) /* behind, or an earlier pass */
		done = end;
	to = vd_min_u64(end + PREFETCH_BYTES, size);
	if (to < done + PREFETCH_BYTES / 2 && to < size)
		return; /* most of the window was asked for already */
	__atomic_store_n(&c->ra_done, to, __ATOMIC_RELAXED);
	for (unsigned l = 0; l <= level; l++)
		runs[l].fd = -1;
	vd_log_mute(true); /* a table that cannot be read: the read says so, if it comes */
	for (pos = done; pos < to;) {
		struct vd_map map;
		struct prefetch_run *r;
		uint64_t n;
		int owner, st = chain_status(c, level, pos, to - pos, &n, &owner, &map);

		if (st < 0)
			break; /* the read will meet it and say so */
		pos += n;
		if (st != VD_DATA || map.fd < 0)
			continue;
		r = &runs[owner];
		if (r->fd != map.fd || map.off < r->end || map.off > r->end + PREFETCH_GAP) {
			prefetch_flush(r);
			*r = (struct prefetch_run){map.fd, map.off, map.off};
		}
		r->end = map.off + n;
	}
	vd_log_mute(false);
	for (unsigned l = 0; l <= level; l++)
		prefetch_flush(&runs[l]);
}

int vd_chain_read(struct vd_chain *c, unsigned level, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	uint64_t end;

	if (level >= c->depth)
		return -EINVAL;
	end = c->layers[level]->size;
	if (off < end && len)
		chain_prefetch(c, level, off, vd_min_u64(len, end - off));
	while (len) {
		struct vd_map map;
		uint64_t n;
		int owner, st;

		if (off >= end) {
			memset(p, 0, len);
			return 0;
		}
		st = chain_status(c, level, off, vd_min_u64(len, end - off), &n, &owner, &map);
		if (st < 0)
			return st;
		if (st == VD_DATA) {
			int r = vd_image_read(c->layers[owner], p, (size_t)n, off, &map);
			if (r < 0)
				return r;
		} else {
			memset(p, 0, (size_t)n);
		}
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

int vd_chain_block_status(struct vd_chain *c, unsigned level, uint64_t off, uint64_t len,
			  uint64_t *pnum, int *owner)
{
	struct vd_map map;
	int o = -1;
	int st;

	if (level >= c->depth)
		return -EINVAL;
	if (off >= c->layers[level]->size) {
		*pnum = len;
		if (owner)
			*owner = -1;
		return VD_ZERO;
	}
	st = chain_status(c, level, off, vd_min_u64(len, c->layers[level]->size - off), pnum, &o,
			  &map);
	if (owner)
		*owner = o;
	return st;
}

/* Walks layer level's runs, at most *calls block_status calls (NULL: no
 * limit), which it decrements. Returns 0, -E2BIG when the calls ran out, fn's
 * non-zero return, or -errno. */
static int layer_walk(struct vd_chain *c, unsigned level, uint64_t *calls, vd_chain_walk_fn fn,
		      void *ctx)
{
	struct vd_image *img = c->layers[level];
	uint64_t off = 0;

	while (off < img->size) {
		uint64_t n;
		int st;

		if (calls && !(*calls)--)
			return -E2BIG;
		st = vd_image_block_status(img, off, img->size - off, &n, NULL);
		if (st < 0)
			return st;
		st = fn(ctx, off, n, st);
		if (st)
			return st;
		off += n;
	}
	return 0;
}

int vd_chain_layer_walk(struct vd_chain *c, unsigned level, vd_chain_walk_fn fn, void *ctx)
{
	if (level >= c->depth)
		return -EINVAL;
	return layer_walk(c, level, NULL, fn, ctx);
}

struct usage {
	uint64_t data, zero;
};

static int usage_add(void *ctx, uint64_t off, uint64_t len, int state)
{
	struct usage *u = ctx;

	(void)off;
	if (state == VD_DATA)
		u->data += len;
	else if (state == VD_ZERO)
		u->zero += len;
	return 0;
}

int vd_chain_layer_usage(struct vd_chain *c, unsigned level, uint64_t *data, uint64_t *zero)
{
	struct usage u = {0};
	int r = vd_chain_layer_walk(c, level, usage_add, &u);

	*data = u.data;
	*zero = u.zero;
	return r;
}

struct changes {
	struct vd_buf *out;
	uint64_t off, len; /* the run being merged */
};

static int changes_add(void *ctx, uint64_t off, uint64_t len, int state)
{
	struct changes *ch = ctx;

	if (state == VD_UNALLOC)
		return 0;
	if (ch->len && ch->off + ch->len == off) {
		ch->len += len;
		return 0;
	}
	if (ch->len)
		vd_buf_printf(ch->out, "%" PRIu64 " %" PRIu64 "\n", ch->off, ch->len);
	ch->off = off;
	ch->len = len;
	return 0;
}

int vd_chain_changes(struct vd_chain *c, unsigned level, struct vd_buf *out)
{
	struct changes ch = {.out = out};
	int r;

	vd_buf_printf(out, "# offset length (bytes): extents this layer holds itself\n");
	r = vd_chain_layer_walk(c, level, changes_add, &ch);
	if (r < 0)
		return r;
	changes_add(&ch, UINT64_MAX, 0, VD_DATA); /* flush the last run */
	return out->oom ? -ENOMEM : 0;
}

/* "confinement": what images may make us open, and what was allowed beyond. */
static void chain_describe_policy(struct vd_policy *p, struct vd_json *j)
{
	vd_json_obj_begin(j, "confinement");
	vd_json_arr_begin(j, "roots");
	for (unsigned i = 0; i < p->n_roots; i++)
		vd_json_str(j, NULL, p->roots[i]);
	vd_json_arr_end(j);
	vd_json_arr_begin(j, "search");
	for (unsigned i = 0; i < p->n_search; i++)
		vd_json_str(j, NULL, p->search[i]);
	vd_json_arr_end(j);
	vd_json_bool(j, "allow_outside", p->allow_outside);
	vd_json_bool(j, "allow_devices", p->allow_devices);
	vd_json_arr_begin(j, "allowed_by_option");
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n_exceptions; i++)
		vd_json_str(j, NULL, p->exceptions[i]);
	pthread_mutex_unlock(&p->lock);
	vd_json_arr_end(j);
	vd_json_obj_end(j);
}

/* The usage counts of chain.json walk every layer's tables, in a getattr
 * that `ls -l` waits on. Drivers bound the work of one block_status call
 * (VMDK: VMDK_GT_STEPS tables), so capping the calls caps the work whatever
 * a layer claims: a layer gets at most CHAIN_USAGE_CALLS, a whole chain
 * CHAIN_USAGE_TOTAL, and a layer whose walk does not fit is reported as not
 * counted. A disk written front to back needs one call per few GiB. */
#define CHAIN_USAGE_CALLS 2048u
#define CHAIN_USAGE_TOTAL 8192u

static void describe_usage(struct vd_chain *c, unsigned level, uint64_t *budget, struct vd_json *j)
{
	struct usage u = {0};
	uint64_t calls = vd_min_u64(*budget, CHAIN_USAGE_CALLS), left = calls;
	int r = layer_walk(c, level, &left, usage_add, &u);

	*budget -= calls - left;
	if (r == 0) {
		vd_json_u64(j, "allocated_bytes", u.data);
		vd_json_u64(j, "zeroed_bytes", u.zero);
		return;
	}
	vd_json_null(j, "allocated_bytes");
	vd_json_null(j, "zeroed_bytes");
	if (r == -E2BIG)
		vd_json_str(j, "usage_note",
			    "not counted: this layer has more runs than chain.json walks "
			    "(a cap that keeps listing the mount fast)");
}

int vd_chain_describe(struct vd_chain *c, struct vd_json *j)
{
	struct vd_part_table *pt = NULL;
	uint64_t budget = CHAIN_USAGE_TOTAL;
	char idb[37];
	int r;

	vd_json_obj_begin(j, NULL);
	/* docs/chain.json.md; a change that breaks a reader bumps the version */
	vd_json_str(j, "schema", "vdmount-chain");
	vd_json_u64(j, "schema_version", VD_CHAIN_JSON_VERSION);
	vd_json_str(j, "vdmount_version", VD_VERSION);
	if (c->has_mount_time)
		vd_json_time(j, "mount_time", &c->mount_time);
	else
		vd_json_null(j, "mount_time");
	vd_json_u64(j, "depth", c->depth);
	vd_json_u64(j, "virtual_size", vd_chain_size(c, c->depth - 1));
	vd_json_arr_begin(j, "layers");
	for (unsigned i = 0; i < c->depth; i++) {
		struct vd_image *img = c->layers[i];
		char *name = vd_chain_layer_name(c, i);

		vd_json_obj_begin(j, NULL);
		vd_json_u64(j, "index", i + 1);
		/* the name front ends show (shortened past 255 bytes); path is whole */
		vd_json_str(j, "name", name);
		free(name);
		vd_json_file(j, img->path, &img->file);
		vd_json_str(j, "format", img->ops->name);
		vd_json_str(j, "subformat", img->subformat);
		vd_json_u64(j, "virtual_size", img->size);
		vd_json_u64(j, "grain_size", img->alloc_unit);
		vd_json_str(j, "id", img->id.len ? vd_id_format(&img->id, idb) : NULL);
		vd_json_str(j, "parent_id",
			    img->parent_id.len ? vd_id_format(&img->parent_id, idb) : NULL);
		vd_json_arr_begin(j, "parent_hints");
		for (unsigned h = 0; h < img->n_hints; h++) {
			vd_json_obj_begin(j, NULL);
			vd_json_str(j, "kind", img->hints[h].kind);
			vd_json_str(j, "path", img->hints[h].path);
			vd_json_obj_end(j);
		}
		vd_json_arr_end(j);
		if (i > 0) {
			vd_json_str(j, "parent_found_by", c->links[i].hint_kind);
			vd_json_str(j, "parent_found_how", c->links[i].how);
			vd_json_bool(j, "parent_id_match", c->links[i].id_match);
			vd_json_bool(j, "parent_timestamp_match", c->links[i].stamp_match);
		}
		describe_usage(c, i, &budget, j);
		if (img->ops->describe)
			img->ops->describe(img, j);
		vd_json_obj_end(j);
	}
	vd_json_arr_end(j);
	r = vd_part_scan(c, c->depth - 1, &pt);
	if (r == -ENOMEM)
		return r;
	if (r == 0)
		vd_part_describe(c, c->depth - 1, pt, j, "partitions");
	else
		vd_json_null(j, "partitions"); /* unreadable: the read error was logged */
	vd_part_table_free(pt);
	vd_json_obj_begin(j, "validation");
	vd_json_str(j, "result", c->n_warnings ? "warnings" : "ok");
	vd_json_bool(j, "forced", !!(c->flags & VD_CHAIN_FORCE));
	vd_json_arr_begin(j, "warnings");
	for (unsigned i = 0; i < c->n_warnings; i++)
		vd_json_str(j, NULL, c->warnings[i]);
	vd_json_arr_end(j);
	vd_json_obj_end(j);
	chain_describe_policy(c->policy, j);
	vd_cow_describe(c, j);
	vd_json_obj_end(j);
	return j->buf.oom ? -ENOMEM : 0;
}
