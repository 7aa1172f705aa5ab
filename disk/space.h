/* File-space accounting for metadata checks (vd_format_ops.check): a driver
 * lists every structure of a file (header, tables, grains, blocks) as a span
 * of bytes; vd_space_check() then reports spans that overlap (a grain used
 * twice, a block on top of a table) and bytes that nothing uses (leaked). */
#ifndef VD_SPACE_H
#define VD_SPACE_H

#include <stdint.h>

#include "disk/disk.h"

#define VD_SPACE_MAX (16u << 20) /* spans checked at most (384 MiB of bookkeeping) */

struct vd_span {
	uint64_t start;
	uint32_t len; /* bytes */
	uint32_t idx; /* grain, block or table number, for messages */
	uint8_t kind; /* index into the caller's kind names */
};

struct vd_space {
	const char *const *kinds; /* names: "grain", "grain table", ... */
	struct vd_span *spans;
	size_t n, cap;
	bool too_many; /* more than VD_SPACE_MAX spans: overlap/leak checks skipped */
};

/* Adds a span (len > 0). Returns 0 or -ENOMEM. Past VD_SPACE_MAX spans it
 * sets too_many and returns 0. */
int vd_space_add(struct vd_space *s, uint8_t kind, uint32_t idx, uint64_t start, uint64_t len);

/* Sorts the spans and reports (at most a few lines, then a count) every
 * overlap between two spans, and the bytes in [from, to) that no span covers
 * ("leaked") counting only gaps of at least min_gap bytes: a gap too small
 * to have held an allocation is alignment padding (Windows starts VHD block
 * data on 4 KiB boundaries). path names the file in the reports. Returns 0.
 * Frees the spans. */
int vd_space_check(struct vd_space *s, uint64_t from, uint64_t to, uint64_t min_gap,
		   struct vd_check *chk, const char *path);

void vd_space_free(struct vd_space *s);

#endif
