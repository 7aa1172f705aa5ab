/* Partition tables: the pure MBR/GPT/signature decoders on byte arrays with
 * one field poked at a time, then vd_part_scan() on disks built here (written
 * to a raw file behind a monolithicFlat VMDK descriptor, so the table is read
 * through a real chain): MBR primaries + logicals numbered as Linux does,
 * GPT with 512- and 4096-byte sectors, the backup header, hybrid MBRs, and
 * every skip (overlap, out of disk, EBR loop) with its warning. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "chain/part.h"
#include "disk/endian.h"
#include "disk/part.h"
#include "test_util.h"

#define DISK (8u << 20)

static uint8_t *disk;

static int setup(void **state)
{
	(void)state;
	tu_dir_new("part");
	disk = calloc(1, DISK);
	assert_non_null(disk);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(disk);
	return tu_dir_remove();
}

/* --- builders ------------------------------------------------------------ */

static void mbr_entry(uint8_t *sec, unsigned i, uint8_t status, uint8_t type, uint32_t lba,
		      uint32_t n)
{
	uint8_t *p = sec + 446 + 16 * i;

	p[0] = status;
	p[4] = type;
	vd_put_le32(p + 8, lba);
	vd_put_le32(p + 12, n);
	sec[510] = 0x55;
	sec[511] = 0xaa;
}

struct gpt_part {
	uint64_t first, last;
	uint8_t type; /* first byte of the type GUID (0 = unused) */
	const char *name;
};

static void gpt_header(uint8_t *h, uint64_t my, uint64_t alt, uint64_t entries,
		       uint64_t last_usable, uint32_t entries_crc)
{
	memset(h, 0, 92);
	memcpy(h, "EFI PART", 8);
	vd_put_le32(h + 8, 0x00010000);
	vd_put_le32(h + 12, 92);
	vd_put_le64(h + 24, my);
	vd_put_le64(h + 32, alt);
	vd_put_le64(h + 40, 34);
	vd_put_le64(h + 48, last_usable);
	memset(h + 56, 0x5a, 16);
	vd_put_le64(h + 72, entries);
	vd_put_le32(h + 80, 128);
	vd_put_le32(h + 84, 128);
	vd_put_le32(h + 88, entries_crc);
	vd_put_le32(h + 16, (uint32_t)crc32(0, h, 92));
}

static void gpt_rehash(uint8_t *h)
{
	vd_put_le32(h + 16, 0);
	vd_put_le32(h + 16, (uint32_t)crc32(0, h, vd_get_le32(h + 12)));
}

/* A protective MBR, primary and backup headers and arrays (128 entries). */
static void gpt_build(uint8_t *d, uint64_t bytes, uint32_t ss, const struct gpt_part *p, unsigned n)
{
	uint64_t n_sec = bytes / ss, arr_sec = 128 * 128 / ss;
	uint8_t arr[128 * 128] = {0};
	uint32_t crc;

	memset(d, 0, bytes);
	mbr_entry(d, 0, 0, 0xee, 1, (uint32_t)(n_sec - 1));
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = arr + 128 * i;
		if (!p[i].type)
			continue;
		memset(e, p[i].type, 16);
		memset(e + 16, (int)(0x10 + i), 16);
		vd_put_le64(e + 32, p[i].first);
		vd_put_le64(e + 40, p[i].last);
		for (unsigned k = 0; p[i].name && p[i].name[k]; k++)
			vd_put_le16(e + 56 + 2 * k, (uint16_t)p[i].name[k]);
	}
	crc = (uint32_t)crc32(0, arr, sizeof(arr));
	memcpy(d + 2 * ss, arr, sizeof(arr));
	memcpy(d + (n_sec - 1 - arr_sec) * ss, arr, sizeof(arr));
	gpt_header(d + ss, 1, n_sec - 1, 2, n_sec - 2 - arr_sec, crc);
	gpt_header(d + (n_sec - 1) * ss, n_sec - 1, 1, n_sec - 1 - arr_sec, n_sec - 2 - arr_sec,
		   crc);
	/* first_usable 34 fits 512-byte sectors; with 4096 the array ends at LBA 5. */
	if (ss == 4096) {
		vd_put_le64(d + ss + 40, 6);
		gpt_rehash(d + ss);
		vd_put_le64(d + (n_sec - 1) * ss + 40, 6);
		gpt_rehash(d + (n_sec - 1) * ss);
	}
}

/* Writes d as a raw file behind a monolithicFlat descriptor and scans it. */
static struct vd_part_table *scan(const uint8_t *d, uint64_t bytes, struct vd_chain **cp)
{
	const char *desc = tu_path("d.vmdk");
	struct vd_part_table *t = NULL;
	char text[256];

	snprintf(text, sizeof(text),
		 "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
		 "createType=\"monolithicFlat\"\nRW %llu FLAT \"d-flat.vmdk\" 0\n",
		 (unsigned long long)(bytes / 512));
	tu_write_file(tu_path("d-flat.vmdk"), d, bytes);
	tu_write_text(desc, text);
	assert_int_equal(vd_chain_open(desc, 0, cp), 0);
	assert_int_equal(vd_part_scan(*cp, 0, &t), 0);
	return t;
}

static bool has_warning(const struct vd_part_table *t, const char *needle)
{
	for (unsigned i = 0; i < t->n_warnings; i++)
		if (strstr(t->warnings[i], needle))
			return true;
	return false;
}

/* --- decoders -------------------------------------------------------------- */

static void test_mbr_decode(void **state)
{
	uint8_t sec[512] = {0};
	struct vd_mbr m;
	const char *why = NULL;

	(void)state;
	mbr_entry(sec, 0, 0x80, 0x83, 2048, 4096);
	mbr_entry(sec, 1, 0, 0x05, 8192, 100);
	assert_int_equal(vd_mbr_decode(sec, &m, &why), 0);
	assert_int_equal(m.e[0].status, 0x80);
	assert_int_equal(m.e[0].type, 0x83);
	assert_int_equal(m.e[0].lba, 2048);
	assert_int_equal(m.e[0].sectors, 4096);
	assert_true(vd_mbr_type_is_extended(m.e[1].type));
	assert_int_equal(m.e[2].sectors, 0);

	sec[511] = 0;
	assert_int_equal(vd_mbr_decode(sec, &m, &why), -EINVAL);
	assert_non_null(strstr(why, "55 AA"));
	sec[511] = 0xaa;
	sec[446 + 16] = 0x12; /* status of entry 2: a boot sector, not a table */
	assert_int_equal(vd_mbr_decode(sec, &m, &why), -EINVAL);
	assert_non_null(strstr(why, "status"));
	sec[446 + 16] = 0;
	sec[446 + 4] = 0; /* empty type: the slot counts as unused whatever its size */
	assert_int_equal(vd_mbr_decode(sec, &m, &why), 0);
	assert_int_equal(m.e[0].sectors, 0);
}

static void test_gpt_header_decode(void **state)
{
	static uint8_t d[1 << 20];
	struct gpt_part p[] = {{34, 1000, 0xaf, "root"}};
	struct vd_gpt_header h;
	const char *why = NULL;
	uint8_t *hd = d + 512;
	uint8_t keep[512];
	uint64_t n_sec = sizeof(d) / 512;

	(void)state;
	gpt_build(d, sizeof(d), 512, p, 1);
	assert_int_equal(vd_gpt_header_decode(hd, 512, &h, &why), 0);
	assert_int_equal(vd_gpt_header_check(&h, 1, n_sec, 512, &why), 0);
	assert_int_equal(vd_gpt_entries_check(&h, d + 1024, &why), 0);
	assert_int_equal(h.n_entries, 128);
	assert_int_equal(h.entries_lba, 2);
	memcpy(keep, hd, 512);

	/* Each poke, re-checksummed unless the checksum is the point. */
	struct {
		size_t off;
		unsigned width;
		uint64_t val;
		bool rehash;
		const char *why;
	} pokes[] = {
	    {0, 1, 'X', true, "EFI PART"},
	    {8, 4, 0x00020000, true, "revision"},
	    {12, 4, 91, true, "header size"},
	    {12, 4, 513, true, "header size"},
	    {16, 4, 0x12345678, false, "CRC"},
	    {20, 4, 1, true, "reserved"},
	    {84, 4, 100, true, "entry size"},
	    {84, 4, 384, true, "entry size"},
	    {80, 4, 0, true, "number of partition entries"},
	    {80, 4, VD_GPT_MAX_ENTRIES + 1, true, "number of partition entries"},
	    {40, 8, 1u << 20, true, "first usable"},
	};
	for (size_t i = 0; i < sizeof(pokes) / sizeof(pokes[0]); i++) {
		memcpy(hd, keep, 512);
		if (pokes[i].width == 1)
			hd[pokes[i].off] = (uint8_t)pokes[i].val;
		else if (pokes[i].width == 4)
			vd_put_le32(hd + pokes[i].off, (uint32_t)pokes[i].val);
		else
			vd_put_le64(hd + pokes[i].off, pokes[i].val);
		if (pokes[i].rehash)
			gpt_rehash(hd);
		why = NULL;
		assert_int_equal(vd_gpt_header_decode(hd, 512, &h, &why), -EINVAL);
		assert_non_null(why);
		if (!strstr(why, pokes[i].why))
			fail_msg("poke %zu: reason \"%s\" lacks \"%s\"", i, why, pokes[i].why);
	}

	/* Position checks. */
	memcpy(hd, keep, 512);
	assert_int_equal(vd_gpt_header_decode(hd, 512, &h, &why), 0);
	assert_int_equal(vd_gpt_header_check(&h, 5, n_sec, 512, &why), -EINVAL);
	assert_non_null(strstr(why, "MyLBA"));
	assert_int_equal(vd_gpt_header_check(&h, 1, h.last_usable, 512, &why), -EINVAL);
	assert_non_null(strstr(why, "last usable"));
	h.entries_lba = n_sec - 1;
	h.last_usable = 10;
	assert_int_equal(vd_gpt_header_check(&h, 1, n_sec, 512, &why), -EINVAL);
	assert_non_null(strstr(why, "entry array"));
	assert_int_equal(vd_gpt_header_decode(hd, 512, &h, &why), 0);
	d[1024 + 200] ^= 1;
	assert_int_equal(vd_gpt_entries_check(&h, d + 1024, &why), -EINVAL);
	assert_non_null(strstr(why, "CRC32"));
}

static void test_gpt_entry_decode(void **state)
{
	uint8_t e[128] = {0};
	struct vd_gpt_entry out;
	const char *why = NULL;
	char g[37];

	(void)state;
	assert_int_equal(vd_gpt_entry_decode(e, &out, &why), 0);
	/* Linux filesystem data, as stored (first three fields little-endian). */
	static const uint8_t linux_fs[16] = {0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47,
					     0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4};
	memcpy(e, linux_fs, 16);
	vd_put_le64(e + 32, 2048);
	vd_put_le64(e + 40, 4095);
	vd_put_le16(e + 56, 'h');
	vd_put_le16(e + 58, 0xe9); /* é: UTF-16 to UTF-8 */
	assert_int_equal(vd_gpt_entry_decode(e, &out, &why), 1);
	assert_string_equal(vd_guid_format(out.type_guid, g),
			    "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
	assert_string_equal(vd_gpt_type_name(out.type_guid), "Linux filesystem");
	assert_string_equal(out.name, "h\xc3\xa9");
	assert_int_equal(out.first_lba, 2048);
	assert_int_equal(out.last_lba, 4095);
	vd_put_le64(e + 40, 2047);
	assert_int_equal(vd_gpt_entry_decode(e, &out, &why), -EINVAL);
	assert_non_null(strstr(why, "ending LBA"));
	/* An unpaired surrogate in the name costs the name, not the entry. */
	vd_put_le64(e + 40, 4095);
	vd_put_le16(e + 58, 0xd800);
	assert_int_equal(vd_gpt_entry_decode(e, &out, &why), 1);
	assert_string_equal(out.name, "");
}

static void test_fs_sniff(void **state)
{
	static uint8_t b[VD_FS_SNIFF_BYTES];

	(void)state;
	assert_null(vd_fs_sniff(b, sizeof(b)));
	vd_put_le16(b + 1024 + 56, 0xef53);
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "ext2");
	vd_put_le32(b + 1024 + 92, 0x4); /* has_journal */
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "ext3");
	vd_put_le32(b + 1024 + 96, 0x40 | 0x2); /* extents */
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "ext4");
	assert_null(vd_fs_sniff(b, 1100)); /* too short to hold the feature words */
	memset(b, 0, sizeof(b));

	struct {
		size_t off;
		const char *magic;
		const char *fs;
	} sigs[] = {
	    {0, "XFSB", "xfs"},		 {0x10040, "_BHRfS_M", "btrfs"},
	    {3, "NTFS    ", "ntfs"},	 {3, "-FVE-FS-", "bitlocker"},
	    {3, "EXFAT   ", "exfat"},	 {4086, "SWAPSPACE2", "swap"},
	    {0, "LUKS\xba\xbe", "luks"},
	};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		memset(b, 0, sizeof(b));
		memcpy(b + sigs[i].off, sigs[i].magic, strlen(sigs[i].magic));
		assert_string_equal(vd_fs_sniff(b, sizeof(b)), sigs[i].fs);
	}
	memset(b, 0, sizeof(b));
	memcpy(b + 512, "LABELONE", 8);
	assert_null(vd_fs_sniff(b, sizeof(b)));
	memcpy(b + 512 + 24, "LVM2 001", 8);
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "lvm2");
	memset(b, 0, sizeof(b));
	memcpy(b + 54, "FAT16   ", 8);
	assert_null(vd_fs_sniff(b, sizeof(b))); /* no 55 AA */
	b[510] = 0x55;
	b[511] = 0xaa;
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "fat16");
	memcpy(b + 54, "FAT12   ", 8);
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "fat12");
	memcpy(b + 82, "FAT32   ", 8);
	assert_string_equal(vd_fs_sniff(b, sizeof(b)), "fat32");
}

/* --- scans through a chain ------------------------------------------------- */

static void test_scan_mbr_logicals(void **state)
{
	struct vd_chain *c;
	struct vd_part_table *t;
	static const unsigned numbers[] = {1, 2, 3, 5, 6};
	static const uint64_t starts[] = {2048, 4096, 6144, 8192 + 2, 12288 + 2};

	(void)state;
	memset(disk, 0, DISK);
	mbr_entry(disk, 0, 0x80, 0x83, 2048, 2048);
	mbr_entry(disk, 1, 0, 0x0c, 4096, 2048);
	mbr_entry(disk, 2, 0, 0x83, 6144, 2048);
	mbr_entry(disk, 3, 0, 0x05, 8192, 8192);
	/* EBR 1 at 8192: a logical at +2, and the next EBR at ext + 4096 */
	mbr_entry(disk + 8192 * 512, 0, 0, 0x83, 2, 2046);
	mbr_entry(disk + 8192 * 512, 1, 0, 0x05, 4096, 4096);
	mbr_entry(disk + 12288 * 512, 0, 0, 0x82, 2, 2046);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->scheme, VD_PART_MBR);
	assert_int_equal(t->n, 5);
	assert_int_equal(t->n_warnings, 0);
	assert_null(t->note);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(t->parts[i].number, numbers[i]);
		assert_int_equal(t->parts[i].start, starts[i] * 512);
		assert_int_equal(t->parts[i].logical, i >= 3);
	}
	assert_true(t->parts[0].bootable);
	assert_int_equal(t->parts[4].size, 2046 * 512);
	assert_int_equal(t->parts[4].mbr_type, 0x82);

	/* The partition view reads the right bytes of the disk. */
	struct vd_view v = vd_view_part(c, 0, &t->parts[3]);
	uint8_t buf[512];
	assert_int_equal(vd_view_read(&v, buf, sizeof(buf), (2046 - 1) * 512), 0);
	vd_part_table_free(t);
	vd_chain_close(c);

	/* An EBR pointing back at itself stops the walk with a warning. */
	mbr_entry(disk + 12288 * 512, 1, 0, 0x05, 0, 4096);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 5);
	assert_true(has_warning(t, "points backwards"));
	vd_part_table_free(t);
	vd_chain_close(c);
}

static void test_scan_mbr_skips(void **state)
{
	struct vd_chain *c;
	struct vd_part_table *t;

	(void)state;
	memset(disk, 0, DISK);
	mbr_entry(disk, 0, 0, 0x83, 2048, 4096);
	mbr_entry(disk, 1, 0, 0x83, 4096, 2048);       /* overlaps 1 */
	mbr_entry(disk, 2, 0, 0x83, 8192, DISK / 512); /* leaves the disk */
	mbr_entry(disk, 3, 0, 0x07, 6144, 1024);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 2);
	assert_int_equal(t->parts[0].number, 1);
	assert_int_equal(t->parts[1].number, 4);
	assert_true(has_warning(t, "partition 2 overlaps partition 1"));
	assert_true(has_warning(t, "partition 3 ("));
	assert_true(has_warning(t, "leaves the"));
	vd_part_table_free(t);
	vd_chain_close(c);

	/* No table at all: no partitions, a note, no error. */
	memset(disk, 0, DISK);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->scheme, VD_PART_NONE);
	assert_int_equal(t->n, 0);
	assert_non_null(strstr(t->note, "no partition table"));
	vd_part_table_free(t);
	vd_chain_close(c);

	/* A FAT boot sector ends in 55 AA too, but is not a table. */
	memcpy(disk + 3, "mkfs.fat", 8);
	disk[446] = 0xeb; /* boot code where the entries would be */
	disk[510] = 0x55;
	disk[511] = 0xaa;
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 0);
	assert_non_null(strstr(t->note, "status"));
	vd_part_table_free(t);
	vd_chain_close(c);
}

static void test_scan_gpt(void **state)
{
	struct vd_chain *c;
	struct vd_part_table *t;
	struct gpt_part p[] = {
	    {2048, 4095, 0xa1, "one"},	{4096, 6143, 0xa2, "two"},   {0, 0, 0, NULL},
	    {6144, 8191, 0xa4, "four"}, {8192, 10239, 0xa5, "five"}, {10240, 12287, 0xa6, "six"},
	};

	(void)state;
	for (uint32_t ss = 512; ss <= 4096; ss *= 8) {
		uint64_t k = ss / 512; /* keep the same byte layout with 4 KiB sectors */
		struct gpt_part q[6];
		memcpy(q, p, sizeof(q));
		for (unsigned i = 0; i < 6; i++) {
			q[i].first /= k;
			q[i].last = q[i].type ? (q[i].last + 1) / k - 1 : 0;
		}
		gpt_build(disk, DISK, ss, q, 6);
		t = scan(disk, DISK, &c);
		assert_int_equal(t->scheme, VD_PART_GPT);
		assert_int_equal(t->sector_size, ss);
		assert_int_equal(t->n, 5);
		assert_int_equal(t->n_warnings, 0);
		assert_int_equal(t->parts[2].number, 4); /* numbered as in the table */
		assert_int_equal(t->parts[2].start, 6144 * 512);
		assert_int_equal(t->parts[2].size, 2048 * 512);
		assert_string_equal(t->parts[4].gpt.name, "six");
		vd_part_table_free(t);
		vd_chain_close(c);
	}

	/* Primary header damaged: the backup is used, with a warning. */
	gpt_build(disk, DISK, 512, p, 6);
	disk[512 + 30] ^= 0xff;
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 5);
	assert_true(t->backup_used);
	assert_true(has_warning(t, "primary GPT header damaged (header CRC32 mismatch)"));
	vd_part_table_free(t);
	vd_chain_close(c);

	/* The primary array's CRC is wrong: the backup too. */
	gpt_build(disk, DISK, 512, p, 6);
	disk[1024 + 56] ^= 1;
	t = scan(disk, DISK, &c);
	assert_true(t->backup_used);
	assert_true(has_warning(t, "array CRC32"));
	vd_part_table_free(t);
	vd_chain_close(c);

	/* Both gone: a note, no partitions. */
	disk[DISK - 512] ^= 0xff;
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 0);
	assert_non_null(strstr(t->note, "no valid GPT"));
	vd_part_table_free(t);
	vd_chain_close(c);

	/* Hybrid MBR; an overlapping entry and one past the usable area. */
	struct gpt_part bad[] = {
	    {2048, 4095, 0xa1, "one"},
	    {3000, 5000, 0xa2, "overlap"},
	    {8192, DISK / 512 - 1, 0xa3, "past"},
	};
	gpt_build(disk, DISK, 512, bad, 3);
	mbr_entry(disk, 1, 0, 0x83, 2048, 2048);
	t = scan(disk, DISK, &c);
	assert_true(t->hybrid);
	assert_int_equal(t->n, 1);
	assert_true(has_warning(t, "hybrid MBR"));
	assert_true(has_warning(t, "partition 2 overlaps partition 1"));
	assert_true(has_warning(t, "GPT entry 3 lies outside the usable"));
	vd_part_table_free(t);
	vd_chain_close(c);
}

/* Which writes may change the table: sector 0 and LBA 1 always, and what
 * the scan read (the EBRs, the GPT header and array in use). */
static void test_touched(void **state)
{
	struct vd_chain *c;
	struct vd_part_table *t;
	struct gpt_part p[] = {{2048, 4095, 0xa1, "one"}, {4096, 6143, 0xa2, "two"}};

	(void)state;
	/* No scan yet: the fixed places only. */
	assert_true(vd_part_table_touched(NULL, 0, 1));
	assert_true(vd_part_table_touched(NULL, 511, 1));
	assert_true(vd_part_table_touched(NULL, 1023, 1)); /* LBA 1, 512-byte sectors */
	assert_false(vd_part_table_touched(NULL, 1024, 3072));
	assert_true(vd_part_table_touched(NULL, 4096, 1)); /* LBA 1, 4096-byte sectors */
	assert_true(vd_part_table_touched(NULL, 8191, 1));
	assert_false(vd_part_table_touched(NULL, 8192, 1 << 20));
	assert_true(vd_part_table_touched(NULL, 100, 1 << 20)); /* spans sector 0 */
	assert_false(vd_part_table_touched(NULL, 0, 0));

	/* An empty disk, then an MBR naming an extended partition whose EBR is
	 * not written yet: the scan after the MBR write reads (and so watches)
	 * the EBR's sector, and the EBR write then calls for the scan that
	 * finds the logical partition. */
	memset(disk, 0, DISK);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 0);
	assert_false(vd_part_table_touched(t, 8192 * 512, 512));
	vd_part_table_free(t);
	vd_chain_close(c);
	mbr_entry(disk, 0, 0, 0x83, 2048, 2048);
	mbr_entry(disk, 1, 0, 0x05, 8192, 8192);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 1);
	assert_true(has_warning(t, "EBR at sector 8192"));
	assert_true(vd_part_table_touched(t, 8192 * 512 + 510, 2));
	assert_false(vd_part_table_touched(t, 8193 * 512, 512));     /* the logical's data */
	assert_false(vd_part_table_touched(t, 2048 * 512, 1 << 20)); /* partition 1's data */
	vd_part_table_free(t);
	vd_chain_close(c);
	mbr_entry(disk + 8192 * 512, 0, 0, 0x83, 2, 2046);
	mbr_entry(disk + 8192 * 512, 1, 0, 0x05, 4096, 4096); /* next EBR, not written yet */
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 2);
	assert_int_equal(t->parts[1].number, 5);
	assert_true(vd_part_table_touched(t, 12288 * 512, 1)); /* the next EBR's sector */
	vd_part_table_free(t);
	vd_chain_close(c);

	/* GPT on 512-byte sectors: the array at LBA 2-33 is watched, the backup
	 * (not read while the primary is good) and the partitions are not. */
	gpt_build(disk, DISK, 512, p, 2);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->n, 2);
	assert_true(vd_part_table_touched(t, 33 * 512 + 511, 1));
	assert_false(vd_part_table_touched(t, 34 * 512, 512));
	assert_false(vd_part_table_touched(t, DISK - 512, 512));
	assert_false(vd_part_table_touched(t, 2048 * 512, 4096 * 512));
	vd_part_table_free(t);
	vd_chain_close(c);
	/* Primary damaged: the backup header and array in use are watched. */
	disk[512 + 30] ^= 0xff;
	t = scan(disk, DISK, &c);
	assert_true(t->backup_used);
	assert_true(vd_part_table_touched(t, DISK - 1, 1));
	assert_true(vd_part_table_touched(t, DISK - 512 - 128 * 128, 1));
	vd_part_table_free(t);
	vd_chain_close(c);
	/* GPT on 4096-byte sectors: the array at LBA 2-5. */
	for (unsigned i = 0; i < 2; i++) {
		p[i].first /= 8;
		p[i].last = (p[i].last + 1) / 8 - 1;
	}
	gpt_build(disk, DISK, 4096, p, 2);
	t = scan(disk, DISK, &c);
	assert_int_equal(t->sector_size, 4096);
	assert_true(vd_part_table_touched(t, 6 * 4096 - 1, 1));
	assert_false(vd_part_table_touched(t, 6 * 4096, 4096));
	vd_part_table_free(t);
	vd_chain_close(c);
}

/* Two scans of the same bytes are equal; any field chain.json shows differs. */
static void test_table_equal(void **state)
{
	struct vd_chain *c;
	struct vd_part_table *a, *b;
	struct gpt_part p[] = {{2048, 4095, 0xa1, "one"}, {4096, 6143, 0xa2, "two"}};

	(void)state;
	gpt_build(disk, DISK, 512, p, 2);
	a = scan(disk, DISK, &c);
	vd_chain_close(c);
	b = scan(disk, DISK, &c);
	vd_chain_close(c);
	assert_true(vd_part_table_equal(a, b));
	vd_part_table_free(b);
	p[1].name = "TWO"; /* same place, other name */
	gpt_build(disk, DISK, 512, p, 2);
	b = scan(disk, DISK, &c);
	vd_chain_close(c);
	assert_false(vd_part_table_equal(a, b));
	assert_true(vd_part_same_place(&a->parts[1], &b->parts[1]));
	vd_part_table_free(b);
	p[1].last = 6000; /* smaller */
	gpt_build(disk, DISK, 512, p, 2);
	b = scan(disk, DISK, &c);
	vd_chain_close(c);
	assert_false(vd_part_table_equal(a, b));
	assert_false(vd_part_same_place(&a->parts[1], &b->parts[1]));
	assert_true(vd_part_same_place(&a->parts[0], &b->parts[0]));
	vd_part_table_free(b);
	vd_part_table_free(a);

	memset(disk, 0, DISK);
	mbr_entry(disk, 0, 0, 0x83, 2048, 2048);
	a = scan(disk, DISK, &c);
	vd_chain_close(c);
	disk[446 + 4] = 0x07; /* type only */
	b = scan(disk, DISK, &c);
	vd_chain_close(c);
	assert_false(vd_part_table_equal(a, b));
	vd_part_table_free(b);
	vd_part_table_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mbr_decode),	      cmocka_unit_test(test_gpt_header_decode),
	    cmocka_unit_test(test_gpt_entry_decode),  cmocka_unit_test(test_fs_sniff),
	    cmocka_unit_test(test_scan_mbr_logicals), cmocka_unit_test(test_scan_mbr_skips),
	    cmocka_unit_test(test_scan_gpt),	      cmocka_unit_test(test_touched),
	    cmocka_unit_test(test_table_equal),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
