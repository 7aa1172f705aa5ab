/* A fake in-memory format for chain tests (STYLE.md section 11).
 *
 * A fake image is a small text file:
 *   FAKEDISK
 *   size <bytes>   grain <bytes>   tag <n>   id <hex>   [parentid <hex>]  [parent <hint>]
 *   data <first-grain> <count>      (held here; content is fake_byte(tag, offset))
 *   zero <first-grain> <count>      (explicitly zero here)
 * Grains not listed are unallocated. Content is a pure function of the tag and
 * the absolute offset, so tests can compute the expected disk independently. */
#ifndef FAKE_HELPER_H
#define FAKE_HELPER_H

#include <stdint.h>

#include "disk/disk.h"

extern const struct vd_format_ops fake_ops;
extern const struct vd_format_ops fake2_ops; /* same, another name: mixed chains */
extern const struct vd_format_ops *const fake_formats[];

/* Number of block_status / read calls since the last reset (all threads). */
extern unsigned long fake_status_calls, fake_read_calls;

static inline uint8_t fake_byte(unsigned tag, uint64_t off)
{
	return (uint8_t)(tag * 37u + (off % 251u) + (off / 4096u) * 3u + 1u);
}

#endif
