/* Helpers for the VMDK ESXi/stream backend unit tests (test_vmdk_cowd,
 * test_vmdk_sesparse, test_vmdk_stream): run the generators built next to
 * the test, open one extent directly through its backend and read it whole.
 * Their files live in tu_dir() (test_util.h). */
#ifndef ESX_HELPER_H
#define ESX_HELPER_H

#include <stddef.h>
#include <stdint.h>

#include "disk/vmdk.h"
#include "test_util.h"

/* Runs a shell command (printf-style) in tu_dir() with $T set to the
 * directory of the test executable, where the generators are built.
 * Returns the exit status (0 = success). */
int esx_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Opens path with ops as an extent of sectors sectors (fd, path, sectors set
 * like vmdk.c does). Returns ops->open()'s result; on failure e is cleaned up
 * (and a backend whose failed open() left e->priv set aborts). The fuzz
 * harnesses use this and esx_extent_close() too (through the I/O seam). */
int esx_extent_open(const struct vmdk_extent_ops *ops, const char *path, uint64_t sectors,
		    struct vmdk_extent *e);
void esx_extent_close(struct vmdk_extent *e);

/* Reads the whole extent through block_status/read like chain/ does
 * (UNALLOC and ZERO give zeros) into a malloc'd buffer of sectors*512 bytes,
 * and fills mask (one byte per sector, may be NULL) with the sector's state.
 * Returns 0 or the first -errno. chunk is the request size in bytes. */
int esx_extent_read_all(struct vmdk_extent *e, size_t chunk, uint8_t **out, uint8_t *mask);

/* The extent's describe() output, as one JSON object (malloc'd). */
char *esx_describe(struct vmdk_extent *e);

/* Writes b.vmdk (createType "vmfs", CID 0badcafe) over b-flat.vmdk, sectors
 * sectors of random data, in tu_dir(). Returns 0 or a non-zero status. */
int esx_vmfs_base(uint64_t sectors);

/* Opens the chain whose top is file top (in tu_dir()) with
 * vd_chain_open() and compares the disk seen from each level i with the file
 * models[i] (base first). Returns 0, the first -errno, or 1 on a mismatch
 * (printed). Also describes the chain to JSON (exercising describe()) and,
 * if needle is not NULL, requires it in that JSON. */
int esx_chain_check(const char *top, unsigned depth, const char *const *models, const char *needle);

/* Runs the extent's check(): returns the number of problems (or -errno of
 * the check, -ENOTSUP without one) and sets *text (malloc'd, "" when clean)
 * to the reports, one per line. */
int esx_check(struct vmdk_extent *e, char **text);

/* The number after "key": in a rendered JSON text (the key must be there). */
uint64_t esx_json_u64(const char *js, const char *key);

/* The extent's block_status without the map (tests that only want the state). */
static inline int esx_status(struct vmdk_extent *e, uint64_t off, uint64_t len, uint64_t *pnum)
{
	struct vd_map map;

	return e->ops->block_status(e, off, len, pnum, &map);
}

#endif
