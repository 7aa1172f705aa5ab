/* Shared helpers for drivers: overflow-checked arithmetic, positional I/O,
 * logging and a tiny JSON writer. Nothing here knows about any format. */
#ifndef VD_UTIL_H
#define VD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

/* Overflow-checked u64 arithmetic: return true on overflow (like the builtins). */
static inline bool vd_add_ovf(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_add_overflow(a, b, out);
}

static inline bool vd_mul_ovf(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_mul_overflow(a, b, out);
}

static inline bool vd_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* True when the n bytes at p are all zero. */
static inline bool vd_mem_is_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	return n == 0 || (b[0] == 0 && __builtin_memcmp(b, b + 1, n - 1) == 0);
}

/* ceil(a / b) (b > 0; cannot overflow) and a rounded up to a multiple of b
 * (the caller bounds a so the product fits). */
static inline uint64_t vd_div_round_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static inline uint64_t vd_round_up(uint64_t a, uint64_t b)
{
	return vd_div_round_up(a, b) * b;
}

/* Value of hex digit c, or -1. */
static inline int vd_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static inline uint64_t vd_min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t vd_max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t vd_mono_ns(void);

/* Length of the run of equal bits from bit k (< limit) of a sector bitmap,
 * bits numbered MSB-first in each byte (VHD) or LSB-first (VHDX); *set gets
 * bit k. Whole bytes of the run are skipped at once; runs may end mid-byte. */
uint64_t vd_bitmap_run(const uint8_t *bm, uint64_t k, uint64_t limit, bool msb_first, bool *set);

/* The I/O seam. disk/ and chain/ reach input files only through the functions
 * below (no direct open, pread, lseek, fadvise, fstat, stat, realpath or close of an input:
 * add a function here for a new kind of access), so tests
 * can replace them at link time with ld's --wrap (tests/CMakeLists.txt,
 * vd_io_seam): the fuzz harnesses serve in-memory files through them and the
 * fault-injection test fails the Nth call. Production binaries call them
 * directly: the seam costs nothing there. */

/* Reads exactly len bytes at off. Returns 0, -EIO on a short read (EOF), or -errno.
 * Safe on a descriptor shared between threads (pread only). */
int vd_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* As vd_pread_full, scattered over n (1..VD_PREADV_MAX) buffers: one
 * preadv(2) in the common case, vd_pread_full for what a short one left. */
#define VD_PREADV_MAX 160
int vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off);

/* Writes exactly len bytes at off. Returns 0 or -errno. */
int vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* Opens path read-only (O_NOATIME where the kernel permits it, O_CLOEXEC).
 * Returns the fd or -errno; logs nothing (the caller names the role of the file). */
int vd_open_ro(const char *path);

/* Size of the file behind fd in bytes (block devices included), or -errno. */
int vd_fd_size(int fd, uint64_t *out);

/* lseek(2) SEEK_DATA or SEEK_HOLE (whence) from off, without moving
 * anything that matters (every access is a pread at an explicit offset):
 * the offset found into *out. Returns 0, -ENXIO when off is at or past EOF
 * or (SEEK_DATA) only a hole follows, or -errno (-EINVAL: the file system
 * cannot tell). */
int vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out);

/* Asks the kernel to read [off, off + len) of fd into the page cache in the
 * background (POSIX_FADV_WILLNEED), for a read that will come soon. Advice
 * only: nothing waits for it and a failure changes nothing, so it has no
 * result. */
void vd_advise_willneed(int fd, uint64_t off, uint64_t len);

/* Creating a file without ever replacing one (a new delta may sit beside
 * evidence). vd_create_tmp() opens a new, empty temporary file in path's
 * directory (mode 0644) and returns its fd, with its name in *tmp
 * (malloc'd); -errno on failure (logged, naming path). The caller fills it
 * with pwrite/ftruncate, then calls vd_create_finish() with its own status
 * r: when r == 0 the file is fsync'd and renamed to path without replacing
 * anything (-EEXIST if path exists; RENAME_NOREPLACE, or link() where the
 * filesystem lacks it) and the directory is fsync'd; otherwise, or when
 * that fails, the temporary file is removed. finish always closes fd and
 * frees tmp, and returns r, or the -errno of the step that failed (logged
 * there; the caller's own r is not logged again). */
int vd_create_tmp(const char *path, char **tmp);
int vd_create_finish(int fd, char *tmp, const char *path, int r);

/* Fills buf with n random bytes from getrandom(2). Returns 0 or -errno. */
int vd_random_bytes(void *buf, size_t n);

/* fstat(2) and stat(2) of an input. Return 0 or -errno. */
struct stat;
int vd_fstat(int fd, struct stat *st);
int vd_stat(const char *path, struct stat *st);

/* Closes a descriptor vd_open_ro() (or an open for writing) returned. */
void vd_close(int fd);

/* The real path of path (symlinks resolved, as realpath(3)), malloc'd into
 * *out. Returns 0 or -errno. */
int vd_realpath(const char *path, char **out);

/* The real path of the file open as fd, as the kernel opened it (from
 * /proc/self/fd; without /proc, the real path of path), into real
 * (PATH_MAX bytes). Returns 0 or -errno. */
int vd_fd_realpath(int fd, const char *path, char *real);

/* Paths (all return malloc'd strings, or NULL when out of memory). */

/* Directory part of path: "." when it has none, "/" for a file in /. */
char *vd_path_dir(const char *path);

/* dir + "/" + name, with leading "./" of name dropped; name alone when it
 * is absolute or dir is ".". */
char *vd_path_join(const char *dir, const char *name);

/* name relative to the directory of path (as vd_path_join). */
char *vd_path_beside(const char *path, const char *name);

/* Relative path from directory dir to file target (both absolute and real). */
char *vd_path_relative(const char *dir, const char *target);

/* How a new delta at path names its parent: *target gets the parent's
 * absolute path (the real path of its directory and its own file name),
 * *rel the path to it from the delta's real directory (both malloc'd).
 * Returns 0 or -errno, logged as "fmt: path: ..." naming the directory
 * that cannot be resolved. */
int vd_path_parent_of_delta(const char *fmt, const char *parent, const char *path, char **target,
			    char **rel);

/* What chain.json says of one input file, taken when it was opened. */
struct vd_file_info {
	char *canonical; /* absolute, symlinks resolved; NULL if unknown */
	uint64_t size;	 /* bytes (block devices included) */
	struct timespec mtime;
};

/* Fills *out for the file open at fd, opened by path (canonical from
 * /proc/self/fd, else realpath). Returns 0 or -errno; *out is always safe to
 * free with vd_file_info_free(). */
int vd_file_info_get(int fd, const char *path, struct vd_file_info *out);
void vd_file_info_free(struct vd_file_info *fi);

/* Whether the file open at fd differs from what *fi recorded at open (size
 * or mtime): 0 unchanged, 1 changed (why gets "size A, now B" or "modified
 * at <time>"), -errno when fstat fails. One fstat: cheap enough for every
 * open(2) of a view. */
int vd_file_info_changed(int fd, const struct vd_file_info *fi, char *why, size_t n);

/* Logging. One line per message, without a trailing newline. By default
 * lines go to stderr as "vdmount: <level tag><message>"; a front end can send
 * them elsewhere (syslog, nbdkit_error, a test's buffer) with vd_log_set_sink. */
enum vd_log_level { VD_LOG_ERR, VD_LOG_WARN, VD_LOG_INFO, VD_LOG_DEBUG };
void vd_log(enum vd_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vd_log_set_level(enum vd_log_level max);

/* Receives each message at or below the level set; msg has no prefix or
 * newline. Called from any thread, possibly concurrently. */
typedef void (*vd_log_sink_fn)(void *ctx, enum vd_log_level lvl, const char *msg);

/* Routes messages to sink (NULL restores stderr). Not thread-safe against
 * concurrent logging: set it before starting threads. */
void vd_log_set_sink(vd_log_sink_fn sink, void *ctx);

/* A ready-made sink: syslog(3) with ident "vdmount", facility daemon. */
void vd_log_to_syslog(void);

/* What the file being opened is to the chain ("parent of X, found by Y",
 * "extent 2 of Z"), appended to every error and warning this thread logs as
 * " (ctx)" while pushed; nested contexts are joined innermost first with
 * ", in the ". ctx must stay valid until popped. Thread-local; at most 8 deep
 * (deeper pushes are counted but not shown). */
void vd_log_context_push(const char *ctx);
void vd_log_context_pop(void);

/* While muted (nestable), this thread's messages are dropped and its errors
 * not counted: for probing files whose problems are not the user's concern. */
void vd_log_mute(bool on);

/* Also hands every warning this thread logs (context included) to fn, until
 * called again with NULL: chain/ collects them for chain.json. Thread-local. */
void vd_log_collect(vd_log_sink_fn fn, void *ctx);

/* Number of errors logged so far (tests use it to check that a failure said something). */
unsigned vd_log_error_count(void);
#define vd_log_err(...) vd_log(VD_LOG_ERR, __VA_ARGS__)
#define vd_log_warn(...) vd_log(VD_LOG_WARN, __VA_ARGS__)
#define vd_log_info(...) vd_log(VD_LOG_INFO, __VA_ARGS__)
#define vd_log_debug(...) vd_log(VD_LOG_DEBUG, __VA_ARGS__)

/* Growable string buffer; on allocation failure it sets oom and stops growing. */
struct vd_buf {
	char *data;
	size_t len, cap;
	bool oom;
};
void vd_buf_printf(struct vd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vd_buf_free(struct vd_buf *b);

/* Appends a copy of s to the array *v of *n strings. Returns 0, or -ENOMEM
 * with the array unchanged. */
int vd_strv_add(char ***v, unsigned *n, const char *s);

/* Minimal JSON writer over a vd_buf. Commas and nesting are tracked for the caller.
 * Strings are escaped (control characters, quote, backslash); invalid UTF-8 bytes
 * are written as \u00XX so the output is always valid JSON. */
struct vd_json {
	struct vd_buf buf;
	int depth;
	bool need_comma[32];
	int indent;
};
void vd_json_obj_begin(struct vd_json *j, const char *key);
void vd_json_obj_end(struct vd_json *j);
void vd_json_arr_begin(struct vd_json *j, const char *key);
void vd_json_arr_end(struct vd_json *j);
void vd_json_str(struct vd_json *j, const char *key, const char *val); /* NULL val -> null */
void vd_json_u64(struct vd_json *j, const char *key, uint64_t val);
void vd_json_bool(struct vd_json *j, const char *key, bool val);
void vd_json_null(struct vd_json *j, const char *key);
/* A time as an ISO 8601 UTC string with nanoseconds: "2024-05-01T10:00:00.000000001Z". */
void vd_json_time(struct vd_json *j, const char *key, const struct timespec *t);
/* One input file's members: "path" (canonical), "path_given" (given, the
 * name as the image or the user wrote it, resolved against its directory),
 * "file_size" and "mtime". */
void vd_json_file(struct vd_json *j, const char *given, const struct vd_file_info *fi);

#endif
