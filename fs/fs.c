/* The namespace and the FUSE callbacks.
 *
 * The tree is built once at mount time and never changes: a uthash table maps
 * each absolute path ("/", "/disk", "/disk.p1", "/layers/01-base",
 * "/layers/01-base.changed", "/chain.json") to a node. Disk, layer and
 * partition files are views (chain/part.h): read-only windows onto a chain
 * level, which also answer SEEK_DATA/SEEK_HOLE and the allocated size
 * (st_blocks). chain.json and the .changed lists are rendered on first use
 * (they walk every table, which a mount must not wait for) and then cached;
 * so is each view's allocated size. Content never changes while mounted, so
 * the kernel may keep its page cache across opens (keep_cache) and attributes
 * are cached for a long time. With a writable delta (vdmount -w), `disk` and
 * its partition files forward writes, fsync and discard to the chain's
 * copy-on-write; the layers/ views of the new delta bypass the page cache so
 * they are never stale; everything else stays read-only. Layer files carry their image file's
 * mtime, or for a VM disk the create time of the snapshot that froze them (fs/vm.c). */
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
#include "fs/vm.h"

enum fs_kind { FS_DIR, FS_VIEW, FS_JSON, FS_CHANGES };

struct fs_node {
	char *path; /* hash key */
	const char *name;
	enum fs_kind kind;
	struct vd_view view;   /* FS_VIEW; view.chain/level also for FS_JSON, FS_CHANGES */
	struct timespec mtime; /* the image file's for views and change lists */
	struct fs_node **kids; /* FS_DIR, in listing order */
	unsigned n_kids;
	char *text; /* FS_JSON, FS_CHANGES: rendered text, protected by tree->text_lock */
	size_t text_len;
	int64_t alloc; /* FS_VIEW: allocated bytes, -1 until known; protected by text_lock */
	bool writable; /* FS_VIEW: disk (or disk.pN) of a chain with a writable delta */
	bool uncached; /* FS_VIEW: another view of the writable delta's bytes than `disk`
			  (a layers/ file, a partition file): no page cache, never stale */
	struct fs_node *alias; /* FS_VIEW writable partition file: its `disk`, whose page
				  cache a write here makes stale (invalidated) */
	UT_hash_handle hh;
};

struct fs_tree {
	struct fs_node *nodes; /* uthash by path */
	char *delta_dir;       /* directory of the (first) writable delta, for statfs */
	pthread_mutex_t text_lock;
	struct timespec mtime; /* mount time, shown on directories and chain.json */
	uid_t uid;
	gid_t gid;
};

static struct fs_node *node_add(struct fs_tree *t, struct fs_node *dir, const char *name,
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
	if (dir) {
		struct fs_node **k = realloc(dir->kids, (dir->n_kids + 1) * sizeof(*k));
		if (!k) {
			free(n->path);
			free(n);
			return NULL;
		}
		dir->kids = k;
		dir->kids[dir->n_kids++] = n;
	}
	HASH_ADD_KEYPTR(hh, t->nodes, n->path, strlen(n->path), n);
	return n;
}

/* A view file "name" in dir for the disk at level, and "name.pN" beside it
 * for each partition. Warnings about the table are logged for the merged
 * disk only (the layers usually share its table). */
static int view_add(struct fs_tree *t, struct fs_node *dir, const char *name, struct vd_chain *c,
		    unsigned level, struct timespec mt, bool log_warnings)
{
	struct vd_part_table *pt = NULL;
	struct fs_node *n = node_add(t, dir, name, FS_VIEW), *disk_node;
	/* The writable delta is the top: `disk` (log_warnings) writes, its
	 * layers/ view reads around the page cache. */
	bool top_rw = vd_chain_writable(c) && level == vd_chain_depth(c) - 1;
	int r;

	if (!n)
		return -ENOMEM;
	n->view = vd_view_disk(c, level);
	n->mtime = mt;
	n->writable = top_rw && log_warnings;
	n->uncached = top_rw && !log_warnings;
	disk_node = n;
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
		char *pname;
		if (asprintf(&pname, "%s.p%u", name, pt->parts[i].number) < 0) {
			r = -ENOMEM;
			break;
		}
		n = node_add(t, dir, pname, FS_VIEW);
		free(pname);
		if (!n) {
			r = -ENOMEM;
			break;
		}
		n->view = vd_view_part(c, level, &pt->parts[i]);
		n->mtime = mt;
		n->writable = top_rw && log_warnings;
		n->uncached = top_rw;
		n->alias = n->writable ? disk_node : NULL;
	}
	vd_part_table_free(pt);
	return r;
}

static int disk_add(struct fs_tree *t, struct fs_node *dir, struct vd_chain *c)
{
	struct fs_node *n, *layers;
	unsigned top = vd_chain_depth(c) - 1;
	struct timespec mt;
	char *tname = fs_layer_name(c, top, &mt);
	int r = tname ? view_add(t, dir, "disk", c, top, mt, true) : -ENOMEM;

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
		r = view_add(t, layers, name, c, i, mt, false);
		if (r == 0 && asprintf(&cname, "%s.changed", name) < 0)
			r = -ENOMEM;
		free(name);
		if (r < 0)
			return r;
		n = node_add(t, layers, cname, FS_CHANGES);
		free(cname);
		if (!n)
			return -ENOMEM;
		n->view = vd_view_disk(c, i);
		n->mtime = mt;
	}
	n = node_add(t, dir, "chain.json", FS_JSON);
	if (!n)
		return -ENOMEM;
	n->view = vd_view_disk(c, top);
	return 0;
}

int fs_tree_build(struct fs_disk *disks, unsigned n, struct fs_tree **out)
{
	struct fs_tree *t = calloc(1, sizeof(*t));
	struct fs_node *root;
	int r = -ENOMEM;

	if (!t)
		return -ENOMEM;
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
		free(n->kids);
		free(n->text);
		free(n->path);
		free(n);
	}
	pthread_mutex_destroy(&t->text_lock);
	free(t->delta_dir);
	free(t);
}

static struct fs_tree *tree_get(void)
{
	return fuse_get_context()->private_data;
}

static struct fs_node *node_find(struct fs_tree *t, const char *path)
{
	struct fs_node *n;

	HASH_FIND_STR(t->nodes, path, n);
	return n;
}

/* Renders chain.json or a change list once; later calls return the cached text. */
static int text_get(struct fs_tree *t, struct fs_node *n)
{
	struct vd_json j = {0};
	int r = 0;

	pthread_mutex_lock(&t->text_lock);
	if (n->text)
		goto out;
	if (n->kind == FS_JSON) {
		r = vd_chain_describe(n->view.chain, &j);
		vd_buf_printf(&j.buf, "\n"); /* a text file ends with a newline */
	} else
		r = vd_chain_changes(n->view.chain, n->view.level, &j.buf);
	if (r < 0) {
		vd_buf_free(&j.buf);
		goto out;
	}
	n->text = j.buf.data;
	n->text_len = j.buf.len;
out:
	pthread_mutex_unlock(&t->text_lock);
	return r;
}

/* Allocated bytes of a view, computed once, in the getattr that `ls -l`
 * waits on: the walk is capped (FS_ALLOC_CALLS block-status calls, each of
 * bounded work), and a view with more runs than that is reported as fully
 * allocated, like a table that cannot be walked. A disk written front to
 * back needs one call per few GiB. */
#define FS_ALLOC_CALLS 2048u

static int alloc_get(struct fs_tree *t, struct fs_node *n, uint64_t *out)
{
	uint64_t a;
	int r = 0;

	pthread_mutex_lock(&t->text_lock);
	if (n->alloc < 0) {
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

static uint64_t node_size(struct fs_tree *t, struct fs_node *n, int *err)
{
	*err = 0;
	switch (n->kind) {
	case FS_VIEW:
		return n->view.size;
	case FS_JSON:
	case FS_CHANGES:
		*err = text_get(t, n);
		return n->text_len;
	default:
		return 0;
	}
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_node *n = fi && fi->fh ? (struct fs_node *)(uintptr_t)fi->fh : node_find(t, path);
	int err;

	if (!n)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_uid = t->uid;
	st->st_gid = t->gid;
	st->st_mtim = st->st_ctim = st->st_atim = n->mtime;
	if (n->kind == FS_DIR) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	}
	st->st_mode = S_IFREG | (n->writable ? 0644 : 0444);
	st->st_nlink = 1;
	st->st_size = (off_t)node_size(t, n, &err);
	if (err < 0)
		return err;
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
	return 0;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct fs_node *n = node_find(tree_get(), path);

	if (!n)
		return -ENOENT;
	if (n->kind != FS_DIR)
		return -ENOTDIR;
	fi->fh = (uintptr_t)n;
	return 0;
}

/* With nullpath_ok, path may be NULL here: the node comes from opendir. */
static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;

	(void)path;
	(void)off;
	(void)flags;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (unsigned i = 0; i < n->n_kids; i++)
		if (fill(buf, n->kids[i]->name, NULL, 0, 0))
			break;
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_node *n = node_find(t, path);

	if (!n)
		return -ENOENT;
	if (n->kind == FS_DIR)
		return -EISDIR;
	if ((fi->flags & O_ACCMODE) != O_RDONLY && !n->writable)
		return -EROFS;
	/* an input changed in place is served stale: no new opens (README) */
	if (n->kind == FS_VIEW && vd_chain_inputs_check(n->view.chain) < 0)
		return -EIO;
	if (n->kind == FS_JSON || n->kind == FS_CHANGES) {
		int r = text_get(t, n);
		if (r < 0)
			return r;
	}
	fi->fh = (uintptr_t)n;
	/* Read-only content never changes while mounted; the writable disk
	 * changes only through its own inode, whose page cache the kernel
	 * updates on each write. Another view of the delta bypasses the cache. */
	fi->keep_cache = !n->uncached;
	fi->direct_io = n->uncached;
	return 0;
}

static int fs_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;
	uint64_t size;
	int r;

	(void)path;
	if (off < 0)
		return -EINVAL;
	if (n->kind != FS_VIEW) {
		if ((uint64_t)off >= n->text_len)
			return 0;
		if (len > n->text_len - (uint64_t)off)
			len = n->text_len - (uint64_t)off;
		memcpy(buf, n->text + off, len);
		return (int)len;
	}
	size = n->view.size;
	if ((uint64_t)off >= size)
		return 0;
	if (len > size - (uint64_t)off)
		len = (size_t)(size - (uint64_t)off);
	r = vd_view_read(&n->view, buf, len, (uint64_t)off);
	return r < 0 ? r : (int)len;
}

/* SEEK_DATA / SEEK_HOLE; the kernel handles SEEK_SET/CUR/END itself. Text
 * files are all data. */
static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;
	uint64_t pos, size;
	int r;

	(void)path;
	if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE))
		return -EINVAL;
	if (n->kind != FS_VIEW) {
		size = n->text_len;
		if ((uint64_t)off >= size)
			return -ENXIO;
		return whence == SEEK_DATA ? off : (off_t)size;
	}
	r = vd_view_seek(&n->view, (uint64_t)off, whence == SEEK_DATA, &pos);
	return r < 0 ? r : (off_t)pos;
}

static int fs_write(const char *path, const char *buf, size_t len, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;
	int r;

	(void)path;
	if (!n->writable)
		return -EROFS;
	if (off < 0)
		return -EINVAL;
	if ((uint64_t)off >= n->view.size)
		return len ? -ENOSPC : 0; /* a disk does not grow */
	if (len > n->view.size - (uint64_t)off)
		len = (size_t)(n->view.size - (uint64_t)off);
	r = vd_chain_write(n->view.chain, buf, len, n->view.start + (uint64_t)off);
	if (r == 0 && n->alias) /* `disk` may hold these bytes in its page cache */
		fuse_invalidate_path(fuse_get_context()->fuse, n->alias->path);
	return r < 0 ? r : (int)len;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;

	(void)path;
	(void)datasync;
	return n->kind == FS_VIEW && n->writable ? vd_chain_flush(n->view.chain) : 0;
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
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;
	int r;

	(void)path;
	if (!n->writable)
		return -EROFS;
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
		return mode & FALLOC_FL_KEEP_SIZE ? 0 : -EOPNOTSUPP; /* a disk does not grow */
	if (off < 0 || len <= 0)
		return -EINVAL;
	if ((uint64_t)off >= n->view.size)
		return 0;
	r = vd_chain_discard(n->view.chain, n->view.start + (uint64_t)off,
			     vd_min_u64((uint64_t)len, n->view.size - (uint64_t)off));
	if (r == 0 && n->alias)
		fuse_invalidate_path(fuse_get_context()->fuse, n->alias->path);
	return r;
}

/* The virtual size is fixed: only a truncate to the same size succeeds. */
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_node *n = fi && fi->fh ? (struct fs_node *)(uintptr_t)fi->fh : node_find(t, path);

	if (!n)
		return -ENOENT;
	if (n->kind != FS_VIEW || !n->writable)
		return -EROFS;
	return (uint64_t)size == n->view.size ? 0 : -EPERM;
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
	/* The namespace and the content are fixed for the life of the mount. */
	cfg->kernel_cache = 1;
	cfg->entry_timeout = 3600;
	cfg->attr_timeout = 3600;
	cfg->negative_timeout = 3600;
	cfg->nullpath_ok = 1;
	conn->max_readahead = 1 << 20;
	return tree_get();
}

const struct fuse_operations fs_ops = {
    .getattr = fs_getattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .fsync = fs_fsync,
    .flush = fs_flush,
    .fallocate = fs_fallocate,
    .truncate = fs_truncate,
    .lseek = fs_lseek,
    .statfs = fs_statfs,
    .init = fs_init,
};
