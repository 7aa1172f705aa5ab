/* Snapshot chains: discovery from the top layer down, identity checks, and
 * top-down reads (STYLE.md section 3).
 *
 * Layer index 0 is the base; depth-1 is the top. Every layer can be read as
 * "the disk as it was at that layer" with vd_chain_read(level).
 *
 * Lock order: the copy-on-write stripe locks (cow.c, in index order), then
 * image locks from top to bottom, then the metadata cache's shard locks.
 * Reads take no chain lock: the layer array is immutable once the chain is
 * open and its writable delta (if any) added, and drivers lock their own
 * tables. */
#ifndef VD_CHAIN_H
#define VD_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "disk/disk.h"

#define VD_CHAIN_MAX_DEPTH 255

/* vd_chain_open() flags */
#define VD_CHAIN_FORCE 0x1u /* open despite a CID/UUID mismatch or a corrupt VHDX log (warned) */
#define VD_CHAIN_ALLOW_MIXED 0x2u /* allow a parent of another format than its child */

/* How a layer's parent was found, kept for chain.json and --info. */
struct vd_chain_link {
	const char
	    *hint_kind;	  /* "parentFileNameHint", "W2ru", ... or "--parent"; NULL for the base */
	char *how;	  /* how the file was derived from the hint ("base name, in ..."); owned */
	bool id_match;	  /* child's parent id == parent's id */
	bool stamp_match; /* timestamps agree (or the format has none) */
};

/* Everything vd_chain_open_opts() may be told. */
struct vd_chain_opts {
	unsigned flags;		    /* VD_CHAIN_* */
	struct vd_policy *policy;   /* what images may make us open (disk/confine.h); NULL:
				       the top image's directory tree. Kept, not owned. */
	const char *const *parents; /* --parent files: tried, by identity, for a layer */
	unsigned n_parents;	    /* whose hints lead nowhere */
};

/* Opaque: front ends (fs/, the nbdkit plugin, --info) use the accessors below. */
struct vd_chain;

/* Opens top_path and every parent below it. On failure logs one line naming
 * the file(s) and the problem and returns -errno: -ENOENT (parent not found),
 * -ELOOP (loop or depth > VD_CHAIN_MAX_DEPTH), -EINVAL (bad metadata, id
 * mismatch without VD_CHAIN_FORCE, mixed formats), ... */
int vd_chain_open(const char *top_path, unsigned flags, struct vd_chain **out);

/* vd_chain_open() with a confinement policy and --parent files. */
int vd_chain_open_opts(const char *top_path, const struct vd_chain_opts *opts,
		       struct vd_chain **out);

/* Closes every layer and frees the chain; NULL is a no-op. */
void vd_chain_close(struct vd_chain *c);

/* Number of layers (>= 1). */
unsigned vd_chain_depth(const struct vd_chain *c);

/* Layer i (0 = base), or NULL when i >= depth. Owned by the chain. */
struct vd_image *vd_chain_layer(const struct vd_chain *c, unsigned i);

/* How layer i found its parent (i >= 1), or NULL. */
const struct vd_chain_link *vd_chain_link(const struct vd_chain *c, unsigned i);

/* Validation warnings (for chain.json): every warning logged while the chain
 * opened, the drivers' included, as printed. Count, and warning i. */
unsigned vd_chain_warning_count(const struct vd_chain *c);
const char *vd_chain_warning(const struct vd_chain *c, unsigned i);

/* Whether the chain's input files are still as they were at open (tables
 * are cached, so a file changed in place is served stale): returns 0, or
 * -EIO once some layer's file or extent changed size or mtime (logged once,
 * naming the file; sticky). Checks at most once a second (one fstat per
 * file); between checks the last answer stands. Thread-safe. */
int vd_chain_inputs_check(struct vd_chain *c);

/* Virtual size of the disk as seen from layer level (that layer's size). */
uint64_t vd_chain_size(const struct vd_chain *c, unsigned level);

/* Reads [off, off+len) of the disk as seen from layer level: the newest layer
 * at or below level that holds a block wins; blocks held nowhere, and bytes
 * past a layer's end, read as zeros. Bytes past vd_chain_size(level) are
 * zero-filled too (callers clamp). Returns 0 or -errno. Thread-safe. */
int vd_chain_read(struct vd_chain *c, unsigned level, void *buf, size_t len, uint64_t off);

/* State of the run starting at off as seen from level: VD_DATA if some layer
 * at or below level holds it, VD_ZERO if it reads as zeros (explicit zero or
 * held nowhere). *pnum gets the run length, *owner (if non-NULL) the layer
 * that answered (-1 for nowhere). Returns the state or -errno. */
int vd_chain_block_status(struct vd_chain *c, unsigned level, uint64_t off, uint64_t len,
			  uint64_t *pnum, int *owner);

/* Calls fn(ctx, off, len, state) for each run of layer level's own states
 * (VD_DATA, VD_ZERO, VD_UNALLOC: what this layer holds, not the merged view),
 * in order, as the driver reports them. Stops at the first non-zero return
 * of fn and returns it. Returns 0 or -errno. */
typedef int (*vd_chain_walk_fn)(void *ctx, uint64_t off, uint64_t len, int state);
int vd_chain_layer_walk(struct vd_chain *c, unsigned level, vd_chain_walk_fn fn, void *ctx);

/* Counts the bytes layer level itself holds (DATA) and marks zero (ZERO).
 * Walks the whole layer, at a cost that follows its metadata: not for hot
 * paths (vd_chain_describe caps it). Returns 0 or -errno. */
int vd_chain_layer_usage(struct vd_chain *c, unsigned level, uint64_t *data, uint64_t *zero);

/* Appends layer level's change list to out: a "# ..." line saying the unit,
 * then "offset length" (bytes, decimal) per run that the layer itself holds
 * (DATA or explicitly ZERO), adjacent runs merged. This is what the layer
 * changed relative to its parent (VMware's QueryChangedDiskAreas). Walks the
 * whole layer. Returns 0 or -errno. */
int vd_chain_changes(struct vd_chain *c, unsigned level, struct vd_buf *out);

/* Version of the chain.json schema (docs/chain.json.md). */
#define VD_CHAIN_JSON_VERSION 1

/* When the front end made the chain visible (the mount), for chain.json's
 * mount_time. Call before the chain is shared between threads. */
void vd_chain_set_mount_time(struct vd_chain *c, const struct timespec *t);

/* Writes the chain's metadata (schema version, vdmount version, mount time,
 * layers base first with their files, formats, sizes, ids, hints, the whole
 * VMDK DDB, validation, the merged disk's partition table) as one JSON object into j
 * (docs/chain.json.md). Its work is bounded whatever the layers claim: a layer
 * too costly to count gets null usage and a "usage_note". Returns 0 or -errno. */
int vd_chain_describe(struct vd_chain *c, struct vd_json *j);

/* --- copy-on-write into a new delta (cow.c) --------------------------- */

struct vd_delta_opts {
	const char *path;  /* the new file, or a directory for it; NULL: beside the parent
			      (a temporary directory when scratch) as <stem>-vdm-NNNNNN.<ext> */
	unsigned at;	   /* the parent is layer at (1 = base); 0: the top. Layers above it
			      leave this chain; their files are untouched. */
	bool scratch;	   /* the file is unlinked once open: it vanishes at close */
	unsigned flush_ms; /* periodic flush interval (0: 5000 ms) */
};

/* Creates an empty delta of the chain's format whose parent is the chosen
 * layer, opens it (the only file vdmount ever opens for writing) and makes
 * it the chain's top: vd_chain_write() and friends then work. An existing
 * file is never replaced. Call before any reads start. Returns 0 or -errno
 * (logged). */
int vd_chain_delta_add(struct vd_chain *c, const struct vd_delta_opts *o);

/* Whether the chain has a writable delta, and its path (NULL if none). */
bool vd_chain_writable(const struct vd_chain *c);
const char *vd_chain_delta_path(const struct vd_chain *c);

/* Writes len bytes at off of the disk as seen from the top (the delta):
 * copy-on-write, read-your-writes, thread-safe. Durable after
 * vd_chain_flush() (or the periodic flush). -EROFS without a delta,
 * -ENOSPC past the virtual size. */
int vd_chain_write(struct vd_chain *c, const void *buf, size_t len, uint64_t off);

/* Makes [off, off+len) read as zeros (discard / punch hole): zeroed units
 * where the format has them, zeros written otherwise. */
int vd_chain_discard(struct vd_chain *c, uint64_t off, uint64_t len);

/* Whether vd_chain_discard() frees space: true when the writable delta's
 * format marks whole cow units zero without storing data (VMDK zeroed
 * grains), so a discard is cheap; false when it writes zeros (VHD), or
 * without a delta. Front ends offer trim and fast zeroing only then. */
bool vd_chain_discard_frees(const struct vd_chain *c);

/* Makes every write that returned before it durable. 0 without a delta. */
int vd_chain_flush(struct vd_chain *c);

/* Resolves a parent hint written in child_path against the filesystem:
 * relative hints against the child's directory; absolute paths as they are;
 * Windows paths (backslashes, drive letters, UNC) and ESXi /vmfs/volumes paths
 * by their base name; the base name is then looked for in the child's
 * directory and in policy's --search directories. The first candidate that
 * exists and that policy allows wins: returns 0 with it in *found (malloc'd)
 * and *how (malloc'd) saying how it was derived. -ENOENT when none: *tried
 * (if non-NULL) gets a malloc'd ", "-joined list of the candidates, with the
 * reason for each one the policy refused. -ENOMEM when out of memory (never
 * reported as "not found"). */
int vd_chain_resolve_hint(const char *child_path, const char *hint, struct vd_policy *policy,
			  char **found, char **how, char **tried);

/* File stem used for directory and layer names: base name without a known
 * image extension (.vmdk, .vhd, .vhdx, .avhd, .avhdx). Returns a malloc'd
 * string or NULL. */
char *vd_path_stem(const char *path);

/* Name of layer i as front ends show it: "NN-<stem>", NN = i + 1 zero-padded
 * to the width the chain's depth needs (at least 2). A name longer than 255
 * bytes (NAME_MAX) keeps "NN-", the stem is cut at a UTF-8 character boundary
 * and "~" plus the CRC-32 of the full stem (8 hex digits) ends it: at most 255
 * bytes, the same for the same input. Malloc'd, or NULL. */
char *vd_chain_layer_name(const struct vd_chain *c, unsigned i);

/* A delta in the top layer's directory whose parent is the top layer (its
 * parent id matches and a hint resolves to the top file): the user may have
 * meant to mount that newer disk. Malloc'd path, or NULL. Logs nothing;
 * bounded work: at most 64 images opened, and at most *opens_left, which
 * goes down by the images opened (one budget for all the chains of a mount,
 * so that many disks in one directory do not open each other in turn). */
char *vd_chain_child_beside(const struct vd_chain *c, unsigned *opens_left);

/* Directory names for n disks mounted side by side, given the paths of their
 * top layers: each path's stem (vd_path_stem), made unique with -2, -3, ...
 * in the order given; linear in n. Names over 255 bytes are shortened like
 * layer names ("<cut stem>~<crc32>-k"). names[i] gets a malloc'd string (the caller frees each).
 * Returns 0 or -ENOMEM (then every names[i] is NULL). */
int vd_disk_names(const char *const *paths, unsigned n, char **names);

/* vd_disk_names() over the top layers of n open chains: the names every front
 * end (FUSE directories, nbdkit exports) gives disks mounted together. */
int vd_chain_disk_names(struct vd_chain *const *chains, unsigned n, char **names);

#endif
