/* ceiling: the benchmark's reference FUSE file system. It serves each RAW
 * file given on the command line, read-only, as /<basename of RAW>, and does
 * nothing but pread() per request: no format, no lookup, no cache of its own.
 * What it reaches is FUSE's own limit for the same bytes, so vdmount's
 * figure divided by it says how much of that limit vdmount gets.
 *
 * Settings that are FUSE's, not vdmount's work, are the same as vdmount's
 * (fs/fs.c fs_init, fs/main.c): high-level API, multithreaded loop,
 * keep_cache, long attribute and entry timeouts, 1 MiB max_readahead; the
 * benchmark also gives its mount the same read_ahead_kb. Built and run by
 * scripts/bench.sh only; usage: ceiling [FUSE options] RAW... MOUNTPOINT */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct ceil_file {
	const char *name; /* basename of the raw file */
	int fd;
	off_t size;
};

static struct ceil_file *files;
static unsigned n_files;
static char **nonopts;
static unsigned n_nonopts;

static struct ceil_file *file_find(const char *path)
{
	for (unsigned i = 0; i < n_files; i++)
		if (path[0] == '/' && !strcmp(path + 1, files[i].name))
			return &files[i];
	return NULL;
}

static int ceil_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct ceil_file *f;

	(void)fi;
	memset(st, 0, sizeof(*st));
	if (!strcmp(path, "/")) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	}
	f = file_find(path);
	if (!f)
		return -ENOENT;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = f->size;
	return 0;
}

static int ceil_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
			struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)path; /* NULL with nullpath_ok; "/" is the only directory */
	(void)off;
	(void)fi;
	(void)flags;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (unsigned i = 0; i < n_files; i++)
		fill(buf, files[i].name, NULL, 0, 0);
	return 0;
}

static int ceil_open(const char *path, struct fuse_file_info *fi)
{
	struct ceil_file *f = file_find(path);

	if (!f)
		return -ENOENT;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	fi->fh = (uint64_t)(f - files);
	fi->keep_cache = 1;
	return 0;
}

static int ceil_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	ssize_t n;

	(void)path;
	n = pread(files[fi->fh].fd, buf, len, off);
	return n < 0 ? -errno : (int)n;
}

static void *ceil_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	cfg->kernel_cache = 1;
	cfg->entry_timeout = 3600;
	cfg->attr_timeout = 3600;
	cfg->negative_timeout = 3600;
	cfg->nullpath_ok = 1;
	conn->max_readahead = 1 << 20;
	return NULL;
}

static const struct fuse_operations ceil_ops = {
    .getattr = ceil_getattr,
    .readdir = ceil_readdir,
    .open = ceil_open,
    .read = ceil_read,
    .init = ceil_init,
};

/* Keeps the non-option arguments (RAW... MOUNTPOINT) for main(). */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	(void)data;
	(void)outargs;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	nonopts = realloc(nonopts, (n_nonopts + 1) * sizeof(*nonopts));
	if (!nonopts)
		return -1;
	nonopts[n_nonopts++] = (char *)arg;
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct stat st;

	if (fuse_opt_parse(&args, NULL, NULL, opt_proc) < 0 || n_nonopts < 2) {
		fprintf(stderr, "usage: ceiling [FUSE options] RAW... MOUNTPOINT\n");
		return 2;
	}
	n_files = n_nonopts - 1;
	files = calloc(n_files, sizeof(*files));
	if (!files)
		return 1;
	for (unsigned i = 0; i < n_files; i++) {
		const char *slash = strrchr(nonopts[i], '/');

		files[i].name = slash ? slash + 1 : nonopts[i];
		files[i].fd = open(nonopts[i], O_RDONLY | O_CLOEXEC);
		if (files[i].fd < 0 || fstat(files[i].fd, &st) < 0) {
			fprintf(stderr, "ceiling: error: %s: %s\n", nonopts[i], strerror(errno));
			return 1;
		}
		files[i].size = st.st_size;
	}
	if (fuse_opt_add_arg(&args, nonopts[n_files]) < 0)
		return 1;
	return fuse_main(args.argc, args.argv, &ceil_ops, NULL);
}
