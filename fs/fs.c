/* The namespace and the FUSE callbacks.
 *
 * The tree is built once at mount time and never changes: a uthash table maps
 * each absolute path ("/", "/disk", "/layers/01-base", "/chain.json") to a
 * node. With a writable delta (vdmount -w) `disk` forwards writes, fsync
 * and discard to the chain's copy-on-write; everything else stays
 * read-only. Disk and layer files are windows onto vd_chain_read() at a
 * level; chain.json is rendered on first use (it walks every layer's tables to
 * count allocated bytes, which a mount must not wait for) and then cached.
 * Content never changes while mounted, so the kernel may keep its page cache
 * across opens (keep_cache) and attributes are cached for a long time. */
#include "fs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

enum fs_kind { FS_DIR, FS_LAYER, FS_JSON };

struct fs_node {
	char *path; /* hash key */
	const char *name;
	enum fs_kind kind;
	struct vd_chain *chain; /* FS_LAYER, FS_JSON */
	unsigned level;		/* FS_LAYER */
	bool writable;		/* FS_LAYER: the `disk` of a chain with a writable delta */
	bool uncached;		/* FS_LAYER: a view of the writable delta other than `disk`:
				   no page cache, so it never serves stale pages */
	struct fs_node **kids;	/* FS_DIR, in listing order */
	unsigned n_kids;
	char *json; /* FS_JSON: rendered text; written once, under tree->json_lock, by the
		       first open; read without the lock by reads, which follow an open */
	size_t json_len;
	UT_hash_handle hh;
};

struct fs_tree {
	struct fs_node *nodes; /* uthash by path */
	char *delta_dir;       /* directory of the (first) writable delta, for statfs */
	pthread_mutex_t json_lock;
	struct timespec mtime; /* mount time, shown on every node */
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

static int disk_add(struct fs_tree *t, struct fs_node *dir, struct vd_chain *c)
{
	struct fs_node *n, *layers;
	n = node_add(t, dir, "disk", FS_LAYER);
	if (!n)
		return -ENOMEM;
	n->chain = c;
	n->level = vd_chain_depth(c) - 1;
	n->writable = vd_chain_writable(c);
	layers = node_add(t, dir, "layers", FS_DIR);
	if (!layers)
		return -ENOMEM;
	for (unsigned i = 0; i < vd_chain_depth(c); i++) {
		char *name = vd_chain_layer_name(c, i);
		if (!name)
			return -ENOMEM;
		n = node_add(t, layers, name, FS_LAYER);
		free(name);
		if (!n)
			return -ENOMEM;
		n->uncached = vd_chain_writable(c) && i == vd_chain_depth(c) - 1;
		n->chain = c;
		n->level = i;
	}
	n = node_add(t, dir, "chain.json", FS_JSON);
	if (!n)
		return -ENOMEM;
	n->chain = c;
	return 0;
}

int fs_tree_build(struct fs_disk *disks, unsigned n, struct fs_tree **out)
{
	struct fs_tree *t = calloc(1, sizeof(*t));
	struct fs_node *root;
	int r = -ENOMEM;

	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->json_lock, NULL);
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
		free(n->json);
		free(n->path);
		free(n);
	}
	pthread_mutex_destroy(&t->json_lock);
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

/* Renders chain.json once; later calls return the cached text. */
static int json_get(struct fs_tree *t, struct fs_node *n)
{
	struct vd_json j = {0};
	int r = 0;

	pthread_mutex_lock(&t->json_lock);
	if (n->json)
		goto out;
	r = vd_chain_describe(n->chain, &j);
	if (r < 0) {
		vd_buf_free(&j.buf);
		goto out;
	}
	n->json = j.buf.data;
	n->json_len = j.buf.len;
out:
	pthread_mutex_unlock(&t->json_lock);
	return r;
}

static uint64_t node_size(struct fs_tree *t, struct fs_node *n, int *err)
{
	*err = 0;
	switch (n->kind) {
	case FS_LAYER:
		return vd_chain_size(n->chain, n->level);
	case FS_JSON:
		*err = json_get(t, n);
		return n->json_len;
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
	st->st_mtim = st->st_ctim = st->st_atim = t->mtime;
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
	st->st_blocks = (st->st_size + 511) / 512;
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
	if (n->kind == FS_JSON) {
		int r = json_get(t, n);
		if (r < 0)
			return r;
	}
	fi->fh = (uintptr_t)n;
	/* Read-only content never changes while mounted; the writable disk
	 * changes only through this inode, whose page cache the kernel updates
	 * on each write. Another view of the writable delta bypasses the cache. */
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
	if (n->kind == FS_JSON) {
		if ((uint64_t)off >= n->json_len)
			return 0;
		if (len > n->json_len - (uint64_t)off)
			len = n->json_len - (uint64_t)off;
		memcpy(buf, n->json + off, len);
		return (int)len;
	}
	size = vd_chain_size(n->chain, n->level);
	if ((uint64_t)off >= size)
		return 0;
	if (len > size - (uint64_t)off)
		len = (size_t)(size - (uint64_t)off);
	r = vd_chain_read(n->chain, n->level, buf, len, (uint64_t)off);
	return r < 0 ? r : (int)len;
}

static int fs_write(const char *path, const char *buf, size_t len, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;
	uint64_t size;
	int r;

	(void)path;
	if (!n->writable)
		return -EROFS;
	if (off < 0)
		return -EINVAL;
	size = vd_chain_size(n->chain, n->level);
	if ((uint64_t)off >= size)
		return len ? -ENOSPC : 0; /* a disk does not grow */
	if (len > size - (uint64_t)off)
		len = (size_t)(size - (uint64_t)off);
	r = vd_chain_write(n->chain, buf, len, (uint64_t)off);
	return r < 0 ? r : (int)len;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;

	(void)path;
	(void)datasync;
	return n->kind == FS_LAYER && n->writable ? vd_chain_flush(n->chain) : 0;
}

/* close(2) of a writable disk: the writes are durable when the last
 * program using the disk has closed it, so `umount guest; fusermount3 -u`
 * leaves a complete delta (the footers/clean flag follow at daemon exit). A
 * clean chain costs nothing here. */
static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;

	(void)path;
	return n->kind == FS_LAYER && n->writable ? vd_chain_flush(n->chain) : 0;
}

/* Discard: fstrim through a loop device, fallocate --punch-hole. */
static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct fs_node *n = (struct fs_node *)(uintptr_t)fi->fh;
	uint64_t size;

	(void)path;
	if (!n->writable)
		return -EROFS;
	if (!(mode & FALLOC_FL_KEEP_SIZE) && !(mode & FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP; /* allocation and growth make no sense for a disk */
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
		return 0; /* KEEP_SIZE alone: the space is the disk's already */
	size = vd_chain_size(n->chain, n->level);
	if (off < 0 || len <= 0)
		return -EINVAL;
	if ((uint64_t)off >= size)
		return 0;
	return vd_chain_discard(n->chain, (uint64_t)off,
				vd_min_u64((uint64_t)len, size - (uint64_t)off));
}

/* The virtual size is fixed: only a truncate to the same size succeeds. */
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct fs_tree *t = tree_get();
	struct fs_node *n = fi && fi->fh ? (struct fs_node *)(uintptr_t)fi->fh : node_find(t, path);

	if (!n)
		return -ENOENT;
	if (n->kind != FS_LAYER || !n->writable)
		return -EROFS;
	return (uint64_t)size == vd_chain_size(n->chain, n->level) ? 0 : -EPERM;
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
    .statfs = fs_statfs,
    .init = fs_init,
};
