/* Views and partitions: windows onto the disk as seen from a chain level.
 *
 * A view is (chain, level, start, size): the whole disk at a layer, or one
 * partition of it. Front ends (fs/, the nbdkit plugin, --info/--hash) read
 * views, ask where their data and holes are, and count allocated bytes, all
 * without knowing whether the view is a disk or a partition. A view holds no
 * lock and no buffer: it is a value; a writable front end writes a partition
 * with vd_chain_write(start + off), and asks vd_part_table_touched() whether
 * that write calls for a new scan.
 *
 * Partition discovery reads the disk through the chain (never a driver) and
 * never fails on a bad table: a missing or damaged table gives a table with
 * no partitions and a note saying why; skipped entries give warnings. */
#ifndef VD_CHAIN_PART_H
#define VD_CHAIN_PART_H

#include <stdbool.h>
#include <stdint.h>

#include "chain/chain.h"
#include "disk/part.h"

struct vd_view {
	struct vd_chain *chain;
	unsigned level;
	uint64_t start; /* byte offset in the disk at level */
	uint64_t size;	/* bytes */
};

/* The whole disk as seen from level. */
struct vd_view vd_view_disk(struct vd_chain *c, unsigned level);

/* Reads [off, off+len) of the view; bytes past its end read as zeros.
 * Returns 0 or -errno. Thread-safe. */
int vd_view_read(const struct vd_view *v, void *buf, size_t len, uint64_t off);

/* State of the run at off (< v->size): VD_DATA when a layer at or below the
 * view's level holds it, VD_ZERO when it reads as zeros without any layer
 * holding data (a hole). *pnum gets the run length (<= len). Returns the
 * state or -errno. */
int vd_view_block_status(const struct vd_view *v, uint64_t off, uint64_t len, uint64_t *pnum);

/* lseek(SEEK_DATA / SEEK_HOLE) semantics: the first offset >= off that is
 * data (want_data) or a hole. The end of the view counts as a hole. Returns
 * 0 and *out, -ENXIO when off >= size or (for data) no data follows, or
 * -errno. */
int vd_view_seek(const struct vd_view *v, uint64_t off, bool want_data, uint64_t *out);

/* Bytes of the view that are DATA (for st_blocks), walking the view with at
 * most max_calls block-status calls (each of bounded work: drivers bound
 * one call, see chain.json's usage cap). Returns 0, -E2BIG when the view
 * has more runs than that (then *out is unknown), or -errno. */
int vd_view_allocated(const struct vd_view *v, uint64_t max_calls, uint64_t *out);

enum vd_part_scheme { VD_PART_NONE, VD_PART_MBR, VD_PART_GPT };

struct vd_part {
	unsigned number;      /* as Linux numbers it: MBR 1-4 primaries, 5+ logicals; GPT index+1 */
	uint64_t start, size; /* bytes in the disk */
	bool logical;	      /* MBR: inside the extended partition */
	bool bootable;	      /* MBR: status 0x80 */
	uint8_t mbr_type;     /* MBR scheme */
	struct vd_gpt_entry gpt; /* GPT scheme */
};

/* A byte range of the disk that a scan read. */
struct vd_part_read {
	uint64_t off, len;
};

struct vd_part_table {
	enum vd_part_scheme scheme;
	uint32_t sector_size; /* 512 or 4096 */
	bool hybrid;	      /* GPT with a hybrid MBR (0xEE entry plus others) */
	bool backup_used;     /* GPT primary header damaged: the backup was used */
	uint8_t disk_guid[16];
	uint32_t disk_sig;
	struct vd_part *parts; /* [n], ordered by number */
	unsigned n;
	char *note;	 /* why there are no partitions (NULL when there are, or no table) */
	char **warnings; /* skipped entries, backup used, hybrid MBR */
	unsigned n_warnings;
	struct vd_part_read *reads; /* [n_reads]: every byte range the scan read */
	unsigned n_reads;
};

/* Reads the partition table of the disk as seen from level. Returns 0 and a
 * table (possibly with no partitions and a note), or -ENOMEM / -errno of a
 * failed read. Warnings are logged (vd_log_warn) and kept in the table. */
int vd_part_scan(struct vd_chain *c, unsigned level, struct vd_part_table **out);

void vd_part_table_free(struct vd_part_table *t);

/* Whether a write to [off, off+len) of the disk can change what
 * vd_part_scan() finds, so that a writable front end must scan again: it
 * overlaps the MBR (bytes 0-511), a GPT header's place (LBA 1 of 512- and of
 * 4096-byte sectors), or any range the scan that made t read (the GPT header
 * and entry array in use, each EBR, the backup header when it was looked
 * at). A new table is always announced by one of these: sector 0 and LBA 1
 * are watched even without a table, and once they name new places (an entry
 * array, an EBR) the scan after that write reads, and so watches, those too.
 * t may be NULL (no scan yet): the fixed places only. Pure. */
bool vd_part_table_touched(const struct vd_part_table *t, uint64_t off, uint64_t len);

/* Whether a and b show the same thing: scheme, sector size, disk id, flags,
 * note, warnings and every partition with all its fields (which ranges were
 * read does not count). Pure. */
bool vd_part_table_equal(const struct vd_part_table *a, const struct vd_part_table *b);

/* Whether p and q are the same file: number, start and size. */
static inline bool vd_part_same_place(const struct vd_part *p, const struct vd_part *q)
{
	return p->number == q->number && p->start == q->start && p->size == q->size;
}

/* The view of partition p of the disk as seen from level. */
struct vd_view vd_view_part(struct vd_chain *c, unsigned level, const struct vd_part *p);

/* Filesystem signature at the start of a view (vd_fs_sniff), or NULL (also on
 * a read error). */
const char *vd_view_fs_sniff(const struct vd_view *v);

/* Writes the table as a JSON object named key into j (scheme, sector size,
 * note, warnings, and each partition with its filesystem signature read
 * through the chain at level). */
void vd_part_describe(struct vd_chain *c, unsigned level, const struct vd_part_table *t,
		      struct vd_json *j, const char *key);

#endif
