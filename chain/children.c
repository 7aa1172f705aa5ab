/* Children of a chain's top layer lying beside it.
 *
 * Giving a snapshot's parent instead of the newest snapshot is an easy
 * mistake (disk-000001.vmdk next to disk-000002.vmdk): the mount works but
 * shows an older disk. A child is a delta in the same directory whose parent
 * id is the top's id and one of whose hints resolves to the top file (by
 * device and inode). Opening candidates is a guess made for a note, so it is
 * muted and bounded: names that look like extents are skipped, at most
 * CHILD_MAX_OPENS images are opened (and no more than the caller's budget)
 * and CHILD_MAX_ENTRIES entries read. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "chain/chain.h"

#define CHILD_MAX_ENTRIES 4096
#define CHILD_MAX_OPENS 64

/* An image file by its name, and not an extent of one (VMware's -flat,
 * -sNNN, -fNNN, -delta, -sesparse, -ctk pieces). */
static bool name_is_image(const char *n)
{
	static const char *const exts[] = {".vmdk", ".vhd", ".avhd", ".vhdx", ".avhdx"};
	static const char *const pieces[] = {"-flat", "-delta", "-sesparse", "-ctk"};
	size_t len = strlen(n), e = 0;

	for (unsigned i = 0; i < sizeof(exts) / sizeof(exts[0]) && !e; i++) {
		size_t k = strlen(exts[i]);
		if (len > k && !strcasecmp(n + len - k, exts[i]))
			e = k;
	}
	if (!e)
		return false;
	len -= e;
	for (unsigned i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		size_t k = strlen(pieces[i]);
		if (len > k && !strncasecmp(n + len - k, pieces[i], k))
			return false;
	}
	return !(len > 5 && n[len - 5] == '-' && strchr("sfSF", n[len - 4]) &&
		 strspn(n + len - 3, "0123456789") >= 3);
}

static bool same_file(const char *path, const struct stat *st)
{
	struct stat s;

	return path && stat(path, &s) == 0 && s.st_dev == st->st_dev && s.st_ino == st->st_ino;
}

/* True when the image at path is a delta whose parent is top (stat'ed as st);
 * its hints are resolved under policy (the top's directory). */
static bool is_child_of(const char *path, const struct vd_image *top, const struct stat *st,
			struct vd_policy *policy)
{
	struct vd_image *img;
	bool hit = false;

	if (vd_image_open(path, 0, &img) < 0)
		return false;
	if (img->has_parent && img->parent_id.len == top->id.len && top->id.len &&
	    !memcmp(img->parent_id.bytes, top->id.bytes, top->id.len)) {
		for (unsigned h = 0; h < img->n_hints && !hit; h++) {
			char *how = NULL, *p = NULL;

			vd_chain_resolve_hint(path, img->hints[h].path, policy, &p, &how, NULL);

			hit = same_file(p, st);
			free(p);
			free(how);
		}
	}
	vd_image_close(img);
	return hit;
}

char *vd_chain_child_beside(const struct vd_chain *c, unsigned *opens_left)
{
	const struct vd_image *top = vd_chain_layer(c, vd_chain_depth(c) - 1);
	unsigned entries = 0, opens = 0;
	char *dir, *found = NULL;
	struct vd_policy policy;
	struct dirent *de;
	struct stat st;
	DIR *d;

	if (fstat(top->fd, &st) < 0)
		return NULL;
	vd_policy_init(&policy);
	dir = vd_path_dir(top->path);
	d = dir ? opendir(dir) : NULL;
	vd_log_mute(true);
	if (vd_policy_add_image(&policy, top->path) < 0)
		entries = CHILD_MAX_ENTRIES; /* nothing to look at */
	while (d && !found && entries++ < CHILD_MAX_ENTRIES && opens < CHILD_MAX_OPENS &&
	       opens < *opens_left && (de = readdir(d))) {
		bool layer = false;
		char *p;

		if (!name_is_image(de->d_name))
			continue;
		p = vd_path_join(dir, de->d_name);
		if (!p)
			continue;
		for (unsigned i = 0; i < vd_chain_depth(c) && !layer; i++) {
			struct stat ls;
			layer = fstat(vd_chain_layer(c, i)->fd, &ls) == 0 && same_file(p, &ls);
		}
		if (!layer) {
			opens++;
			if (is_child_of(p, top, &st, &policy)) {
				found = p;
				p = NULL;
			}
		}
		free(p);
	}
	vd_log_mute(false);
	*opens_left -= opens;
	if (d)
		closedir(d);
	vd_policy_free(&policy);
	free(dir);
	return found;
}
