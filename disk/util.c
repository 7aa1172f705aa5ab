/* Positional I/O, logging and the JSON writer shared by every driver.
 * All I/O is pread/pwrite at explicit offsets so descriptors can be shared
 * between FUSE worker threads (STYLE.md section 7). */
#include "disk/util.h"

#include "disk/text.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

int vd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			return -e;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int vd_preadv_full(int fd, const struct iovec *iov, int n, uint64_t off)
{
	uint64_t total = 0;
	ssize_t got;
	int i;

	if (n < 1 || n > VD_PREADV_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (off > INT64_MAX || total > INT64_MAX - off)
		return -EINVAL;
	do
		got = preadv(fd, iov, n, (off_t)off);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return -errno;
	if ((uint64_t)got == total)
		return 0;
	/* short (EOF, a signal, a file system's limit): the rest piece by piece */
	for (i = 0; i < n; i++) {
		size_t skip = vd_min_u64((uint64_t)got, iov[i].iov_len);
		int r = vd_pread_full(fd, (uint8_t *)iov[i].iov_base + skip, iov[i].iov_len - skip,
				      off + skip);

		if (r < 0)
			return r;
		got -= (ssize_t)skip;
		off += iov[i].iov_len;
	}
	return 0;
}

int vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			return -e;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int64_t vd_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int vd_open_ro(const char *path)
{
	/* O_NONBLOCK: a hostile descriptor or hint may name a FIFO, whose open()
	 * would wait forever for a writer. It changes nothing for regular files
	 * and block devices; it is cleared again below, and vd_fd_size() refuses
	 * anything else. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME | O_NONBLOCK), fl;

	/* O_NOATIME is refused with EPERM on files we do not own (as non-root). */
	if (fd < 0 && errno == EPERM)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

int vd_seek_data(int fd, uint64_t off, int whence, uint64_t *out)
{
	off_t r;

	if (off > INT64_MAX)
		return -ENXIO;
	r = lseek(fd, (off_t)off, whence);
	if (r < 0)
		return -errno;
	*out = (uint64_t)r;
	return 0;
}

void vd_advise_willneed(int fd, uint64_t off, uint64_t len)
{
	if (off <= INT64_MAX && len <= INT64_MAX - off)
		(void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
}

int vd_fd_size(int fd, uint64_t *out)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			return -errno;
		*out = sz;
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*out = (uint64_t)st.st_size;
	return 0;
}

int vd_create_tmp(const char *path, char **tmp)
{
	int fd, r;

	if (asprintf(tmp, "%s.tmpXXXXXX", path) < 0) {
		*tmp = NULL;
		return -ENOMEM;
	}
	fd = mkostemp(*tmp, O_CLOEXEC);
	if (fd < 0 || fchmod(fd, 0644) < 0) {
		r = -errno;
		vd_log_err("%s: cannot create a temporary file beside it (%s): %s", path, *tmp,
			   strerror(-r));
		if (fd >= 0) {
			unlink(*tmp);
			close(fd);
		}
		free(*tmp);
		*tmp = NULL;
		return r;
	}
	return fd;
}

/* Renames tmp to path unless path exists. */
static int rename_noreplace(const char *tmp, const char *path)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* A filesystem without RENAME_NOREPLACE: link() never replaces either. */
	if (link(tmp, path) < 0)
		return -errno;
	unlink(tmp);
	return 0;
}

/* Makes the new directory entry of path durable. */
static int dir_sync(const char *path)
{
	char *dir = vd_path_dir(path);
	int fd, r = 0;

	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return r;
}

int vd_create_finish(int fd, char *tmp, const char *path, int r)
{
	int e = 0;

	if (r == 0 && fsync(fd) < 0) {
		r = -errno;
		vd_log_err("%s: cannot write %s: %s", path, tmp, strerror(-r));
	}
	if (r == 0) {
		r = rename_noreplace(tmp, path);
		if (r == -EEXIST)
			vd_log_err("%s: exists already: vdmount never replaces a file", path);
		else if (r < 0)
			vd_log_err("%s: cannot create: %s", path, strerror(-r));
	}
	if (r < 0)
		unlink(tmp);
	else
		e = dir_sync(path);
	/* The file is complete and in place: a directory that cannot be synced
	 * only makes its name less durable. */
	if (e < 0)
		vd_log_warn("%s: cannot sync its directory: %s", path, strerror(-e));
	close(fd);
	free(tmp);
	return r;
}

int vd_random_bytes(void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n) {
		ssize_t got = getrandom(p, n, 0);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

int vd_fstat(int fd, struct stat *st)
{
	return fstat(fd, st) < 0 ? -errno : 0;
}

int vd_stat(const char *path, struct stat *st)
{
	return stat(path, st) < 0 ? -errno : 0;
}

void vd_close(int fd)
{
	close(fd);
}

int vd_realpath(const char *path, char **out)
{
	*out = realpath(path, NULL);
	return *out ? 0 : -errno;
}

int vd_fd_realpath(int fd, const char *path, char *real)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, real, PATH_MAX - 1);
	if (n >= 0) {
		real[n] = '\0';
		return 0;
	}
	return realpath(path, real) ? 0 : -errno;
}

char *vd_path_dir(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

char *vd_path_join(const char *dir, const char *name)
{
	char *p;

	if (name[0] == '/')
		return strdup(name);
	/* ".\\p.vhd" (W2ru, after '\\' -> '/') and "./p.vmdk" name dir itself */
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	if (!strcmp(dir, "."))
		return strdup(name);
	if (asprintf(&p, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name) < 0)
		return NULL;
	return p;
}

char *vd_path_beside(const char *path, const char *name)
{
	char *dir = vd_path_dir(path), *p;

	if (!dir)
		return NULL;
	p = vd_path_join(dir, name);
	free(dir);
	return p;
}

char *vd_path_relative(const char *dir, const char *target)
{
	size_t common = 0, i = 0;
	struct vd_buf b = {0};

	/* Longest common prefix ending at a component boundary. */
	for (;; i++) {
		bool dend = dir[i] == 0 || dir[i] == '/';
		if (dend && target[i] == '/')
			common = i;
		if (dir[i] == 0 || dir[i] != target[i])
			break;
	}
	if (dir[common] == '/' || dir[common] == 0) {
		for (const char *p = dir + common; *p; p++)
			if (*p == '/' && p[1])
				vd_buf_printf(&b, "../");
	}
	vd_buf_printf(&b, "%s", target + common + 1);
	if (b.oom) {
		vd_buf_free(&b);
		return NULL;
	}
	return b.data;
}

int vd_path_parent_of_delta(const char *fmt, const char *parent, const char *path, char **target,
			    char **rel)
{
	char *pdir = vd_path_dir(parent), *cdir = vd_path_dir(path);
	char *preal = NULL, *creal = NULL;
	const char *base = strrchr(parent, '/') ? strrchr(parent, '/') + 1 : parent;
	int r = -ENOMEM;

	*target = *rel = NULL;
	if (!pdir || !cdir)
		goto out;
	r = vd_realpath(pdir, &preal);
	if (r == 0)
		r = vd_realpath(cdir, &creal);
	if (r < 0) {
		vd_log_err("%s: %s: cannot resolve the directory of %s: %s", fmt, path,
			   preal ? "the new delta" : parent, strerror(-r));
		goto out;
	}
	r = -ENOMEM;
	*target = vd_path_join(preal, base);
	*rel = *target ? vd_path_relative(creal, *target) : NULL;
	if (*rel)
		r = 0;
	else {
		free(*target);
		*target = NULL;
	}
out:
	free(pdir);
	free(cdir);
	free(preal);
	free(creal);
	return r;
}

static const char *const log_tag[] = {"error: ", "warning: ", "", "debug: "};
static enum vd_log_level log_max = VD_LOG_INFO;
static vd_log_sink_fn log_sink;
static void *log_ctx;
static atomic_uint log_errors;

#define LOG_CTX_MAX 8
static _Thread_local const char *log_context[LOG_CTX_MAX];
static _Thread_local unsigned log_context_depth;
static _Thread_local unsigned log_muted;
static _Thread_local vd_log_sink_fn log_collect_fn;
static _Thread_local void *log_collect_ctx;

void vd_log_context_push(const char *ctx)
{
	if (log_context_depth < LOG_CTX_MAX)
		log_context[log_context_depth] = ctx;
	log_context_depth++;
}

void vd_log_context_pop(void)
{
	if (log_context_depth)
		log_context_depth--;
}

void vd_log_mute(bool on)
{
	if (on)
		log_muted++;
	else if (log_muted)
		log_muted--;
}

void vd_log_collect(vd_log_sink_fn fn, void *ctx)
{
	log_collect_fn = fn;
	log_collect_ctx = ctx;
}

/* Appends " (ctx, in the ctx...)", innermost first, to msg (truncating). */
static void log_context_add(char *msg, size_t size)
{
	unsigned n = log_context_depth < LOG_CTX_MAX ? log_context_depth : LOG_CTX_MAX;
	size_t len = strlen(msg);

	for (unsigned i = n; i-- > 0 && len + 1 < size;) {
		int w = snprintf(msg + len, size - len, "%s%s", i == n - 1 ? " (" : ", in the ",
				 log_context[i]);
		len = w < 0 ? size : len + (size_t)w;
	}
	if (n && len + 1 < size)
		snprintf(msg + len, size - len, ")");
}

void vd_log_set_level(enum vd_log_level max)
{
	log_max = max;
}

void vd_log_set_sink(vd_log_sink_fn sink, void *ctx)
{
	log_sink = sink;
	log_ctx = ctx;
}

static void log_syslog_sink(void *ctx, enum vd_log_level lvl, const char *msg)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

	(void)ctx;
	syslog(prio[lvl], "%s%s", log_tag[lvl], msg);
}

void vd_log_to_syslog(void)
{
	openlog("vdmount", LOG_PID, LOG_DAEMON);
	vd_log_set_sink(log_syslog_sink, NULL);
}

unsigned vd_log_error_count(void)
{
	return atomic_load(&log_errors);
}

void vd_log(enum vd_log_level lvl, const char *fmt, ...)
{
	char msg[4096];
	va_list ap;

	if (log_muted)
		return;
	if (lvl == VD_LOG_ERR)
		atomic_fetch_add(&log_errors, 1);
	if (lvl > log_max && !(lvl == VD_LOG_WARN && log_collect_fn))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (lvl <= VD_LOG_WARN)
		log_context_add(msg, sizeof(msg));
	if (lvl == VD_LOG_WARN && log_collect_fn)
		log_collect_fn(log_collect_ctx, lvl, msg);
	if (lvl > log_max)
		return;
	if (log_sink)
		log_sink(log_ctx, lvl, msg);
	else
		fprintf(stderr, "vdmount: %s%s\n", log_tag[lvl], msg);
}

void vd_buf_printf(struct vd_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 256;
		while (ncap - b->len <= (size_t)n)
			ncap *= 2;
		char *nd = realloc(b->data, ncap);
		if (!nd) {
			b->oom = true;
			return;
		}
		b->data = nd;
		b->cap = ncap;
	}
}

int vd_strv_add(char ***v, unsigned *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(*nv));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n] = strdup(s);
	if (!nv[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

void vd_buf_free(struct vd_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* Writes s as a JSON string. Bytes that are not strict UTF-8 (stray bytes,
 * overlong forms, surrogates, code points past U+10FFFF) are written as
 * \\u00XX, one per byte, so the output is valid JSON whatever s holds. */
static void json_escape(struct vd_buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);

	vd_buf_printf(b, "\"");
	while (left) {
		uint32_t cp;
		size_t n = vd_utf8_get(p, left, &cp);

		if (n == 1 && (cp == '"' || cp == '\\'))
			vd_buf_printf(b, "\\%c", (int)cp);
		else if (n == 1 && cp < 0x20)
			vd_buf_printf(b, "\\u%04x", (unsigned)cp);
		else if (n == 0)
			vd_buf_printf(b, "\\u%04x", (unsigned)p[0]);
		else
			vd_buf_printf(b, "%.*s", (int)n, (const char *)p);
		if (n == 0)
			n = 1;
		p += n;
		left -= n;
	}
	vd_buf_printf(b, "\"");
}

static void json_key(struct vd_json *j, const char *key)
{
	if (j->depth > 0 && j->need_comma[j->depth])
		vd_buf_printf(&j->buf, ",");
	if (j->depth > 0)
		vd_buf_printf(&j->buf, "\n%*s", 2 * j->depth, "");
	if (j->depth < (int)(sizeof(j->need_comma) / sizeof(j->need_comma[0])))
		j->need_comma[j->depth] = true;
	if (key) {
		json_escape(&j->buf, key);
		vd_buf_printf(&j->buf, ": ");
	}
}

static void json_open(struct vd_json *j, const char *key, char c)
{
	json_key(j, key);
	vd_buf_printf(&j->buf, "%c", c);
	if (j->depth + 1 < (int)(sizeof(j->need_comma) / sizeof(j->need_comma[0]))) {
		j->depth++;
		j->need_comma[j->depth] = false;
	} else {
		j->buf.oom = true;
	}
}

static void json_close(struct vd_json *j, char c)
{
	bool had = j->need_comma[j->depth];

	if (j->depth > 0)
		j->depth--;
	if (had)
		vd_buf_printf(&j->buf, "\n%*s", 2 * j->depth, "");
	vd_buf_printf(&j->buf, "%c", c);
	if (j->depth == 0)
		vd_buf_printf(&j->buf, "\n");
}

void vd_json_obj_begin(struct vd_json *j, const char *key)
{
	json_open(j, key, '{');
}

void vd_json_obj_end(struct vd_json *j)
{
	json_close(j, '}');
}

void vd_json_arr_begin(struct vd_json *j, const char *key)
{
	json_open(j, key, '[');
}

void vd_json_arr_end(struct vd_json *j)
{
	json_close(j, ']');
}

void vd_json_str(struct vd_json *j, const char *key, const char *val)
{
	json_key(j, key);
	if (val)
		json_escape(&j->buf, val);
	else
		vd_buf_printf(&j->buf, "null");
}

void vd_json_u64(struct vd_json *j, const char *key, uint64_t val)
{
	json_key(j, key);
	vd_buf_printf(&j->buf, "%" PRIu64, val);
}

void vd_json_bool(struct vd_json *j, const char *key, bool val)
{
	json_key(j, key);
	vd_buf_printf(&j->buf, "%s", val ? "true" : "false");
}

void vd_json_null(struct vd_json *j, const char *key)
{
	json_key(j, key);
	vd_buf_printf(&j->buf, "null");
}

static inline bool bitmap_bit(const uint8_t *bm, uint64_t k, bool msb_first)
{
	return bm[k / 8] >> (msb_first ? 7 - k % 8 : k % 8) & 1;
}

uint64_t vd_bitmap_run(const uint8_t *bm, uint64_t k, uint64_t limit, bool msb_first, bool *set)
{
	bool s = bitmap_bit(bm, k, msb_first);
	uint8_t whole = s ? 0xFF : 0x00;
	uint64_t j = k + 1;

	while (j < limit) {
		if (j % 8 == 0 && j + 8 <= limit && bm[j / 8] == whole) {
			j += 8;
			continue;
		}
		if (bitmap_bit(bm, j, msb_first) != s)
			break;
		j++;
	}
	*set = s;
	return j - k;
}

void vd_json_time(struct vd_json *j, const char *key, const struct timespec *t)
{
	struct tm tm;
	char s[64];

	if (!gmtime_r(&t->tv_sec, &tm)) {
		vd_json_null(j, key);
		return;
	}
	snprintf(s, sizeof(s), "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, t->tv_nsec);
	vd_json_str(j, key, s);
}

void vd_json_file(struct vd_json *j, const char *given, const struct vd_file_info *fi)
{
	vd_json_str(j, "path", fi->canonical);
	vd_json_str(j, "path_given", given);
	vd_json_u64(j, "file_size", fi->size);
	vd_json_time(j, "mtime", &fi->mtime);
}
