/* Test helper: a tiny in-memory writer of hosted sparse (KDMV) VMDK files and
 * a byte model of the disk they hold, for test_vmdk_sparse.c and
 * test_vmdk_read.c. Not for production use: no validation, aborts on OOM.
 * Files, the temporary directory and the shell: test_util.h. */
#ifndef VMDK_GEN_HELPER_H
#define VMDK_GEN_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kgen {
	uint64_t cap, grain;		 /* sectors */
	uint64_t gd_off, n_gt, overhead; /* sectors; GTs follow the GD */
	uint8_t *file;
	size_t len, room; /* bytes used, bytes allocated */
	uint8_t *model;	  /* cap*512 bytes: what the disk must read as (zeros below) */
};

/* Lays out header, descriptor (desc may be NULL: none, desc_offset 0), GD and
 * all GTs (preallocated, as VMware does), padded to a grain boundary. */
void kgen_init(struct kgen *g, uint64_t cap, uint64_t grain, uint32_t version, uint32_t flags,
	       const char *desc);
/* Appends grain idx at the end of the file filled with a pattern derived
 * from seed, points its GTE at it and updates the model. */
void kgen_alloc(struct kgen *g, uint64_t idx, uint8_t seed);
/* Sets the GTE of grain idx to v (1 = zeroed grain; anything for pokes). */
void kgen_set_gte(struct kgen *g, uint64_t idx, uint32_t v);
/* File offset of the GTE of grain idx. */
uint64_t kgen_gte_off(const struct kgen *g, uint64_t idx);
void kgen_write(const struct kgen *g, const char *path);
void kgen_free(struct kgen *g);

/* Reads the chain of image through vd_chain_read at level (depth-1-level_from_top)
 * and compares it with the raw file. Returns 0 if equal, 1 if different, -errno
 * if opening or reading failed. */
int kgen_compare_chain(const char *image, unsigned level_from_top, const char *raw);

#endif
