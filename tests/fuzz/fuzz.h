/* Shared parts of the libFuzzer harnesses (tests/fuzz/README.md).
 *
 * memfs.c serves in-memory files through the I/O seam of disk/util.h (the
 * harnesses are linked with ld --wrap), so no harness ever touches the real
 * file system and an execution costs no system call. common.c holds the
 * oracles every harness shares: error codes are -errno, a failed open logged
 * an error line naming the file, every run and read honours its contract,
 * reads are repeatable and fill their whole buffer, and no descriptor is
 * leaked, closed twice or used after close. A violated oracle aborts, which
 * libFuzzer reports as a crash like a sanitizer finding. */
#ifndef VD_FUZZ_H
#define VD_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain/chain.h"
#include "disk/vmdk.h"

/* Every file a harness serves lives below this directory. */
#define FZ_ROOT "/fz"

/* ---- memfs.c ------------------------------------------------------------ */

/* Forgets every file; aborts if a descriptor is still open (a leak). */
void fz_fs_reset(void);

/* Serves a copy of data[0, len) at path ("/fz/a.vmdk"; resolved lexically).
 * Returns 0, or -EPERM for a path outside FZ_ROOT, -EEXIST when the path is
 * taken (or a directory), -E2BIG when the table is full. */
int fz_fs_add(const char *path, const uint8_t *data, size_t len);

/* Lays a copy of data[0, len) at offset off of the file at path, which is
 * created (empty) first if need be: the file reads as its pieces over zeros,
 * a later piece over an earlier one, and is as long as its furthest piece.
 * Returns 0, -EFBIG past FZ_SPARSE_MAX, or fz_fs_add's errors. */
#define FZ_SPARSE_MAX (64ull << 20)
int fz_fs_place(const char *path, uint64_t off, const uint8_t *data, size_t len);

/* ---- common.c ------------------------------------------------------------ */

/* Aborts with a message (an oracle was violated). */
void fz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Once per process: routes vd_log to a sink that keeps nothing but checks
 * that every error line names a file below FZ_ROOT. FZ_VERBOSE=1 in the
 * environment prints the lines too. */
void fz_init(void);

/* A deterministic stream of numbers seeded by the input's bytes. */
struct fz_rng {
	uint64_t s;
};
void fz_rng_init(struct fz_rng *r, const uint8_t *data, size_t len);
uint64_t fz_rng_below(struct fz_rng *r, uint64_t n); /* [0, n); 0 when n is 0 */

/* Aborts unless r is 0 or a plausible -errno. */
void fz_check_ret(int r, const char *what);

/* Call after an open failed with r: r must be an -errno and an error must
 * have been logged since errs = vd_log_error_count() was taken. */
void fz_check_open_failed(int r, unsigned errs, const char *what);

/* Something with a size, a block_status and a read: an extent, an image, a
 * level of a chain. */
struct fz_target {
	const char *what; /* for messages */
	uint64_t size;
	/* block_status; *map gets where a DATA run lives (left fd -1 by chains) */
	int (*status)(void *ctx, uint64_t off, uint64_t len, uint64_t *pnum, struct vd_map *map);
	/* reads [off, off + len) of a DATA run that status mapped as *map */
	int (*read)(void *ctx, void *buf, size_t len, uint64_t off, const struct vd_map *map);
	void *ctx;
};

/* Counts what got past the parsers to be exercised (fz_target_exercise
 * and the harnesses that exercise on their own add to it): replay_main's -o
 * fails a seed that no longer gets that far. */
extern unsigned fz_exercised;

/* Walks t with block_status from 0 (a bounded number of steps, then random
 * jumps), reads DATA runs and random ranges inside them (bounded bytes),
 * checking every answer's contract (mapped runs inside their file) and that
 * reads are repeatable and fill their buffer. */
void fz_target_exercise(const struct fz_target *t, struct fz_rng *r);

/* Exercises an extent opened with esx_extent_open() (tests/unit/esx_helper.h)
 * over memfs: fz_target_exercise, describe, then esx_extent_close(). */
void fz_extent_run(struct vmdk_extent *e, struct fz_rng *r);

/* Exercises an open image (every op, describe) and closes it. */
void fz_image_run(struct vd_image *img, struct fz_rng *r);

/* Exercises every level of an open chain (reads, block_status, describe). */
void fz_chain_run(struct vd_chain *c, struct fz_rng *r);

/* NULL when text is one strict JSON value in valid UTF-8, else why not. */
const char *fz_json_check(const char *text);

/* The chain harness's input: several files in one buffer.
 *   archive = member *(FZ_SEP member)      member = name LF content
 * A name is 1..FZ_NAME_MAX bytes without NUL, relative to FZ_ROOT ("b.vmdk",
 * "sub/c.vmdk"); one that leaves FZ_ROOT, repeats a name or is empty drops
 * its member. The first member is the top image. Content is every byte up to
 * the next separator, which images do not contain. */
#define FZ_SEP "\n--fz--\n"
#define FZ_NAME_MAX 128

/* A member named "NAME@OFF" (OFF decimal or 0x hex) is a piece of the
 * file NAME laid at byte OFF (fz_fs_place): several such members make one
 * sparse file, so a VHDX whose structures lie megabytes apart fits in a few
 * KiB. An empty piece at OFF makes the file OFF bytes long.
 *
 * Serves every member of an archive through memfs (VHD and VHDX checksums
 * stored as 0 fixed, see below) and writes the first member's file path
 * into top (PATH_MAX bytes). Returns the number of members served. */
unsigned fz_archive_unpack(const uint8_t *data, size_t len, char *top);

/* Recomputes the checksums of the VHD footers and dynamic header in
 * data[0, len) whose stored checksum is 0, so that mutated images reach the
 * checks behind the checksum (seeds are stored with 0 there). */
void fz_vhd_fix_checksums(uint8_t *data, size_t len);

/* The same for VHDX, in a piece data[0, len) laid at file offset off:
 * headers (at 64 and 128 KiB), region tables (192 and 256 KiB) and log
 * entries (any 4 KiB boundary, EntryLength up to 1 MiB) whose CRC-32C is
 * stored as 0 get theirs, computed over the piece and zeros after it (an
 * entry that wraps around the end of the log is left as it is). */
void fz_vhdx_fix_checksums(uint8_t *data, size_t len, uint64_t off);

#endif
