/* Partition-table and filesystem-signature decoders (pure: no I/O, no
 * logging). A failure returns -EINVAL with a short reason in *why; the caller
 * (chain/part.c) decides what a damaged table means and logs once.
 *
 * References: the MBR layout of the IBM PC BIOS boot sector (entry table at
 * 446, signature 55 AA at 510), EBR chains as Linux's block/partitions/msdos.c
 * walks them, and the GUID Partition Table of UEFI 2.10 section 5.3. */
#ifndef VD_PART_H
#define VD_PART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VD_MBR_SIZE 512u
#define VD_MBR_ENTRIES 4

/* MBR partition types that matter here. */
#define VD_MBR_TYPE_EMPTY 0x00
#define VD_MBR_TYPE_GPT 0xee /* protective (or hybrid) MBR of a GPT disk */

struct vd_mbr_entry {
	uint8_t status; /* 0x80 bootable, 0x00 not */
	uint8_t type;
	uint32_t lba; /* first sector: relative to the disk (MBR) or to the EBR / extended start */
	uint32_t sectors; /* 0 = unused slot */
};

struct vd_mbr {
	struct vd_mbr_entry e[VD_MBR_ENTRIES];
	uint32_t disk_sig;
};

/* Decodes a 512-byte MBR or EBR. Requires the 55 AA signature and status
 * bytes of 0x00 or 0x80 (which tells a partition table from a FAT or NTFS
 * boot sector that also ends in 55 AA). Returns 0 or -EINVAL with *why. */
int vd_mbr_decode(const uint8_t buf[VD_MBR_SIZE], struct vd_mbr *out, const char **why);

/* True for the extended-partition container types (05, 0F, 85). */
bool vd_mbr_type_is_extended(uint8_t type);

/* GPT header (UEFI 2.10 table 5-5), decoded. */
#define VD_GPT_HEADER_MIN 92u
#define VD_GPT_ENTRY_MIN 128u
#define VD_GPT_MAX_ENTRIES 16384u   /* sanity cap; every known tool writes 128 */
#define VD_GPT_MAX_ARRAY (4u << 20) /* bytes of entry array read at most */

struct vd_gpt_header {
	uint32_t revision;
	uint32_t header_size;
	uint64_t my_lba, alternate_lba;
	uint64_t first_usable, last_usable;
	uint8_t disk_guid[16];
	uint64_t entries_lba;
	uint32_t n_entries, entry_size;
	uint32_t entries_crc;
};

/* Decodes the GPT header in the first sector_size bytes of buf (sector_size
 * 512 or 4096). Checks signature "EFI PART", revision 1.x, header size in
 * [92, sector_size], its CRC32, the reserved field, entry size (128 * 2^n),
 * entry count and array size caps, first_usable <= last_usable. Returns 0 or
 * -EINVAL with *why. */
int vd_gpt_header_decode(const uint8_t *buf, uint32_t sector_size, struct vd_gpt_header *out,
			 const char **why);

/* Checks a decoded header against where it was found (lba) and the disk's
 * size in sectors: MyLBA matches, the usable range and the entry array lie
 * inside the disk. Returns 0 or -EINVAL with *why. */
int vd_gpt_header_check(const struct vd_gpt_header *h, uint64_t lba, uint64_t n_sectors,
			uint32_t sector_size, const char **why);

/* Checks the CRC32 of the entry array (n_entries * entry_size bytes at arr)
 * against the header. Returns 0 or -EINVAL with *why. */
int vd_gpt_entries_check(const struct vd_gpt_header *h, const uint8_t *arr, const char **why);

struct vd_gpt_entry {
	uint8_t type_guid[16];
	uint8_t uuid[16];
	uint64_t first_lba, last_lba; /* inclusive */
	uint64_t attributes;
	char name[3 * 36 + 1]; /* UTF-8 of the UTF-16LE name ("" when undecodable) */
};

/* Decodes one entry (at least 128 bytes). Returns 1 for a used entry, 0 for
 * an unused one (type GUID all zero), -EINVAL with *why when last < first. */
int vd_gpt_entry_decode(const uint8_t *e, struct vd_gpt_entry *out, const char **why);

/* Formats a GUID as stored in GPT (first three fields little-endian) into
 * buf (37 bytes), upper case as UEFI tools print it. */
const char *vd_guid_format(const uint8_t g[16], char buf[37]);

/* A short name for well-known GPT type GUIDs and MBR types, or NULL. */
const char *vd_gpt_type_name(const uint8_t g[16]);
const char *vd_mbr_type_name(uint8_t type);

/* Bytes from a partition's start that vd_fs_sniff() looks at (the btrfs
 * superblock magic lies at 64 KiB + 64). */
#define VD_FS_SNIFF_BYTES (68u << 10)

/* Names the filesystem or container whose signature is at the start of buf
 * (len bytes of a partition, up to VD_FS_SNIFF_BYTES): "ext2", "ext3",
 * "ext4", "xfs", "btrfs", "ntfs", "fat12", "fat16", "fat32", "exfat", "lvm2",
 * "swap", "bitlocker", "luks", or NULL. */
const char *vd_fs_sniff(const uint8_t *buf, size_t len);

#endif
