/* Parent-hint resolution. A hint is text a foreign tool wrote on another
 * machine, so it is only a hint: we build a short list of candidates in order
 * of trust and take the first that exists; the caller then checks identity
 * (CID / UUID), which is what makes the choice safe.
 *
 * Also the names front ends show: a layer's "NN-<stem>" and the directory of
 * each disk mounted beside others ("<stem>", "<stem>-2", ...). */
#include "chain/chain.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uthash.h>
#include <zlib.h>

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

/* The path on Wine's Z: drive (the POSIX root) of hint h, still with '\'
 * separators: "Z:\dir\f" and "\\?\Z:\dir\f" (how vdmount writes a VHDX
 * absolute_win32_path) give "\dir\f"; anything else NULL. */
static const char *wine_z(const char *h)
{
	if (!strncmp(h, "\\\\?\\", 4))
		h += 4;
	return (h[0] == 'Z' || h[0] == 'z') && h[1] == ':' && h[2] == '\\' ? h + 2 : NULL;
}

#define MAX_CAND 16

struct cand {
	char *path;
	char *how; /* how the path was derived from the hint, for chain.json */
};

/* Adds a candidate (path malloc'd, NULL when its allocation failed); sets
 * *oom when any allocation failed, so that "no memory" is never reported as
 * "not found". */
static void cand_add(struct cand *c, unsigned *n, bool *oom, char *path, const char *fmt,
		     const char *arg)
{
	if (!path) {
		*oom = true;
		return;
	}
	if (*n == MAX_CAND) {
		free(path);
		return;
	}
	c[*n].path = path;
	if (asprintf(&c[*n].how, fmt, arg) < 0) {
		c[*n].how = NULL;
		*oom = true;
	}
	(*n)++;
}

/* A copy of hint with every backslash turned into a slash; NULL when out of
 * memory. */
static char *slashes(const char *hint)
{
	char *h = strdup(hint);

	for (char *q = h; q && *q; q++)
		if (*q == '\\')
			*q = '/';
	return h;
}

/* The candidates for hint, most trusted first. */
static unsigned cand_list(const char *dir, const char *hint, const struct vd_policy *policy,
			  struct cand *c, bool *oom)
{
	const char *base = base_of(hint);
	unsigned n = 0;

	if (is_windows(hint)) {
		/* A relative Windows path ("..\\base\\b.vmdk", ".\\p.vhd") keeps its
		 * directories; anything with a drive or UNC prefix is foreign. */
		bool rel = !(isalpha((unsigned char)hint[0]) && hint[1] == ':') && hint[0] != '\\';
		const char *z = wine_z(hint);

		if (z)
			cand_add(c, &n, oom, slashes(z), "%sWine's Z: drive, which is /", "");
		if (rel) {
			char *h = slashes(hint);

			cand_add(c, &n, oom, h ? vd_path_join(dir, h) : NULL,
				 "%sWindows relative path, as written", "");
			free(h);
		}
	} else if (hint[0] == '/') {
		cand_add(c, &n, oom, strdup(hint), "%sabsolute path, as written", "");
	} else {
		cand_add(c, &n, oom, vd_path_join(dir, hint), "%srelative to the child's directory",
			 "");
	}
	cand_add(c, &n, oom, vd_path_join(dir, base), "%sbase name, in the child's directory", "");
	for (unsigned i = 0; policy && i < policy->n_search; i++)
		cand_add(c, &n, oom, vd_path_join(policy->search[i], base),
			 "base name, in --search %s", policy->search[i]);
	return n;
}

int vd_chain_resolve_hint(const char *child_path, const char *hint, struct vd_policy *policy,
			  char **found, char **how, char **tried)
{
	struct cand c[MAX_CAND];
	char *dir = vd_path_dir(child_path);
	struct vd_buf list = {0};
	bool oom = !dir;
	unsigned n = 0;
	int r = -ENOENT;

	*found = *how = NULL;
	if (tried)
		*tried = NULL;
	if (dir && *hint)
		n = cand_list(dir, hint, policy, c, &oom);
	for (unsigned i = 0; i < n && !oom; i++) {
		char *why = NULL;
		bool dup = false;
		int pr;

		for (unsigned k = 0; k < i; k++)
			if (!strcmp(c[k].path, c[i].path))
				dup = true;
		if (dup)
			continue;
		pr = vd_policy_check(policy, c[i].path, &why);
		if (pr == -ENOMEM) {
			oom = true;
			break;
		}
		if (pr == 0) {
			*found = c[i].path;
			*how = c[i].how;
			c[i].path = c[i].how = NULL;
			r = 0;
			break;
		}
		vd_buf_printf(&list, "%s%s%s%s%s", list.len ? ", " : "", c[i].path,
			      why ? " (refused: it " : "", why ? why : "", why ? ")" : "");
		free(why);
	}
	for (unsigned i = 0; i < n; i++) {
		free(c[i].path);
		free(c[i].how);
	}
	free(dir);
	if (r == -ENOENT && tried && !oom && !list.oom) {
		*tried = list.data ? list.data : strdup("nothing (empty hint)");
		list.data = NULL;
		oom = !*tried;
	}
	vd_buf_free(&list);
	if (oom) {
		free(*found);
		free(*how);
		*found = *how = NULL;
		return -ENOMEM;
	}
	return r;
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

/* Longest name a directory entry may have (NAME_MAX on Linux), and the tag a
 * shortened name carries: "~" and the CRC-32 of the full stem in 8 hex
 * digits, so two long names that share their first 240 bytes stay apart and
 * the same input always gets the same name. */
#define NAME_BYTES_MAX 255
#define NAME_TAG_LEN 9

/* prefix + stem + suffix; when that is longer than NAME_BYTES_MAX, the stem
 * is cut (never inside a UTF-8 character) and the tag goes before suffix.
 * Malloc'd, or NULL. prefix and suffix are short (a layer number, "-k"). */
static char *name_fit(const char *prefix, const char *stem, const char *suffix)
{
	size_t p = strlen(prefix), n = strlen(stem), x = strlen(suffix), keep;
	char *out;

	if (p + n + x <= NAME_BYTES_MAX) {
		if (asprintf(&out, "%s%s%s", prefix, stem, suffix) < 0)
			return NULL;
		return out;
	}
	keep = NAME_BYTES_MAX - p - x - NAME_TAG_LEN;
	/* back off over at most 3 continuation bytes to a character start */
	for (unsigned i = 0; i < 3 && keep > 0 && ((unsigned char)stem[keep] & 0xc0) == 0x80; i++)
		keep--;
	if (asprintf(&out, "%s%.*s~%08lx%s", prefix, (int)keep, stem,
		     crc32(0, (const unsigned char *)stem, (unsigned)n), suffix) < 0)
		return NULL;
	return out;
}

/* Names taken so far, and per stem the next -k suffix to try. Because a taken
 * name is never released, every -k below a stem's counter is known to be
 * taken, so each image costs O(1) expected lookups plus one per real stem
 * that happens to look like "stem-k": naming is linear in the number of
 * images (a plain search from -2 each time is quadratic, and comparing
 * against every earlier name cubic). */
struct name_slot {
	char *key; /* hash key, owned */
	unsigned next_k;
	UT_hash_handle hh;
};

struct name_sets {
	struct name_slot *taken; /* final names */
	struct name_slot *stems; /* stems, with their counters */
};

/* The slot for key in *set; created when missing and create is set. */
static struct name_slot *slot_find(struct name_slot **set, const char *key, bool create, bool *oom)
{
	struct name_slot *s;

	HASH_FIND_STR(*set, key, s);
	if (s || !create)
		return s;
	s = calloc(1, sizeof(*s));
	if (s)
		s->key = strdup(key);
	if (!s || !s->key) {
		free(s);
		*oom = true;
		return NULL;
	}
	HASH_ADD_KEYPTR(hh, *set, s->key, strlen(s->key), s);
	return s;
}

static void slots_free(struct name_slot **set)
{
	struct name_slot *s, *t;

	HASH_ITER(hh, *set, s, t)
	{
		HASH_DEL(*set, s);
		free(s->key);
		free(s);
	}
}

static bool name_usable(const char *n)
{
	return strcmp(n, "") && strcmp(n, ".") && strcmp(n, "..");
}

/* Takes name if it is usable and free: returns true, or false (*oom on failure). */
static bool name_take(struct name_sets *ns, const char *name, bool *oom)
{
	if (!name_usable(name) || slot_find(&ns->taken, name, false, oom))
		return false;
	return slot_find(&ns->taken, name, true, oom) != NULL;
}

/* A unique name for stem: the stem itself, else stem-k for the lowest free k. */
static char *name_unique(struct name_sets *ns, const char *stem)
{
	struct name_slot *st;
	bool oom = false;
	char *name = name_fit("", stem, "");

	if (!name || name_take(ns, name, &oom) || oom)
		goto out;
	free(name);
	name = NULL;
	st = slot_find(&ns->stems, stem, true, &oom);
	if (!st)
		goto out;
	for (unsigned k = st->next_k < 2 ? 2 : st->next_k;; k++) {
		char sfx[16];

		snprintf(sfx, sizeof(sfx), "-%u", k);
		name = name_fit("", stem, sfx);
		if (!name || name_take(ns, name, &oom) || oom) {
			st->next_k = k + 1;
			break;
		}
		free(name);
	}
out:
	if (oom) {
		free(name);
		return NULL;
	}
	return name;
}

int vd_disk_names(const char *const *paths, unsigned n, char **names)
{
	struct name_sets ns = {NULL, NULL};
	int r = 0;

	for (unsigned i = 0; i < n; i++)
		names[i] = NULL;
	for (unsigned i = 0; i < n && r == 0; i++) {
		char *stem = vd_path_stem(paths[i]);

		names[i] = stem ? name_unique(&ns, stem) : NULL;
		free(stem);
		if (!names[i])
			r = -ENOMEM;
	}
	slots_free(&ns.taken);
	slots_free(&ns.stems);
	for (unsigned i = 0; r < 0 && i < n; i++) {
		free(names[i]);
		names[i] = NULL;
	}
	return r;
}

int vd_chain_disk_names(struct vd_chain *const *chains, unsigned n, char **names)
{
	const char **paths = calloc(n ? n : 1, sizeof(*paths));
	int r;

	if (!paths)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		paths[i] = vd_chain_layer(chains[i], vd_chain_depth(chains[i]) - 1)->path;
	r = vd_disk_names(paths, n, names);
	free(paths);
	return r;
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
	char prefix[16];

	if (width < 2)
		width = 2;
	stem = vd_path_stem(vd_chain_layer(c, i)->path);
	if (!stem)
		return NULL;
	snprintf(prefix, sizeof(prefix), "%0*u-", (int)width, i + 1);
	name = name_fit(prefix, stem, "");
	free(stem);
	return name;
}
