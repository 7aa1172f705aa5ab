/* Which descriptor owns an extent file given instead of it.
 *
 * Users (and hints) name -flat.vmdk, -s001.vmdk, -delta.vmdk or
 * -sesparse.vmdk files, which are pieces of a disk, not disks. To say "open
 * the descriptor X instead", we look beside the piece for a text descriptor
 * whose extent lines resolve to the same file (device and inode, so renamed
 * or linked pieces are found as well). The name VMware gives the descriptor
 * (the piece's name without its suffix) is tried first; then at most
 * OWNER_MAX_CANDIDATES other small .vmdk files of the directory. Everything
 * here is a guess made for a message: errors are muted, work is bounded, and
 * nothing found is a normal answer. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/vmdk.h"
#include "disk/vmdk_desc.h"

#define OWNER_MAX_ENTRIES 4096	/* directory entries looked at */
#define OWNER_MAX_CANDIDATES 64 /* descriptors parsed */
#define OWNER_MAX_DESC 65536	/* a text descriptor larger than this is not one */

static bool has_vmdk_ext(const char *name, size_t n)
{
	return n > 5 && !strcasecmp(name + n - 5, ".vmdk");
}

/* True when the descriptor at desc lists the file me; *ext_no gets its
 * 1-based extent number. */
static bool desc_lists(const char *desc, const struct stat *me, unsigned *ext_no)
{
	struct vmdk_desc d;
	struct stat st;
	char *text = NULL;
	bool hit = false;
	int fd = vd_open_ro(desc), r;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > OWNER_MAX_DESC ||
	    (st.st_dev == me->st_dev && st.st_ino == me->st_ino))
		goto out;
	text = malloc((size_t)st.st_size + 1);
	if (!text || vd_pread_full(fd, text, (size_t)st.st_size, 0) < 0)
		goto out;
	text[st.st_size] = 0;
	if (!vmdk_desc_sniff((const uint8_t *)text, (size_t)st.st_size))
		goto out;
	vd_log_mute(true);
	r = vmdk_desc_parse(text, (size_t)st.st_size, desc, &d);
	vd_log_mute(false);
	if (r < 0)
		goto out;
	for (unsigned i = 0; i < d.n_extents && !hit; i++) {
		char *p = d.extents[i].name ? vd_path_beside(desc, d.extents[i].name) : NULL;
		struct stat es;

		if (p && stat(p, &es) == 0 && es.st_dev == me->st_dev && es.st_ino == me->st_ino) {
			hit = true;
			*ext_no = i + 1;
		}
		free(p);
	}
	vmdk_desc_free(&d);
out:
	free(text);
	vd_close(fd);
	return hit;
}

/* The descriptor name VMware gives the pieces of base.vmdk: base-flat.vmdk,
 * base-f001.vmdk, base-s001.vmdk, base-delta.vmdk, base-sesparse.vmdk. */
static char *owner_by_name(const char *path)
{
	static const char *const sfx[] = {"-flat", "-delta", "-sesparse"};
	size_t n = strlen(path);
	char *p;

	if (!has_vmdk_ext(path, n))
		return NULL;
	n -= 5;
	for (unsigned i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		size_t k = strlen(sfx[i]);

		if (n > k && !strncasecmp(path + n - k, sfx[i], k)) {
			n -= k;
			goto found;
		}
	}
	if (n > 5 && path[n - 5] == '-' && strchr("sfSF", path[n - 4]) &&
	    isdigit((unsigned char)path[n - 3]) && isdigit((unsigned char)path[n - 2]) &&
	    isdigit((unsigned char)path[n - 1])) {
		n -= 5;
		goto found;
	}
	return NULL;
found:
	if (asprintf(&p, "%.*s.vmdk", (int)n, path) < 0)
		return NULL;
	return p;
}

char *vmdk_extent_owner(const char *path, unsigned *ext_no)
{
	struct stat me;
	struct dirent *de;
	char *guess, *dir, *found = NULL;
	unsigned entries = 0, tried = 0;
	DIR *d;

	if (stat(path, &me) < 0)
		return NULL;
	guess = owner_by_name(path);
	if (guess && desc_lists(guess, &me, ext_no))
		return guess;
	dir = vd_path_dir(path);
	d = dir ? opendir(dir) : NULL;
	while (d && !found && entries++ < OWNER_MAX_ENTRIES && tried < OWNER_MAX_CANDIDATES &&
	       (de = readdir(d))) {
		char *p;

		if (!has_vmdk_ext(de->d_name, strlen(de->d_name)) ||
		    !(p = vd_path_join(dir, de->d_name)))
			continue;
		if (!(guess && !strcmp(p, guess))) {
			tried++;
			if (desc_lists(p, &me, ext_no)) {
				found = p;
				p = NULL;
			}
		}
		free(p);
	}
	if (d)
		closedir(d);
	free(dir);
	free(guess);
	return found;
}
