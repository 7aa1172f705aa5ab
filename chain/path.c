/* Parent-hint resolution. A hint is text a foreign tool wrote on another
 * machine, so it is only a hint: we build a short list of candidates in order
 * of trust and take the first that exists; the caller then checks identity
 * (CID / UUID), which is what makes the choice safe. */
#include "chain/chain.h"

#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

static char *join(const char *dir, const char *name)
{
	size_t a, b;

	/* ".\\p.vhd" (W2ru) and "./p.vmdk" name the child's own directory */
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	a = strlen(dir);
	b = strlen(name);
	char *p = malloc(a + b + 2);

	if (!p)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

/* Last component, splitting on both '/' and '\\'. */
static const char *base_of(const char *p)
{
	const char *b = p;

	for (const char *q = p; *q; q++)
		if (*q == '/' || *q == '\\')
			b = q + 1;
	return b;
}

static bool is_windows(const char *h)
{
	if (strchr(h, '\\'))
		return true;
	return isalpha((unsigned char)h[0]) && h[1] == ':';
}

/* Only something an image can be: a hint naming a directory, device node or
 * FIFO (hostile or just wrong) counts as not found, so the error names the
 * child whose hint it was. */
static bool exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

#define MAX_CAND 3

char *vd_chain_resolve_hint(const char *child_path, const char *hint, char **tried)
{
	char *cand[MAX_CAND] = {NULL};
	char *dir = dir_of(child_path);
	char *found = NULL;
	struct vd_buf list = {0};
	unsigned n = 0;

	if (tried)
		*tried = NULL;
	if (!dir)
		return NULL;
	if (!*hint)
		goto out;
	if (is_windows(hint)) {
		/* A relative Windows path ("..\\base\\b.vmdk", ".\\p.vhd") keeps its
		 * directories; anything with a drive or UNC prefix is foreign. */
		bool rel = !(isalpha((unsigned char)hint[0]) && hint[1] == ':') && hint[0] != '\\';
		if (rel) {
			char *h = strdup(hint);
			if (h) {
				for (char *q = h; *q; q++)
					if (*q == '\\')
						*q = '/';
				cand[n++] = join(dir, h);
				free(h);
			}
		}
	} else if (hint[0] == '/') {
		cand[n++] = strdup(hint);
	} else {
		cand[n++] = join(dir, hint);
	}
	cand[n++] = join(dir, base_of(hint));

	for (unsigned i = 0; i < n; i++) {
		if (!cand[i])
			continue;
		bool dup = false;
		for (unsigned k = 0; k < i; k++)
			if (cand[k] && !strcmp(cand[k], cand[i]))
				dup = true;
		if (dup)
			continue;
		if (!found && exists(cand[i])) {
			found = cand[i];
			cand[i] = NULL;
			break;
		}
		vd_buf_printf(&list, "%s%s", list.len ? ", " : "", cand[i]);
	}
out:
	for (unsigned i = 0; i < n; i++)
		free(cand[i]);
	free(dir);
	if (!found && tried && !list.oom) {
		*tried = list.data ? list.data : strdup("nothing (empty hint)");
		list.data = NULL;
	}
	vd_buf_free(&list);
	return found;
}

static const char *const image_exts[] = {".vmdk", ".vhd", ".vhdx", ".avhd", ".avhdx", NULL};

char *vd_path_stem(const char *path)
{
	const char *b = strrchr(path, '/');
	size_t n;

	b = b ? b + 1 : path;
	n = strlen(b);
	for (unsigned i = 0; image_exts[i]; i++) {
		size_t e = strlen(image_exts[i]);
		if (n > e && !strcasecmp(b + n - e, image_exts[i])) {
			n -= e;
			break;
		}
	}
	return strndup(b, n);
}

static unsigned digits(unsigned v)
{
	unsigned d = 1;

	while (v >= 10) {
		v /= 10;
		d++;
	}
	return d;
}

char *vd_chain_layer_name(const struct vd_chain *c, unsigned i)
{
	unsigned width = digits(vd_chain_depth(c));
	char *stem, *name;

	if (width < 2)
		width = 2;
	stem = vd_path_stem(vd_chain_layer(c, i)->path);
	if (!stem)
		return NULL;
	if (asprintf(&name, "%0*u-%s", (int)width, i + 1, stem) < 0)
		name = NULL;
	free(stem);
	return name;
}
