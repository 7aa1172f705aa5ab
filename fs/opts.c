/* vdmount's options: one table drives getopt_long, the -o parser and the help.
 *
 * An option of vdmount's own is one opt_table row: its short and long names
 * (either may be absent), its -o name when mount helpers must reach it, and
 * where its value goes in struct vd_opts. Any other -o option is either
 * generic (mount(8), fstab and mount.fuse3 pass ro/rw, dev, suid, exec,
 * atime, ...: libfuse takes some, the rest mean nothing to a read-only FUSE
 * mount and are dropped here) or FUSE's own (allow_other, uid=, ...), handed
 * to libfuse as given, which refuses what it does not know. */
#include "fs/opts.h"

#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "disk/disk.h"
#include "fs/fs.h"

enum opt_type {
	OPT_BOOL,    /* sets a bool field */
	OPT_STR,     /* sets a char * field (malloc'd copy) */
	OPT_LIST,    /* appends to a struct opt_list field (repeatable) */
	OPT_UINT,    /* sets an unsigned field (a decimal number, 1 or more) */
	OPT_MOUNT,   /* -o: a comma-separated list */
	OPT_HELP,    /* prints the help */
	OPT_VERSION, /* prints the version */
};

struct opt_def {
	const char *lname; /* --lname, or NULL */
	char sname;	   /* -sname, or 0 */
	const char *oname; /* -o oname[=value], or NULL */
	const char *arg;   /* name of the value in the help, NULL for a flag */
	enum opt_type type;
	size_t field; /* offsetof(struct vd_opts, ...) for OPT_BOOL / OPT_STR */
	const char *help;
};

#define FIELD(f) offsetof(struct vd_opts, f)

static const struct opt_def opt_table[] = {
    {"foreground", 'f', NULL, NULL, OPT_BOOL, FIELD(foreground),
     "stay in the foreground (by default vdmount returns once the mount is usable)"},
    {"debug", 'd', NULL, NULL, OPT_BOOL, FIELD(debug), "debug output (implies -f)"},
    {"single-thread", 's', NULL, NULL, OPT_BOOL, FIELD(single), "single-threaded FUSE loop"},
    {"write", 'w', "write", NULL, OPT_BOOL, FIELD(write),
     "make disk and disk.pN writable: writes go into a NEW delta beside the top image "
     "(<stem>-vdm-NNNNNN.vmdk/.vhd); no existing file changes"},
    {"delta", 0, "delta", "PATH", OPT_STR, FIELD(delta),
     "with -w: the new delta's file (or a directory for it)"},
    {"scratch", 0, "scratch", NULL, OPT_BOOL, FIELD(scratch),
     "with -w: a throw-away delta, deleted at unmount (in $TMPDIR unless --delta names a "
     "directory)"},
    {"at", 0, "at", "N", OPT_UINT, FIELD(at),
     "with -w: the new delta's parent is layer N (1 = base), not the top; the layers above N "
     "are left out (their files untouched)"},
    {"force", 0, "force", NULL, OPT_BOOL, FIELD(force),
     "mount even if a parent's CID / unique id does not match the child's record, or a VHDX "
     "log is corrupt (without replaying it); a warning, also in chain.json"},
    {"search", 0, "search", "DIR", OPT_LIST, FIELD(search),
     "also look for parents (by file name) in DIR, and let images refer to files below DIR "
     "(repeatable)"},
    {"parent", 0, "parent", "FILE", OPT_LIST, FIELD(parents),
     "a parent that moved: used for the layer whose parent id it has when that layer's hints "
     "lead nowhere (repeatable)"},
    {"allow-outside", 0, "allow_outside", NULL, OPT_BOOL, FIELD(allow_outside),
     "let images refer to files outside the directories of the images given and of --search "
     "(absolute extents, hints)"},
    {"allow-devices", 0, "allow_devices", NULL, OPT_BOOL, FIELD(allow_devices),
     "let images refer to block devices (extents, parents)"},
    {"cache-mb", 0, "cache_mb", "N", OPT_UINT, FIELD(cache_mb),
     "memory in MiB for cached metadata and inflated stream grains, shared by every layer "
     "(default 16): raise it for large, fragmented disks read at random"},
    {NULL, 0, "nonempty", NULL, OPT_BOOL, FIELD(nonempty),
     "mount over a directory that is not empty (its entries are hidden while mounted)"},
    {NULL, 0, "fsname", "NAME", OPT_STR, FIELD(fsname),
     "source shown by mount, df and findmnt (default: the top image's path)"},
    {NULL, 'o', NULL, "OPT[,OPT...]", OPT_MOUNT, 0,
     "mount options: vdmount's own (above), generic ones (ro, nodev, nosuid, noexec, noatime, "
     "...; only -w makes a mount writable) and FUSE's (allow_other, uid=N, gid=N, umask=M, ...)"},
    {"help", 'h', NULL, NULL, OPT_HELP, 0, "print this help and exit"},
    {"version", 'V', NULL, NULL, OPT_VERSION, 0, "print the version and exit"},
};

#define N_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

/* Generic mount options that mean nothing to a read-only FUSE mount or only
 * to mount(8) / systemd, and that libfuse would refuse: accepted and dropped.
 * rw is among them: fstab's "defaults" (and mount.fuse3 without ro) pass it,
 * and every vdmount mount is read-only. */
static const char *const generic_dropped[] = {
    "rw",	  "defaults",	"auto",	      "noauto",	     "nofail",
    "_netdev",	  "user",	"nouser",     "users",	     "owner",
    "group",	  "relatime",	"norelatime", "strictatime", "nostrictatime",
    "diratime",	  "nodiratime", "lazytime",   "nolazytime",  "iversion",
    "noiversion", "mand",	"nomand",     "silent",	     "loud",
};

/* Prefixes of options that belong to mount(8), systemd or fstab comments. */
static const char *const generic_dropped_prefix[] = {"x-", "X-", "comment=", "X-mount."};

static bool generic_drop(const char *opt)
{
	for (size_t i = 0; i < sizeof(generic_dropped) / sizeof(generic_dropped[0]); i++)
		if (!strcmp(opt, generic_dropped[i]))
			return true;
	for (size_t i = 0; i < sizeof(generic_dropped_prefix) / sizeof(generic_dropped_prefix[0]);
	     i++)
		if (!strncmp(opt, generic_dropped_prefix[i], strlen(generic_dropped_prefix[i])))
			return true;
	return false;
}

void opts_fuse_add(struct vd_buf *b, const char *opt)
{
	vd_buf_printf(b, ",");
	for (const char *p = opt; *p; p++)
		vd_buf_printf(b, "%s%c", *p == ',' || *p == '\\' ? "\\" : "", *p);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vdmount: error: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr,
		"\nusage: vdmount [options] IMAGE... MOUNTPOINT  (vdmount --help for more)\n");
	return VD_EXIT_USAGE;
}

/* Stores a value into the field of d. */
static int opt_set(const struct opt_def *d, struct vd_opts *o, const char *val)
{
	char *base = (char *)o;

	if (d->type == OPT_BOOL) {
		*(bool *)(base + d->field) = true;
		return 0;
	}
	if (d->type == OPT_UINT) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(val, &end, 10);
		if (errno || *end || !*val || *val == '-' || v == 0 || v > UINT_MAX)
			return -EINVAL;
		*(unsigned *)(base + d->field) = (unsigned)v;
		return 0;
	}
	if (d->type == OPT_LIST) {
		struct opt_list *l = (struct opt_list *)(base + d->field);
		char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->v[l->n] = strdup(val);
		return l->v[l->n++] ? 0 : -ENOMEM;
	}
	char **s = (char **)(base + d->field);
	free(*s);
	*s = strdup(val);
	return *s ? 0 : -ENOMEM;
}

/* opt_set() with its failure said: returns -1 to go on, or an exit status. */
static int opt_store(const struct opt_def *d, struct vd_opts *o, const char *val)
{
	int r = opt_set(d, o, val);

	if (r == -EINVAL)
		return usage_error("%s%s: '%s' is not a number (1 or more)",
				   d->lname ? "--" : "-o ", d->lname ? d->lname : d->oname, val);
	if (r < 0)
		return usage_error("out of memory");
	return -1;
}

/* One item of a -o list, unescaped. Returns -1 or an exit status. */
static int mount_opt(struct vd_opts *o, const char *item)
{
	const char *eq = strchr(item, '=');
	size_t klen = eq ? (size_t)(eq - item) : strlen(item);

	if (!*item)
		return -1;
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt_def *d = &opt_table[i];

		if (!d->oname || strlen(d->oname) != klen || strncmp(d->oname, item, klen))
			continue;
		if (d->arg && !eq)
			return usage_error("mount option %s needs a value (%s=%s)", item, item,
					   d->arg);
		if (!d->arg && eq)
			return usage_error("mount option %.*s takes no value", (int)klen, item);
		return opt_store(d, o, eq ? eq + 1 : NULL);
	}
	if (!generic_drop(item))
		opts_fuse_add(&o->fuse_o, item);
	return -1;
}

/* Splits a -o list at unescaped commas (a backslash escapes the next byte, as
 * in libfuse) and handles each item. Returns -1 or an exit status. */
static int mount_opts(struct vd_opts *o, const char *list)
{
	char *item = malloc(strlen(list) + 1);
	size_t n = 0;
	int r = -1;

	if (!item)
		return usage_error("out of memory");
	for (const char *p = list;; p++) {
		if (*p == '\\' && p[1]) {
			item[n++] = *++p;
			continue;
		}
		if (*p && *p != ',') {
			item[n++] = *p;
			continue;
		}
		item[n] = 0;
		r = mount_opt(o, item);
		n = 0;
		if (r >= 0 || !*p)
			break;
	}
	free(item);
	return r;
}

/* The formats vdmount mounts, by driver name; a driver missing here is
 * listed by its name alone. */
static const struct {
	const char *name, *what;
} format_help[] = {
    {"vmdk", "VMware VMDK: monolithicSparse, monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs "
	     "flat, streamOptimized (OVF/OVA exports), ESXi vmfsSparse (-delta.vmdk) and seSparse "
	     "(-sesparse.vmdk) deltas"},
    {"vhd", "Microsoft VHD: fixed, dynamic, differencing"},
    {"vhdx", "Microsoft VHDX: fixed, dynamic, differencing (.vhdx, Hyper-V checkpoints "
	     ".avhdx), a pending log replayed in memory"},
};

/* "  NAMES   text..." with text wrapped at 79 columns under itself. */
static void help_wrap(FILE *f, const char *names, const char *text)
{
	enum { INDENT = 23, WIDTH = 79 };
	int col = fprintf(f, "  %-*s", INDENT - 3, names);

	if (col >= INDENT) {
		fprintf(f, "\n%*s", INDENT, "");
		col = INDENT;
	} else {
		col += fprintf(f, "%*s", INDENT - col, "");
	}
	for (const char *p = text; *p;) {
		size_t w = strcspn(p, " ");

		if (col > INDENT && col + 1 + (int)w > WIDTH) {
			fprintf(f, "\n%*s", INDENT, "");
			col = INDENT;
		} else if (col > INDENT) {
			col += fprintf(f, " ");
		}
		col += fprintf(f, "%.*s", (int)w, p);
		p += w;
		while (*p == ' ')
			p++;
	}
	fprintf(f, "\n");
}

static void help_print(FILE *f)
{
	fprintf(f,
		"usage: vdmount [options] IMAGE... MOUNTPOINT\n"
		"\n"
		"Mounts VMware VMDK and Microsoft VHD and VHDX snapshot chains, read-only unless\n"
		"-w, following each image's parents down to the base. Each disk appears as\n"
		"  disk              the merged view of the whole chain\n"
		"  layers/NN-<name>  the disk as it was at each layer (01 = base)\n"
		"  disk.pN           each guest partition (also layers/NN-<name>.pN)\n"
		"  layers/NN-<name>.changed  what that layer changed (offset length)\n"
		"  chain.json        chain metadata and validation result\n"
		"With several images, each gets a directory named after its file. An IMAGE may\n"
		"be a VMware .vmx, .vmsd or VM directory: every disk of the VM.\n"
		"vdmount --info [--changes] | --json | --check | --hash [--inputs] IMAGE...\n"
		"inspects without mounting (vdmount --info --help).\n"
		"\n"
		"options (anywhere on the command line; \"--\" ends them):\n");
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt_def *d = &opt_table[i];
		char names[64] = "";
		size_t n = 0;

		if (d->sname)
			n += (size_t)snprintf(names + n, sizeof(names) - n, "-%c%s%s", d->sname,
					      d->arg && !d->lname ? " " : "",
					      d->arg && !d->lname ? d->arg : "");
		if (d->lname)
			n += (size_t)snprintf(names + n, sizeof(names) - n, "%s--%s%s%s",
					      n ? ", " : "", d->lname, d->arg ? "=" : "",
					      d->arg ? d->arg : "");
		if (d->oname)
			n += (size_t)snprintf(names + n, sizeof(names) - n, "%s-o %s%s%s",
					      n ? ", " : "", d->oname, d->arg ? "=" : "",
					      d->arg ? d->arg : "");
		help_wrap(f, names, d->help);
	}
	fprintf(f, "\nformats:\n");
	for (size_t i = 0; vd_formats[i]; i++) {
		const char *what = vd_formats[i]->name;

		for (size_t k = 0; k < sizeof(format_help) / sizeof(format_help[0]); k++)
			if (!strcmp(format_help[k].name, vd_formats[i]->name))
				what = format_help[k].what;
		help_wrap(f, vd_formats[i]->name, what);
	}
	{
		char *rest;

		if (asprintf(&rest, "%s (the error says what to do instead)", vd_foreign_list()) >
		    0) {
			help_wrap(f, "recognised only", rest);
			free(rest);
		}
	}
	fprintf(f,
		"\n"
		"unmount:\n"
		"  fusermount3 -u MOUNTPOINT        (or umount MOUNTPOINT as root)\n"
		"\n"
		"exit status:\n"
		"  %d  mounted (or --help / --version)\n"
		"  %d  an image, its chain, the mount point or the mount failed: one line on\n"
		"     stderr names the file, its place in the chain and the problem\n"
		"  %d  bad command line\n"
		"\n"
		"examples:\n"
		"  vdmount vm/disk-000002.vmdk /mnt/vd\n"
		"  vdmount vm1/disk.vmdk vm2/disk.vmdk /mnt/vd -o allow_other   (/mnt/vd/disk, "
		"/mnt/vd/disk-2)\n"
		"  mount -t fuse.vdmount /vm/disk.vmdk /mnt/vd -o ro,allow_other\n"
		"  /vm/disk.vmdk /mnt/vd fuse.vdmount ro,allow_other,nofail 0 0   (an /etc/fstab "
		"line)\n"
		"  mount -o ro,loop /mnt/vd/disk.p1 /mnt/guest     (the first partition)\n"
		"  vdmount --hash vm/disk-000002.vmdk > disk.sha256\n"
		"\n"
		"See vdmount(1).\n",
		VD_EXIT_OK, VD_EXIT_FAIL, VD_EXIT_USAGE);
}

int opts_parse(int argc, char **argv, struct vd_opts *o)
{
	struct option longopts[N_OPTS + 1];
	char shortopts[2 * N_OPTS + 2];
	size_t nl = 0, ns = 0;
	int c, idx, r;

	memset(longopts, 0, sizeof(longopts));
	/* ':' first: a missing argument is reported as ':', not '?' */
	shortopts[ns++] = ':';
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt_def *d = &opt_table[i];

		if (d->sname) {
			shortopts[ns++] = d->sname;
			if (d->arg)
				shortopts[ns++] = ':';
		}
		if (d->lname)
			longopts[nl++] =
			    (struct option){d->lname, d->arg ? required_argument : no_argument,
					    NULL, (int)(256 + i)};
	}
	shortopts[ns] = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
		const struct opt_def *d = NULL;

		/* optopt names a short option; a long one is the word just read */
		if (c == '?' && optopt > 0 && optopt < 256)
			return usage_error("unknown option -%c", optopt);
		if (c == '?')
			return usage_error("unknown option %s", argv[optind - 1]);
		if (c == ':' && optopt > 0 && optopt < 256)
			return usage_error("option -%c needs a value", optopt);
		if (c == ':')
			return usage_error("option %s needs a value", argv[optind - 1]);
		if (c >= 256)
			d = &opt_table[c - 256];
		for (size_t i = 0; !d && i < N_OPTS; i++)
			if (opt_table[i].sname == c)
				d = &opt_table[i];
		switch (d->type) {
		case OPT_BOOL:
		case OPT_STR:
		case OPT_LIST:
		case OPT_UINT:
			r = opt_store(d, o, optarg);
			if (r >= 0)
				return r;
			break;
		case OPT_MOUNT:
			r = mount_opts(o, optarg);
			if (r >= 0)
				return r;
			break;
		case OPT_HELP:
			help_print(stdout);
			return VD_EXIT_OK;
		case OPT_VERSION:
			printf("vdmount %s, libfuse %s\n", VD_VERSION, fuse_pkgversion());
			return VD_EXIT_OK;
		}
	}
	if (o->debug)
		o->foreground = true;
	if (argc - optind < 2)
		return usage_error("need at least one IMAGE and a MOUNTPOINT");
	o->images = argv + optind;
	o->n_images = (unsigned)(argc - optind - 1);
	o->mountpoint = argv[argc - 1];
	if (o->at > VD_CHAIN_MAX_DEPTH)
		return usage_error("--at %u: not a layer number (1 to %u)", o->at,
				   VD_CHAIN_MAX_DEPTH);
	if ((o->delta || o->scratch || o->at) && !o->write)
		return usage_error("--delta, --scratch and --at go with -w");
	return o->fuse_o.oom ? usage_error("out of memory") : -1;
}

static void list_free(struct opt_list *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void opts_free(struct vd_opts *o)
{
	list_free(&o->search);
	list_free(&o->parents);
	free(o->fsname);
	free(o->delta);
	vd_buf_free(&o->fuse_o);
}
