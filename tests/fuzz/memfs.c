/* An in-memory, read-only file system behind the I/O seam of disk/util.h.
 *
 * The harnesses are linked with ld --wrap=vd_open_ro,... (tests/fuzz/
 * CMakeLists.txt), so every call disk/ and chain/ make to reach an input
 * lands here. Files are copies of the harness's buffers at normalised
 * absolute paths; a proper prefix of a file's path is a directory. Nothing
 * else exists: a hint naming /etc/passwd or /dev/zero finds nothing, so the
 * fuzzer never reads the host's files.
 *
 * There are no symlinks: a real path is the lexical normal form.
 *
 * A file is a list of pieces (fz_fs_place): bytes at an offset, zeros in
 * between, a later piece over an earlier one, the size the end of the
 * furthest piece. That lets a few KiB of input stand for a VHDX file whose
 * structures lie megabytes apart.
 *
 * Descriptors are numbers from FZ_FD_BASE on, above any real descriptor
 * (RLIMIT_NOFILE cannot reach it). A read, fstat or close of one that is
 * not open is a use-after-close or a double close in the code under test
 * and aborts; so does any write, and fz_fs_reset() with a descriptor still
 * open (a leak). Paths are resolved lexically ("a/../b"), like the kernel
 * does for a tree without symlinks. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#define FZ_MAX_FILES 16
#define FZ_MAX_FDS 64
#define FZ_FD_BASE 0x40000000
#define FZ_DEV 0xf22

struct fz_piece {
	uint64_t off;
	size_t len;
	uint8_t *data;
};

struct fz_file {
	char *path;
	uint64_t len; /* the size: the end of the furthest piece */
	struct fz_piece *pc;
	unsigned n_pc;
};

static struct fz_file files[FZ_MAX_FILES];
static unsigned n_files;

/* fds[i] is descriptor FZ_FD_BASE + i: -1 free, -2 a directory, else a file
 * index; fd_paths[i] the normalised path it was opened by (malloc'd). */
static int fds[FZ_MAX_FDS];
static char *fd_paths[FZ_MAX_FDS];
static bool fds_ready;

static void fds_init(void)
{
	if (fds_ready)
		return;
	for (int i = 0; i < FZ_MAX_FDS; i++)
		fds[i] = -1;
	fds_ready = true;
}

void fz_fs_reset(void)
{
	fds_init();
	for (int i = 0; i < FZ_MAX_FDS; i++)
		if (fds[i] != -1)
			fz_fail("memfs: descriptor %d (%s) leaked", FZ_FD_BASE + i,
				fds[i] >= 0 ? files[fds[i]].path : "a directory");
	for (unsigned i = 0; i < n_files; i++) {
		free(files[i].path);
		for (unsigned k = 0; k < files[i].n_pc; k++)
			free(files[i].pc[k].data);
		free(files[i].pc);
	}
	memset(files, 0, sizeof(files));
	n_files = 0;
}

/* Lexical normalisation into out (PATH_MAX): "." and empty components go,
 * ".." drops the previous one (at the root it stays at the root). Relative
 * paths are taken from "/", the harness's notion of the working directory. */
static bool path_norm(const char *in, char *out)
{
	size_t n = 0;

	out[0] = '\0';
	while (*in) {
		const char *c = in;
		size_t len;

		while (*in && *in != '/')
			in++;
		len = (size_t)(in - c);
		if (*in)
			in++;
		if (len == 0 || (len == 1 && c[0] == '.'))
			continue;
		if (len == 2 && c[0] == '.' && c[1] == '.') {
			while (n > 0 && out[n] != '/')
				n--;
			out[n] = '\0';
			continue;
		}
		if (n + 1 + len >= PATH_MAX)
			return false;
		out[n++] = '/';
		memcpy(out + n, c, len);
		n += len;
		out[n] = '\0';
	}
	if (n == 0)
		strcpy(out, "/");
	return true;
}

/* The file index at path, -2 for a directory, -1 for nothing. */
static int path_find(const char *path)
{
	char norm[PATH_MAX];
	size_t n;

	if (!path_norm(path, norm))
		return -1;
	if (!strcmp(norm, "/"))
		return -2;
	n = strlen(norm);
	for (unsigned i = 0; i < n_files; i++) {
		if (!strcmp(files[i].path, norm))
			return (int)i;
	}
	for (unsigned i = 0; i < n_files; i++) {
		if (!strncmp(files[i].path, norm, n) && files[i].path[n] == '/')
			return -2;
	}
	return -1;
}

/* Appends a copy of data[0, len) at off to file f. */
static void piece_add(struct fz_file *f, uint64_t off, const uint8_t *data, size_t len)
{
	struct fz_piece *np = realloc(f->pc, (f->n_pc + 1) * sizeof(*np));

	if (!np)
		fz_fail("memfs: out of memory");
	f->pc = np;
	np = &f->pc[f->n_pc++];
	np->off = off;
	np->len = len;
	np->data = malloc(len ? len : 1);
	if (!np->data)
		fz_fail("memfs: out of memory");
	if (len)
		memcpy(np->data, data, len);
	if (off + len > f->len)
		f->len = off + len;
}

/* A new file at path (normalised into norm), or NULL with *err set. */
static struct fz_file *file_new(const char *path, char *norm, int *err)
{
	struct fz_file *f;

	*err = 0;
	if (n_files == FZ_MAX_FILES || !path_norm(path, norm)) {
		*err = -E2BIG;
		return NULL;
	}
	if (strncmp(norm, FZ_ROOT "/", sizeof(FZ_ROOT))) {
		*err = -EPERM;
		return NULL;
	}
	f = &files[n_files];
	memset(f, 0, sizeof(*f));
	f->path = strdup(norm);
	if (!f->path)
		fz_fail("memfs: out of memory");
	n_files++;
	return f;
}

int fz_fs_add(const char *path, const uint8_t *data, size_t len)
{
	char norm[PATH_MAX];
	struct fz_file *f;
	int err;

	if (path_norm(path, norm) && path_find(norm) != -1)
		return -EEXIST;
	f = file_new(path, norm, &err);
	if (!f)
		return err;
	piece_add(f, 0, data, len);
	return 0;
}

int fz_fs_place(const char *path, uint64_t off, const uint8_t *data, size_t len)
{
	char norm[PATH_MAX];
	struct fz_file *f;
	int idx, err;

	if (off > FZ_SPARSE_MAX || len > FZ_SPARSE_MAX - off)
		return -EFBIG;
	idx = path_norm(path, norm) ? path_find(norm) : -1;
	if (idx == -2)
		return -EEXIST;
	f = idx >= 0 ? &files[idx] : file_new(path, norm, &err);
	if (!f)
		return err;
	piece_add(f, off, data, len);
	return 0;
}

/* The slot of an open memfs descriptor; aborts on one that is not open. */
static int fd_slot(int fd, const char *op)
{
	int i = fd - FZ_FD_BASE;

	fds_init();
	if (fd < FZ_FD_BASE || i >= FZ_MAX_FDS || fds[i] == -1)
		fz_fail("memfs: %s on descriptor %d, which is not open", op, fd);
	return i;
}

static void stat_fill(int idx, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_dev = FZ_DEV;
	st->st_ino = (ino_t)(idx + 2); /* 1: the directories */
	st->st_nlink = 1;
	if (idx < 0) {
		st->st_mode = S_IFDIR | 0555;
		st->st_size = 4096;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off_t)files[idx].len;
	}
	st->st_blksize = 4096;
	st->st_blocks = (st->st_size + 511) / 512;
}

int __wrap_vd_open_ro(const char *path);
int __wrap_vd_open_ro(const char *path)
{
	char norm[PATH_MAX];
	int idx = path_find(path);

	fds_init();
	if (idx == -1 || !path_norm(path, norm))
		return -ENOENT;
	for (int i = 0; i < FZ_MAX_FDS; i++) {
		if (fds[i] == -1) {
			fds[i] = idx;
			fd_paths[i] = strdup(norm);
			if (!fd_paths[i])
				fz_fail("memfs: out of memory");
			return FZ_FD_BASE + i;
		}
	}
	return -EMFILE;
}

int __wrap_vd_pread_full(int fd, void *buf, size_t len, uint64_t off);
int __wrap_vd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	int i = fd_slot(fd, "pread"), idx = fds[i];
	const struct fz_file *f;
	size_t n;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	if (idx < 0)
		return -EISDIR;
	/* As pread(2) in a loop: what exists is copied (pieces in the order
	 * they came, zeros between them), a short file is -EIO. */
	f = &files[idx];
	n = off >= f->len ? 0 : (size_t)vd_min_u64(f->len - off, len);
	if (n && !(f->n_pc == 1 && f->pc[0].off == 0 && f->pc[0].len == f->len))
		memset(buf, 0, n);
	for (unsigned k = 0; n && k < f->n_pc; k++) {
		const struct fz_piece *pc = &f->pc[k];
		uint64_t a = pc->off > off ? pc->off : off;
		uint64_t b = vd_min_u64(pc->off + pc->len, off + n);

		if (a < b)
			memcpy((uint8_t *)buf + (a - off), pc->data + (a - pc->off),
			       (size_t)(b - a));
	}
	return n == len ? 0 : -EIO;
}

/* As preadv(2) in a loop: the pieces in turn. */
int __wrap_vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off);
int __wrap_vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off)
{
	if (n < 1 || n > VD_PREADV_MAX)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		int r = __wrap_vd_pread_full(fd, iov[i].iov_base, iov[i].iov_len, off);

		if (r < 0)
			return r;
		off += iov[i].iov_len;
	}
	return 0;
}

int __wrap_vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int __wrap_vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	(void)buf;
	fz_fail("memfs: write of %zu bytes at %llu to descriptor %d: inputs are never written", len,
		(unsigned long long)off, fd);
}

int __wrap_vd_fd_size(int fd, uint64_t *out);
int __wrap_vd_fd_size(int fd, uint64_t *out)
{
	int i = fd_slot(fd, "size");

	if (fds[i] < 0)
		return -EINVAL; /* a directory: as vd_fd_size() on one */
	*out = files[fds[i]].len;
	return 0;
}

/* Holes: as a file system that allocates 4 KiB blocks, every block of the
 * file that no piece touches reads as zeros and is reported as a hole (the
 * archive's placed members leave such gaps), and EOF ends the last data. */
#define FZ_BLOCK 4096u

static bool block_has_data(const struct fz_file *f, uint64_t blk)
{
	uint64_t lo = blk * FZ_BLOCK, hi = lo + FZ_BLOCK;

	for (unsigned k = 0; k < f->n_pc; k++)
		if (f->pc[k].len && f->pc[k].off < hi && f->pc[k].off + f->pc[k].len > lo)
			return true;
	return false;
}

int __wrap_vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out);
int __wrap_vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out)
{
	int i = fd_slot(fd, "seek"), idx = fds[i];
	const struct fz_file *f;
	uint64_t best = UINT64_MAX, x;

	if (idx < 0)
		return -EINVAL;
	f = &files[idx];
	if (off >= f->len)
		return -ENXIO;
	if (whence == SEEK_DATA) {
		if (block_has_data(f, off / FZ_BLOCK)) {
			*out = off;
			return 0;
		}
		for (unsigned k = 0; k < f->n_pc; k++) {
			const struct fz_piece *pc = &f->pc[k];

			if (!pc->len || pc->off + pc->len <= off)
				continue;
			x = pc->off / FZ_BLOCK * FZ_BLOCK;
			best = vd_min_u64(best, x > off ? x : off);
		}
		if (best == UINT64_MAX)
			return -ENXIO;
		*out = best;
		return 0;
	}
	if (whence != SEEK_HOLE)
		return -EINVAL;
	/* each step passes a block that some piece touches: bounded by the
	 * pieces' bytes */
	for (x = off; x < f->len && block_has_data(f, x / FZ_BLOCK);)
		x = (x / FZ_BLOCK + 1) * FZ_BLOCK;
	*out = vd_min_u64(x, f->len);
	return 0;
}

/* Advice changes nothing here, but it must name an open file (a prefetch
 * after a close would advise whatever file got the number). */
void __wrap_vd_advise_willneed(int fd, uint64_t off, uint64_t len);
void __wrap_vd_advise_willneed(int fd, uint64_t off, uint64_t len)
{
	(void)fd_slot(fd, "advise");
	(void)off;
	(void)len;
}

int __wrap_vd_fstat(int fd, struct stat *st);
int __wrap_vd_fstat(int fd, struct stat *st)
{
	stat_fill(fds[fd_slot(fd, "fstat")], st);
	return 0;
}

int __wrap_vd_stat(const char *path, struct stat *st);
int __wrap_vd_stat(const char *path, struct stat *st)
{
	int idx = path_find(path);

	if (idx == -1)
		return -ENOENT;
	stat_fill(idx, st);
	return 0;
}

void __wrap_vd_close(int fd);
void __wrap_vd_close(int fd)
{
	int i = fd_slot(fd, "close");

	fds[i] = -1;
	free(fd_paths[i]);
	fd_paths[i] = NULL;
}

/* No symlinks here: a path's real path is its lexical normal form, if it
 * exists. */
int __wrap_vd_realpath(const char *path, char **out);
int __wrap_vd_realpath(const char *path, char **out)
{
	char norm[PATH_MAX];

	*out = NULL;
	if (path_find(path) == -1 || !path_norm(path, norm))
		return -ENOENT;
	*out = strdup(norm);
	return *out ? 0 : -ENOMEM;
}

int __wrap_vd_fd_realpath(int fd, const char *path, char *real);
int __wrap_vd_fd_realpath(int fd, const char *path, char *real)
{
	(void)path;
	snprintf(real, PATH_MAX, "%s", fd_paths[fd_slot(fd, "realpath")]);
	return 0;
}
