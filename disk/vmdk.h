/* VMDK driver internals shared by its files (not a public API).
 *
 * One vd_image = one VMDK link: a descriptor (separate text file, or embedded
 * in a KDMV sparse file) and its extents in virtual-disk order. Each extent
 * has its own backend (flat, hosted sparse, stream, COWD, seSparse, zero).
 * vmdk.c maps a virtual offset to (extent, offset inside it) and calls the
 * extent's backend; backends only see extent-relative byte offsets. */
#ifndef VD_VMDK_H
#define VD_VMDK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "disk/disk.h"
#include "disk/tcache.h"

enum vmdk_access { VMDK_ACCESS_RW, VMDK_ACCESS_RDONLY, VMDK_ACCESS_NOACCESS };

/* Extent types as written in the descriptor. */
enum vmdk_extent_type {
	VMDK_EXT_FLAT,	     /* FLAT */
	VMDK_EXT_SPARSE,     /* SPARSE: hosted KDMV (monolithic, split, or stream) */
	VMDK_EXT_ZERO,	     /* ZERO: no file */
	VMDK_EXT_VMFS,	     /* VMFS: flat file on ESXi */
	VMDK_EXT_VMFSSPARSE, /* VMFSSPARSE: COWD */
	VMDK_EXT_SESPARSE,   /* SESPARSE */
	VMDK_EXT_VMFSRDM,    /* refused */
	VMDK_EXT_VMFSRAW,    /* refused */
};

struct vmdk_extent;

/* Per-extent backend. Offsets and lengths are bytes relative to the extent's
 * start; the caller never crosses the extent's end. */
struct vmdk_extent_ops {
	const char *name;
	/* Parses the extent file (e->fd is open, e->path, e->sectors set). Sets
	 * e->grain_bytes. Logs one line naming e->path and the field on error. */
	int (*open)(struct vmdk_extent *e);
	void (*close)(struct vmdk_extent *e);
	/* As vd_format_ops.block_status, for this extent only: *map gets the
	 * file position of a DATA run (fd -1 when not stored verbatim). */
	int (*block_status)(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum,
			    struct vd_map *map);
	/* Produces a DATA run that is not stored verbatim (stream grains).
	 * NULL for backends whose block_status always maps. */
	int (*read)(struct vmdk_extent *e, void *buf, size_t len, uint64_t off);
	/* Optional extra JSON members for this extent. */
	void (*describe)(struct vmdk_extent *e, struct vd_json *j);
	/* Optional metadata check (vd_format_ops.check) of this extent's file. */
	int (*check)(struct vmdk_extent *e, struct vd_check *chk);
	/* The write side, as vd_format_ops (extent-relative); NULL for
	 * backends that cannot write. Only set up on an extent opened with
	 * e->writable. */
	int (*write)(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off);
	int (*discard)(struct vmdk_extent *e, uint64_t off, uint64_t len);
	int (*flush)(struct vmdk_extent *e);
};

struct vmdk_extent {
	const struct vmdk_extent_ops *ops;
	enum vmdk_extent_type type;
	enum vmdk_access access;
	uint64_t start;		  /* byte offset of the extent in the virtual disk */
	uint64_t sectors;	  /* SECTORS from the descriptor line */
	uint64_t flat_offset;	  /* FLAT/VMFS: byte offset of the data in the file */
	char *name;		  /* file name as written in the descriptor (NULL for ZERO) */
	char *path;		  /* resolved path */
	int fd;			  /* -1 for ZERO */
	bool own_fd;		  /* false when fd is the image's own (monolithic sparse) */
	uint64_t file_size;	  /* at open; a writable extent raises it as it grows (atomic) */
	bool writable;		  /* open() must set up the write side (VD_OPEN_RDWR) */
	struct vd_file_info file; /* of the extent's own file (chain.json) */
	uint64_t grain_bytes;	  /* allocation unit of this extent (0 for flat/zero) */
	const char *image_path;	  /* the vd_image path, for messages */
	void *priv;		  /* backend state */
	/* Grain-table extents opened read-only: one bit per GD entry whose
	 * table was found all zero (qemu preallocates them), so the next
	 * lookup there needs no cache at all (vmdk_grains.c). Allocated on the
	 * first such table, never cleared; atomic; freed by vmdk_gd_destroy(). */
	uint64_t *zero_gts;
	uint64_t n_gts;	   /* GD entries (set by vmdk_gd_init) */
	int holes_scanned; /* the tables in holes of the file are marked in zero_gts; atomic */
};

extern const struct vmdk_extent_ops vmdk_flat_ops;
extern const struct vmdk_extent_ops vmdk_zero_ops;
extern const struct vmdk_extent_ops vmdk_sparse_ops;
extern const struct vmdk_extent_ops vmdk_stream_ops;
extern const struct vmdk_extent_ops vmdk_cowd_ops;
extern const struct vmdk_extent_ops vmdk_sesparse_ops;

/* KDMV (hosted sparse) header, decoded. Shared by the sparse and stream backends. */
#define VMDK_KDMV_MAGIC 0x564d444bu /* "KDMV" read as LE u32 */
#define VMDK_GD_AT_END 0xffffffffffffffffull
#define VMDK_FLAG_NL_TEST 0x1u
#define VMDK_FLAG_RGD 0x2u
#define VMDK_FLAG_ZERO_GTE 0x4u
#define VMDK_FLAG_COMPRESSED 0x10000u
#define VMDK_FLAG_MARKERS 0x20000u

struct vmdk_kdmv_header {
	uint32_t version;
	uint32_t flags;
	uint64_t capacity;		 /* sectors */
	uint64_t grain_size;		 /* sectors */
	uint64_t desc_offset, desc_size; /* sectors */
	uint32_t num_gtes_per_gt;
	uint64_t rgd_offset, gd_offset; /* sectors */
	uint64_t overhead;		/* sectors */
	uint8_t unclean_shutdown;
	uint16_t compress_algorithm;
};

/* Decodes and validates the fixed fields of a 512-byte KDMV header (magic,
 * version <= 3, known incompatible flags, newline test, grain size power of 2
 * in [1, 2048] (allowing 1..), 512 GTEs per GT, capacity in (0, 2^32]).
 * No I/O. Returns 0 or -EINVAL after logging "<path>: <field> ..." (path is
 * only used for the message). */
int vmdk_kdmv_decode(const uint8_t buf[512], const char *path, struct vmdk_kdmv_header *out);

/* Encodes h into a 512-byte KDMV header (magic and newline-test bytes
 * included, padding zeroed): the inverse of vmdk_kdmv_decode(). No checks,
 * no I/O. */
void vmdk_kdmv_encode(const struct vmdk_kdmv_header *h, uint8_t buf[512]);

/* --- vmdk_write.c: creating a delta ------------------------------------ */

/* The header of the delta create_child() makes for capacity sectors
 * (version 2, flags 0x7, 64 KiB grains, descriptor at 1 for 20 sectors,
 * RGD and its GTs, then GD and its GTs, overHead rounded to a grain). */
void vmdk_delta_header(uint64_t capacity, struct vmdk_kdmv_header *h);

/* Fills buf (n_gt * 4 bytes) with a GD at sector gd_offset whose n_gt GTs
 * follow it, 4 sectors each, right after the GD's own sectors. */
void vmdk_gd_encode(uint64_t gd_offset, uint64_t n_gt, uint8_t *buf);

/* vd_format_ops.create_child. */
int vmdk_create_child(struct vd_image *parent, const char *path);

/* --- vmdk_alloc.c: the write side of a hosted sparse extent --------------- */

struct vmdk_rw;

/* Sets up writing into hosted sparse extent e, whose header is h and whose
 * GT cache gts (native-order tables by GT sector) is still empty: checks
 * that the file is exactly a delta create_child() made (layout, both GDs,
 * closed cleanly), pins gts. Returns 0 or -errno (logged, naming the file
 * and the problem). */
int vmdk_rw_open(struct vmdk_extent *e, const struct vmdk_kdmv_header *h, struct vd_tcache *gts,
		 struct vmdk_rw **out);

/* vd_format_ops.write / discard / flush for the extent (contract in
 * disk/disk.h): write() takes any byte range of allocated grains and whole
 * grains otherwise (the last, partial grain up to the extent's end);
 * discard() whole grains. Thread-safe. */
int vmdk_rw_write(struct vmdk_rw *w, const void *buf, size_t len, uint64_t off);
int vmdk_rw_discard(struct vmdk_rw *w, uint64_t off, uint64_t len);
int vmdk_rw_flush(struct vmdk_rw *w);

/* Clean close: flushes, clears the unclean-shutdown flag (left set when
 * anything failed), frees w. NULL is a no-op. */
void vmdk_rw_close(struct vmdk_rw *w);

/* --- vmdk_grains.c: what the grain-table backends (hosted sparse, COWD,
 * seSparse) share ---------------------------------------------------------- */

/* Decodes grain table entry ent of grain g: VD_DATA with *phys (file offset
 * of the grain), VD_ZERO, VD_UNALLOC, or -EIO for a corrupt entry (logged
 * only when log is set). */
typedef int (*vmdk_gte_fn)(struct vmdk_extent *e, uint64_t g, uint64_t ent, bool log,
			   uint64_t *phys);

#define VMDK_NO_GT UINT64_MAX

/* How a backend's grain directory and tables look. */
struct vmdk_gt_format {
	unsigned width;	 /* bytes per GT entry: 4 or 8 (native order once loaded) */
	unsigned per_gt; /* entries per table */
	/* Sets *gt to the cache index of the table that maps grain g, or
	 * VMDK_NO_GT when the GD has none (the whole table's range is
	 * unallocated); then *absent gets the number of tables from g's that
	 * the GD is known to lack (>= 1), so a sparse GD is skipped a page at
	 * a time. Returns 0 or -errno (logged). */
	int (*gt_of)(struct vmdk_extent *e, uint64_t g, uint64_t *gt, uint64_t *absent);
	vmdk_gte_fn decode;
	/* File offset of table gt (a gt_of() answer); NULL when tables are not
	 * plain runs of the file. With it, tables that lie in a hole of the
	 * file (qemu-img leaves the preallocated tables of a new extent
	 * unwritten) are known to be all zero without reading them. */
	uint64_t (*gt_pos)(const struct vmdk_extent *e, uint64_t gt);
};

/* gt_pos() of formats whose GD entries are the tables' sector offsets. */
uint64_t vmdk_gt_pos_sectors(const struct vmdk_extent *e, uint64_t gt);

/* block_status for a GD -> GT extent whose tables sit in the cache gts: the
 * run from off (< off + len) whose grains share a state and, for DATA, follow
 * each other in the file (*map). Missing tables are skipped a GD page at a
 * time, and one call looks at most VMDK_GT_STEPS tables (the run it reports
 * may then stop short of a longer one), so its cost is bounded whatever the
 * length asked and the geometry claimed. Returns the state or -errno
 * (logged). */
#define VMDK_GT_STEPS 64
int vmdk_gt_block_status(struct vmdk_extent *e, const struct vmdk_gt_format *f,
			 struct vd_tcache *gts, uint64_t grain_bytes, uint64_t off, uint64_t len,
			 uint64_t *pnum, struct vd_map *map);

/* A grain directory, read lazily in pages through the metadata cache so that
 * memory follows what is read, not the capacity a header claims. A small GD
 * (up to VMDK_GD_EAGER_BYTES) is also checked whole at open, so a wild entry
 * fails the mount rather than a later read; a smaller one still (up to
 * VMDK_GD_WHOLE_BYTES on disk, a disk of up to 128 GiB with 64 KiB grains)
 * is kept whole, so a lookup costs no cache lookup: on a chain, every layer
 * above the one holding a grain looks it up on every read. */
#define VMDK_GD_EAGER_BYTES (1u << 20)
#define VMDK_GD_WHOLE_BYTES (16u << 10)
struct vmdk_gd {
	struct vmdk_extent *e;
	uint64_t off;	  /* file offset of entry 0 */
	uint64_t n;	  /* entries */
	unsigned width;	  /* 4 or 8 bytes, little-endian on disk */
	const char *what; /* for messages: "grain directory" */
	/* Checks non-zero entry i: 0, or -EINVAL after logging. */
	int (*check)(struct vmdk_extent *e, uint64_t i, uint64_t gde);
	struct vd_tcache pages; /* pages of native u64 entries */
	void *whole;		/* NULL, or all n entries, width bytes each, native order */
};

/* Sets up gd (fields e..check filled by the caller) and checks a small GD
 * whole. Returns 0, -EINVAL (logged) or -errno. */
int vmdk_gd_init(struct vmdk_gd *gd);

/* Entry i (< gd->n) in *gde: 0 or a checked value. When it is 0 and absent
 * is not NULL, *absent gets the number of zero entries from i to the end of
 * its page (>= 1). Returns 0, -EIO for an entry that failed its check
 * (logged when its page was loaded), or -errno. */
int vmdk_gd_get(struct vmdk_gd *gd, uint64_t i, uint64_t *gde, uint64_t *absent);

/* A gt_of() over gd: the GT of GD entry i is the entry masked by mask, none
 * for 0 (then *absent as vmdk_gd_get() sets it). */
int vmdk_gd_gt(struct vmdk_gd *gd, uint64_t i, uint64_t mask, uint64_t *gt, uint64_t *absent);

void vmdk_gd_destroy(struct vmdk_gd *gd);

/* Reads one grain table of n entries of width bytes (4 or 8, little-endian)
 * at file offset off into table, converted to native order in place. what and
 * idx name it in the error message. Returns 0, VD_TCACHE_ZERO when every entry
 * is zero (a table cache loader's contract), or -errno (logged). */
int vmdk_gt_read(struct vmdk_extent *e, uint64_t off, unsigned n, unsigned width, void *table,
		 const char *what, uint64_t idx);

/* check() for a GD -> GT extent: every grain table entry of the extent
 * decodes to a grain inside the file, and no two grains share file space
 * (reported through chk). Returns 0 or -errno of a failed read. */
int vmdk_gt_check(struct vmdk_extent *e, const struct vmdk_gt_format *f, struct vd_tcache *gts,
		  uint64_t grain_bytes, struct vd_check *chk);

/* The short form of a grain table whose entries 0 .. count-1 are base,
 * base + step, base + 2 * step, ... and whose other entries are 0, as a disk
 * written front to back has: the table cache then holds 16 bytes for it
 * instead of the table (VD_TCACHE_COMPACT). */
struct vmdk_gt_run {
	uint64_t base;
	uint32_t count;
	uint32_t step;
};
_Static_assert(sizeof(struct vmdk_gt_run) <= VD_TCACHE_COMPACT_BYTES, "GT run too large");

/* A GT loader's last step: when the n entries (width bytes, native order)
 * of table form such a run with this step (> 0), rewrites table as a struct
 * vmdk_gt_run and returns VD_TCACHE_COMPACT; otherwise returns 0. */
int vmdk_gt_compact(void *table, unsigned n, unsigned width, uint64_t step);

/* Reads [off, off+len) of extent e through its backend: block_status, then a
 * pread of the mapped file or the backend's read(). Non-DATA runs read as
 * zeros. For tests and tools; chain/ reads through vd_image_read(). */
int vmdk_extent_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off);

/* A text descriptor beside the file at path that lists it as an extent (by
 * device and inode), for "open X instead" messages: malloc'd path, and
 * *ext_no its 1-based extent number; NULL when none is found. Logs nothing;
 * bounded work (vmdk_owner.c). */
char *vmdk_extent_owner(const char *path, unsigned *ext_no);

#endif
