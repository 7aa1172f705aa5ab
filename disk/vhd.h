/* VHD (Virtual PC / Hyper-V v1) on-disk layout and its pure codecs
 * (vhd_meta.c), shared by the driver, the unit tests and the mkvhd
 * generator. The driver's own state is in vhd_drv.h. Reference: Microsoft's
 * "Virtual Hard Disk Image Format Specification" (2006), sections 3-5. */
#ifndef VD_VHD_H
#define VD_VHD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "disk/disk.h"
#include "disk/text.h"

#define VHD_SECTOR 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_HEADER_SIZE 1024u
#define VHD_NUM_LOCATORS 8

/* Footer field offsets (VHD spec, "Hard Disk Footer Format"). */
#define VHD_FTR_COOKIE 0
#define VHD_FTR_FEATURES 8
#define VHD_FTR_VERSION 12
#define VHD_FTR_DATA_OFFSET 16
#define VHD_FTR_TIMESTAMP 24
#define VHD_FTR_CREATOR_APP 28
#define VHD_FTR_CREATOR_VER 32
#define VHD_FTR_CREATOR_OS 36
#define VHD_FTR_ORIG_SIZE 40
#define VHD_FTR_CUR_SIZE 48
#define VHD_FTR_GEOMETRY 56
#define VHD_FTR_TYPE 60
#define VHD_FTR_CHECKSUM 64
#define VHD_FTR_UUID 68
#define VHD_FTR_SAVED 84

/* Dynamic header field offsets (VHD spec, "Dynamic Disk Header Format"). */
#define VHD_HDR_COOKIE 0
#define VHD_HDR_DATA_OFFSET 8
#define VHD_HDR_TABLE_OFFSET 16
#define VHD_HDR_VERSION 24
#define VHD_HDR_MAX_ENTRIES 28
#define VHD_HDR_BLOCK_SIZE 32
#define VHD_HDR_CHECKSUM 36
#define VHD_HDR_PARENT_UUID 40
#define VHD_HDR_PARENT_STAMP 56
#define VHD_HDR_PARENT_NAME 64
#define VHD_HDR_PARENT_NAME_LEN 512
#define VHD_HDR_LOCATORS 576
#define VHD_LOC_SIZE 24

#define VHD_TYPE_FIXED 2
#define VHD_TYPE_DYNAMIC 3
#define VHD_TYPE_DIFF 4

#define VHD_VERSION 0x00010000u
#define VHD_BAT_UNUSED 0xFFFFFFFFu
#define VHD_MAX_SIZE (2040ull << 30)
#define VHD_MIN_BLOCK 512u
#define VHD_MAX_BLOCK (256u << 20)
#define VHD_MAX_BAT (1u << 24)	    /* entries kept in memory (64 MiB of BAT) */
#define VHD_MAX_LOCATOR (32u << 10) /* payload bytes */
#define VHD_EPOCH 946684800	    /* 2000-01-01 00:00:00 UTC in Unix time */

/* Platform codes of parent locators (VHD spec, "Parent Locator Entries"). */
#define VHD_PLAT_NONE 0u
#define VHD_PLAT_WI2R 0x57693272u
#define VHD_PLAT_WI2K 0x5769326Bu
#define VHD_PLAT_W2RU 0x57327275u
#define VHD_PLAT_W2KU 0x57326B75u
#define VHD_PLAT_MAC 0x4D616320u
#define VHD_PLAT_MACX 0x4D616358u

struct vhd_footer {
	uint32_t features;
	uint32_t version;
	uint64_t data_offset;
	uint32_t timestamp;
	char creator_app[5]; /* 4 raw bytes, NUL-terminated */
	uint32_t creator_ver;
	uint32_t creator_os;
	uint64_t orig_size;
	uint64_t cur_size;
	uint16_t cyls;
	uint8_t heads;
	uint8_t spt;
	uint32_t type;
	uint32_t checksum;
	bool checksum_ok;
	uint8_t uuid[16];
	uint8_t saved_state;
};

struct vhd_locator {
	uint32_t code;
	uint32_t space; /* as stored (sectors or bytes, see vhd_locator_span) */
	uint32_t length;
	uint64_t offset;
};

struct vhd_header {
	uint64_t table_offset;
	uint32_t version;
	uint32_t max_entries;
	uint32_t block_size;
	uint32_t checksum;
	bool checksum_ok;
	uint8_t parent_uuid[16];
	uint32_t parent_stamp;
	uint8_t parent_name[VHD_HDR_PARENT_NAME_LEN]; /* raw UTF-16BE */
	struct vhd_locator loc[VHD_NUM_LOCATORS];
};

/* --- vhd_meta.c: pure decoders and encoders (no I/O) ------------------- */

#define VHD_WHY_NO_COOKIE "no \"conectix\" cookie"

/* Bytes a BAT of n entries occupies on disk (u32 each, padded to a sector). */
static inline uint64_t vhd_bat_bytes(uint64_t n)
{
	return vd_round_up(n * 4, VHD_SECTOR);
}

/* One's complement of the byte sum of buf[0..len) with the 4 bytes at
 * csum_off taken as zero. */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off);

/* Decodes a 512-byte footer. Returns 0 (checksum_ok tells whether the checksum
 * matched) or -EINVAL with *why set when the cookie is not "conectix". */
int vhd_footer_decode(const uint8_t *buf, struct vhd_footer *out, const char **why);

/* Checks a decoded footer's fields (version, type, size, data offset) for a
 * footer found at file offset ftr_off (fixed data and the dynamic header must
 * lie before it). Returns 0 or -EINVAL with *why set. */
int vhd_footer_check(const struct vhd_footer *f, uint64_t ftr_off, const char **why);

/* Encodes f into buf[512] with a fresh checksum (f->checksum is ignored). */
void vhd_footer_encode(const struct vhd_footer *f, uint8_t *buf);

/* Decodes a 1024-byte dynamic header; cookie "cxsparse" required. Returns 0
 * (checksum_ok set) or -EINVAL with *why. Field ranges are vhd_header_check's. */
int vhd_header_decode(const uint8_t *buf, struct vhd_header *out, const char **why);

/* Checks version, block size and table size against the virtual size (not
 * the checksum: see checksum_ok). Returns 0 or -EINVAL with *why. */
int vhd_header_check(const struct vhd_header *h, uint64_t size, const char **why);

/* Encodes h into buf[1024] with a fresh checksum. */
void vhd_header_encode(const struct vhd_header *h, uint8_t *buf);

/* Bytes a locator's data space covers: < 512 means sectors, else a multiple of
 * 512 means bytes (as blktap reads it). Returns 0 or -EINVAL. */
int vhd_locator_span(uint32_t space, uint64_t *bytes);

/* Decodes a MacX payload (UTF-8 file URL): strips "file://" and an optional
 * "localhost", percent-decodes. Returns 0 and a malloc'd path, or -EINVAL /
 * -ENOMEM. */
int vhd_macx_decode(const uint8_t *in, size_t len, char **out);

/* Short name of a locator platform code ("W2ru"), or NULL if unknown. */
const char *vhd_plat_name(uint32_t code);

/* State (VD_DATA or VD_UNALLOC) of sector k of a bitmap and the number of
 * sectors from k (< limit) sharing it. MSB-first bit order. */
int vhd_bitmap_run(const uint8_t *bm, uint32_t k, uint32_t limit, uint32_t *count);

/* CHS geometry of the spec's appendix for a disk of size bytes. */
void vhd_chs(uint64_t size, uint16_t *cyls, uint8_t *heads, uint8_t *spt);

/* --- vhd_write.c: creating files (also for tests and mkvhd) ------------ */

/* Creates an empty dynamic VHD of size bytes (a multiple of 512) with the
 * given block size (power of 2 in [512 B, 256 MiB]). Returns 0 or -errno
 * (logged). */
int vhd_create_dynamic(const char *path, uint64_t size, uint32_t block_size);

#endif
