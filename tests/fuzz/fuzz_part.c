/* Harness: partition discovery (chain/part.c over the decoders of
 * disk/part.c: MBR, EBR chains, GPT with 512- and 4096-byte sectors, the
 * backup header, hybrid MBRs) and the views and filesystem sniffing of the
 * partitions found.
 *
 * Input: the raw disk (its size rounded up to 512 bytes), served as the
 * flat extent of a monolithicFlat VMDK the harness writes around it, so the
 * table is read through a real chain. GPT headers and entry arrays whose
 * CRC32 is stored as 0 get a correct one first (the header's at LBA 1 of
 * either sector size and in the last sector), so mutants get past the CRCs.
 * Checked: partitions lie inside the disk, do not overlap, are numbered
 * uniquely in order; views read, seek and count consistently; the table's
 * JSON is strict. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "chain/part.h"
#include "disk/endian.h"
#include "disk/formats.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A GPT header at byte at of the ss-sector disk[0, len) with CRCs of 0. */
static void gpt_fix(uint8_t *disk, size_t len, uint64_t at, uint32_t ss)
{
	uint8_t *h = disk + at;
	uint32_t hs;
	uint64_t arr, alen;

	if (at + ss > len || memcmp(h, "EFI PART", 8))
		return;
	hs = vd_get_le32(h + 12);
	arr = vd_get_le64(h + 72) * ss;
	alen = (uint64_t)vd_get_le32(h + 80) * vd_get_le32(h + 84);
	if (vd_get_le32(h + 88) == 0 && arr / ss == vd_get_le64(h + 72) && arr < len &&
	    alen <= len - arr)
		vd_put_le32(h + 88, (uint32_t)crc32(0, disk + arr, (uInt)alen));
	if (vd_get_le32(h + 16) == 0 && hs >= 92 && hs <= ss)
		vd_put_le32(h + 16, (uint32_t)crc32(0, h, hs));
}

static void part_check(struct vd_chain *c, const struct vd_part_table *t, uint64_t disk,
		       struct fz_rng *r)
{
	struct vd_json j = {0};
	const char *why;

	if (t->sector_size != 512 && t->sector_size != 4096)
		fz_fail("part: sector size %u", t->sector_size);
	for (unsigned i = 0; i < t->n; i++) {
		const struct vd_part *p = &t->parts[i];
		struct vd_view v = vd_view_part(c, 0, p);
		uint64_t off, pnum, alloc;
		uint8_t buf[4096];
		int ret;

		if (p->size == 0 || p->start == 0 || p->start >= disk || p->size > disk - p->start)
			fz_fail("part: partition %u [%" PRIu64 ", +%" PRIu64
				") outside the %" PRIu64 "-byte disk",
				p->number, p->start, p->size, disk);
		if (i && p->number <= t->parts[i - 1].number)
			fz_fail("part: partition numbers not increasing (%u after %u)", p->number,
				t->parts[i - 1].number);
		for (unsigned k = 0; k < i; k++) {
			const struct vd_part *q = &t->parts[k];
			if (p->start < q->start + q->size && q->start < p->start + p->size)
				fz_fail("part: partitions %u and %u overlap", q->number, p->number);
		}
		off = fz_rng_below(r, p->size);
		ret = vd_view_read(&v, buf, sizeof(buf), off);
		fz_check_ret(ret, "vd_view_read");
		ret = vd_view_block_status(&v, off, p->size - off, &pnum);
		if (ret >= 0 && (pnum == 0 || pnum > p->size - off))
			fz_fail("part: view run of %" PRIu64 " at %" PRIu64, pnum, off);
		ret = vd_view_seek(&v, off, fz_rng_below(r, 2), &pnum);
		if (ret == 0 && (pnum < off || pnum > p->size))
			fz_fail("part: seek from %" PRIu64 " gave %" PRIu64, off, pnum);
		if (ret < 0 && ret != -ENXIO)
			fz_check_ret(ret, "vd_view_seek");
		ret = vd_view_allocated(&v, 2048, &alloc); /* the cap st_blocks uses */
		if (ret < 0 && ret != -E2BIG)
			fz_check_ret(ret, "vd_view_allocated");
		if (ret == 0 && alloc > p->size)
			fz_fail("part: %" PRIu64 " bytes allocated in a %" PRIu64 "-byte view",
				alloc, p->size);
	}
	vd_json_obj_begin(&j, NULL);
	vd_part_describe(c, 0, t, &j, "partitions");
	vd_json_obj_end(&j);
	if (j.buf.data && (why = fz_json_check(j.buf.data)))
		fz_fail("part: JSON is not valid: %s:\n%s", why, j.buf.data);
	vd_buf_free(&j.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char flat[] = FZ_ROOT "/d-flat.vmdk", top[] = FZ_ROOT "/d.vmdk";
	size_t len = (size + 511) / 512 * 512;
	uint8_t *disk;
	char desc[512];
	struct vd_chain *c = NULL;
	struct vd_part_table *t = NULL;
	struct fz_rng r;
	unsigned errs;
	int ret;

	fz_init();
	fz_fs_reset();
	if (size == 0)
		return 0;
	fz_rng_init(&r, data, size);
	disk = calloc(1, len);
	if (!disk)
		fz_fail("out of memory");
	memcpy(disk, data, size);
	gpt_fix(disk, len, 512, 512);
	gpt_fix(disk, len, 4096, 4096);
	gpt_fix(disk, len, len - 512, 512);
	if (len >= 4096 && len % 4096 == 0)
		gpt_fix(disk, len, len - 4096, 4096);
	snprintf(desc, sizeof(desc),
		 "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
		 "createType=\"monolithicFlat\"\nRW %zu FLAT \"d-flat.vmdk\" 0\n",
		 len / 512);
	if (fz_fs_add(top, (const uint8_t *)desc, strlen(desc)) < 0 ||
	    fz_fs_add(flat, disk, len) < 0)
		fz_fail("memfs: cannot add the disk");
	free(disk);
	errs = vd_log_error_count();
	ret = vd_chain_open(top, 0, &c);
	if (ret < 0) {
		fz_check_open_failed(ret, errs, "vd_chain_open");
		fz_fs_reset();
		return 0;
	}
	ret = vd_part_scan(c, 0, &t);
	fz_check_ret(ret, "vd_part_scan");
	if (ret == 0) {
		fz_exercised++;
		part_check(c, t, vd_chain_size(c, 0), &r);
		vd_part_table_free(t);
	}
	vd_chain_close(c);
	fz_fs_reset();
	return 0;
}
