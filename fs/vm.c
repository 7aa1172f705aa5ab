/* VMware VM directories as inputs: file I/O and naming around the core's
 * .vmx/.vmsd parsers (chain/vmx.c).
 *
 * fs_vm_expand() loads each VM argument once and records, for every disk it
 * contributes, the path string it put into the image list. A chain opened
 * from that exact string is that VM disk: its top layer's path is the key
 * (vd_chain_open keeps the path it was given). The registry lives until
 * fs_vm_release(), so the names it hands out stay valid while mounted. */
#include "fs/vm.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/vmx.h"

struct vm {
	char *vmx_path;
	char *vmsd_path; /* NULL: no snapshot dictionary */
	struct vd_vmx vmx;
	struct vd_vmsd vmsd;
	bool printed;
};

struct vm_disk {
	char *path; /* as put into the image list (the key) */
	struct vm *vm;
	unsigned idx; /* into vm->vmx.disks */
};

static struct vm **vms;
static unsigned n_vms;
static struct vm_disk *vdisks;
static unsigned n_vdisks;
static char **expanded;
static unsigned n_expanded;

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcasecmp(s + a - b, suffix);
}

static bool is_dir(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A directory is a VM when it holds a .vmx; any other directory is left to
 * the image code, which says it is not a regular file. */
static bool dir_has_vmx(const char *p)
{
	DIR *d = opendir(p);
	struct dirent *de;
	bool found = false;

	while (d && !found && (de = readdir(d)))
		found = ends_with(de->d_name, ".vmx");
	if (d)
		closedir(d);
	return found;
}

static bool is_vm_arg(const char *a)
{
	return ends_with(a, ".vmx") || ends_with(a, ".vmsd") || (is_dir(a) && dir_has_vmx(a));
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? strndup(path, (size_t)(slash - path ? slash - path : 1)) : strdup(".");
}

static char *join(const char *dir, const char *name)
{
	char *p;

	if (name[0] == '/')
		return strdup(name);
	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Reads a small text file whole. Returns 0 or -errno (logged). */
static int text_read(const char *path, char **out, size_t *len)
{
	struct stat st;
	int fd = vd_open_ro(path), r;

	if (fd < 0) {
		vd_log_err("%s: cannot open: %s", path, strerror(-fd));
		return fd;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > VD_VMX_MAX_TEXT) {
		vd_log_err("%s: not a regular file of at most 1 MiB", path);
		close(fd);
		return -EINVAL;
	}
	*len = (size_t)st.st_size;
	*out = malloc(*len + 1);
	if (!*out) {
		close(fd);
		return -ENOMEM;
	}
	r = vd_pread_full(fd, *out, *len, 0);
	close(fd);
	if (r < 0) {
		vd_log_err("%s: cannot read: %s", path, strerror(-r));
		free(*out);
		*out = NULL;
		return r;
	}
	(*out)[*len] = 0;
	return 0;
}

/* The only file ending in ext in dir (malloc'd), or NULL after logging. */
static char *only_file(const char *dir, const char *ext)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char *found = NULL;
	unsigned n = 0;

	if (!d) {
		vd_log_err("%s: cannot open the directory: %s", dir, strerror(errno));
		return NULL;
	}
	while ((de = readdir(d)))
		if (ends_with(de->d_name, ext) && n++ == 0)
			found = join(dir, de->d_name);
	closedir(d);
	if (n != 1) {
		vd_log_err("%s: %u %s files: name the one to use", dir, n, ext);
		free(found);
		return NULL;
	}
	return found;
}

static void vm_free(struct vm *v)
{
	if (!v)
		return;
	free(v->vmx_path);
	free(v->vmsd_path);
	vd_vmx_free(&v->vmx);
	vd_vmsd_free(&v->vmsd);
	free(v);
}

/* Finds and parses the .vmx and .vmsd an argument stands for. */
static int vm_load(const char *arg, struct vm **out)
{
	struct vm *v = calloc(1, sizeof(*v));
	char *text = NULL, *dir = NULL;
	const char *why = NULL;
	size_t len;
	int r = -ENOMEM;

	if (!v)
		return -ENOMEM;
	if (is_dir(arg)) {
		v->vmx_path = only_file(arg, ".vmx");
	} else if (ends_with(arg, ".vmsd")) {
		/* The .vmx beside it with the same stem, else the only one there. */
		char *p = strndup(arg, strlen(arg) - 5);
		if (p && asprintf(&v->vmx_path, "%s.vmx", p) < 0)
			v->vmx_path = NULL;
		free(p);
		if (v->vmx_path && access(v->vmx_path, F_OK) != 0) {
			free(v->vmx_path);
			dir = dir_of(arg);
			v->vmx_path = dir ? only_file(dir, ".vmx") : NULL;
		}
		v->vmsd_path = strdup(arg);
	} else {
		v->vmx_path = strdup(arg);
	}
	if (!v->vmx_path) {
		r = -EINVAL;
		goto out;
	}
	free(dir);
	dir = dir_of(v->vmx_path);
	r = dir ? text_read(v->vmx_path, &text, &len) : -ENOMEM;
	if (r < 0)
		goto out;
	r = vd_vmx_parse(text, len, &v->vmx, &why);
	free(text);
	text = NULL;
	if (r == -EINVAL)
		vd_log_err("%s: %s", v->vmx_path, why);
	if (r < 0)
		goto out;
	if (!v->vmsd_path) {
		/* snapshot.fileName, else <stem>.vmsd when it exists. */
		if (v->vmx.vmsd) {
			v->vmsd_path = join(dir, v->vmx.vmsd);
		} else if (asprintf(&v->vmsd_path, "%.*s.vmsd", (int)(strlen(v->vmx_path) - 4),
				    v->vmx_path) >= 0 &&
			   access(v->vmsd_path, F_OK) != 0) {
			free(v->vmsd_path);
			v->vmsd_path = NULL;
		}
	}
	if (v->vmsd_path) {
		r = text_read(v->vmsd_path, &text, &len);
		if (r == 0)
			r = vd_vmsd_parse(text, len, &v->vmsd, &why);
		if (r == -EINVAL && text)
			vd_log_err("%s: %s", v->vmsd_path, why);
		if (r < 0)
			goto out;
	}
	*out = v;
	v = NULL;
	r = 0;
out:
	free(text);
	free(dir);
	vm_free(v);
	return r;
}

int fs_vm_expand(char ***images, unsigned *n)
{
	char **list = NULL;
	unsigned cnt = 0;
	int r = 0;

	for (unsigned i = 0; i < *n && r == 0; i++) {
		const char *a = (*images)[i];
		struct vm *v = NULL, **nv;
		char **nl;

		if (!is_vm_arg(a)) {
			nl = realloc(list, (cnt + 1) * sizeof(*nl));
			if (!nl || !(nl[cnt] = strdup(a))) {
				list = nl ? nl : list;
				r = -ENOMEM;
				break;
			}
			list = nl;
			cnt++;
			continue;
		}
		r = vm_load(a, &v);
		if (r < 0)
			break;
		nv = realloc(vms, (n_vms + 1) * sizeof(*nv));
		if (!nv) {
			vm_free(v);
			r = -ENOMEM;
			break;
		}
		vms = nv;
		vms[n_vms++] = v;
		char *dir = dir_of(v->vmx_path);
		for (unsigned k = 0; k < v->vmx.n_disks && r == 0; k++) {
			char *p = dir ? join(dir, v->vmx.disks[k].file) : NULL;
			struct vm_disk *nd = realloc(vdisks, (n_vdisks + 1) * sizeof(*nd));
			nl = realloc(list, (cnt + 1) * sizeof(*nl));
			list = nl ? nl : list;
			vdisks = nd ? nd : vdisks;
			if (!p || !nd || !nl) {
				free(p);
				r = -ENOMEM;
				break;
			}
			list[cnt++] = p;
			vdisks[n_vdisks++] = (struct vm_disk){p, v, k};
		}
		free(dir);
	}
	expanded = list;
	n_expanded = cnt;
	if (r < 0)
		return r;
	*images = list;
	*n = cnt;
	return 0;
}

bool fs_vm_active(void)
{
	return n_vms > 0;
}

static const struct vm_disk *disk_of(struct vd_chain *c)
{
	const char *top = vd_chain_layer(c, vd_chain_depth(c) - 1)->path;

	for (unsigned i = 0; i < n_vdisks; i++)
		if (!strcmp(vdisks[i].path, top))
			return &vdisks[i];
	return NULL;
}

static const char *base_of(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

char *fs_disk_stem(struct vd_chain *c)
{
	return vd_path_stem(vd_chain_layer(c, disk_of(c) ? 0 : vd_chain_depth(c) - 1)->path);
}

/* The snapshot that froze layer i of a VM disk, or NULL. */
static const struct vd_snapshot *layer_snapshot(struct vd_chain *c, unsigned i)
{
	const struct vm_disk *d = disk_of(c);

	if (!d)
		return NULL;
	return vd_vmsd_froze(&d->vm->vmsd, d->vm->vmx.disks[d->idx].node,
			     base_of(vd_chain_layer(c, i)->path));
}

char *fs_layer_name(struct vd_chain *c, unsigned i, struct timespec *mtime)
{
	const struct vd_snapshot *s = layer_snapshot(c, i);
	char *name, *fallback = vd_chain_layer_name(c, i);
	struct stat st;

	if (mtime) {
		if (s) {
			mtime->tv_sec = (time_t)(s->create_us / 1000000);
			mtime->tv_nsec = (long)(s->create_us % 1000000) * 1000;
		} else if (fstat(vd_chain_layer(c, i)->fd, &st) == 0) {
			*mtime = st.st_mtim;
		} else {
			clock_gettime(CLOCK_REALTIME, mtime);
		}
	}
	if (!s || !fallback || !s->name[0] || !strcmp(s->name, ".") || !strcmp(s->name, ".."))
		return fallback;
	/* Keep the "NN-" of the plain name; '/' cannot be in a file name. */
	if (asprintf(&name, "%.*s%s", (int)(strchr(fallback, '-') - fallback + 1), fallback,
		     s->name) < 0) {
		free(fallback);
		return NULL;
	}
	free(fallback);
	for (char *p = name; *p; p++)
		if (*p == '/')
			*p = '_';
	return name;
}

static void tree_print(const struct vm *v, uint32_t parent, unsigned depth, FILE *f)
{
	for (unsigned i = 0; i < v->vmsd.n; i++) {
		const struct vd_snapshot *s = &v->vmsd.snaps[i];
		time_t t = (time_t)(s->create_us / 1000000);
		struct tm tm;
		char when[32] = "?";

		if (s->parent != parent)
			continue;
		if (gmtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
		fprintf(f, "  %*s%s snapshot %" PRIu32 " \"%s\", taken %s", 2 * depth, "",
			depth ? "`-" : "*", s->uid, s->name, when);
		for (unsigned k = 0; k < s->n_disks; k++)
			fprintf(f, "%s%s", k ? ", " : "; froze ", s->disks[k].file);
		fprintf(f, "%s\n", s->uid == v->vmsd.current ? "  <- current" : "");
		if (depth < 64)
			tree_print(v, s->uid, depth + 1, f);
	}
}

void fs_vm_print(struct vd_chain *c, FILE *f)
{
	const struct vm_disk *d = disk_of(c);
	struct vm *v = d ? d->vm : NULL;

	if (!v || v->printed)
		return;
	v->printed = true;
	fprintf(f, "vm %s%s%s%s: %u disk%s, %u snapshot%s\n", v->vmx_path,
		v->vmx.display_name ? " (\"" : "", v->vmx.display_name ? v->vmx.display_name : "",
		v->vmx.display_name ? "\")" : "", v->vmx.n_disks, v->vmx.n_disks == 1 ? "" : "s",
		v->vmsd.n, v->vmsd.n == 1 ? "" : "s");
	for (unsigned k = 0; k < v->vmx.n_disks; k++)
		fprintf(f, "  disk %s: %s\n", v->vmx.disks[k].node, v->vmx.disks[k].file);
	if (v->vmsd.n)
		fprintf(f, "snapshot tree (%s):\n", v->vmsd_path);
	tree_print(v, 0, 0, f);
	fprintf(f, "\n");
}

void fs_vm_release(void)
{
	for (unsigned i = 0; i < n_vms; i++)
		vm_free(vms[i]);
	free(vms);
	free(vdisks);
	for (unsigned i = 0; i < n_expanded; i++)
		free(expanded[i]);
	free(expanded);
	vms = NULL;
	vdisks = NULL;
	expanded = NULL;
	n_vms = n_vdisks = n_expanded = 0;
}
