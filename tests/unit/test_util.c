/* The unit tests' shared helpers; see test_util.h. */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "disk/disk.h"
#include "disk/endian.h"
#include "disk/util.h"

/* A step the test cannot go on without failed: say which and stop. */
static void tu_die(const char *what, const char *path)
{
	fprintf(stderr, "test_util: %s %s: %s\n", what, path, strerror(errno));
	abort();
}

/* ---- the temporary directory ---------------------------------------------- */

static char tu_dirbuf[PATH_MAX];
static pid_t tu_dir_pid; /* the process that made it (a fork's child must not remove it) */

static void tu_dir_atexit(void)
{
	if (tu_dirbuf[0] && tu_dir_pid == getpid())
		tu_dir_remove();
}

const char *tu_dir_new(const char *tag)
{
	static int registered;
	const char *t = getenv("TMPDIR");

	if (tu_dirbuf[0])
		tu_dir_remove();
	snprintf(tu_dirbuf, sizeof(tu_dirbuf), "%s/vd_%s_XXXXXX", t && *t ? t : "/tmp", tag);
	if (!mkdtemp(tu_dirbuf))
		tu_die("cannot make", tu_dirbuf);
	tu_dir_pid = getpid();
	if (!registered++)
		atexit(tu_dir_atexit);
	return tu_dirbuf;
}

const char *tu_dir(void)
{
	return tu_dirbuf[0] ? tu_dirbuf : tu_dir_new("test");
}

static int tu_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0) {
		fprintf(stderr, "test_util: cannot remove %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

int tu_dir_remove(void)
{
	int r = 0;

	if (tu_dirbuf[0])
		r = nftw(tu_dirbuf, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
	tu_dirbuf[0] = '\0';
	return r;
}

const char *tu_path(const char *fmt, ...)
{
	static char buf[8][PATH_MAX];
	static unsigned k;
	char *p = buf[k++ % 8];
	size_t n = (size_t)snprintf(p, PATH_MAX, "%s/", tu_dir());
	va_list ap;

	va_start(ap, fmt);
	if ((size_t)vsnprintf(p + n, PATH_MAX - n, fmt, ap) >= PATH_MAX - n) {
		errno = ENAMETOOLONG;
		tu_die("path too long:", p);
	}
	va_end(ap);
	return p;
}

/* ---- files ------------------------------------------------------------------ */

uint8_t *tu_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && (buf = malloc((size_t)st.st_size + 1))) {
		while (got < (size_t)st.st_size) {
			ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);

			if (r <= 0) {
				if (r == 0)
					errno = EIO; /* shrank while read */
				free(buf);
				buf = NULL;
				break;
			}
			got += (size_t)r;
		}
	}
	close(fd);
	if (buf) {
		buf[got] = 0;
		if (len)
			*len = got;
	}
	return buf;
}

uint8_t *tu_load(const char *path, size_t *len)
{
	uint8_t *buf = tu_read_file(path, len);

	if (!buf)
		tu_die("cannot read", path);
	return buf;
}

/* Writes n bytes at off of path opened with flags. */
static void tu_put(const char *path, int flags, uint64_t off, const void *p, size_t n)
{
	int fd = open(path, flags, 0644);
	size_t done = 0;

	if (fd < 0)
		tu_die("cannot open", path);
	while (done < n) {
		ssize_t r = pwrite(fd, (const uint8_t *)p + done, n - done, (off_t)(off + done));

		if (r < 0)
			tu_die("cannot write", path);
		done += (size_t)r;
	}
	if (close(fd) != 0)
		tu_die("cannot close", path);
}

void tu_write_file(const char *path, const void *p, size_t n)
{
	tu_put(path, O_WRONLY | O_CREAT | O_TRUNC, 0, p, n);
}

void tu_write_text(const char *path, const char *text)
{
	tu_write_file(path, text, strlen(text));
}

void tu_poke(const char *path, uint64_t off, const void *p, size_t n)
{
	tu_put(path, O_WRONLY, off, p, n);
}

void tu_poke_le32(const char *path, uint64_t off, uint32_t v)
{
	uint8_t b[4];

	vd_put_le32(b, v);
	tu_poke(path, off, b, sizeof(b));
}

void tu_poke_le64(const char *path, uint64_t off, uint64_t v)
{
	uint8_t b[8];

	vd_put_le64(b, v);
	tu_poke(path, off, b, sizeof(b));
}

void tu_peek(const char *path, uint64_t off, void *p, size_t n)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		tu_die("cannot open", path);
	errno = EIO; /* a short read */
	if (pread(fd, p, n, (off_t)off) != (ssize_t)n)
		tu_die("cannot read", path);
	close(fd);
}

uint64_t tu_file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		tu_die("cannot stat", path);
	return (uint64_t)st.st_size;
}

/* ---- the shell -------------------------------------------------------------- */

static int tu_status(int st)
{
	if (st == -1)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int tu_sh(const char *fmt, ...)
{
	char *cmd;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&cmd, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -1;
	fflush(NULL); /* the command's output after ours */
	r = tu_status(system(cmd));
	free(cmd);
	return r;
}

char *tu_sh_output(const char *fmt, ...)
{
	char *cmd, *out = NULL;
	size_t len = 0;
	FILE *f, *o;
	va_list ap;
	int r, c;

	va_start(ap, fmt);
	r = vasprintf(&cmd, fmt, ap);
	va_end(ap);
	if (r < 0)
		return NULL;
	fflush(NULL);
	f = popen(cmd, "r");
	free(cmd);
	if (!f)
		return NULL;
	o = open_memstream(&out, &len);
	while ((c = getc(f)) != EOF)
		if (o)
			putc(c, o);
	if (o)
		fclose(o);
	if (tu_status(pclose(f)) != 0 || !o) {
		free(out);
		return NULL;
	}
	return out;
}

/* ---- the log -------------------------------------------------------------- */

static pthread_mutex_t tu_log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vd_buf tu_log_buf;

static void tu_log_sink(void *ctx, enum vd_log_level lvl, const char *msg)
{
	static const char *const tag[] = {"error: ", "warning: ", "", "debug: "};

	(void)ctx;
	pthread_mutex_lock(&tu_log_lock);
	vd_buf_printf(&tu_log_buf, "vdmount: %s%s\n", tag[lvl], msg);
	pthread_mutex_unlock(&tu_log_lock);
}

void tu_log_capture(void)
{
	pthread_mutex_lock(&tu_log_lock);
	vd_buf_free(&tu_log_buf);
	vd_buf_printf(&tu_log_buf, "%s", "");
	pthread_mutex_unlock(&tu_log_lock);
	vd_log_set_sink(tu_log_sink, NULL);
}

const char *tu_log_text(void)
{
	return tu_log_buf.data && !tu_log_buf.oom ? tu_log_buf.data : "";
}

char *tu_log_release(void)
{
	char *text;

	vd_log_set_sink(NULL, NULL);
	text = strdup(tu_log_text());
	vd_buf_free(&tu_log_buf);
	if (!text)
		abort();
	fputs(text, stderr);
	return text;
}

/* ---- images ------------------------------------------------------------------ */

int tu_image_write(const char *path, const void *p, size_t len, uint64_t off)
{
	struct vd_image *img;
	int r = vd_image_open(path, VD_OPEN_RDWR, &img);

	if (r < 0)
		return r;
	r = vd_image_write(img, p, len, off);
	vd_image_close(img);
	return r;
}

int tu_image_fill(const char *path, uint64_t off, size_t len, uint8_t fill)
{
	uint8_t *b = malloc(len ? len : 1);
	int r;

	if (!b)
		return -ENOMEM;
	memset(b, fill, len);
	r = tu_image_write(path, b, len, off);
	free(b);
	return r;
}

int tu_image_child(const char *parent, const char *child)
{
	struct vd_image *img;
	int r = vd_image_open(parent, 0, &img);

	if (r < 0) {
		errno = -r;
		tu_die("cannot open", parent);
	}
	r = vd_image_create_child(img, child);
	vd_image_close(img);
	return r;
}
