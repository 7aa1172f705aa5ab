/* Confinement policy (see confine.h).
 *
 * A file is judged by what was actually opened, not by the name: the real
 * path comes from /proc/self/fd/N of the open descriptor, so a symlink (or a
 * rename racing us) cannot lead outside the roots after the check. */
#include "disk/confine.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/util.h"

void vd_policy_init(struct vd_policy *p)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
}

static void strv_free(char **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void vd_policy_free(struct vd_policy *p)
{
	strv_free(p->roots, p->n_roots);
	strv_free(p->search, p->n_search);
	strv_free(p->exceptions, p->n_exceptions);
	pthread_mutex_destroy(&p->lock); /* a zeroed mutex is a valid one */
	memset(p, 0, sizeof(*p));
}

/* Appends a copy of s to *v unless it is there already. */
static int strv_add(char ***v, unsigned *n, const char *s)
{
	char **nv;

	for (unsigned i = 0; i < *n; i++)
		if (!strcmp((*v)[i], s))
			return 0;
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n] = strdup(s);
	if (!nv[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* Adds the real path of directory dir as a root. */
static int root_add(struct vd_policy *p, const char *dir)
{
	char *real;
	int r = vd_realpath(dir, &real);

	if (r < 0) {
		vd_log_err("%s: cannot resolve the directory: %s", dir, strerror(-r));
		return r;
	}
	r = strv_add(&p->roots, &p->n_roots, real);
	free(real);
	return r;
}

int vd_policy_add_image(struct vd_policy *p, const char *path)
{
	char *dir = vd_path_dir(path), *real = NULL, *rdir = NULL;
	int r = dir ? root_add(p, dir) : -ENOMEM;

	if (r == 0 && vd_realpath(path, &real) == 0) {
		rdir = vd_path_dir(real);
		r = rdir ? root_add(p, rdir) : -ENOMEM;
	}
	free(dir);
	free(real);
	free(rdir);
	return r;
}

int vd_policy_add_search(struct vd_policy *p, const char *dir)
{
	char *real = NULL;
	struct stat st;
	int r = vd_realpath(dir, &real);

	if (r == 0)
		r = vd_stat(real, &st);
	if (r == 0 && !S_ISDIR(st.st_mode))
		r = -ENOTDIR;
	if (r < 0) {
		vd_log_err("%s: --search directory: %s", dir, strerror(-r));
		free(real);
		return r;
	}
	r = strv_add(&p->search, &p->n_search, real);
	if (r == 0)
		r = strv_add(&p->roots, &p->n_roots, real);
	free(real);
	return r;
}

static bool path_inside(const char *real, const char *root)
{
	size_t n = strlen(root);

	if (n == 1 && root[0] == '/')
		return true;
	return !strncmp(real, root, n) && (real[n] == '/' || real[n] == 0);
}

/* The roots as one string for messages ("/a, /b"). Malloc'd or NULL. */
static char *roots_text(const struct vd_policy *p)
{
	struct vd_buf b = {0};

	for (unsigned i = 0; i < p->n_roots; i++)
		vd_buf_printf(&b, "%s%s", i ? ", " : "", p->roots[i]);
	if (!p->n_roots)
		vd_buf_printf(&b, "none");
	if (b.oom) {
		vd_buf_free(&b);
		return NULL;
	}
	return b.data;
}

static void exception_add(struct vd_policy *p, const char *real, const char *why)
{
	char *s;

	if (asprintf(&s, "%s: %s", real, why) < 0)
		return;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n_exceptions; i++)
		if (!strcmp(p->exceptions[i], s))
			goto out;
	if (strv_add(&p->exceptions, &p->n_exceptions, s) == 0)
		vd_log_warn("%s", s);
out:
	pthread_mutex_unlock(&p->lock);
	free(s);
}

/* Judges the open descriptor fd. Returns 0 (allowed; exceptions recorded) or
 * -EPERM with *why set (malloc'd). */
static int fd_judge(struct vd_policy *p, int fd, const char *path, char **why)
{
	char real[PATH_MAX];
	bool inside = false;
	struct stat st;
	int r;

	*why = NULL;
	r = vd_fstat(fd, &st);
	if (r < 0)
		return r;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		*why = strdup("is not a regular file");
		return -EPERM;
	}
	if (S_ISBLK(st.st_mode) && !p->allow_devices) {
		*why = strdup("is a block device; --allow-devices permits block devices");
		return -EPERM;
	}
	r = vd_fd_realpath(fd, path, real);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < p->n_roots && !inside; i++)
		inside = path_inside(real, p->roots[i]);
	if (!inside && !p->allow_outside) {
		char *roots = roots_text(p);

		if (asprintf(why,
			     "%s%s%slies outside the directories vdmount may read (%s); "
			     "--allow-outside permits it",
			     strcmp(real, path) ? "(really " : "", strcmp(real, path) ? real : "",
			     strcmp(real, path) ? ") " : "", roots ? roots : "?") < 0)
			*why = NULL;
		free(roots);
		return -EPERM;
	}
	if (!inside)
		exception_add(p, real, "outside the image directories, allowed by --allow-outside");
	if (S_ISBLK(st.st_mode))
		exception_add(p, real, "block device, allowed by --allow-devices");
	return 0;
}

int vd_policy_check(struct vd_policy *p, const char *path, char **why)
{
	char *reason = NULL;
	int fd = vd_open_ro(path), r;

	if (why)
		*why = NULL;
	if (fd < 0)
		return fd;
	r = fd_judge(p, fd, path, &reason);
	vd_close(fd);
	if (why)
		*why = reason;
	else
		free(reason);
	return r;
}

int vd_policy_open(struct vd_policy *p, const char *path, const char *referrer, const char *role)
{
	char *why = NULL;
	int fd = vd_open_ro(path), r;

	if (fd < 0)
		return fd;
	r = fd_judge(p, fd, path, &why);
	if (r == 0)
		return fd;
	vd_close(fd);
	if (r == -EPERM)
		vd_log_err("%s: refusing %s %s: it %s", referrer, role, path,
			   why ? why : "is not allowed");
	free(why);
	return r;
}
