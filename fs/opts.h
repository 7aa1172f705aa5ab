/* vdmount's command line: one table of options (fs/opts.c), each reachable as
 * -x / --long and, where a mount helper needs it, as -o name[=value]:
 * mount(8), fstab lines and systemd units reach vdmount only through
 * mount.fuse3, which passes "IMAGE MOUNTPOINT -o opts". */
#ifndef VD_FS_OPTS_H
#define VD_FS_OPTS_H

#include <stdbool.h>
#include <stdio.h>

#include "disk/util.h"

/* Exit statuses (documented in --help and vdmount(1)). */
enum {
	VD_EXIT_OK = 0,	   /* mounted (or --help / --version) */
	VD_EXIT_FAIL = 1,  /* an image, its chain, the mount point or the mount failed */
	VD_EXIT_USAGE = 2, /* bad command line */
};

/* A repeatable option's values, in the order given (malloc'd copies). */
struct opt_list {
	char **v;
	unsigned n;
};

struct vd_opts {
	bool foreground, debug, single, force, nonempty, allow_outside, allow_devices;
	bool write, scratch;	 /* -w, --scratch */
	char *delta;		 /* --delta PATH */
	unsigned at;		 /* --at N (0: the top) */
	unsigned cache_mb;	 /* --cache-mb N (0: the default budget) */
	struct opt_list search;	 /* --search DIR: parents looked for by name, confinement root */
	struct opt_list parents; /* --parent FILE: parents that moved */
	char *fsname;		 /* -o fsname=, or NULL: the top image's path */
	struct vd_buf fuse_o;	 /* options for libfuse, each ",opt" with ',' and '\' escaped */
	char **images;		 /* points into argv */
	unsigned n_images;
	const char *mountpoint; /* as given */
};

/* Parses argv (options may come anywhere; "--" ends them). Returns -1 to go
 * on with the mount, or an exit status: VD_EXIT_OK after --help / --version
 * (printed on stdout), VD_EXIT_USAGE after a usage error (one line on stderr
 * naming the problem). Free o with opts_free() either way. */
int opts_parse(int argc, char **argv, struct vd_opts *o);

void opts_free(struct vd_opts *o);

/* Appends ",opt" to b, escaping ',' and '\' as libfuse's option parser expects. */
void opts_fuse_add(struct vd_buf *b, const char *opt);

#endif
