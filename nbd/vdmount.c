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
 * Writes (write=delta|scratch): .get_ready gives every chain a new delta
 * through the core's copy-on-write (chain/cow.c, as vdmount -w does), before
 * nbdkit forks into the background or runs --run's command. No thread exists
 * then: the core starts its periodic flusher at the first write, in the
 * serving process. Only each chain's "disk" export is writable; layer exports
 * (the new delta's own view too) stay read-only. Every connection shares the
 * one chain object and the core keeps no per-connection state, so a flush on
 * any connection makes every write that any connection has seen completed
 * durable: multi-conn stays safe when writable. FUA is a flush after the
 * request. Trim and native zeroing are offered only where the delta's format
 * frees space for them (vd_chain_discard_frees); elsewhere nbdkit writes
 * zeros through .pwrite and fails fast-zero requests. The chains are closed
 * (final flush, deltas marked clean) in .cleanup, in the serving process
 * only (see vdn_atfork_parent). */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
	bool writable; /* a chain's disk, with write=: the new delta is its top */
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
static enum { VDN_RO, VDN_DELTA, VDN_SCRATCH } vdn_write; /* write= */
static char *vdn_delta;		    /* delta=PATH, absolute; NULL: beside the top (or $TMPDIR) */
static unsigned vdn_at;		    /* at=N: the deltas' parent is layer N; 0 = the top */
static struct vd_policy vdn_policy; /* what images may make us open; outlives the chains */
static struct vd_chain **vdn_chains;
static struct vdn_export *vdn_exports;
static unsigned vdn_n_exports;
static unsigned vdn_default; /* index of the default export */
static char **vdn_dirs;	     /* export name prefixes with several files, else NULL */

/* The parent side of a fork between .get_ready and .after_fork is not the
 * server: that is nbdkit's parent when it daemonizes (it exits) or when it
 * runs --run's command (it waits for the server). It must not close the
 * chains: closing a delta flushes it and marks it clean, which only the
 * process that writes it may do. (nbdkit 1.32 does not unload the plugin
 * there; this keeps it so if another version does.) */
static bool vdn_serving, vdn_not_server;

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

/* Closes every chain: a writable one gets its final flush and its delta is
 * marked clean (a scratch delta vanishes). */
static void vdn_chains_close(void)
{
	for (unsigned i = 0; vdn_chains && i < vdn_files.n; i++)
		vd_chain_close(vdn_chains[i]);
	free(vdn_chains);
	vdn_chains = NULL;
}

/* A layer number parameter (1 = the base): 0 or -1 (nbdkit has said why). */
static int vdn_layer_number(const char *key, const char *value, unsigned *out)
{
	if (nbdkit_parse_unsigned(key, value, out) == -1)
		return -1;
	if (*out == 0) {
		nbdkit_error("%s=0: layers are numbered from 1 (the base)", key);
		return -1;
	}
	return 0;
}

static void vdn_unload(void)
{
	for (unsigned i = 0; i < vdn_n_exports; i++) {
		free(vdn_exports[i].name);
		free(vdn_exports[i].desc);
	}
	free(vdn_exports);
	for (unsigned i = 0; vdn_dirs && i < vdn_files.n; i++)
		free(vdn_dirs[i]);
	free(vdn_dirs);
	/* Normally closed by .cleanup already. Not here in a parent that
	 * forked the server off: the files are the server's. */
	if (!vdn_not_server)
		vdn_chains_close();
	free(vdn_delta);
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
	if (!strcmp(key, "layer"))
		return vdn_layer_number(key, value, &vdn_layer);
	if (!strcmp(key, "write")) {
		if (!strcmp(value, "delta"))
			vdn_write = VDN_DELTA;
		else if (!strcmp(value, "scratch"))
			vdn_write = VDN_SCRATCH;
		else {
			nbdkit_error("write=%s: expected write=delta or write=scratch", value);
			return -1;
		}
		return 0;
	}
	if (!strcmp(key, "delta")) {
		free(vdn_delta);
		vdn_delta = nbdkit_absolute_path(value);
		return vdn_delta ? 0 : -1;
	}
	if (!strcmp(key, "at"))
		return vdn_layer_number(key, value, &vdn_at);
	nbdkit_error("unknown parameter '%s' (nbdkit vdmount --help lists them)", key);
	return -1;
}

/* Directory names for several files: the names vdmount gives the same disks
 * (chain/: stems made unique with -2, -3..., shortened past 255 bytes).
 * Made from the chains as opened, before any new delta becomes their top,
 * so that export names do not depend on the delta's name. 0 or -ENOMEM. */
static int vdn_dirs_make(void)
{
	vdn_dirs = calloc(vdn_files.n, sizeof(*vdn_dirs));
	if (vdn_dirs && vd_chain_disk_names(vdn_chains, vdn_files.n, vdn_dirs) < 0) {
		free(vdn_dirs);
		vdn_dirs = NULL;
	}
	return vdn_dirs ? 0 : -ENOMEM;
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
	e->writable = level == depth - 1 && !strcmp(leaf, "disk") && vd_chain_writable(c);
	if (e->writable) {
		/* The top is the new delta: name it and what it lies over. */
		if (asprintf(&e->desc, "%s: merged disk, %u layers, writable (%s delta over %s)%s",
			     vd_chain_delta_path(c), depth,
			     vdn_write == VDN_SCRATCH ? "scratch" : "new",
			     vd_chain_layer(c, depth - 2)->path, note) < 0)
			e->desc = NULL;
	} else if (level == depth - 1 && !strcmp(leaf, "disk")) {
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
	char **dirs = vdn_dirs;
	unsigned total = 0;
	int r;

	for (unsigned i = 0; i < vdn_files.n; i++)
		total += 1 + vd_chain_depth(vdn_chains[i]);
	vdn_exports = calloc(total, sizeof(*vdn_exports));
	if (!vdn_exports)
		return -ENOMEM;
	for (unsigned i = 0; i < vdn_files.n; i++) {
		struct vd_chain *c = vdn_chains[i];
		char *dir = NULL;

		if (asprintf(&dir, "%s%s", dirs ? dirs[i] : "", dirs ? "/" : "") < 0)
			return -ENOMEM;
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
			return r;
	}
	return 0;
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
	unsigned depth;
	int r;

	if (vdn_files.n == 0) {
		nbdkit_error("file=IMAGE is required (the top image of a VMDK or VHD chain)");
		return -1;
	}
	if ((vdn_delta || vdn_at) && vdn_write == VDN_RO) {
		nbdkit_error("%s: only with write=delta or write=scratch",
			     vdn_delta ? "delta=" : "at=");
		return -1;
	}
	if (vdn_files.n > 1 && vdn_delta) {
		struct stat st;

		/* Each chain gets its own delta there. */
		if (stat(vdn_delta, &st) < 0 || !S_ISDIR(st.st_mode)) {
			nbdkit_error("delta=%s: with several file= parameters delta= must be an "
				     "existing directory",
				     vdn_delta);
			return -1;
		}
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
		if (vdn_at > vd_chain_depth(vdn_chains[i])) {
			nbdkit_error("at=%u: %s has %u layer%s", vdn_at, vdn_files.v[i],
				     vd_chain_depth(vdn_chains[i]),
				     vd_chain_depth(vdn_chains[i]) == 1 ? "" : "s");
			return -1;
		}
	}
	if (vdn_files.n > 1 && vdn_dirs_make() < 0) {
		nbdkit_error("out of memory");
		return -1;
	}
	/* Checked before any delta is made: with one, the disk has the
	 * layers up to its parent, and the delta. */
	depth = vd_chain_depth(vdn_chains[0]);
	if (vdn_write != VDN_RO)
		depth = (vdn_at ? vdn_at : depth) + 1;
	if (vdn_layer > depth) {
		nbdkit_error("layer=%u: %s has %u layer%s%s", vdn_layer, vdn_files.v[0], depth,
			     depth == 1 ? "" : "s",
			     vdn_write != VDN_RO ? " (with the new delta)" : "");
		return -1;
	}
	return 0;
}

/* A forked child of ours that is not the server (see vdn_not_server). */
static void vdn_atfork_parent(void)
{
	if (!vdn_serving)
		vdn_not_server = true;
}

/* Last step before serving, still before nbdkit forks: the new deltas (so
 * that a file that cannot be made stops nbdkit with its error on the
 * terminal) and the export table, which names them. */
static int vdn_get_ready(void)
{
	if (vdn_write != VDN_RO) {
		struct vd_delta_opts d = {
		    .path = vdn_delta, .at = vdn_at, .scratch = vdn_write == VDN_SCRATCH};

		if (pthread_atfork(NULL, vdn_atfork_parent, NULL) != 0) {
			nbdkit_error("pthread_atfork: out of memory");
			return -1;
		}
		for (unsigned i = 0; i < vdn_files.n; i++) {
			/* Logs the file and the problem (an existing file is never
			 * replaced). */
			if (vd_chain_delta_add(vdn_chains[i], &d) < 0)
				return -1;
			if (vdmount_debug_verbose)
				nbdkit_debug("%s: writes go to %s", vdn_files.v[i],
					     vd_chain_delta_path(vdn_chains[i]));
		}
	}
	if (vdn_exports_build() < 0) {
		nbdkit_error("out of memory");
		return -1;
	}
	/* Export 0 is the first file's disk; its layers follow from index 1. */
	vdn_default = vdn_layer;
	return 0;
}

static int vdn_after_fork(void)
{
	vdn_serving = true;
	return 0;
}

static void vdn_cleanup(void)
{
	vdn_chains_close();
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
	/* Every connection reads and writes the one chain object: it sees
	 * the same bytes, and a flush anywhere covers every write (see the
	 * top of this file). */
	return 1;
}

static int vdn_can_write(void *handle)
{
	return ((const struct vdn_export *)handle)->writable;
}

static int vdn_can_flush(void *handle)
{
	return ((const struct vdn_export *)handle)->writable;
}

static int vdn_can_fua(void *handle)
{
	return ((const struct vdn_export *)handle)->writable ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE;
}

/* Trim, and .zero itself, only where a discard frees space: a VHD delta
 * would store a trimmed range as zeros (mkfs trims the whole disk). There
 * nbdkit turns zero requests into .pwrite of zeros. */
static int vdn_can_trim(void *handle)
{
	const struct vdn_export *e = handle;

	return e->writable && vd_chain_discard_frees(e->chain);
}

static int vdn_can_zero(void *handle)
{
	return vdn_can_trim(handle);
}

/* Fast zero requests get a fast answer: done by a discard in vdn_zero, or
 * refused at once (by vdn_zero, or by nbdkit when .can_zero is false). */
static int vdn_can_fast_zero(void *handle)
{
	return ((const struct vdn_export *)handle)->writable;
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

/* 0, or -1 with nbdkit's error set from r (a -errno; the core has logged
 * the failure where it found it). */
static int vdn_result(int r)
{
	if (r < 0) {
		nbdkit_set_error(-r);
		return -1;
	}
	return 0;
}

/* After a write, trim or zero that carries FUA. */
static int vdn_fua(const struct vdn_export *e, int r, uint32_t flags)
{
	if (r == 0 && (flags & NBDKIT_FLAG_FUA))
		r = vd_chain_flush(e->chain);
	return vdn_result(r);
}

static int vdn_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
		      uint32_t flags)
{
	const struct vdn_export *e = handle;

	/* nbdkit calls the write callbacks only where .can_write said yes. */
	if (!e->writable)
		return vdn_result(-EROFS);
	return vdn_fua(e, vd_chain_write(e->chain, buf, count, offset), flags);
}

static int vdn_flush(void *handle, uint32_t flags)
{
	const struct vdn_export *e = handle;

	(void)flags;
	return vdn_result(vd_chain_flush(e->chain));
}

static int vdn_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	const struct vdn_export *e = handle;

	if (!e->writable)
		return vdn_result(-EROFS);
	return vdn_fua(e, vd_chain_discard(e->chain, offset, count), flags);
}

/* Called only where a discard frees space (vdn_can_zero). A discard leaves
 * holes, so it serves only requests that allow them (MAY_TRIM); for the
 * others ENOTSUP makes nbdkit write zeros through .pwrite, or fail a fast
 * zero request, as it must, since that would be no faster than a write. */
static int vdn_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	const struct vdn_export *e = handle;

	if (!e->writable)
		return vdn_result(-EROFS);
	if (!(flags & NBDKIT_FLAG_MAY_TRIM))
		return vdn_result(-ENOTSUP);
	return vdn_fua(e, vd_chain_discard(e->chain, offset, count), flags);
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
    .description = "Serves VMware VMDK and Microsoft VHD snapshot chains: the merged disk "
		   "and every layer as named exports, read-only, or the disk writable "
		   "into a new delta.",
    .load = vdn_load,
    .unload = vdn_unload,
    .config = vdn_config,
    .config_complete = vdn_config_complete,
    .get_ready = vdn_get_ready,
    .after_fork = vdn_after_fork,
    .cleanup = vdn_cleanup,
    .config_help = "file=<IMAGE>        (required, repeatable) top image of a VMDK or VHD chain\n"
		   "layer=<N>           the default export is layer N (1 = base), not the disk\n"
		   "force=true          serve even if a parent's CID/unique id does not match\n"
		   "search=<DIR>        (repeatable) also look for parents by name in DIR, and\n"
		   "                    let images refer to files below it\n"
		   "parent=<FILE>       (repeatable) a parent that moved, matched by its id\n"
		   "allow-outside=true  let images refer to files outside those directories\n"
		   "allow-devices=true  let images refer to block devices\n"
		   "write=delta         make disk writable: writes go into a NEW delta beside\n"
		   "                    the top (the input files are never written)\n"
		   "write=scratch       the same into a throw-away delta, deleted at exit\n"
		   "delta=<PATH>        with write=: the new delta's file (or directory for it)\n"
		   "at=<N>              with write=: the delta's parent is layer N (1 = base)",
    .magic_config_key = "file",
    .dump_plugin = vdn_dump_plugin,
    .list_exports = vdn_list_exports,
    .default_export = vdn_default_export,
    .open = vdn_open,
    .export_description = vdn_export_description,
    .get_size = vdn_get_size,
    .can_multi_conn = vdn_can_multi_conn,
    .can_cache = vdn_can_cache,
    .can_write = vdn_can_write,
    .can_flush = vdn_can_flush,
    .can_fua = vdn_can_fua,
    .can_trim = vdn_can_trim,
    .can_zero = vdn_can_zero,
    .can_fast_zero = vdn_can_fast_zero,
    .pread = vdn_pread,
    .pwrite = vdn_pwrite,
    .flush = vdn_flush,
    .trim = vdn_trim,
    .zero = vdn_zero,
    .extents = vdn_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin)
