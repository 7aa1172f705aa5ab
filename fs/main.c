/* vdmount: options, chain opening, mount, daemonize, serve.
 *
 * Order matters for "never return before the mount is usable": the mount
 * point is made absolute and checked first (libfuse changes to / when it
 * daemonizes, and must unmount by that path on a signal), every chain is
 * opened and validated in the foreground (errors reach the terminal), the
 * kernel mount is made with fuse_mount() (so a bad mount fails here), and
 * only then does the process daemonize. The one thread that may exist before
 * the fork is a stream's inflate-ahead worker (the partition tables are read
 * first); disk/ahead.c holds it across the fork and leaves the child none. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uthash.h>

#include "disk/tcache.h"
#include "fs/fs.h"
#include "fs/inspect.h"
#include "fs/vm.h"
#include "fs/mnt.h"
#include "fs/opts.h"
#include "fs/split.h"

/* Each image holds a descriptor per file (and a VMDK one per extent): many
 * images on one command line need more than the usual 1024. */
static void nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Directory names for several images (chain/ owns the rule). */
static int disk_dirs_name(struct fs_disk *d, unsigned n)
{
	char **stems, **names;
	int r;

	if (n == 1 && !fs_vm_active())
		return 0;
	stems = calloc(n, sizeof(*stems));
	names = calloc(n, sizeof(*names));
	r = stems && names ? 0 : -ENOMEM;
	/* a VM's disks are named after their base files (fs/vm.h) */
	for (unsigned i = 0; r == 0 && i < n; i++)
		if (!(stems[i] = fs_disk_stem(d[i].chain)))
			r = -ENOMEM;
	if (r == 0)
		r = vd_disk_names((const char *const *)stems, n, names);
	for (unsigned i = 0; r == 0 && i < n; i++)
		d[i].dir = names[i];
	for (unsigned i = 0; stems && i < n; i++)
		free(stems[i]);
	free(stems);
	free(names);
	return r;
}

/* -w: a new delta on top of each chain. With several images --delta must
 * be a directory (each disk gets its own delta there). A daemon that writes
 * behind a loop device must not be throttled by the writeback it serves:
 * PR_SET_IO_FLUSHER (Linux 5.6). */
static int writable_setup(const struct vd_opts *o, struct fs_disk *disks)
{
	struct stat st;

	if (o->n_images > 1 && o->delta && (stat(o->delta, &st) < 0 || !S_ISDIR(st.st_mode))) {
		vd_log_err("%s: with several images --delta must be an existing directory",
			   o->delta);
		return -EINVAL;
	}
	for (unsigned i = 0; i < o->n_images; i++) {
		struct vd_delta_opts d = {.path = o->delta, .at = o->at, .scratch = o->scratch};
		int r = vd_chain_delta_add(disks[i].chain, &d);

		if (r < 0)
			return r;
	}
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
		vd_log_warn("PR_SET_IO_FLUSHER: %s: a writable mount behind a loop device may "
			    "stall under memory pressure",
			    strerror(errno));
	return 0;
}

struct seen_top {
	struct {
		dev_t dev;
		ino_t ino;
	} key;
	const char *path;
	UT_hash_handle hh;
};

/* Images the search for newer children beside the tops may open, for all the
 * disks of a mount together (64 disks in one directory would otherwise open
 * 64 images each). */
#define CHILD_SCAN_OPENS 256

/* One-line notes, not errors: an image given twice, an image another vdmount
 * already shows, a top layer with a newer child beside it. */
static void images_note(const struct vd_opts *o, struct fs_disk *d)
{
	struct seen_top *seen = NULL, *s, *t;
	unsigned child_opens = CHILD_SCAN_OPENS;

	for (unsigned i = 0; i < o->n_images; i++) {
		struct vd_image *top = vd_chain_layer(d[i].chain, vd_chain_depth(d[i].chain) - 1);
		char *abs = realpath(o->images[i], NULL), *child;
		struct stat st;

		if (fstat(top->fd, &st) == 0 && (s = calloc(1, sizeof(*s)))) {
			s->key.dev = st.st_dev;
			s->key.ino = st.st_ino;
			s->path = o->images[i];
			HASH_FIND(hh, seen, &s->key, sizeof(s->key), t);
			if (t) {
				vd_log_info("note: %s is the same file as %s: it is mounted twice",
					    o->images[i], t->path);
				free(s);
				free(abs);
				continue;
			}
			HASH_ADD(hh, seen, key, sizeof(s->key), s);
		}
		if (abs)
			mnt_note_mounted(abs);
		free(abs);
		child = vd_chain_child_beside(d[i].chain, &child_opens);
		if (child)
			vd_log_info(
			    "note: %s has a child beside it, %s: this mount shows the disk as "
			    "it was at %s, not its newest state",
			    top->path, child, top->path);
		free(child);
	}
	HASH_ITER(hh, seen, s, t)
	{
		HASH_DEL(seen, s);
		free(s);
	}
}

/* The libfuse arguments: vdmount's fixed options, the user's -o options,
 * then ro last (unless -w) so that nothing the user passes makes the mount
 * writable.
 * The source shown by mount(8) is -o fsname=, else the first image's path. */
static int fuse_args_build(const struct vd_opts *o, const char *argv0, struct fuse_args *args)
{
	struct vd_buf b = {0};
	char *src = o->fsname ? NULL : realpath(o->images[0], NULL);
	int r;

	char *fsname = NULL;

	vd_buf_printf(&b, ",subtype=vdmount,default_permissions");
	if (asprintf(&fsname, "fsname=%s", o->fsname ? o->fsname : src ? src : o->images[0]) < 0)
		b.oom = true;
	else
		opts_fuse_add(&b, fsname); /* escapes commas in the path */
	free(fsname);
	if (o->fuse_o.len)
		vd_buf_printf(&b, "%s", o->fuse_o.data);
	if (!o->write)
		vd_buf_printf(&b, ",ro");
	free(src);
	r = b.oom || fuse_opt_add_arg(args, argv0) || fuse_opt_add_arg(args, "-o") ||
		    fuse_opt_add_arg(args, b.data + 1) || (o->debug && fuse_opt_add_arg(args, "-d"))
		? -ENOMEM
		: 0;
	vd_buf_free(&b);
	return r;
}

/* The mount, step by step in the order libfuse needs (over 80 lines on
 * purpose: every step shares the one unwind path at out:, which splitting
 * would scatter). */
static int mount_main(struct vd_opts *o, const char *argv0)
{
	struct fs_disk *disks = NULL;
	struct fs_tree *tree = NULL;
	struct fuse *f = NULL;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct vd_policy policy;
	bool mounted = false;
	char *mountpoint = NULL;
	int r, ret = VD_EXIT_FAIL;

	vd_policy_init(&policy);
	if (fs_vm_expand(&o->images, &o->n_images) < 0)
		goto out;
	if (o->debug)
		vd_log_set_level(VD_LOG_DEBUG);
	if (o->cache_mb)
		vd_tcache_budget_set((size_t)o->cache_mb << 20);
	if (mnt_point_check(o->mountpoint, o->nonempty, &mountpoint) < 0)
		goto out;
	disks = calloc(o->n_images, sizeof(*disks));
	if (!disks)
		goto oom;
	/* Images may refer only to files below the directories of the images
	 * given and of --search (disk/confine.h). */
	policy.allow_outside = o->allow_outside;
	policy.allow_devices = o->allow_devices;
	for (unsigned i = 0; i < o->n_images; i++)
		if (vd_policy_add_image(&policy, o->images[i]) < 0)
			goto out;
	for (unsigned i = 0; i < o->parents.n; i++)
		if (vd_policy_add_image(&policy, o->parents.v[i]) < 0)
			goto out;
	for (unsigned i = 0; i < o->search.n; i++)
		if (vd_policy_add_search(&policy, o->search.v[i]) < 0)
			goto out;
	for (unsigned i = 0; i < o->n_images; i++) {
		struct vd_chain_opts co = {.flags = o->force ? VD_CHAIN_FORCE : 0,
					   .policy = &policy,
					   .parents = (const char *const *)o->parents.v,
					   .n_parents = o->parents.n};

		r = vd_chain_open_opts(o->images[i], &co, &disks[i].chain);
		if (r < 0)
			goto out;
	}
	images_note(o, disks);
	/* named after the images given, not after the deltas -w adds (as the
	 * nbdkit plugin names its exports) */
	if (disk_dirs_name(disks, o->n_images) < 0)
		goto oom;
	if (o->write && writable_setup(o, disks) < 0)
		goto out;
	if (fs_tree_build(disks, o->n_images, &tree) < 0)
		goto oom;
	if (fuse_args_build(o, argv0, &args) < 0)
		goto oom;
	f = fuse_new(&args, &fs_ops, sizeof(fs_ops), tree);
	if (!f) {
		vd_log_err("libfuse refused the mount options (see the line above)");
		goto out;
	}
	if (fuse_mount(f, mountpoint) != 0) {
		vd_log_err("%s: mount failed (see above)", o->mountpoint);
		goto out;
	}
	mounted = true;
	mnt_readahead_raise(mountpoint, 512);
	if (fuse_daemonize(o->foreground) != 0) {
		vd_log_err("cannot daemonize");
		goto out;
	}
	if (!o->foreground)
		vd_log_to_syslog();
	if (fuse_set_signal_handlers(fuse_get_session(f)) != 0)
		goto out;
	if (o->single) {
		fs_split_disable();
		r = fuse_loop(f);
	} else {
		struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 16};
		r = fuse_loop_mt(f, &cfg);
	}
	fuse_remove_signal_handlers(fuse_get_session(f));
	ret = r == 0 ? VD_EXIT_OK : VD_EXIT_FAIL;
	goto out;
oom:
	vd_log_err("out of memory");
out:
	if (mounted)
		fuse_unmount(f);
	if (f)
		fuse_destroy(f);
	fuse_opt_free_args(&args);
	fs_tree_free(tree);
	for (unsigned i = 0; disks && i < o->n_images; i++) {
		vd_chain_close(disks[i].chain);
		free(disks[i].dir);
	}
	free(disks);
	vd_policy_free(&policy);
	fs_vm_release();
	free(mountpoint);
	return ret;
}

int main(int argc, char **argv)
{
	struct vd_opts o = {0};
	int r;

	/* glibc gives each thread that allocates its own malloc arena, and
	 * each arena keeps what it freed: with a FUSE thread per request in
	 * flight, the 64 KiB buffers of inflated stream grains left a
	 * streamOptimized mount at 52-56 MiB peak RSS for a 16 MiB cache; two
	 * arenas held 32-33 MiB at the same speed (bench, stream rows). The
	 * user's MALLOC_ARENA_MAX wins. */
	if (!getenv("MALLOC_ARENA_MAX"))
		mallopt(M_ARENA_MAX, 2);
	/* libfuse allocates each read's reply buffer (up to 1 MiB) and frees
	 * it after the reply. With the thresholds glibc adjusts itself, two
	 * arenas shared by the FUSE threads gave those buffers back to the
	 * kernel and faulted them in again: a buffered `cat` of a 1 GiB stream
	 * took 31,000 page faults, 1/8 of the data zeroed for nothing, where
	 * fixed thresholds take 1,100 (and the reads were 5-10% faster). Up to
	 * 4 MiB of freed memory stays in each arena. */
	if (!getenv("MALLOC_MMAP_THRESHOLD_") && !getenv("MALLOC_TRIM_THRESHOLD_")) {
		mallopt(M_MMAP_THRESHOLD, 2 << 20);
		mallopt(M_TRIM_THRESHOLD, 4 << 20);
	}
	nofile_raise(); /* --info and --check open every extent too */
	r = fs_inspect_main(argc, argv);
	if (r >= 0)
		return r; /* --info, --json, --check, --hash: no mount */
	r = opts_parse(argc, argv, &o);

	if (r < 0)
		r = mount_main(&o, argv[0]);
	opts_free(&o);
	return r;
}
