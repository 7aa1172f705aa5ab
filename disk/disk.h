/* The format-driver interface (STYLE.md section 2).
 *
 * A struct vd_image is one layer of a chain: one VMDK link (descriptor plus its
 * extent files) or one VHD file. A driver answers only for its own layer:
 * block_status() says whether a range is DATA here, explicitly ZERO here, or
 * UNALLOC here (look below); chain/ does the top-down resolution. */
#ifndef VD_DISK_H
#define VD_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "disk/confine.h"
#include "disk/util.h"

struct vd_image;

/* block_status() results (>= 0). */
enum vd_block_state {
	VD_UNALLOC = 0, /* not held by this layer: read the layer below (zeros below the base) */
	VD_DATA = 1,	/* held by this layer: call read() */
	VD_ZERO = 2,	/* explicitly zero in this layer (zeroed grain, ZERO extent) */
};

/* open() flags */
#define VD_OPEN_RDWR 0x1u /* only ever set for a delta vdmount created or the user named */
#define VD_OPEN_FORCE                                                                              \
	0x2u /* the user said --force: a driver may open damaged metadata it can                   \
		skip (a corrupt VHDX log), with a warning */

/* Where the bytes of a VD_DATA run live, handed back by block_status() so
 * that reading (and, for a writable delta, overwriting) the run needs no
 * second lookup: QEMU's bdrv_co_block_status(..., *map, *file). fd >= 0: the
 * run is stored verbatim at [off, off + run length) of fd. fd < 0: it is not
 * (compressed grain, NOACCESS extent) and the driver's read() produces it. */
struct vd_map {
	int fd;
	uint64_t off;
};

#define VD_MAX_HINTS 8
#define VD_ID_MAX 16

/* Identity of a layer and of the parent it expects: a VMDK CID (4 bytes, stored
 * big-endian so it prints as the descriptor's hex) or a VHD/VHDX UUID (16 bytes).
 * len == 0 means "none". Compared bytewise by chain/. */
struct vd_id {
	uint8_t len;
	uint8_t bytes[VD_ID_MAX];
};

/* One way of finding the parent, in the order the driver wants them tried. */
struct vd_hint {
	char *kind; /* "parentFileNameHint", "W2ru", "W2ku", "MacX", "parentName" */
	char *path; /* UTF-8, exactly as written (backslashes and drive letters kept) */
};

struct vd_image {
	const struct vd_format_ops *ops;
	char *path;		  /* path this layer was opened by (resolved), owned */
	int fd;			  /* the file named by path; O_RDONLY unless VD_OPEN_RDWR */
	uint64_t file_size;	  /* of fd at open */
	struct vd_file_info file; /* canonical path, size, mtime at open (chain.json) */
	unsigned flags;		  /* VD_OPEN_* */
	/* What this image may make us open (extents); not owned unless
	 * own_policy (then it confines to the image's own directory). */
	struct vd_policy *policy;
	bool own_policy;

	/* Set by the driver's open(): */
	uint64_t size;	   /* virtual size in bytes */
	uint32_t cow_unit; /* smallest allocation-tracked unit in bytes (VHD sector, VMDK grain) */
	uint64_t alloc_unit;	/* allocation granularity shown to users (grain, block), bytes */
	const char *subformat;	/* static string: createType ("monolithicSparse"), "dynamic", ... */
	struct vd_id id;	/* this layer's identity (CID / unique id) */
	struct vd_id parent_id; /* identity the parent must have; len 0 for a base */
	struct vd_id parent_id2; /* a second identity the parent may have instead (VHDX
				    parent_linkage2); len 0 when none */
	bool has_parent; /* the format says this is a delta (parentCID != ffffffff, type 4) */
	struct vd_hint hints[VD_MAX_HINTS]; /* parent locations, in trial order */
	unsigned n_hints;
	bool has_stamp;	       /* VHD: timestamps are meaningful */
	uint32_t stamp;	       /* this layer's timestamp (VHD footer) */
	uint32_t parent_stamp; /* timestamp the child recorded for its parent */

	void *priv; /* driver state, allocated in open(), freed in close() */
};

/* Where check() reports what it finds: one call of report per problem (msg
 * names the structure and the inconsistency; path is the file it is in). */
struct vd_check {
	void (*report)(void *ctx, const char *path, const char *msg);
	/* What was not checked (a structure the driver has no check for). May be NULL. */
	void (*note)(void *ctx, const char *path, const char *msg);
	void *ctx;
	unsigned problems; /* counted by vd_check_report */
};

/* Hands a note (not a problem) to chk->note. */
void vd_check_note(struct vd_check *chk, const char *path, const char *msg);

/* Formats one problem and hands it to chk->report. */
void vd_check_report(struct vd_check *chk, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One input file of an image: the path it was opened by, its descriptor
 * (read-only unless the image is the writable delta) and what was recorded
 * of it at open. */
typedef int (*vd_input_fn)(void *ctx, const char *path, int fd, const struct vd_file_info *fi);

struct vd_format_ops {
	const char *name; /* "vmdk", "vhd" */

	/* Confidence 0..100 that the file whose first len bytes are head (len may be
	 * shorter than the file) is of this format. No I/O, no allocation. */
	int (*probe)(const uint8_t *head, size_t len, uint64_t file_size);

	/* Parses metadata of img->fd / img->path and fills the "set by open" fields.
	 * Returns 0 or -errno (-EINVAL for bad metadata, -ENOTSUP for a valid but
	 * unsupported variant) after logging one line naming the file and the problem.
	 * A driver that probed weakly and finds the file is not of its format at all
	 * returns -EMEDIUMTYPE without logging: vd_image_open() then says what the
	 * file is instead. */
	int (*open)(struct vd_image *img, unsigned flags);

	/* Frees everything the driver allocated; safe after a failed open(). */
	void (*close)(struct vd_image *img);

	/* State of [off, off+len) in this layer; off < img->size, len > 0 and
	 * off + len <= img->size. Returns a vd_block_state and sets *pnum (> 0,
	 * <= len) to the length of the run from off that shares it, or -errno.
	 * For VD_DATA it also sets *map (never NULL) to where the run lives;
	 * for other states *map is left alone. Thread-safe. */
	int (*block_status)(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			    struct vd_map *map);

	/* Produces a VD_DATA run whose map had fd < 0 (the bytes are not stored
	 * verbatim). May be NULL when block_status always maps. Returns 0 or
	 * -errno. Thread-safe. */
	int (*read)(struct vd_image *img, void *buf, size_t len, uint64_t off);

	/* The write side (NULL for drivers that cannot write). Only ever used on
	 * an image opened with VD_OPEN_RDWR, which is always a delta that
	 * create_child() has just made: empty, and ours alone.
	 *
	 * write(): writes len bytes at off into this layer, allocating as needed;
	 * never reads a parent. A cow_unit that is not yet DATA here and that
	 * the range touches arrives whole (chain/ does the read-modify-write),
	 * and chain/ never writes one such unit from two threads at once;
	 * everything else may run concurrently with other writes and reads.
	 * The data is in the file when write() returns; the table entries that
	 * point at newly allocated space are kept in memory (block_status and
	 * read see them at once) and reach the file only in flush(), after the
	 * data is durable. Returns 0 or -errno (logged); on error the layer
	 * still reads and flushes consistently (ENOSPC leaves earlier writes). */
	int (*write)(struct vd_image *img, const void *buf, size_t len, uint64_t off);

	/* Makes every write that returned before the call durable, in order:
	 * fdatasync the data, write the pending table entries, fdatasync again.
	 * A crash at any moment leaves a file that opens cleanly with every
	 * flushed write (and possibly leaked space). Thread-safe. */
	int (*flush)(struct vd_image *img);

	/* Creates an empty delta at path, whose parent is parent, in parent's
	 * format; never replaces an existing file (-EEXIST). The parent hint is
	 * written relative to path's directory. Returns 0 or -errno (logged). */
	int (*create_child)(struct vd_image *parent, const char *path);

	/* Adds format-specific members (createType, extents, grain size, ...) to
	 * the JSON object the caller has open. May be NULL. */
	void (*describe)(struct vd_image *img, struct vd_json *j);

	/* Optional: makes [off, off+len) (whole cow_units; whole alloc_units
	 * when alloc_unit is a multiple of cow_unit) read as zeros in this
	 * layer without storing data (VMDK zeroed grains, VHDX ZERO blocks).
	 * NULL, or -ENOTSUP (not logged) for a range the driver cannot
	 * discard: chain/ writes zeros instead. Same durability rules as
	 * write(). */
	int (*discard)(struct vd_image *img, uint64_t off, uint64_t len);

	/* Reads every metadata table of this layer (no guest data) and reports
	 * each inconsistency that open() tolerates with vd_check_report():
	 * entries past EOF, space used twice or overlapping metadata, redundant
	 * copies that disagree, bad checksums, unclean-shutdown flags, leaked
	 * space. (What open() refuses, it has already logged.) Returns 0 when
	 * the tables could be read, whatever was found, or -errno (logged).
	 * NULL: the format has no check. */
	int (*check)(struct vd_image *img, struct vd_check *chk);

	/* Optional: calls fn for each file this image opened besides img->fd
	 * (extent files), in order; stops at fn's first non-zero return and
	 * returns it. */
	int (*inputs)(struct vd_image *img, vd_input_fn fn, void *ctx);
};

/* Opens path as a single layer: probes every known format and calls the best
 * driver's open(). Files the image names (extents) are confined to the
 * image's own directory tree (see vd_image_open_in). Errors are logged with
 * the path. Returns 0 or -errno (-EFBIG for a virtual size that does not fit
 * off_t). */
int vd_image_open(const char *path, unsigned flags, struct vd_image **out);

/* As vd_image_open(), with the files the image names judged by policy (kept,
 * not owned; NULL = the image's own directory). When referrer is non-NULL
 * the image itself is a file that referrer named (a parent) and is judged
 * too; NULL means the user named it. */
int vd_image_open_in(const char *path, unsigned flags, struct vd_policy *policy,
		     const char *referrer, struct vd_image **out);

/* Closes and frees; NULL is a no-op. */
void vd_image_close(struct vd_image *img);

/* ops->block_status with the argument checks chain/ relies on (a run length
 * in (0, len]); map may be NULL. Returns the state or -errno (logged). */
int vd_image_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			  struct vd_map *map);

/* Reads len bytes at off, a run that block_status reported as VD_DATA with
 * *map: a pread of the mapped file, or the driver's read() when the run is
 * not stored verbatim. map NULL: look the range up first (any state; ZERO
 * and UNALLOC read as zeros; for tests and tools). Returns 0 or -errno
 * (logged). */
int vd_image_read(struct vd_image *img, void *buf, size_t len, uint64_t off,
		  const struct vd_map *map);

/* The write side, for callers outside disk/ (contracts at the ops above).
 * vd_image_write: -EROFS unless img was opened VD_OPEN_RDWR and its driver
 * writes, -EINVAL for a range outside the disk. vd_image_discard: -ENOTSUP
 * (not logged) when the driver has no discard: write zeros instead.
 * vd_image_flush: 0 on an image that is not writable. vd_image_create_child:
 * -ENOTSUP (logged) for a format that cannot make deltas. */
int vd_image_write(struct vd_image *img, const void *buf, size_t len, uint64_t off);
int vd_image_discard(struct vd_image *img, uint64_t off, uint64_t len);
int vd_image_flush(struct vd_image *img);
int vd_image_create_child(struct vd_image *parent, const char *path);

/* Calls fn for every input file of img: its own file first, then those the
 * driver opened (extents). Returns 0 or fn's first non-zero return. */
int vd_image_inputs(struct vd_image *img, vd_input_fn fn, void *ctx);

/* Whether an input file of img (its own file, its extents) changed size or
 * mtime since it was opened: 0 no, 1 yes (why names the file and the
 * change), -errno. Always 0 for an image opened VD_OPEN_RDWR (the delta we
 * write). The tables are cached at open, so a changed input is served
 * stale: the front ends refuse new opens of its views. */
int vd_image_inputs_changed(struct vd_image *img, char *why, size_t n);

/* Appends a parent hint (copies the strings). Returns 0 or -ENOMEM/-E2BIG. */
int vd_image_add_hint(struct vd_image *img, const char *kind, const char *path);

/* Formats an id as lowercase hex: 8 digits for a 4-byte CID, canonical
 * 8-4-4-4-12 for a 16-byte UUID. buf must hold 37 bytes. */
const char *vd_id_format(const struct vd_id *id, char buf[37]);

/* Formats vdmount recognises but does not mount, for --help (", "-joined,
 * static). A format whose driver is registered is not listed. */
const char *vd_foreign_list(void);

/* The registered drivers, NULL-terminated. */
extern const struct vd_format_ops *const vd_formats[];

/* Replaces the list vd_image_open() probes (NULL restores vd_formats).
 * A test seam for fake drivers; not thread-safe against concurrent opens. */
void vd_formats_set(const struct vd_format_ops *const *list);

#endif
