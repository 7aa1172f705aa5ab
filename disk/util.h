/* Shared helpers for drivers: overflow-checked arithmetic, positional I/O,
 * logging and a tiny JSON writer. Nothing here knows about any format. */
#ifndef VD_UTIL_H
#define VD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

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

/* Length of the run of equal bits from bit k (< limit) of a sector bitmap,
 * bits numbered MSB-first in each byte (VHD) or LSB-first (VHDX); *set gets
 * bit k. Whole bytes of the run are skipped at once; runs may end mid-byte. */
uint64_t vd_bitmap_run(const uint8_t *bm, uint64_t k, uint64_t limit, bool msb_first, bool *set);

/* The I/O seam. disk/ and chain/ reach input files only through the functions
 * below (no direct open, pread, fstat, stat, realpath or close of an input:
 * add a function here for a new kind of access), so tests
 * can replace them at link time with ld's --wrap (tests/CMakeLists.txt,
 * vd_io_seam): the fuzz harnesses serve in-memory files through them and the
 * fault-injection test fails the Nth call. Production binaries call them
 * directly: the seam costs nothing there. */

/* Reads exactly len bytes at off. Returns 0, -EIO on a short read (EOF), or -errno.
 * Safe on a descriptor shared between threads (pread only). */
int vd_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* Writes exactly len bytes at off. Returns 0 or -errno. */
int vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* Opens path read-only (O_NOATIME where the kernel permits it, O_CLOEXEC).
 * Returns the fd or -errno; logs nothing (the caller names the role of the file). */
int vd_open_ro(const char *path);

/* Size of the file behind fd in bytes (block devices included), or -errno. */
int vd_fd_size(int fd, uint64_t *out);

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

#endif
