/* Copy-on-write into a new delta (STYLE.md section 3; shaped like nbdkit's
 * cow filter, but the delta is a standard image other tools open).
 *
 * vd_chain_delta_add() creates an empty delta of the chain's format whose
 * parent is one of the layers (the top, or an earlier one with --at), opens
 * it VD_OPEN_RDWR and makes it the chain's top. Nothing else is ever opened
 * for writing.
 *
 * A write is split at the delta's cow_unit (a VMDK grain, a VHD sector):
 *   - units the delta already holds (DATA there) are overwritten in place;
 *   - units it does not hold and that the write covers whole are written
 *     whole;
 *   - a head or tail unit it does not hold is read from the chain as seen
 *     from the delta (parent data, or zeros), patched and written whole
 *     (read-modify-write).
 * A unit the delta does not hold yet is handled under its stripe lock (unit
 * number mod VD_COW_STRIPES), re-checked under the lock, so two writers can
 * never both copy it up and lose one's bytes; stripes are taken in index
 * order. Units already held take no lock: the driver writes them in place.
 *
 * Durability is the driver's flush(): data first, then tables (disk/disk.h).
 * vd_chain_flush() calls it; a flusher thread calls it every flush_ms while
 * there are unflushed writes, so a crash loses at most that much; closing
 * the chain flushes and lets the driver mark the delta clean. */
#include "chain/chain_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VD_COW_STRIPES 64
#define VD_COW_RUN_MAX VD_COW_STRIPES /* units written under one set of locks */
#define VD_COW_RUN_BYTES (1u << 20)   /* ... or this many bytes of small units */
#define VD_COW_FLUSH_MS 5000
#define VD_SECTOR 512u

struct vd_cow {
	char *path;	  /* the delta as created (chain.json); kept after a scratch unlink */
	bool scratch;	  /* unlinked right after opening: gone when we close */
	unsigned parent;  /* index of the delta's parent layer */
	unsigned dropped; /* layers above --at N that left this chain */
	pthread_mutex_t stripes[VD_COW_STRIPES];
	atomic_bool dirty;	  /* written since the last flush began */
	pthread_mutex_t flush_mx; /* one flush at a time: a second waits for the first */
	atomic_uint_fast64_t writes, copied_up, flushes;

	pthread_t flusher;
	bool flusher_on;	 /* protected by fl_lock; started at the first write, so that
				    a front end may fork (daemonize) after opening the chain */
	pthread_mutex_t fl_lock; /* protects stop; with fl_cond */
	pthread_cond_t fl_cond;
	bool stop;
	unsigned flush_ms;
};

static struct vd_image *delta_of(struct vd_chain *c)
{
	return c->layers[c->depth - 1];
}

bool vd_chain_writable(const struct vd_chain *c)
{
	return c->cow != NULL;
}

const char *vd_chain_delta_path(const struct vd_chain *c)
{
	return c->cow ? c->cow->path : NULL;
}

/* --- creating the delta ------------------------------------------------- */

/* "<stem>-vdm-NNNNNN": a vdmount delta's own suffix is replaced, not
 * stacked, so -w on disk-vdm-000001 makes disk-vdm-000002. */
static char *delta_stem(const char *parent_path, const char *ext)
{
	char *stem = vd_path_stem(parent_path);
	size_t n = stem ? strlen(stem) : 0, e = strlen(ext);

	/* an extension vd_path_stem does not know: the format's own name */
	if (n > e + 1 && stem[n - e - 1] == '.' && !strcasecmp(stem + n - e, ext))
		stem[n -= e + 1] = 0;
	if (n > 11 && !strncmp(stem + n - 11, "-vdm-", 5) &&
	    strspn(stem + n - 6, "0123456789") == 6)
		stem[n - 11] = 0;
	return stem;
}

/* Creates the delta file for parent: at path when it names a file, else in
 * directory dir as the next free <stem>-vdm-NNNNNN.<ext>. Returns 0 and the
 * path in *out, or -errno (logged). */
static int delta_create(struct vd_image *parent, const char *dir, const char *file, char **out)
{
	/* A VHDX delta is a Hyper-V checkpoint: .avhdx, as Hyper-V names them. */
	const char *ext = !strcmp(parent->ops->name, "vhdx") ? "avhdx" : parent->ops->name;
	char *stem = NULL, *p = NULL;
	int r;

	if (file) {
		p = strdup(file);
		if (!p)
			return -ENOMEM;
		r = parent->ops->create_child(parent, p); /* logs an existing file */
		goto out;
	}
	stem = delta_stem(parent->path, ext);
	if (!stem)
		return -ENOMEM;
	r = -EEXIST;
	for (unsigned n = 1; n <= 999999 && r == -EEXIST; n++) {
		char *name;

		free(p);
		p = NULL;
		if (asprintf(&name, "%s-vdm-%06u.%s", stem, n, ext) < 0)
			return -ENOMEM;
		p = vd_path_join(dir, name);
		free(name);
		if (!p) {
			r = -ENOMEM;
			break;
		}
		if (access(p, F_OK) == 0)
			continue; /* taken; create_child would refuse it too */
		r = parent->ops->create_child(parent, p);
	}
out:
	free(stem);
	if (r < 0) {
		free(p);
		return r;
	}
	*out = p;
	return 0;
}

static void *flusher_main(void *arg);

static void cow_free(struct vd_cow *w)
{
	if (!w)
		return;
	for (unsigned i = 0; i < VD_COW_STRIPES; i++)
		pthread_mutex_destroy(&w->stripes[i]);
	pthread_mutex_destroy(&w->fl_lock);
	pthread_cond_destroy(&w->fl_cond);
	pthread_mutex_destroy(&w->flush_mx);
	free(w->path);
	free(w);
}

static struct vd_cow *cow_new(void)
{
	struct vd_cow *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	for (unsigned i = 0; i < VD_COW_STRIPES; i++)
		pthread_mutex_init(&w->stripes[i], NULL);
	pthread_mutex_init(&w->fl_lock, NULL);
	pthread_cond_init(&w->fl_cond, NULL);
	pthread_mutex_init(&w->flush_mx, NULL);
	return w;
}

/* Where the delta goes: *file when --delta names a file, else the
 * directory *dir (malloc'd): the --delta directory, a temporary directory for
 * a scratch delta, or the parent's directory. */
static int delta_place(const struct vd_delta_opts *o, struct vd_image *parent, char **dir,
		       const char **file)
{
	const char *tmp = getenv("TMPDIR");
	struct stat st;

	*file = NULL;
	*dir = NULL;
	if (o->path && (stat(o->path, &st) < 0 || !S_ISDIR(st.st_mode))) {
		*file = o->path;
		return 0;
	}
	if (o->path)
		*dir = strdup(o->path);
	else if (o->scratch)
		*dir = strdup(tmp && *tmp ? tmp : "/tmp");
	else
		*dir = vd_path_dir(parent->path);
	return *dir ? 0 : -ENOMEM;
}

int vd_chain_delta_add(struct vd_chain *c, const struct vd_delta_opts *o)
{
	unsigned parent_idx = o->at ? o->at - 1 : c->depth - 1;
	struct vd_image *parent, *delta = NULL, **nl;
	struct vd_chain_link *nk;
	const char *file;
	struct vd_cow *w;
	char *dir = NULL;
	int r;

	if (c->cow)
		return -EBUSY;
	if (parent_idx >= c->depth) {
		vd_log_err("--at %u: the chain has %u layers", o->at, c->depth);
		return -EINVAL;
	}
	parent = c->layers[parent_idx];
	if (!parent->ops->create_child || !parent->ops->write) {
		vd_log_err("%s: writing a new %s delta is not supported", parent->path,
			   parent->ops->name);
		return -ENOTSUP;
	}
	w = cow_new();
	if (!w)
		return -ENOMEM;
	r = delta_place(o, parent, &dir, &file);
	if (r == 0)
		r = delta_create(parent, dir, file, &w->path);
	free(dir);
	if (r < 0)
		goto fail;
	r = vd_image_open_in(w->path, VD_OPEN_RDWR, c->policy, NULL, &delta);
	if (r < 0)
		goto fail;
	if (o->scratch) {
		unlink(w->path); /* our descriptor keeps it until we close */
		w->scratch = true;
	}
	nl = realloc(c->layers, (parent_idx + 2) * sizeof(*nl));
	nk = realloc(c->links, (parent_idx + 2) * sizeof(*nk));
	if (nl)
		c->layers = nl;
	if (nk)
		c->links = nk;
	if (!nl || !nk) {
		r = -ENOMEM;
		goto fail;
	}
	/* --at N: the layers above the new delta's parent leave this chain
	 * (their files are untouched). */
	for (unsigned i = parent_idx + 1; i < c->depth; i++) {
		vd_image_close(c->layers[i]);
		free(c->links[i].how);
		w->dropped++;
	}
	c->layers[parent_idx + 1] = delta;
	c->links[parent_idx + 1] = (struct vd_chain_link){
	    .hint_kind = delta->n_hints ? delta->hints[0].kind : NULL,
	    .how = strdup("created by vdmount -w"),
	    .id_match = true,
	    .stamp_match = true,
	};
	c->depth = parent_idx + 2;
	w->parent = parent_idx;
	w->flush_ms = o->flush_ms ? o->flush_ms : VD_COW_FLUSH_MS;
	c->cow = w;
	vd_chain_skip_reset(c);
	vd_log_info("%s: writable delta over %s", w->path, parent->path);
	return 0;
fail:
	if (delta) {
		vd_image_close(delta);
		if (!w->scratch)
			unlink(w->path); /* we made it a moment ago: leave nothing behind */
	}
	cow_free(w);
	return r;
}

/* --- writing ----------------------------------------------------------- */

/* State of unit [off, off+u) in the delta itself: DATA there or not. */
static int unit_held(struct vd_image *d, uint64_t off, uint64_t len, uint64_t *pnum)
{
	int st = vd_image_block_status(d, off, len, pnum, NULL);

	return st < 0 ? st : st == VD_DATA;
}

static void stripes_lock(struct vd_cow *w, uint64_t first, uint64_t n, bool lock)
{
	bool want[VD_COW_STRIPES] = {false};

	for (uint64_t i = 0; i < n; i++)
		want[(first + i) % VD_COW_STRIPES] = true;
	for (unsigned i = 0; i < VD_COW_STRIPES; i++)
		if (want[i]) {
			if (lock)
				pthread_mutex_lock(&w->stripes[i]);
			else
				pthread_mutex_unlock(&w->stripes[i]);
		}
}

/* Copies unit [ustart, ustart+ulen) up into the delta with bytes
 * [off, off+n) replaced by p: the read-modify-write of a head or tail. */
static int unit_copy_up(struct vd_chain *c, uint64_t ustart, uint64_t ulen, const uint8_t *p,
			uint64_t off, uint64_t n)
{
	struct vd_image *d = delta_of(c);
	uint8_t *buf = malloc(ulen);
	int r;

	if (!buf)
		return -ENOMEM;
	r = vd_chain_read(c, c->depth - 1, buf, ulen, ustart);
	if (r == 0) {
		if (p)
			memcpy(buf + (off - ustart), p, n);
		else
			memset(buf + (off - ustart), 0, n);
		r = d->ops->write(d, buf, ulen, ustart);
	}
	free(buf);
	atomic_fetch_add(&c->cow->copied_up, 1);
	return r;
}

/* Writes [off, off+n) (p NULL: zeros), inside units the delta holds, as
 * whole sectors: drivers write 512-byte-aligned ranges only, so ragged ends
 * are read (from the delta itself), patched and written back. The caller
 * holds the stripe locks of the units touched, so two such patches of one
 * sector cannot lose each other's bytes. */
static int sectors_patch(struct vd_chain *c, const uint8_t *p, uint64_t off, uint64_t n)
{
	struct vd_image *d = delta_of(c);
	uint64_t a = off / VD_SECTOR * VD_SECTOR;
	uint64_t b = vd_min_u64(vd_round_up(off + n, VD_SECTOR), d->size);
	uint8_t *buf;
	int r;

	if (a == off && b == off + n && p) /* aligned already */
		return d->ops->write(d, p, n, off);
	buf = malloc(b - a);
	if (!buf)
		return -ENOMEM;
	r = vd_chain_read(c, c->depth - 1, buf, b - a, a);
	if (r == 0) {
		if (p)
			memcpy(buf + (off - a), p, n);
		else
			memset(buf + (off - a), 0, n);
		r = d->ops->write(d, buf, b - a, a);
	}
	free(buf);
	return r;
}

/* Writes n bytes of p (NULL: zeros) at off into the delta. */
static int whole_write(struct vd_image *d, const uint8_t *p, uint64_t n, uint64_t off)
{
	uint8_t *zeros;
	int r;

	if (p)
		return d->ops->write(d, p, n, off);
	zeros = calloc(1, n); /* at most run_max() bytes: mapped zero pages */
	if (!zeros)
		return -ENOMEM;
	r = d->ops->write(d, zeros, n, off);
	free(zeros);
	return r;
}

/* Writes [off, off+n) (p NULL: zeros) lying in units the delta does not
 * hold, under their stripe locks. Units covered whole are written in one
 * call per run of units in the same state (a VHD's units are sectors: one
 * call per sector would be a pwrite per 512 bytes); a ragged head or tail
 * unit is copied up alone. n spans at most run_max() bytes. Returns 0 or
 * -errno. */
static int run_write_new(struct vd_chain *c, const uint8_t *p, uint64_t off, uint64_t n)
{
	struct vd_image *d = delta_of(c);
	uint64_t u = d->cow_unit, first = off / u, last = (off + n - 1) / u;
	uint64_t pos = off, end = off + n, span_end = vd_min_u64(vd_round_up(end, u), d->size);
	int r = 0;

	stripes_lock(c->cow, first, last - first + 1, true);
	while (pos < end && r == 0) {
		uint64_t ustart = pos / u * u, ulen = vd_min_u64(u, d->size - ustart), held_n;
		/* re-checked under the locks: a unit may have become held meanwhile */
		int held = unit_held(d, ustart, span_end - ustart, &held_n);
		/* the units from ustart in the same state, at least this one */
		uint64_t same_end = ustart + vd_max_u64(held_n, ulen), piece;

		if (held < 0) {
			r = held;
			break;
		}
		piece = vd_min_u64(same_end, end) - pos;
		if (held) {
			/* held meanwhile: patched in place */
			r = sectors_patch(c, p ? p + (pos - off) : NULL, pos, piece);
		} else if (pos == ustart && (pos + piece == d->size || piece >= u)) {
			/* whole units: up to the last one the write covers */
			if (pos + piece != d->size)
				piece = piece / u * u;
			r = whole_write(d, p ? p + (pos - off) : NULL, piece, pos);
		} else {
			piece = vd_min_u64(ustart + ulen, end) - pos;
			r = unit_copy_up(c, ustart, ulen, p ? p + (pos - off) : NULL, pos, piece);
		}
		pos += piece;
	}
	stripes_lock(c->cow, first, last - first + 1, false);
	return r;
}

/* The most bytes run_write_new() takes at once: VD_COW_RUN_MAX units, or
 * VD_COW_RUN_BYTES of small (sector) units. */
static uint64_t run_max(uint64_t u)
{
	return vd_max_u64(VD_COW_RUN_MAX * u, VD_COW_RUN_BYTES / u * u);
}

/* Starts the periodic flusher on the first write (not earlier: no thread
 * may exist when a front end forks into the background). */
static void flusher_start(struct vd_chain *c)
{
	struct vd_cow *w = c->cow;

	pthread_mutex_lock(&w->fl_lock);
	if (!w->flusher_on && !w->stop) {
		if (pthread_create(&w->flusher, NULL, flusher_main, c) == 0)
			w->flusher_on = true;
		else
			vd_log_warn("%s: no periodic flush thread: data reaches the disk at "
				    "fsync and unmount only",
				    w->path);
		w->stop = !w->flusher_on; /* do not try again */
	}
	pthread_mutex_unlock(&w->fl_lock);
}

static void cow_note_write(struct vd_chain *c)
{
	if (atomic_fetch_add(&c->cow->writes, 1) == 0)
		flusher_start(c);
}

/* Writes buf (NULL: zeros) at off through the copy-on-write rules. */
static int cow_write(struct vd_chain *c, const uint8_t *buf, size_t len, uint64_t off)
{
	struct vd_image *d;
	uint64_t u, end;
	int r = 0;

	if (!c->cow)
		return -EROFS;
	d = delta_of(c);
	u = d->cow_unit;
	if (off > d->size || len > d->size - off)
		return -ENOSPC;
	end = off + len;
	cow_note_write(c);
	vd_chain_skip_touch(c, off, len);
	while (off < end && r == 0) {
		uint64_t ustart = off / u * u, held_n, n;
		int held = unit_held(d, ustart, vd_min_u64(end, d->size) - ustart, &held_n);

		if (held < 0) {
			r = held;
			break;
		}
		/* held_n runs from the unit's start: the units that share its state */
		n = vd_min_u64(ustart + held_n, end) - off;
		if (held && off % VD_SECTOR == 0 && (n % VD_SECTOR == 0 || off + n == d->size) &&
		    buf) {
			/* Held, whole sectors: overwritten in place, no lock. */
			r = d->ops->write(d, buf + (len - (end - off)), n, off);
		} else if (held) {
			/* Ragged sectors (or zeros) in held units: patched under the
			 * stripe lock, one unit at a time. */
			n = vd_min_u64(n, ustart + u - off);
			stripes_lock(c->cow, off / u, 1, true);
			r = sectors_patch(c, buf ? buf + (len - (end - off)) : NULL, off, n);
			stripes_lock(c->cow, off / u, 1, false);
		} else {
			n = vd_min_u64(n, run_max(u) - (off - ustart));
			r = run_write_new(c, buf ? buf + (len - (end - off)) : NULL, off, n);
		}
		off += n;
	}
	/* Dirty only once the write is done: a flush that began meanwhile may
	 * not hold it, and the next one must run (vd_chain_flush skips a clean
	 * chain). */
	atomic_store(&c->cow->dirty, true);
	return r;
}

int vd_chain_write(struct vd_chain *c, const void *buf, size_t len, uint64_t off)
{
	return len ? cow_write(c, buf, len, off) : 0;
}

int vd_chain_discard(struct vd_chain *c, uint64_t off, uint64_t len)
{
	struct vd_image *d;
	uint64_t u, a, b;
	int r = 0;

	if (!c->cow)
		return -EROFS;
	d = delta_of(c);
	u = d->cow_unit;
	if (off > d->size || len > d->size - off)
		return -ENOSPC;
	/* A driver may discard only whole allocation units (VHDX blocks: a
	 * sector bitmap cannot say "zero"); it gets those, or cow units. */
	if (d->alloc_unit > u && d->alloc_unit % u == 0)
		u = d->alloc_unit;
	a = vd_round_up(off, u);
	b = (off + len) / u * u;
	if (!d->ops->discard || a >= b)
		return cow_write(c, NULL, len, off);
	/* whole units become zeroed units; the ragged ends get zeros written */
	if (a > off)
		r = cow_write(c, NULL, a - off, off);
	if (r == 0) {
		uint64_t cu = d->cow_unit, units = vd_min_u64((b - a) / cu, VD_COW_STRIPES);

		cow_note_write(c);
		vd_chain_skip_touch(c, a, b - a);
		stripes_lock(c->cow, a / cu, units, true);
		r = d->ops->discard(d, a, b - a);
		stripes_lock(c->cow, a / cu, units, false);
		atomic_store(&c->cow->dirty, true);
		if (r == -ENOTSUP) /* not this range after all: zeros */
			r = cow_write(c, NULL, b - a, a);
	}
	if (r == 0 && off + len > b)
		r = cow_write(c, NULL, off + len - b, b);
	return r;
}

bool vd_chain_discard_frees(const struct vd_chain *c)
{
	return c->cow && c->layers[c->depth - 1]->ops->discard != NULL;
}

int vd_chain_flush(struct vd_chain *c)
{
	struct vd_image *d;
	int r = 0;

	if (!c->cow)
		return 0;
	/* Serialised, so that a flush finding nothing new to do returns only
	 * after the one in progress (which holds its caller's writes) is done. */
	pthread_mutex_lock(&c->cow->flush_mx);
	if (atomic_exchange(&c->cow->dirty, false)) {
		d = delta_of(c);
		r = d->ops->flush(d);
		if (r < 0)
			atomic_store(&c->cow->dirty, true);
		else
			atomic_fetch_add(&c->cow->flushes, 1);
	}
	pthread_mutex_unlock(&c->cow->flush_mx);
	return r;
}

/* --- the flusher and closing ------------------------------------------ */

static void *flusher_main(void *arg)
{
	struct vd_chain *c = arg;
	struct vd_cow *w = c->cow;

	pthread_mutex_lock(&w->fl_lock);
	while (!w->stop) {
		struct timespec t;

		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_sec += w->flush_ms / 1000;
		t.tv_nsec += (long)(w->flush_ms % 1000) * 1000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&w->fl_cond, &w->fl_lock, &t);
		if (w->stop || !atomic_load(&w->dirty))
			continue;
		pthread_mutex_unlock(&w->fl_lock);
		vd_chain_flush(c); /* errors are logged by the driver */
		pthread_mutex_lock(&w->fl_lock);
	}
	pthread_mutex_unlock(&w->fl_lock);
	return NULL;
}

void vd_cow_close(struct vd_chain *c)
{
	struct vd_cow *w = c->cow;

	if (!w)
		return;
	pthread_mutex_lock(&w->fl_lock);
	w->stop = true;
	pthread_cond_signal(&w->fl_cond);
	pthread_mutex_unlock(&w->fl_lock);
	if (w->flusher_on)
		pthread_join(w->flusher, NULL);
	vd_chain_flush(c);
	c->cow = NULL;
	cow_free(w);
}

void vd_cow_describe(struct vd_chain *c, struct vd_json *j)
{
	struct vd_cow *w = c->cow;

	if (!w) {
		vd_json_null(j, "writable_delta");
		return;
	}
	vd_json_obj_begin(j, "writable_delta");
	vd_json_str(j, "path", w->path);
	vd_json_u64(j, "layer", c->depth);
	vd_json_u64(j, "parent_layer", w->parent + 1);
	vd_json_u64(j, "layers_left_out_above_parent", w->dropped);
	vd_json_bool(j, "scratch", w->scratch);
	vd_json_u64(j, "cow_unit", delta_of(c)->cow_unit);
	vd_json_u64(j, "writes", atomic_load(&w->writes));
	vd_json_u64(j, "units_copied_up", atomic_load(&w->copied_up));
	vd_json_u64(j, "flushes", atomic_load(&w->flushes));
	vd_json_u64(j, "flush_interval_ms", w->flush_ms);
	vd_json_obj_end(j);
}
