/* The namespace and the FUSE callbacks.
 *
 * The tree is built at mount time: a uthash table maps each absolute path
 * ("/", "/disk", "/disk.p1", "/layers/01-base", "/layers/01-base.changed",
 * "/chain.json") to a node. Disk, layer and partition files are views
 * (chain/part.h): windows onto a chain level, which also answer
 * SEEK_DATA/SEEK_HOLE and the allocated size (st_blocks). chain.json and the
 * .changed lists are rendered on first use (they walk every table, which a
 * mount must not wait for) and then cached; so is each view's allocated
 * size. A read-only mount never changes, so the kernel keeps its page cache
 * across opens (keep_cache) and caches names and attributes for an hour.
 * With a writable delta (vdmount -w), `disk` and its partition files forward
 * writes, fsync and discard to the chain's copy-on-write; the layers/ views
 * of the new delta, the partition files and chain.json bypass the page cache
 * so they are never stale; everything else stays read-only. A write that
 * changes the partition table replaces the partition files and chain.json
 * (fs_table.c), so the namespace can change under a writable mount. Layer
 * files carry their image file's mtime, or for a VM disk the create time of
 * the snapshot that froze them (fs/vm.c).
 *
 * Every open(2) gets a struct fs_file: the node, with a reference, plus for
 * chain.json and the change lists the text it was opened on (also counted),
 * so a reader never sees two renderings mixed.
 *
 * Locks: tree->lock (rwlock) guards the hash, the directories' kid lists,
 * the writable disk's table and each node's `gone`; reads and writes of an
 * open file take none of it. tree->scan_lock serialises rescans;
 * tree->text_lock guards texts and the allocation cache. Order: scan_lock,
 * lock, text_lock, then the chain's locks. */
#include "fs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "chain/part.h"
#include "fs/fs_int.h"
#include "fs/split.h"
#include "fs/vm.h"

/* A node named name in dir (the root when dir is NULL), not yet linked. */
struct fs_node *fs_node_new(struct fs_tree *t, struct fs_node *dir, const char *name,
			    enum fs_kind kind)
{
	struct fs_node *n = calloc(1, sizeof(*n));
	size_t dl, nl;

	if (!n)
		return NULL;
	if (!dir) {
		n->path = strdup("/");
	} else {
		dl = strlen(dir->path);
		nl = strlen(name);
		n->path = malloc(dl + nl + 2);
		if (n->path) {
			memcpy(n->path, dir->path, dl);
			if (dl > 1)
				n->path[dl++] = '/';
			memcpy(n->path + dl, name, nl + 1);
		}
	}
	if (!n->path) {
		free(n);
		return NULL;
	}
	n->name = dir ? strrchr(n->path, '/') + 1 : n->path;
	n->kind = kind;
	n->mtime = t->mtime;
	n->alloc = -1;
	n->dir = dir;
	atomic_init(&n->refs, 0);
	return n;
}

static void text_put(struct fs_tree *t, struct fs_text *x);

void fs_node_free(struct fs_tree *t, struct fs_node *n)
{
	free(n->kids);
	if (n->text)
		text_put(t, n->text);
	vd_part_table_free(n->table);
	free(n->path);
	free(n);
}

/* Lists n last in its directory and hashes it; frees it on failure. */
static struct fs_node *node_link(struct fs_tree *t, struct fs_node *n)
{
	struct fs_node *dir = n->dir;

	if (dir) {
		struct fs_node **k = realloc(dir->kids, (dir->n_kids + 1) * sizeof(*k));
		if (!k) {
			fs_node_free(t, n);
			return NULL;
		}
		dir->kids = k;
		dir->kids[dir->n_kids++] = n;
	}
	HASH_ADD_KEYPTR(hh, t->nodes, n->path, strlen(n->path), n);
	return n;
}

static struct fs_node *node_add(struct fs_tree *t, struct fs_node *dir, const char *name,
				enum fs_kind kind)
{
	struct fs_node *n = fs_node_new(t, dir, name, kind);

	return n ? node_link(t, n) : NULL;
}

/* The file for partition p of view file v (not linked). */
struct fs_node *fs_part_node_new(struct fs_tree *t, struct fs_node *v, const struct vd_part *p)
{
	struct fs_node *n;
	char *pname;

	if (asprintf(&pname, "%s.p%u", v->name, p->number) < 0)
		return NULL;
	n = fs_node_new(t, v->dir, pname, FS_VIEW);
	free(pname);
	if (!n)
		return NULL;
	n->view = vd_view_part(v->view.chain, v->view.level, p);
	n->mtime = v->mtime;
	n->writable = v->writable;
	/* another view of the delta's bytes than `disk` itself */
	n->uncached = v->writable || v->uncached;
	n->alias = v->writable ? v : NULL;
	n->base = v;
	n->part = p->number;
	return n;
}

/* A view file "name" in dir for the disk at level, and "name.pN" beside it
 * for each partition; *out gets the view file. Warnings about the table are
 * logged for the merged disk only (the layers usually share its table). The
 * writable `disk` keeps its table, to notice when a write changes it. */
static int view_add(struct fs_tree *t, struct fs_node *dir, const char *name, struct vd_chain *c,
		    unsigned level, struct timespec mt, bool log_warnings, struct fs_node **out)
{
	struct vd_part_table *pt = NULL;
	struct fs_node *v = node_add(t, dir, name, FS_VIEW), *n;
	/* The writable delta is the top: `disk` (log_warnings) writes, its
	 * layers/ view reads around the page cache. */
	bool top_rw = vd_chain_writable(c) && level == vd_chain_depth(c) - 1;
	int r;

	if (!v)
		return -ENOMEM;
	*out = v;
	v->view = vd_view_disk(c, level);
	v->mtime = mt;
	v->writable = top_rw && log_warnings;
	v->uncached = top_rw && !log_warnings;
	r = vd_part_scan(c, level, &pt);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		/* The disk itself still serves what it can (STYLE: never fail a
		 * mount over the partition table). */
		if (log_warnings)
			vd_log_warn("%s: cannot read the partition table: %s",
				    vd_chain_layer(c, level)->path, strerror(-r));
		return 0;
	}
	for (unsigned i = 0; log_warnings && i < pt->n_warnings; i++)
		vd_log_warn("%s: %s", vd_chain_layer(c, level)->path, pt->warnings[i]);
	for (unsigned i = 0; i < pt->n && r == 0; i++) {
		n = fs_part_node_new(t, v, &pt->parts[i]);
		if (!n || !node_link(t, n))
			r = -ENOMEM;
	}
	if (r == 0 && v->writable) {
		v->table = pt;
		t->rescans = true;
	} else
		vd_part_table_free(pt);
	return r;
}

static int disk_add(struct fs_tree *t, struct fs_node *dir, struct vd_chain *c)
{
	struct fs_node *n, *layers, *disk, *v;
	unsigned top = vd_chain_depth(c) - 1;
	struct timespec mt;
	char *tname = fs_layer_name(c, top, &mt);
	int r = tname ? view_add(t, dir, "disk", c, top, mt, true, &disk) : -ENOMEM;

	free(tname);
	if (r < 0)
		return r;
	layers = node_add(t, dir, "layers", FS_DIR);
	if (!layers)
		return -ENOMEM;
	for (unsigned i = 0; i <= top; i++) {
		char *name = fs_layer_name(c, i, &mt), *cname = NULL;
		if (!name)
			return -ENOMEM;
		r = view_add(t, layers, name, c, i, mt, false, &v);
		if (r == 0 && asprintf(&cname, "%s.changed", name) < 0)
			r = -ENOMEM;
		free(name);
		if (r < 0)
			return r;
		if (i == top && disk->writable)
			disk->twin = v;
		n = node_add(t, layers, cname, FS_CHANGES);
		free(cname);
		if (!n)
			return -ENOMEM;
		if (i == top && disk->writable) {
			/* changes with every write: never from the page cache */
			n->uncached = true;
			disk->changes = n;
		}
		n->view = vd_view_disk(c, i);
		n->mtime = mt;
	}
	n = node_add(t, dir, "chain.json", FS_JSON);
	if (!n)
		return -ENOMEM;
	n->view = vd_view_disk(c, top);
	/* chain.json changes with the table in a writable mount: never from
	 * the page cache there, so invalidating it never waits on a page */
	n->uncached = disk->writable;
	if (disk->writable)
		disk->json = n;
	return 0;
}

int fs_tree_build(struct fs_disk *disks, unsigned n, struct fs_tree **out)
{
	struct fs_tree *t = calloc(1, sizeof(*t));
	struct fs_node *root;
	int r = -ENOMEM;

	if (!t)
		return -ENOMEM;
	pthread_rwlock_init(&t->lock, NULL);
	pthread_mutex_init(&t->scan_lock, NULL);
	pthread_mutex_init(&t->text_lock, NULL);
	clock_gettime(CLOCK_REALTIME, &t->mtime);
	t->uid = getuid();
	t->gid = getgid();
	root = node_add(t, NULL, "/", FS_DIR);
	if (!root)
		goto fail;
	for (unsigned i = 0; i < n; i++) {
		struct fs_node *dir = root;
		if (disks[i].dir) {
			dir = node_add(t, root, disks[i].dir, FS_DIR);
			if (!dir)
				goto fail;
		}
		vd_chain_set_mount_time(disks[i].chain, &t->mtime);
		r = disk_add(t, dir, disks[i].chain);
		if (r < 0)
			goto fail;
		if (!t->delta_dir && vd_chain_delta_path(disks[i].chain)) {
			t->delta_dir = vd_path_dir(vd_chain_delta_path(disks[i].chain));
			if (!t->delta_dir)
				goto fail;
		}
	}
	*out = t;
	return 0;
fail:
	fs_tree_free(t);
	return r;
}

void fs_tree_free(struct fs_tree *t)
{
	struct fs_node *n, *tmp;

	if (!t)
		return;
	HASH_ITER(hh, t->nodes, n, tmp)
	{
		HASH_DEL(t->nodes, n);
		fs_node_free(t, n);
	}
	/* removed while open, and the kernel sent no release (lazy unmount) */
	while ((n = t->gone)) {
		t->gone = n->gone_next;
		fs_node_free(t, n);
	}
	pthread_mutex_destroy(&t->text_lock);
	pthread_mutex_destroy(&t->scan_lock);
	pthread_rwlock_destroy(&t->lock);
	free(t->delta_dir);
	free(t);
}

static struct fs_tree *tree_get(void)
{
	return fuse_get_context()->private_data;
}

/* The node at path with a reference held (node_put), or NULL. */
static struct fs_node *node_get(struct fs_tree *t, const char *path)
{
	struct fs_node *n;

	pthread_rwlock_rdlock(&t->lock);
	HASH_FIND_STR(t->nodes, path, n);
	if (n)
		atomic_fetch_add(&n->refs, 1);
	pthread_rwlock_unlock(&t->lock);
	return n;
}

/* Drops a reference; the last one frees a node a table change removed.
 * The drop happens under the read lock and gone is set under the write
 * lock, which frees a removed node that nobody holds: exactly one side frees
 * it. A node gone and unheld is out of every list but t->gone: only this
 * thread can reach it. */
static void node_put(struct fs_tree *t, struct fs_node *n)
{
	bool last;

	pthread_rwlock_rdlock(&t->lock);
	last = atomic_fetch_sub(&n->refs, 1) == 1 && n->gone;
	pthread_rwlock_unlock(&t->lock);
	if (!last)
		return;
	pthread_rwlock_wrlock(&t->lock);
	if (n->gone_prev)
		n->gone_prev->gone_next = n->gone_next;
	else
		t->gone = n->gone_next;
	if (n->gone_next)
		n->gone_next->gone_prev = n->gone_prev;
	pthread_rwlock_unlock(&t->lock);
	fs_node_free(t, n);
}

static void text_put(struct fs_tree *t, struct fs_text *x)
{
	pthread_mutex_lock(&t->text_lock);
	if (--x->refs == 0)
		free(x);
	pthread_mutex_unlock(&t->text_lock);
}

/* Whether n shows the writable delta itself (its layer view and partition
 * files there, its .changed, chain.json): its text and allocated size are
 * made again once writes happened since. Not `disk` and its partitions:
 * what they hold changes only where a write meets a hole of the whole chain,
 * and the kernel asks their attributes far more often. */
static bool node_live(const struct fs_node *n)
{
	struct vd_chain *c = n->view.chain;

	return n->kind != FS_DIR && !n->writable && c && vd_chain_writable(c) &&
	       n->view.level == vd_chain_depth(c) - 1;
}

/* Whether n's text or allocation, made when t->writes was n->seen, is out
 * of date; w: t->writes now. Caller holds text_lock. */
static bool node_outdated(const struct fs_node *n, uint64_t w)
{
	return n->seen != w && node_live(n);
}

/* chain.json or a change list as currently rendered (rendering it if
 * needed), with a reference for the caller (text_put). Returns 0 or -errno. */
static int text_get(struct fs_tree *t, struct fs_node *n, struct fs_text **out)
{
	uint64_t w = __atomic_load_n(&t->writes, __ATOMIC_ACQUIRE);
	struct vd_json j = {0};
	struct fs_text *x;
	int r = 0;

	pthread_mutex_lock(&t->text_lock);
	if (n->text && node_outdated(n, w)) {
		/* open handles keep the rendering they have */
		if (--n->text->refs == 0)
			free(n->text);
		n->text = NULL;
	}
	if (n->text)
		goto out;
	n->seen = w; /* before rendering: a write meanwhile leaves it outdated */
	if (n->kind == FS_JSON) {
		r = vd_chain_describe(n->view.chain, &j);
		vd_buf_printf(&j.buf, "\n"); /* a text file ends with a newline */
	} else
		r = vd_chain_changes(n->view.chain, n->view.level, &j.buf);
	x = r < 0 ? NULL : malloc(sizeof(*x) + j.buf.len);
	if (r == 0 && !x)
		r = -ENOMEM;
	if (r == 0) {
		x->refs = 1; /* the node's */
		x->len = j.buf.len;
		if (j.buf.len)
			memcpy(x->data, j.buf.data, j.buf.len);
		n->text = x;
	}
	vd_buf_free(&j.buf);
out:
	if (r == 0) {
		n->text->refs++;
		*out = n->text;
	}
	pthread_mutex_unlock(&t->text_lock);
	return r;
}

/* Makes the next text_get() render again; open handles keep their text. */
void fs_text_drop(struct fs_tree *t, struct fs_node *n)
{
	struct fs_text *x;

	pthread_mutex_lock(&t->text_lock);
	x = n->text;
	n->text = NULL;
	pthread_mutex_unlock(&t->text_lock);
	if (x)
		text_put(t, x);
}

/* Allocated bytes of a view, computed once, in the getattr that `ls -l`
 * waits on: the walk is capped (FS_ALLOC_CALLS block-status calls, each of
 * bounded work), and a view with more runs than that is reported as fully
 * allocated, like a table that cannot be walked. A disk written front to
 * back needs one call per few GiB. */
#define FS_ALLOC_CALLS 2048u

static int alloc_get(struct fs_tree *t, struct fs_node *n, uint64_t *out)
{
	uint64_t a, w = __atomic_load_n(&t->writes, __ATOMIC_ACQUIRE);
	int r = 0;

	pthread_mutex_lock(&t->text_lock);
	if (n->alloc < 0 || node_outdated(n, w)) {
		n->seen = w;
		r = vd_view_allocated(&n->view, FS_ALLOC_CALLS, &a);
		if (r == -E2BIG) {
			a = n->view.size;
			r = 0;
		}
		if (r == 0)
			n->alloc = (int64_t)a;
	}
	if (r == 0)
		*out = (uint64_t)n->alloc;
	pthread_mutex_unlock(&t->text_lock);
	return r;
}

/* --- FUSE callbacks ---------------------------------------------------------- */

static uint64_t node_size(struct fs_tree *t, struct fs_node *n, struct fs_text *x, int *err)
{
	uint64_t len;

	*err = 0;
	switch (n->kind) {
	case FS_VIEW:
		return n->view.size;
	case FS_JSON:
	case FS_CHANGES:
		if (x)
			return x->len;
		*err = text_get(t, n, &x);
		if (*err < 0)
			return 0;
		len = x->len;
		text_put(t, x);
		return len;
	default:
		return 0;
	}
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_file *f = fi ? (struct fs_file *)(uintptr_t)fi->fh : NULL;
	struct fs_node *n = f ? f->node : node_get(t, path);
	int err = 0;

	if (!n)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_uid = t->uid;
	st->st_gid = t->gid;
	st->st_mtim = st->st_ctim = st->st_atim = n->mtime;
	if (n->kind == FS_DIR) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		goto out;
	}
	st->st_mode = S_IFREG | (n->writable ? 0644 : 0444);
	st->st_nlink = 1;
	st->st_size = (off_t)node_size(t, n, f ? f->text : NULL, &err);
	if (err < 0)
		goto out;
	st->st_blksize = 65536;
	if (n->kind == FS_VIEW) {
		uint64_t a = 0;
		/* A table that cannot be walked (a corrupt entry fails its grain's
		 * reads with EIO) must not make stat fail: count it all. */
		if (alloc_get(t, n, &a) < 0)
			a = n->view.size;
		st->st_blocks = (blkcnt_t)((a + 511) / 512);
	} else {
		st->st_blocks = (st->st_size + 511) / 512;
	}
out:
	if (!f)
		node_put(t, n);
	return err;
}

/* A handle on the node at path (open, opendir). */
static int file_open(struct fs_tree *t, const char *path, bool dir, struct fuse_file_info *fi)
{
	struct fs_node *n = node_get(t, path);
	struct fs_file *f = NULL;
	int r = 0;

	if (!n)
		return -ENOENT;
	if (dir != (n->kind == FS_DIR))
		r = dir ? -ENOTDIR : -EISDIR;
	else if (!dir && (fi->flags & O_ACCMODE) != O_RDONLY && !n->writable)
		r = -EROFS;
	/* an input changed in place is served stale: no new opens (README) */
	else if (n->kind == FS_VIEW && vd_chain_inputs_check(n->view.chain) < 0)
		r = -EIO;
	else if (!(f = calloc(1, sizeof(*f))))
		r = -ENOMEM;
	else if (n->kind == FS_JSON || n->kind == FS_CHANGES)
		r = text_get(t, n, &f->text);
	if (r < 0) {
		free(f);
		node_put(t, n);
		return r;
	}
	f->node = n;
	fi->fh = (uintptr_t)f;
	return 0;
}

static int file_release(struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_file *f = (struct fs_file *)(uintptr_t)fi->fh;

	if (f->text)
		text_put(t, f->text);
	node_put(t, f->node);
	free(f);
	return 0;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	return file_open(tree_get(), path, true, fi);
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return file_release(fi);
}

/* With nullpath_ok, path may be NULL here: the node comes from opendir. */
static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs_tree *t = tree_get();
	struct fs_node *n = ((struct fs_file *)(uintptr_t)fi->fh)->node;

	(void)path;
	(void)off;
	(void)flags;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	pthread_rwlock_rdlock(&t->lock); /* a table change may replace the kids */
	for (unsigned i = 0; i < n->n_kids; i++)
		if (fill(buf, n->kids[i]->name, NULL, 0, 0))
			break;
	pthread_rwlock_unlock(&t->lock);
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct fs_node *n;
	int r = file_open(tree_get(), path, false, fi);

	if (r < 0)
		return r;
	n = ((struct fs_file *)(uintptr_t)fi->fh)->node;
	/* Read-only content never changes while mounted; the writable disk
	 * changes only through its own inode, whose page cache the kernel
	 * updates on each write. Another view of the delta, and chain.json of
	 * a writable mount, bypass the cache. */
	fi->keep_cache = !n->uncached;
	fi->direct_io = n->uncached;
	return 0;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return file_release(fi);
}

/* The view node of an open file, or NULL when a table change removed it. */
static struct fs_node *file_view(struct fuse_file_info *fi)
{
	struct fs_node *n = ((struct fs_file *)(uintptr_t)fi->fh)->node;

	return atomic_load_explicit(&n->gone, memory_order_relaxed) ? NULL : n;
}

static int fs_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	struct fs_file *f = (struct fs_file *)(uintptr_t)fi->fh;
	struct fs_node *n = f->node;
	uint64_t size;
	int r;

	(void)path;
	if (off < 0)
		return -EINVAL;
	if (n->kind != FS_VIEW) {
		if ((uint64_t)off >= f->text->len)
			return 0;
		if (len > f->text->len - (uint64_t)off)
			len = f->text->len - (uint64_t)off;
		memcpy(buf, f->text->data + off, len);
		return (int)len;
	}
	if (!file_view(fi))
		return -EIO;
	size = n->view.size;
	if ((uint64_t)off >= size)
		return 0;
	if (len > size - (uint64_t)off)
		len = (size_t)(size - (uint64_t)off);
	r = fs_split_read(&n->view, buf, len, (uint64_t)off);
	return r < 0 ? r : (int)len;
}

/* SEEK_DATA / SEEK_HOLE; the kernel handles SEEK_SET/CUR/END itself. Text
 * files are all data. */
static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	struct fs_file *f = (struct fs_file *)(uintptr_t)fi->fh;
	struct fs_node *n = f->node;
	uint64_t pos, size;
	int r;

	(void)path;
	if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE))
		return -EINVAL;
	if (n->kind != FS_VIEW) {
		size = f->text->len;
		if ((uint64_t)off >= size)
			return -ENXIO;
		return whence == SEEK_DATA ? off : (off_t)size;
	}
	if (!file_view(fi))
		return -EIO;
	r = vd_view_seek(&n->view, (uint64_t)off, whence == SEEK_DATA, &pos);
	return r < 0 ? r : (off_t)pos;
}

/* After writes through the writable view n (`disk` or a partition of it):
 * the kernel holds the delta's other files' attributes (their allocated
 * size) for an hour; invalidate them, its .changed and chain.json, so `du`
 * and `cat` see the writes. At most once a second while writes go on
 * (force: fsync and close, always when something was written since). */
static void fs_refresh(struct fs_tree *t, struct fs_node *n, bool force)
{
	struct fs_node *d = n->alias ? n->alias : n, *show[] = {d->twin, d->changes, d->json};
	uint64_t w = __atomic_load_n(&t->writes, __ATOMIC_ACQUIRE);
	int64_t now = vd_mono_ns(), last = __atomic_load_n(&t->refreshed_ns, __ATOMIC_RELAXED);
	struct fuse *fuse = fuse_get_context()->fuse;

	if (w == __atomic_load_n(&t->refreshed_writes, __ATOMIC_RELAXED) ||
	    (!force && now - last < 1000000000))
		return;
	__atomic_store_n(&t->refreshed_writes, w, __ATOMIC_RELAXED);
	__atomic_store_n(&t->refreshed_ns, now, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < sizeof(show) / sizeof(show[0]); i++)
		if (show[i]) /* -ENOENT: the kernel never looked it up */
			fuse_invalidate_path(fuse, show[i]->path);
}

/* A write at or past the end of `disk` or a disk.pN fails with ENOSPC and
 * one that crosses it is cut short, as on a block device (Linux
 * blkdev_write_iter): a partition never writes into its neighbour. */
static int fs_write(const char *path, const char *buf, size_t len, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs_node *n = ((struct fs_file *)(uintptr_t)fi->fh)->node;
	int r;

	(void)path;
	if (!n->writable)
		return -EROFS;
	if (!file_view(fi))
		return -EIO;
	if (off < 0)
		return -EINVAL;
	if ((uint64_t)off >= n->view.size)
		return len ? -ENOSPC : 0; /* a disk does not grow */
	if (len > n->view.size - (uint64_t)off)
		len = (size_t)(n->view.size - (uint64_t)off);
	r = vd_chain_write(n->view.chain, buf, len, n->view.start + (uint64_t)off);
	if (r < 0)
		return r;
	if (n->alias) /* `disk` may hold these bytes in its page cache */
		fuse_invalidate_path(fuse_get_context()->fuse, n->alias->path);
	__atomic_add_fetch(&tree_get()->writes, 1, __ATOMIC_RELEASE);
	fs_table_watch(tree_get(), n, (uint64_t)off, len);
	fs_refresh(tree_get(), n, false);
	return (int)len;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct fs_node *n = ((struct fs_file *)(uintptr_t)fi->fh)->node;

	(void)path;
	(void)datasync;
	int r;

	/* also through a handle on a removed partition: what it wrote before
	 * the table changed is in the delta */
	if (n->kind != FS_VIEW || !n->writable)
		return 0;
	r = vd_chain_flush(n->view.chain);
	fs_refresh(tree_get(), n, true);
	return r;
}

/* close(2) of a writable disk: the writes are durable when the last program
 * using the disk has closed it, so `umount guest; fusermount3 -u` leaves a
 * complete delta (footers and the clean flag follow at daemon exit). A clean
 * chain costs nothing here. */
static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	return fs_fsync(path, 1, fi);
}

/* Discard: fstrim through a loop device, fallocate --punch-hole. */
static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct fs_node *n = ((struct fs_file *)(uintptr_t)fi->fh)->node;
	uint64_t n_bytes;
	int r;

	(void)path;
	if (!n->writable)
		return -EROFS;
	if (!file_view(fi))
		return -EIO;
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
		return mode & FALLOC_FL_KEEP_SIZE ? 0 : -EOPNOTSUPP; /* a disk does not grow */
	if (off < 0 || len <= 0)
		return -EINVAL;
	if ((uint64_t)off >= n->view.size)
		return 0;
	n_bytes = vd_min_u64((uint64_t)len, n->view.size - (uint64_t)off);
	r = vd_chain_discard(n->view.chain, n->view.start + (uint64_t)off, n_bytes);
	if (r < 0)
		return r;
	if (n->alias)
		fuse_invalidate_path(fuse_get_context()->fuse, n->alias->path);
	__atomic_add_fetch(&tree_get()->writes, 1, __ATOMIC_RELEASE);
	fs_table_watch(tree_get(), n, (uint64_t)off, n_bytes);
	fs_refresh(tree_get(), n, false);
	return 0;
}

/* The virtual size is fixed: only a truncate to the same size succeeds. */
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_node *n = fi ? ((struct fs_file *)(uintptr_t)fi->fh)->node : node_get(t, path);
	int r;

	if (!n)
		return -ENOENT;
	if (n->kind != FS_VIEW || !n->writable)
		r = -EROFS;
	else
		r = (uint64_t)size == n->view.size ? 0 : -EPERM;
	if (!fi)
		node_put(t, n);
	return r;
}

static int fs_statfs(const char *path, struct statvfs *sv)
{
	struct fs_tree *t = tree_get();

	(void)path;
	memset(sv, 0, sizeof(*sv));
	/* A writable mount reports the space left where its delta grows. */
	if (t->delta_dir && statvfs(t->delta_dir, sv) == 0) {
		sv->f_flag &= ~(unsigned long)ST_RDONLY;
		return 0;
	}
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_namemax = 255;
	sv->f_flag = ST_RDONLY;
	return 0;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs_tree *t = tree_get();

	/* A read-only mount's names and content are fixed for its life. A
	 * writable one invalidates what a table change makes stale, but cannot
	 * name the kernel's negative entries (a disk.pN that did not exist
	 * yet): it has none cached. */
	cfg->kernel_cache = 1;
	cfg->entry_timeout = 3600;
	cfg->attr_timeout = 3600;
	cfg->negative_timeout = t->rescans ? 0 : 3600;
	cfg->nullpath_ok = 1;
	conn->max_readahead = 1 << 20;
	return t;
}

const struct fuse_operations fs_ops = {
    .getattr = fs_getattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .releasedir = fs_releasedir,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .fsync = fs_fsync,
    .flush = fs_flush,
    .release = fs_release,
    .fallocate = fs_fallocate,
    .truncate = fs_truncate,
    .lseek = fs_lseek,
    .statfs = fs_statfs,
    .init = fs_init,
};
