/* Partition-table and filesystem-signature decoders. Pure functions over
 * byte arrays: no I/O, no logging, -EINVAL with a reason (STYLE.md 13, like
 * vhd_meta.c). chain/part.c reads the sectors and decides what a damaged
 * table means (no partitions, or the GPT backup header).
 *
 * MBR entry (16 bytes at 446 + 16 i): status, CHS first, type, CHS last,
 * LBA first (LE32), sector count (LE32). CHS fields are ignored, as Linux does.
 * GPT: UEFI 2.10 section 5.3.2 (header) and 5.3.3 (entries); both CRCs are
 * zlib's CRC-32 (the same polynomial as UEFI's). */
#include "disk/part.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "disk/endian.h"
#include "disk/text.h"
#include "disk/util.h"

#define MBR_TABLE 446
#define MBR_SIG 510

#define GPT_SIG 0
#define GPT_REVISION 8
#define GPT_HDR_SIZE 12
#define GPT_HDR_CRC 16
#define GPT_RESERVED 20
#define GPT_MY_LBA 24
#define GPT_ALT_LBA 32
#define GPT_FIRST_USABLE 40
#define GPT_LAST_USABLE 48
#define GPT_DISK_GUID 56
#define GPT_ENTRIES_LBA 72
#define GPT_N_ENTRIES 80
#define GPT_ENTRY_SIZE 84
#define GPT_ENTRIES_CRC 88

#define GPTE_TYPE 0
#define GPTE_UUID 16
#define GPTE_FIRST 32
#define GPTE_LAST 40
#define GPTE_ATTR 48
#define GPTE_NAME 56
#define GPTE_NAME_LEN 72

int vd_mbr_decode(const uint8_t buf[VD_MBR_SIZE], struct vd_mbr *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (buf[MBR_SIG] != 0x55 || buf[MBR_SIG + 1] != 0xaa) {
		*why = "no 55 AA boot signature";
		return -EINVAL;
	}
	for (unsigned i = 0; i < VD_MBR_ENTRIES; i++) {
		const uint8_t *p = buf + MBR_TABLE + 16 * i;
		struct vd_mbr_entry *e = &out->e[i];

		e->status = p[0];
		e->type = p[4];
		e->lba = vd_get_le32(p + 8);
		e->sectors = vd_get_le32(p + 12);
		if (e->status != 0 && e->status != 0x80) {
			*why =
			    "entry status byte is neither 00 nor 80 (a boot sector, not a table)";
			return -EINVAL;
		}
		if (e->type == VD_MBR_TYPE_EMPTY)
			e->sectors = 0;
	}
	out->disk_sig = vd_get_le32(buf + 440);
	return 0;
}

bool vd_mbr_type_is_extended(uint8_t type)
{
	return type == 0x05 || type == 0x0f || type == 0x85;
}

int vd_gpt_header_decode(const uint8_t *buf, uint32_t sector_size, struct vd_gpt_header *out,
			 const char **why)
{
	uint8_t tmp[512];
	uint32_t crc;

	memset(out, 0, sizeof(*out));
	if (memcmp(buf + GPT_SIG, "EFI PART", 8)) {
		*why = "no \"EFI PART\" signature";
		return -EINVAL;
	}
	out->revision = vd_get_le32(buf + GPT_REVISION);
	out->header_size = vd_get_le32(buf + GPT_HDR_SIZE);
	if (out->revision >> 16 != 1) {
		*why = "unsupported GPT revision (major must be 1)";
		return -EINVAL;
	}
	if (out->header_size < VD_GPT_HEADER_MIN || out->header_size > sector_size ||
	    out->header_size > sizeof(tmp)) {
		*why = "header size out of range";
		return -EINVAL;
	}
	/* The CRC covers header_size bytes with the CRC field taken as zero. */
	memcpy(tmp, buf, out->header_size);
	memset(tmp + GPT_HDR_CRC, 0, 4);
	crc = (uint32_t)crc32(0, tmp, out->header_size);
	if (crc != vd_get_le32(buf + GPT_HDR_CRC)) {
		*why = "header CRC32 mismatch";
		return -EINVAL;
	}
	if (vd_get_le32(buf + GPT_RESERVED)) {
		*why = "reserved header field is not zero";
		return -EINVAL;
	}
	out->my_lba = vd_get_le64(buf + GPT_MY_LBA);
	out->alternate_lba = vd_get_le64(buf + GPT_ALT_LBA);
	out->first_usable = vd_get_le64(buf + GPT_FIRST_USABLE);
	out->last_usable = vd_get_le64(buf + GPT_LAST_USABLE);
	memcpy(out->disk_guid, buf + GPT_DISK_GUID, 16);
	out->entries_lba = vd_get_le64(buf + GPT_ENTRIES_LBA);
	out->n_entries = vd_get_le32(buf + GPT_N_ENTRIES);
	out->entry_size = vd_get_le32(buf + GPT_ENTRY_SIZE);
	out->entries_crc = vd_get_le32(buf + GPT_ENTRIES_CRC);
	if (out->entry_size < VD_GPT_ENTRY_MIN || out->entry_size % VD_GPT_ENTRY_MIN ||
	    !vd_is_pow2(out->entry_size / VD_GPT_ENTRY_MIN)) {
		*why = "partition entry size is not 128 * 2^n";
		return -EINVAL;
	}
	if (out->n_entries == 0 || out->n_entries > VD_GPT_MAX_ENTRIES ||
	    (uint64_t)out->n_entries * out->entry_size > VD_GPT_MAX_ARRAY) {
		*why = "number of partition entries out of range";
		return -EINVAL;
	}
	if (out->first_usable > out->last_usable) {
		*why = "first usable LBA after last usable LBA";
		return -EINVAL;
	}
	return 0;
}

int vd_gpt_header_check(const struct vd_gpt_header *h, uint64_t lba, uint64_t n_sectors,
			uint32_t sector_size, const char **why)
{
	uint64_t array_sectors =
	    vd_div_round_up((uint64_t)h->n_entries * h->entry_size, sector_size);

	if (h->my_lba != lba) {
		*why = "MyLBA does not match where the header is";
		return -EINVAL;
	}
	if (h->last_usable >= n_sectors) {
		*why = "last usable LBA past the end of the disk";
		return -EINVAL;
	}
	if (h->entries_lba < 1 || h->entries_lba >= n_sectors ||
	    array_sectors > n_sectors - h->entries_lba) {
		*why = "partition entry array outside the disk";
		return -EINVAL;
	}
	return 0;
}

int vd_gpt_entries_check(const struct vd_gpt_header *h, const uint8_t *arr, const char **why)
{
	uLong crc = crc32(0, arr, (uInt)((uint64_t)h->n_entries * h->entry_size));

	if ((uint32_t)crc != h->entries_crc) {
		*why = "partition entry array CRC32 mismatch";
		return -EINVAL;
	}
	return 0;
}

int vd_gpt_entry_decode(const uint8_t *e, struct vd_gpt_entry *out, const char **why)
{
	static const uint8_t zero[16];
	char *name = NULL;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!memcmp(e + GPTE_TYPE, zero, 16))
		return 0;
	memcpy(out->type_guid, e + GPTE_TYPE, 16);
	memcpy(out->uuid, e + GPTE_UUID, 16);
	out->first_lba = vd_get_le64(e + GPTE_FIRST);
	out->last_lba = vd_get_le64(e + GPTE_LAST);
	out->attributes = vd_get_le64(e + GPTE_ATTR);
	if (out->last_lba < out->first_lba) {
		*why = "ending LBA before starting LBA";
		return -EINVAL;
	}
	/* A name that is not valid UTF-16 is shown as "": it is a label, not an
	 * address, so a bad one is not worth losing the partition over. */
	if (vd_utf16_to_utf8(e + GPTE_NAME, GPTE_NAME_LEN, false, &name) == 0) {
		n = strlen(name);
		if (n < sizeof(out->name))
			memcpy(out->name, name, n + 1);
		free(name);
	}
	return 1;
}

const char *vd_guid_format(const uint8_t g[16], char buf[37])
{
	snprintf(buf, 37, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", vd_get_le32(g),
		 vd_get_le16(g + 4), vd_get_le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13],
		 g[14], g[15]);
	return buf;
}

static const struct {
	const char *guid;
	const char *name;
} gpt_types[] = {
    {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"},
    {"21686148-6449-6E6F-744E-656564454649", "BIOS boot"},
    {"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"},
    {"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"},
    {"E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"},
    {"A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"},
    {"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"},
    {"933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"},
    {"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"},
    {"E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"},
    {"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery"},
    {"48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS+"},
    {"7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS"},
};

const char *vd_gpt_type_name(const uint8_t g[16])
{
	char buf[37];

	vd_guid_format(g, buf);
	for (size_t i = 0; i < sizeof(gpt_types) / sizeof(gpt_types[0]); i++)
		if (!strcmp(buf, gpt_types[i].guid))
			return gpt_types[i].name;
	return NULL;
}

const char *vd_mbr_type_name(uint8_t type)
{
	switch (type) {
	case 0x01:
		return "FAT12";
	case 0x04:
	case 0x06:
	case 0x0e:
		return "FAT16";
	case 0x05:
	case 0x0f:
	case 0x85:
		return "Extended";
	case 0x07:
		return "NTFS/exFAT";
	case 0x0b:
	case 0x0c:
		return "FAT32";
	case 0x27:
		return "Windows recovery";
	case 0x82:
		return "Linux swap";
	case 0x83:
		return "Linux";
	case 0x8e:
		return "Linux LVM";
	case 0xa5:
		return "FreeBSD";
	case 0xee:
		return "GPT protective";
	case 0xef:
		return "EFI System";
	case 0xfd:
		return "Linux RAID";
	default:
		return NULL;
	}
}

static bool at(const uint8_t *buf, size_t len, size_t off, const char *magic, size_t n)
{
	return off + n <= len && !memcmp(buf + off, magic, n);
}

/* ext2/3/4 superblock at 1024: s_magic at +56, feature words at +92/+96/+100
 * (as blkid's ext probe reads them). */
static const char *ext_sniff(const uint8_t *sb)
{
	uint32_t compat = vd_get_le32(sb + 92);
	uint32_t incompat = vd_get_le32(sb + 96);
	uint32_t ro_compat = vd_get_le32(sb + 100);

	/* extents, 64bit, flex_bg, ... or huge_file, gdt_csum, dir_nlink, ... */
	if (incompat & ~0x0016u || ro_compat & ~0x0007u)
		return "ext4";
	return compat & 0x4u ? "ext3" : "ext2";
}

const char *vd_fs_sniff(const uint8_t *buf, size_t len)
{
	if (len >= 1024 + 104 && vd_get_le16(buf + 1024 + 56) == 0xef53)
		return ext_sniff(buf + 1024);
	if (at(buf, len, 0, "XFSB", 4))
		return "xfs";
	if (at(buf, len, 0x10040, "_BHRfS_M", 8))
		return "btrfs";
	if (at(buf, len, 3, "NTFS    ", 8))
		return "ntfs";
	if (at(buf, len, 3, "-FVE-FS-", 8))
		return "bitlocker";
	if (at(buf, len, 3, "EXFAT   ", 8))
		return "exfat";
	if (at(buf, len, 0, "LUKS\xba\xbe", 6))
		return "luks";
	for (size_t s = 0; s < 4; s++)
		if (at(buf, len, 512 * s, "LABELONE", 8) &&
		    at(buf, len, 512 * s + 24, "LVM2 001", 8))
			return "lvm2";
	if (at(buf, len, 4086, "SWAPSPACE2", 10) || at(buf, len, 4086, "SWAP-SPACE", 10))
		return "swap";
	if (at(buf, len, 510, "\x55\xaa", 2)) {
		if (at(buf, len, 82, "FAT32   ", 8))
			return "fat32";
		if (at(buf, len, 54, "FAT12   ", 8))
			return "fat12";
		if (at(buf, len, 54, "FAT16   ", 8) || at(buf, len, 54, "FAT     ", 8))
			return "fat16";
	}
	return NULL;
}
