/* nbdkit-vdmount-plugin: serves VMDK/VHD snapshot chains over NBD.
 *
 * A second front end beside fs/ (STYLE.md section 13, "a second front end"):
 * it knows no format and uses only the chain's public API. Every chain is
 * opened and checked in .config_complete, before nbdkit forks or serves, so a
 * bad input fails at startup with one nbdkit error line. After that the
 * export table below is immutable and shared by every connection: a
 * connection's handle is a pointer into it, and reads go straight to
 * vd_chain_read(), which is thread-safe (hence PARALLEL and multi-conn).
 *
 * Export table: per file, "disk" (the merged chain) then "layers/NN-<stem>"
 * for every layer, base first, the names fs/ shows; with several files each
 * name gets a "<dir>/" prefix. The default export ("") is the first file's
 * disk, or its layer N with layer=N.
 *
 * Writes: every export is read-only for now (can_write is false, nbdkit
 * answers EPERM). Copy-on-write will add write=delta|scratch: a writable flag
 * on the disk exports of the chain it opens with a new delta, and
 * pwrite/flush/zero/trim forwarding to the chain's write calls. Layer exports
 * stay read-only. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "disk/confine.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* -D vdmount.verbose=1 (with -v): the core's debug lines, each chain's layers
 * at startup, and which export each connection gets. */
NBDKIT_DLL_PUBLIC int vdmount_debug_verbose;

struct vdn_export {
	char *name; /* unique; what clients pass as the export name */
	char *desc; /* shown by nbdinfo --list */
	struct vd_chain *chain;
	unsigned level;
};

/* A repeatable path parameter, made absolute (nbdkit changes directory when
 * it daemonizes) but not canonical: parents are looked for beside the path
 * given, as vdmount does. */
struct vdn_paths {
	char **v;
	unsigned n;
};

/* Configuration (written only by .config and .config_complete, before any
 * connection) and the export table built from it (immutable afterwards). */
static struct vdn_paths vdn_files, vdn_search, vdn_parents; /* file=, search=, parent= */
static unsigned vdn_layer; /* layer=N (1 = base); 0 = the merged disk */
static bool vdn_force;
static struct vd_policy vdn_policy; /* what images may make us open; outlives the chains */
static struct vd_chain **vdn_chains;
static struct vdn_export *vdn_exports;
static unsigned vdn_n_exports;
static unsigned vdn_default; /* index of the default export */

/* The core's log lines, through nbdkit's logging (stderr or syslog, as
 * nbdkit was told). nbdkit has no warning channel: warnings and notices go to
 * the debug output (-v); chain validation warnings are also shown in the
 * export descriptions. */
static void vdn_log_sink(void *ctx, enum vd_log_level lvl, const char *msg)
{
	(void)ctx;
	switch (lvl) {
	case VD_LOG_ERR:
		nbdkit_error("%s", msg);
		break;
	case VD_LOG_WARN:
		nbdkit_debug("warning: %s", msg);
		break;
	default:
		nbdkit_debug("%s", msg);
		break;
	}
}

static void vdn_load(void)
{
	vd_log_set_sink(vdn_log_sink, NULL);
	vd_policy_init(&vdn_policy);
}

static void vdn_paths_free(struct vdn_paths *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static int vdn_paths_add(struct vdn_paths *l, const char *value)
{
	char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));

	if (!nv) {
		nbdkit_error("out of memory");
		return -1;
	}
	l->v = nv;
	l->v[l->n] = nbdkit_absolute_path(value);
	if (!l->v[l->n])
		return -1;
	l->n++;
	return 0;
}

/* A boolean parameter: 0 or -1 (nbdkit has said why). */
static int vdn_bool(const char *value, bool *out)
{
	int b = nbdkit_parse_bool(value);

	if (b == -1)
		return -1;
	*out = b;
	return 0;
}

static void vdn_unload(void)
{
	for (unsigned i = 0; i < vdn_n_exports; i++) {
		free(vdn_exports[i].name);
		free(vdn_exports[i].desc);
	}
	free(vdn_exports);
	for (unsigned i = 0; vdn_chains && i < vdn_files.n; i++)
		vd_chain_close(vdn_chains[i]);
	free(vdn_chains);
	vd_policy_free(&vdn_policy);
	vdn_paths_free(&vdn_files);
	vdn_paths_free(&vdn_search);
	vdn_paths_free(&vdn_parents);
	vd_log_set_sink(NULL, NULL);
}

static int vdn_config(const char *key, const char *value)
{
	if (!strcmp(key, "file"))
		return vdn_paths_add(&vdn_files, value);
	if (!strcmp(key, "search"))
		return vdn_paths_add(&vdn_search, value);
	if (!strcmp(key, "parent"))
		return vdn_paths_add(&vdn_parents, value);
	if (!strcmp(key, "force"))
		return vdn_bool(value, &vdn_force);
	if (!strcmp(key, "allow-outside"))
		return vdn_bool(value, &vdn_policy.allow_outside);
	if (!strcmp(key, "allow-devices"))
		return vdn_bool(value, &vdn_policy.allow_devices);
	if (!strcmp(key, "layer")) {
		if (nbdkit_parse_unsigned("layer", value, &vdn_layer) == -1)
			return -1;
		if (vdn_layer == 0) {
			nbdkit_error("layer=0: layers are numbered from 1 (the base)");
			return -1;
		}
		return 0;
	}
	if (!strcmp(key, "write") || !strcmp(key, "delta")) {
		nbdkit_error("%s=%s: not supported yet: the plugin serves chains read-only "
			     "(writes need copy-on-write, which vdmount does not have yet)",
			     key, value);
		return -1;
	}
	nbdkit_error("unknown parameter '%s' (nbdkit vdmount --help lists them)", key);
	return -1;
}

/* Directory names for several files: the names vdmount gives the same disks
 * (chain/: stems made unique with -2, -3..., shortened past 255 bytes). */
static char **vdn_dirs_make(void)
{
	char **dirs = calloc(vdn_files.n, sizeof(*dirs));

	if (dirs && vd_chain_disk_names(vdn_chains, vdn_files.n, dirs) < 0) {
		free(dirs);
		dirs = NULL;
	}
	return dirs;
}

/* Appends one export; name and desc are formatted with dir ("" or "x/"). */
static int vdn_export_add(struct vd_chain *c, unsigned level, const char *dir, const char *leaf)
{
	struct vdn_export *e = &vdn_exports[vdn_n_exports];
	const struct vd_image *img = vd_chain_layer(c, level);
	unsigned depth = vd_chain_depth(c), warns = vd_chain_warning_count(c);
	char note[64] = "";

	if (warns)
		snprintf(note, sizeof(note), "; %u validation warning%s (forced)", warns,
			 warns == 1 ? "" : "s");
	if (asprintf(&e->name, "%s%s", dir, leaf) < 0) {
		e->name = NULL;
		return -ENOMEM;
	}
	if (level == depth - 1 && !strcmp(leaf, "disk")) {
		if (asprintf(&e->desc, "%s: merged disk, %u layer%s%s", img->path, depth,
			     depth == 1 ? "" : "s", note) < 0)
			e->desc = NULL;
	} else if (asprintf(&e->desc, "%s: layer %u of %u (%s %s)%s", img->path, level + 1, depth,
			    img->ops->name, img->subformat ? img->subformat : "", note) < 0) {
		e->desc = NULL;
	}
	if (!e->desc) {
		free(e->name);
		return -ENOMEM;
	}
	e->chain = c;
	e->level = level;
	vdn_n_exports++;
	return 0;
}

static int vdn_exports_build(void)
{
	unsigned total = 0;
	char **dirs = NULL;
	int r = -ENOMEM;

	for (unsigned i = 0; i < vdn_files.n; i++)
		total += 1 + vd_chain_depth(vdn_chains[i]);
	vdn_exports = calloc(total, sizeof(*vdn_exports));
	if (!vdn_exports)
		return -ENOMEM;
	if (vdn_files.n > 1 && !(dirs = vdn_dirs_make()))
		return -ENOMEM;
	for (unsigned i = 0; i < vdn_files.n; i++) {
		struct vd_chain *c = vdn_chains[i];
		char *dir = NULL;

		if (asprintf(&dir, "%s%s", dirs ? dirs[i] : "", dirs ? "/" : "") < 0)
			goto out;
		r = vdn_export_add(c, vd_chain_depth(c) - 1, dir, "disk");
		for (unsigned l = 0; r == 0 && l < vd_chain_depth(c); l++) {
			char *leaf = NULL, *layer = vd_chain_layer_name(c, l);
			if (!layer || asprintf(&leaf, "layers/%s", layer) < 0) {
				free(layer);
				r = -ENOMEM;
				break;
			}
			free(layer);
			r = vdn_export_add(c, l, dir, leaf);
			free(leaf);
		}
		free(dir);
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	for (unsigned i = 0; dirs && i < vdn_files.n; i++)
		free(dirs[i]);
	free(dirs);
	return r;
}

static void vdn_chain_debug(const char *file, struct vd_chain *c)
{
	for (unsigned l = 0; l < vd_chain_depth(c); l++) {
		const struct vd_image *img = vd_chain_layer(c, l);
		nbdkit_debug("%s: layer %u: %s (%s %s, %" PRIu64 " bytes)", file, l + 1, img->path,
			     img->ops->name, img->subformat ? img->subformat : "", img->size);
	}
}

static int vdn_config_complete(void)
{
	struct vd_chain_opts opts = {0};
	int r;

	if (vdn_files.n == 0) {
		nbdkit_error("file=IMAGE is required (the top image of a VMDK or VHD chain)");
		return -1;
	}
	if (vdmount_debug_verbose)
		vd_log_set_level(VD_LOG_DEBUG);
	/* Images may refer only to files below the directories of the files
	 * given and of search= (disk/confine.h), as with vdmount. */
	for (unsigned i = 0; i < vdn_files.n; i++)
		if (vd_policy_add_image(&vdn_policy, vdn_files.v[i]) < 0)
			return -1;
	for (unsigned i = 0; i < vdn_parents.n; i++)
		if (vd_policy_add_image(&vdn_policy, vdn_parents.v[i]) < 0)
			return -1;
	for (unsigned i = 0; i < vdn_search.n; i++)
		if (vd_policy_add_search(&vdn_policy, vdn_search.v[i]) < 0)
			return -1;
	opts.flags = vdn_force ? VD_CHAIN_FORCE : 0;
	opts.policy = &vdn_policy;
	opts.parents = (const char *const *)vdn_parents.v;
	opts.n_parents = vdn_parents.n;
	vdn_chains = calloc(vdn_files.n, sizeof(*vdn_chains));
	if (!vdn_chains) {
		nbdkit_error("out of memory");
		return -1;
	}
	for (unsigned i = 0; i < vdn_files.n; i++) {
		/* vd_chain_open logs the file and the problem through the sink. */
		r = vd_chain_open_opts(vdn_files.v[i], &opts, &vdn_chains[i]);
		if (r < 0)
			return -1;
		if (vdmount_debug_verbose)
			vdn_chain_debug(vdn_files.v[i], vdn_chains[i]);
	}
	if (vdn_layer > vd_chain_depth(vdn_chains[0])) {
		nbdkit_error("layer=%u: %s has %u layer%s", vdn_layer, vdn_files.v[0],
			     vd_chain_depth(vdn_chains[0]),
			     vd_chain_depth(vdn_chains[0]) == 1 ? "" : "s");
		return -1;
	}
	if (vdn_exports_build() < 0) {
		nbdkit_error("out of memory");
		return -1;
	}
	/* Export 0 is the first file's disk; its layers follow from index 1. */
	vdn_default = vdn_layer;
	return 0;
}

static int vdn_list_exports(int readonly, int is_tls, struct nbdkit_exports *exports)
{
	(void)readonly;
	(void)is_tls;
	for (unsigned i = 0; i < vdn_n_exports; i++)
		if (nbdkit_add_export(exports, vdn_exports[i].name, vdn_exports[i].desc) == -1)
			return -1;
	return 0;
}

static const char *vdn_default_export(int readonly, int is_tls)
{
	(void)readonly;
	(void)is_tls;
	return vdn_exports[vdn_default].name;
}

static void *vdn_open(int readonly)
{
	const char *name = nbdkit_export_name();

	(void)readonly;
	if (!name)
		return NULL;
	/* nbdkit has already mapped "" to vdn_default_export()'s name. */
	for (unsigned i = 0; i < vdn_n_exports; i++) {
		if (!strcmp(vdn_exports[i].name, name)) {
			/* an input changed in place is served stale: refuse (logged) */
			if (vd_chain_inputs_check(vdn_exports[i].chain) < 0)
				return NULL;
			if (vdmount_debug_verbose)
				nbdkit_debug("export '%s': %s", name, vdn_exports[i].desc);
			return &vdn_exports[i];
		}
	}
	nbdkit_error("no export named '%.200s' (nbdinfo --list shows them)", name);
	return NULL;
}

static const char *vdn_export_description(void *handle)
{
	return ((const struct vdn_export *)handle)->desc;
}

static int64_t vdn_get_size(void *handle)
{
	const struct vdn_export *e = handle;

	return (int64_t)vd_chain_size(e->chain, e->level);
}

static int vdn_can_multi_conn(void *handle)
{
	(void)handle;
	return 1; /* read-only: every connection sees the same bytes */
}

static int vdn_can_cache(void *handle)
{
	(void)handle;
	/* nbdkit turns a cache request into reads, which fill the chain's
	 * metadata caches and the host page cache. */
	return NBDKIT_CACHE_EMULATE;
}

static int vdn_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
	const struct vdn_export *e = handle;
	int r;

	(void)flags;
	/* The core logs a failure where it finds it (through the sink). */
	r = vd_chain_read(e->chain, e->level, buf, count, offset);
	if (r < 0) {
		nbdkit_set_error(-r);
		return -1;
	}
	return 0;
}

/* Runs as the chain resolves them: data somewhere at or below the level, or
 * zeros (explicitly zeroed, or held by no layer) reported as a hole that
 * reads as zeros, as qemu-nbd does, so clients can skip it. */
static int vdn_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
		       struct nbdkit_extents *extents)
{
	const struct vdn_export *e = handle;
	uint64_t end = offset + count;

	while (offset < end) {
		uint64_t n;
		uint32_t type;
		int st = vd_chain_block_status(e->chain, e->level, offset, end - offset, &n, NULL);
		if (st < 0) {
			nbdkit_set_error(-st);
			return -1;
		}
		type = st == VD_DATA ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
		if (nbdkit_add_extent(extents, offset, n, type) == -1)
			return -1;
		offset += n;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static void vdn_dump_plugin(void)
{
	printf("vdmount_version=%s\n", VD_VERSION);
	printf("vdmount_formats=");
	for (unsigned i = 0; vd_formats[i]; i++)
		printf("%s%s", i ? "," : "", vd_formats[i]->name);
	printf("\n");
}

static struct nbdkit_plugin plugin = {
    .name = "vdmount",
    .longname = "vdmount VMDK/VHD snapshot chain plugin",
    .version = VD_VERSION,
    .description = "Serves VMware VMDK and Microsoft VHD snapshot chains read-only: "
		   "the merged disk and every layer as named exports.",
    .load = vdn_load,
    .unload = vdn_unload,
    .config = vdn_config,
    .config_complete = vdn_config_complete,
    .config_help = "file=<IMAGE>        (required, repeatable) top image of a VMDK or VHD chain\n"
		   "layer=<N>           the default export is layer N (1 = base), not the disk\n"
		   "force=true          serve even if a parent's CID/unique id does not match\n"
		   "search=<DIR>        (repeatable) also look for parents by name in DIR, and\n"
		   "                    let images refer to files below it\n"
		   "parent=<FILE>       (repeatable) a parent that moved, matched by its id\n"
		   "allow-outside=true  let images refer to files outside those directories\n"
		   "allow-devices=true  let images refer to block devices",
    .magic_config_key = "file",
    .dump_plugin = vdn_dump_plugin,
    .list_exports = vdn_list_exports,
    .default_export = vdn_default_export,
    .open = vdn_open,
    .export_description = vdn_export_description,
    .get_size = vdn_get_size,
    .can_multi_conn = vdn_can_multi_conn,
    .can_cache = vdn_can_cache,
    .pread = vdn_pread,
    .extents = vdn_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin)
