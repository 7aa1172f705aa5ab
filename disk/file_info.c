/* What chain.json records of an input file at open, and whether it changed
 * since (disk/util.h).
 *
 * Not in util.c on purpose: it looks at the file only through the I/O seam
 * (vd_fstat, vd_fd_size, vd_fd_realpath, vd_realpath), and ld --wrap, which
 * the fuzz harnesses and fault-injection tests use to serve files from
 * memory, redirects only calls that cross object files. Inside util.c these
 * calls bypassed the seam: every open in the harnesses failed here. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "disk/util.h"

int vd_file_info_get(int fd, const char *path, struct vd_file_info *out)
{
	char real[PATH_MAX];
	struct stat st;
	int r;

	memset(out, 0, sizeof(*out));
	r = vd_fstat(fd, &st);
	if (r < 0)
		return r;
	out->mtime = st.st_mtim;
	r = vd_fd_size(fd, &out->size);
	if (r < 0)
		return r;
	/* the file actually open, whatever happened to path since */
	if (vd_fd_realpath(fd, path, real) == 0 && real[0] == '/')
		out->canonical = strdup(real);
	else if (vd_realpath(path, &out->canonical) < 0)
		out->canonical = NULL;
	return 0;
}

int vd_file_info_changed(int fd, const struct vd_file_info *fi, char *why, size_t n)
{
	struct stat st;
	int r = vd_fstat(fd, &st);

	if (r < 0)
		return r;
	/* a block device's st_size is 0: only regular files are compared by size */
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size != fi->size) {
		snprintf(why, n, "its size was %" PRIu64 " bytes at open, now %lld", fi->size,
			 (long long)st.st_size);
		return 1;
	}
	if (st.st_mtim.tv_sec != fi->mtime.tv_sec || st.st_mtim.tv_nsec != fi->mtime.tv_nsec) {
		snprintf(why, n, "it was modified after it was opened");
		return 1;
	}
	return 0;
}

void vd_file_info_free(struct vd_file_info *fi)
{
	free(fi->canonical);
	fi->canonical = NULL;
}
