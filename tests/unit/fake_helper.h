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

/* The writable side: a fake opened VD_OPEN_RDWR keeps written grains in
 * memory; create_child writes a child file (tag + 100). Write calls, flush
 * calls, and writes that broke the contract of disk/disk.h (not whole
 * sectors, or a grain not held here written in part). */
extern unsigned long fake_write_calls, fake_flush_calls, fake_contract_breaks;
extern unsigned fake_write_delay_us; /* each write sleeps this long first */

static inline uint8_t fake_byte(unsigned tag, uint64_t off)
{
	return (uint8_t)(tag * 37u + (off % 251u) + (off / 4096u) * 3u + 1u);
}

/* A fresh temporary directory (tu_dir_new(tag), test_util.h) with the fake
 * formats as the probe list; fake_dir_end() removes it and restores the real
 * formats. For cmocka setup/teardown; fake_dir_end() asserts on failure. */
void fake_dir_begin(const char *tag);
void fake_dir_end(void);

#endif
