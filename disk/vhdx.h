/* VHDX (Hyper-V v2) driver internals, shared by vhdx_meta.c (pure codecs),
 * vhdx_log.c (log validation and in-memory replay), vhdx.c (reader), the unit
 * tests and the mkvhdx generator. Not a public API: [MS-VHDX] v8.0 is the
 * reference for every field named here (section numbers in the comments).
 *
 * GUIDs are kept as their 16 on-disk bytes (Microsoft layout: u32, u16, u16
 * little-endian, then 8 bytes) and turned into canonical (text-order) bytes
 * only for vd_id, so vd_id_format() prints them as Windows does. */
#ifndef VD_VHDX_H
#define VD_VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "disk/disk.h"
#include "disk/tcache.h"

#define VHDX_KiB 1024ull
#define VHDX_MiB (1024ull * 1024)

/* 2.2: the header section (1 MiB) holds five 64 KiB items. */
#define VHDX_IDENT_OFF 0
#define VHDX_HEADER1_OFF (64 * VHDX_KiB)
#define VHDX_HEADER2_OFF (128 * VHDX_KiB)
#define VHDX_RT1_OFF (192 * VHDX_KiB)
#define VHDX_RT2_OFF (256 * VHDX_KiB)
#define VHDX_HEADER_SECTION VHDX_MiB
#define VHDX_HEADER_SIZE 4096u		    /* 2.2.2: 4 KiB used of each 64 KiB */
#define VHDX_RT_SIZE (64u * 1024)	    /* 2.2.3 */
#define VHDX_MT_SIZE (64u * 1024)	    /* 2.6.1: metadata table */
#define VHDX_MAX_ENTRIES 2047u		    /* 2.2.3.1, 2.6.1.1 */
#define VHDX_MAX_ITEM VHDX_MiB		    /* 2.6.1.2: metadata item length */
#define VHDX_MAX_SIZE (64ull << 40)	    /* 2.6.2.2: 64 TiB */
#define VHDX_MIN_BLOCK VHDX_MiB		    /* 2.6.2.1 */
#define VHDX_MAX_BLOCK (256u * 1024 * 1024) /* 2.6.2.1 */
#define VHDX_SB_SIZE VHDX_MiB		    /* 2.4: a sector bitmap block */
#define VHDX_SB_SECTORS (1ull << 23)	    /* 2.4: sectors one SB block covers */
#define VHDX_LOG_SECTOR 4096u		    /* 2.3.1 */
#define VHDX_MAX_LOG (64u * 1024 * 1024)    /* our cap on LogLength (Hyper-V: 1 MiB) */
#define VHDX_MAX_OFFSET (1ull << 50)	    /* no structure lies further: sums cannot overflow */
#define VHDX_CREATOR_SIZE 512u		    /* 2.2.1 */
#define VHDX_GUID_TEXT 39		    /* "{8-4-4-4-12}" and a NUL */
#define VHDX_META_ITEMS_END 65576u	    /* vhdx_metadata_encode(): where the locator goes */

/* 2.2.2 header field offsets. */
#define VHDX_HDR_SIG 0
#define VHDX_HDR_CHECKSUM 4
#define VHDX_HDR_SEQ 8
#define VHDX_HDR_FILE_WRITE 16
#define VHDX_HDR_DATA_WRITE 32
#define VHDX_HDR_LOG_GUID 48
#define VHDX_HDR_LOG_VERSION 64
#define VHDX_HDR_VERSION 66
#define VHDX_HDR_LOG_LENGTH 68
#define VHDX_HDR_LOG_OFFSET 72

/* 2.2.3 region table. */
#define VHDX_RT_SIG 0
#define VHDX_RT_CHECKSUM 4
#define VHDX_RT_COUNT 8
#define VHDX_RT_ENTRIES 16
#define VHDX_RT_ENTRY_SIZE 32

/* 2.6.1 metadata table. */
#define VHDX_MT_COUNT 10
#define VHDX_MT_ENTRIES 32
#define VHDX_MT_ENTRY_SIZE 32
#define VHDX_MT_IS_USER 0x1u
#define VHDX_MT_IS_VIRTUAL_DISK 0x2u
#define VHDX_MT_IS_REQUIRED 0x4u

/* 2.6.2.1 file parameter flags. */
#define VHDX_PARAM_LEAVE_ALLOCATED 0x1u
#define VHDX_PARAM_HAS_PARENT 0x2u

/* 2.5.1 BAT entries. */
#define VHDX_BAT_STATE_MASK 0x7u
#define VHDX_BAT_OFFSET_MASK 0xFFFFFFFFFFF00000ull
#define VHDX_BAT_RESERVED_MASK 0xFFFF8ull
enum vhdx_payload_state {
	VHDX_PAYLOAD_NOT_PRESENT = 0,
	VHDX_PAYLOAD_UNDEFINED = 1,
	VHDX_PAYLOAD_ZERO = 2,
	VHDX_PAYLOAD_UNMAPPED = 3,
	VHDX_PAYLOAD_UNMAPPED_V095 = 5, /* the v0.95 draft's value; QEMU accepts it too */
	VHDX_PAYLOAD_FULLY_PRESENT = 6,
	VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
};
#define VHDX_SB_NOT_PRESENT 0u
#define VHDX_SB_PRESENT 6u

/* 2.3.1 log entries. */
#define VHDX_LOG_HDR_SIZE 64u
#define VHDX_LOG_DESC_SIZE 32u
#define VHDX_LOG_ENTRY_SIG 0
#define VHDX_LOG_ENTRY_CHECKSUM 4
#define VHDX_LOG_ENTRY_LENGTH 8
#define VHDX_LOG_ENTRY_TAIL 12
#define VHDX_LOG_ENTRY_SEQ 16
#define VHDX_LOG_ENTRY_DESCS 24
#define VHDX_LOG_ENTRY_GUID 32
#define VHDX_LOG_ENTRY_FLUSHED 48
#define VHDX_LOG_ENTRY_LAST 56

/* Known GUIDs, as their on-disk bytes (vhdx_meta.c). */
extern const uint8_t vhdx_guid_bat[16];		 /* 2.2.3.2 */
extern const uint8_t vhdx_guid_metadata[16];	 /* 2.2.3.2 */
extern const uint8_t vhdx_guid_file_params[16];	 /* 2.6.2.1 */
extern const uint8_t vhdx_guid_disk_size[16];	 /* 2.6.2.2 */
extern const uint8_t vhdx_guid_page83[16];	 /* 2.6.2.3 */
extern const uint8_t vhdx_guid_logical[16];	 /* 2.6.2.4 */
extern const uint8_t vhdx_guid_physical[16];	 /* 2.6.2.5 */
extern const uint8_t vhdx_guid_locator[16];	 /* 2.6.2.6 */
extern const uint8_t vhdx_guid_locator_vhdx[16]; /* 2.6.2.6.3 */

struct vhdx_header {
	uint32_t checksum;
	uint64_t seq;
	uint8_t file_write[16], data_write[16], log_guid[16];
	uint16_t log_version, version;
	uint32_t log_length;
	uint64_t log_offset;
};

struct vhdx_region {
	uint8_t guid[16];
	uint64_t offset;
	uint32_t length;
	bool required;
};

struct vhdx_regions {
	struct vhdx_region bat, meta; /* the two known regions (both required to exist) */
	uint32_t count;		      /* entries in the table */
};

/* The metadata items vdmount understands, decoded (2.6.2). */
struct vhdx_params {
	uint32_t block_size;
	bool leave_allocated, has_parent;
	uint64_t size;
	uint8_t page83[16];
	uint32_t logical, physical;
	uint32_t loc_offset, loc_length; /* parent locator item, 0 if absent */
};

/* Key/value pairs of a VHDX parent locator (2.6.2.6.3), UTF-8, NULL if absent. */
struct vhdx_locator {
	char *linkage, *linkage2;
	char *relative_path, *volume_path, *absolute_win32_path;
	unsigned n_keys;
};

/* Geometry derived from the parameters (2.4, 2.5). */
struct vhdx_geom {
	uint64_t chunk_ratio; /* payload blocks per sector bitmap block */
	uint64_t data_blocks; /* ceil(size / block_size) */
	uint64_t sb_blocks;   /* ceil(data_blocks / chunk_ratio) */
	uint64_t bat_entries; /* entries the BAT must hold */
};

/* One log entry header (2.3.1.1). */
struct vhdx_log_entry {
	uint32_t checksum, length, tail, n_desc;
	uint64_t seq;
	uint8_t log_guid[16];
	uint64_t flushed, last;
};

/* The in-memory overlay the log replay builds: sorted, non-overlapping
 * extents of the file, each either 4 KiB-multiple data or zeros. Immutable
 * after open, so readers need no lock. */
struct vhdx_extent {
	uint64_t off, len;
	const uint8_t *data; /* len bytes, or NULL for zeros */
};

struct vhdx_overlay {
	struct vhdx_extent *ext;
	size_t n;
	uint8_t *store;	   /* owns every data pointer */
	uint64_t file_end; /* bytes [file_size, file_end) read as zeros (LastFileOffset) */
};

/* What the replay found, for describe(). */
struct vhdx_log_info {
	bool dirty;	    /* LogGuid was non-zero */
	bool replayed;	    /* an active sequence was applied in memory */
	bool ignored;	    /* a corrupt log was skipped under VD_OPEN_FORCE */
	uint32_t entries;   /* entries in the active sequence */
	uint32_t data_desc; /* data descriptors applied */
	uint32_t zero_desc; /* zero descriptors applied */
	uint64_t head_seq, tail_seq;
};

struct vhdx_writer;

struct vhdx_state {
	struct vhdx_header hdr;
	int hdr_index; /* 1 or 2: the current header */
	struct vhdx_regions rt;
	int rt_index; /* 1 or 2: the region table copy used */
	struct vhdx_params par;
	struct vhdx_geom geom;
	struct vhdx_locator loc;
	struct vhdx_overlay ov;
	struct vhdx_log_info log;
	char creator[128];   /* file type identifier's creator, UTF-8 (for describe) */
	uint64_t vfile_size; /* file size after replay (>= img->file_size) */
	uint32_t sectors_per_block;
	uint64_t blocks_present, blocks_partial, blocks_zero; /* counted at open */
	uint64_t *sb_off; /* differencing: file offset of each chunk's bitmap, 0 = none
			     (a writable image sets entries as it allocates: atomic) */

	/* BAT pages (VHDX_BAT_PAGE entries, native u64) and sector bitmap slices
	 * (VHDX_SB_SLICE bytes of a chunk's 1 MiB bitmap), loaded lazily through
	 * the overlay. The caches have their own locks; nothing else changes
	 * after open. */
	struct vd_tcache bat;
	struct vd_tcache sb;
	struct vd_image *img;  /* back pointer for the loaders */
	struct vhdx_writer *w; /* vhdx_write.c's state; NULL unless VD_OPEN_RDWR */
};

#define VHDX_BAT_PAGE 8192u	   /* entries per cached BAT page (64 KiB) */
#define VHDX_SB_SLICE (64u * 1024) /* bytes per cached sector bitmap slice */

/* --- vhdx_meta.c: pure codecs and checks (no I/O, no logging) ----------- */

/* CRC-32C (Castagnoli, reflected 0x82F63B78, init and final xor ~0) of buf,
 * continuing from crc (0 to start). 2 says every VHDX checksum is this CRC. */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);

/* CRC-32C of buf[0..len) with the 4 bytes at csum_off taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off);

/* Canonical (text-order) bytes of an on-disk GUID, as a vd_id. */
void vhdx_guid_to_id(const uint8_t raw[16], struct vd_id *out);

/* Parses "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (braces optional, any case)
 * into canonical bytes. Returns 0 or -EINVAL. */
int vhdx_guid_parse(const char *s, struct vd_id *out);

/* True when the 16 bytes are all zero. */
bool vhdx_guid_is_zero(const uint8_t g[16]);

/* Decodes and checks a 4 KiB header (2.2.2): signature, CRC-32C, Version 1,
 * log fields (LogVersion 0 when LogGuid is set, 1 MiB alignment, log inside
 * the file after the header section). Returns 0 or -EINVAL with *why. */
int vhdx_header_decode(const uint8_t *buf, uint64_t file_size, struct vhdx_header *out,
		       const char **why);

/* Encodes h into buf[4096] with a fresh checksum (h->checksum ignored). */
void vhdx_header_encode(const struct vhdx_header *h, uint8_t *buf);

/* Decodes and checks a 64 KiB region table (2.2.3): signature, CRC-32C,
 * EntryCount, known regions 1 MiB-aligned and not in the header section, no
 * duplicate, unknown required regions refused, BAT and metadata present.
 * Returns 0 or -EINVAL (-ENOTSUP for an unknown required region) with *why. */
int vhdx_region_table_decode(const uint8_t *buf, struct vhdx_regions *out, const char **why);

/* Decodes the metadata table (2.6.1) of a region of region_len bytes whose
 * first 64 KiB are buf, and records where each known item lies in *out
 * (offsets relative to the region). Checks signature, EntryCount, items
 * inside the region and not overlapping the table or each other, unknown
 * required items (-ENOTSUP), and that every required item is present.
 * Returns 0 or -EINVAL/-ENOTSUP with *why. */
struct vhdx_item_map {
	uint32_t off[6], len[6]; /* file params, size, page83, logical, physical, locator */
	bool present[6];
};
enum {
	VHDX_IT_PARAMS,
	VHDX_IT_SIZE,
	VHDX_IT_PAGE83,
	VHDX_IT_LOGICAL,
	VHDX_IT_PHYSICAL,
	VHDX_IT_LOCATOR
};
int vhdx_metadata_table_decode(const uint8_t *buf, uint32_t region_len, struct vhdx_item_map *out,
			       const char **why);

/* Decodes the known items (items[k] holds m->len[k] bytes of item k) and
 * checks them (2.6.2.1-2.6.2.5): block size a power of 2 in [1, 256] MiB,
 * sectors 512/4096, size non-zero, a multiple of the logical sector and
 * <= 64 TiB, a locator when HasParent. Returns 0 or -EINVAL with *why. */
int vhdx_params_decode(const uint8_t *const items[6], const struct vhdx_item_map *m,
		       struct vhdx_params *out, const char **why);

/* Decodes a VHDX parent locator item (2.6.2.6): type GUID, key/value
 * entries inside the item, UTF-16LE text, unique keys, parent_linkage
 * present and a GUID, at least one path. Unknown keys are skipped.
 * Returns 0, -EINVAL with *why, or -ENOMEM. Free with vhdx_locator_free. */
int vhdx_locator_decode(const uint8_t *item, uint32_t len, struct vhdx_locator *out,
			const char **why);
void vhdx_locator_free(struct vhdx_locator *l);

/* Chunk ratio and table sizes (2.4, 2.5). Returns 0 or -EINVAL with *why
 * (a BAT of more entries than the region holds). */
int vhdx_geom_compute(const struct vhdx_params *p, uint32_t bat_region_len, struct vhdx_geom *out,
		      const char **why);

/* BAT index of payload block b, and of the sector bitmap of chunk c (2.5). */
static inline uint64_t vhdx_bat_payload_index(const struct vhdx_geom *g, uint64_t b)
{
	return b + b / g->chunk_ratio;
}

static inline uint64_t vhdx_bat_sb_index(const struct vhdx_geom *g, uint64_t c)
{
	return c * (g->chunk_ratio + 1) + g->chunk_ratio;
}

/* Checks one BAT entry (2.5.1): known state for its kind (payload or sector
 * bitmap), reserved bits clear, an allocated block past the header section
 * and inside a file of file_size bytes (need: bytes of it that must exist).
 * Returns 0 or -EINVAL with *why. */
int vhdx_bat_entry_check(uint64_t e, bool payload, bool has_parent, uint64_t need,
			 uint64_t file_size, const char **why);

/* State (VD_DATA: bit set, VD_UNALLOC: clear) of sector k of an LSB-first
 * sector bitmap (2.4) and the number of sectors from k (< limit) sharing it. */
int vhdx_bitmap_run(const uint8_t *bm, uint64_t k, uint64_t limit, uint64_t *count);

/* Encoders, the inverse of the decoders above (pure; for the writer). */

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" of an on-disk GUID, lower case
 * with braces, as 2.6.2.6.3 writes parent_linkage. */
void vhdx_guid_format(const uint8_t raw[16], char out[VHDX_GUID_TEXT]);

/* The file type identifier (2.2.1) into buf[VHDX_HEADER_SIZE]: "vhdxfile"
 * and creator as UTF-16LE. Returns 0, or -EINVAL/-E2BIG for a creator that
 * is not UTF-8 or longer than the field. */
int vhdx_ident_encode(const char *creator, uint8_t *buf);

/* A region table (2.2.3) naming rt->bat and rt->meta into buf[VHDX_RT_SIZE],
 * with its checksum. */
void vhdx_region_table_encode(const struct vhdx_regions *rt, uint8_t *buf);

/* A VHDX parent locator item (2.6.2.6) holding the non-NULL strings of l,
 * into buf (cap bytes). Returns its length, -EINVAL (a value that is not
 * UTF-8, empty or over 64 KiB of UTF-16) or -E2BIG. */
long vhdx_locator_encode(const struct vhdx_locator *l, uint8_t *buf, size_t cap);

/* The start of a metadata region (2.6): the table and the items of p (the
 * locator item loc of loc_len bytes when p->has_parent) laid out as Hyper-V
 * lays them out, items from 64 KiB on, into buf (cap bytes: at least
 * VHDX_META_ITEMS_END + loc_len). Returns 0 or -E2BIG. */
int vhdx_metadata_encode(const struct vhdx_params *p, const uint8_t *loc, uint32_t loc_len,
			 uint8_t *buf, size_t cap);

/* --- vhdx_log.c --------------------------------------------------------- */

/* Decodes and validates one log entry of len bytes at entry (2.3.1): header
 * signature, EntryLength (a multiple of 4 KiB, <= len), Tail (4 KiB
 * multiple, < log_len), SequenceNumber > 0, LogGuid == log_guid, CRC-32C
 * over EntryLength, every descriptor's signature, alignment and sequence
 * number, and every data sector's signature and split sequence number.
 * Pure. Returns 0 or -EINVAL with *why. */
int vhdx_log_entry_check(const uint8_t *entry, size_t len, uint32_t log_len,
			 const uint8_t log_guid[16], struct vhdx_log_entry *out, const char **why);

/* Reads the log of img (header h), finds the active sequence (2.3.3) and
 * builds *ov from it; info says what was found. The file is only read.
 * Returns 0, or -EINVAL (corrupt log: no valid sequence, truncated file),
 * -ENOTSUP (log over VHDX_MAX_LOG), -ENOMEM or -errno with the reason in
 * why[why_len]; logs nothing (the caller decides: error, or a warning under
 * --force). */
int vhdx_log_replay(struct vd_image *img, const struct vhdx_header *h, struct vhdx_overlay *ov,
		    struct vhdx_log_info *info, char *why, size_t why_len);

/* Reads len bytes at file offset off as the file looks after replay: the
 * file itself, zeros in [file_size, ov->file_end), the overlay on top.
 * Returns 0, -EIO for bytes past the replayed end, or -errno. Thread-safe. */
int vhdx_file_read(int fd, uint64_t file_size, const struct vhdx_overlay *ov, void *buf, size_t len,
		   uint64_t off);

/* True when [off, off + len) of the file is not read verbatim: it reaches
 * past file_size or an overlay extent covers part of it. */
bool vhdx_overlay_touches(const struct vhdx_overlay *ov, uint64_t file_size, uint64_t off,
			  uint64_t len);

void vhdx_overlay_free(struct vhdx_overlay *ov);

/* Bytes of a log entry with n data descriptors (2.3.1), and the most data
 * descriptors an entry of at most bytes can hold. */
size_t vhdx_log_entry_size(uint32_t n);
uint32_t vhdx_log_entry_max_desc(uint32_t bytes);

/* Encodes a log entry (2.3.1) into out (vhdx_log_entry_size(h->n_desc)
 * bytes): h's Tail, SequenceNumber, LogGuid, FlushedFileOffset and
 * LastFileOffset, and h->n_desc data descriptors, data[i] (4 KiB) going to
 * file offset off[i]; the checksum is computed. Pure. */
void vhdx_log_entry_encode(const struct vhdx_log_entry *h, const uint64_t *off,
			   const uint8_t *const *data, uint8_t *out);

/* --- vhdx.c ---------------------------------------------------------------- */

/* BAT entry idx (< geom.bat_entries) through the cache. Returns 0 or -errno
 * (logged by the loader). Thread-safe. */
int vhdx_bat_get(struct vhdx_state *st, uint64_t idx, uint64_t *e);

/* --- vhdx_create.c, vhdx_write.c: the write side ------------------------- */

/* A fresh random GUID, never all zero (getrandom). Returns 0 or -errno. */
int vhdx_guid_new(uint8_t g[16]);

/* create_child (disk.h): a differencing VHDX at path over parent. */
int vhdx_create_child(struct vd_image *parent, const char *path);

/* For open() with VD_OPEN_RDWR, after the reader has loaded everything:
 * accepts only an empty differencing file laid out as vhdx_create_child()
 * lays it out, with a clean log (logged refusal: -EROFS), then updates the
 * headers as 2.2.2.1 requires before any other change. Returns 0 or -errno. */
int vhdx_write_open(struct vd_image *img);

/* For close(): flushes, marks the log empty in the headers, frees the
 * writer. Safe when img was not opened for writing. */
void vhdx_write_close(struct vd_image *img);

int vhdx_write(struct vd_image *img, const void *buf, size_t len, uint64_t off);
int vhdx_flush(struct vd_image *img);
int vhdx_discard(struct vd_image *img, uint64_t off, uint64_t len);

/* The current header and its slot (1 or 2), consistent against updates. */
void vhdx_write_header_get(struct vd_image *img, struct vhdx_header *h, int *index);

/* Adds the writer's counters to describe()'s object (nothing when read-only). */
void vhdx_write_describe(struct vd_image *img, struct vd_json *j);

/* Test seams (unit tests only; process-wide, not thread-safe against flushes
 * in progress). vhdx_test_round_cap: the most metadata sectors one log entry
 * may carry (0: as many as half the log holds). vhdx_test_crash_at: the
 * next flush stops, as if the process died, at the given point and returns
 * -EINTR (0: never); the writer then refuses everything but close, and close
 * writes nothing. */
enum vhdx_crash_point {
	VHDX_CRASH_NONE,
	VHDX_CRASH_DATA_SYNCED,	 /* data durable, no log entry yet */
	VHDX_CRASH_ENTRY_TORN,	 /* the first half of the log entry written */
	VHDX_CRASH_ENTRY_SYNCED, /* the entry durable, the header not (yet) updated */
	VHDX_CRASH_HEADER,	 /* the header names the log, nothing applied */
	VHDX_CRASH_APPLY_HALF,	 /* half the sectors applied */
	VHDX_CRASH_APPLIED,	 /* every sector applied and synced, before the next round */
};
extern unsigned vhdx_test_round_cap;
extern enum vhdx_crash_point vhdx_test_crash_at;
extern unsigned vhdx_test_crash_round; /* in which round of that flush (0 and 1: the first) */

#endif
