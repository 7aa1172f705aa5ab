/* mkfullsparse: writes a monolithicSparse VMDK whose every grain is allocated,
 * and the raw file with the same content, both as sparse host files, for the
 * benchmark's "grain tables larger than the cache budget" row: a 1 TiB disk
 * has 32 Ki grain tables (64 MiB), more than a reader can keep, yet takes
 * only its metadata on the host disk.
 *
 *   mkfullsparse OUT.vmdk OUT.raw GIB [--stamp-every N]
 *
 * Layout (VMware "Virtual Disk Format 5.0", hosted sparse extent): header,
 * embedded descriptor at sector 1 (20 sectors), redundant GD + GTs, GD + GTs,
 * then the grains (64 KiB) in disk order from overHead. Grain g is at sector
 * overHead + 128 g: every grain-table entry is set, and the grains are holes
 * of the host file (they read as zeros) except every N-th grain (default
 * 4096, one per 256 MiB), whose first 512 bytes hold data that depends on its
 * offset, written at the same offset into OUT.raw, so that a reader that
 * follows the wrong entry is caught by a sampled comparison. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/util.h"

#define GRAIN_SECTORS 128u
#define GTES 512u
#define DESC_SECTORS 20u

static void die(const char *path, const char *what)
{
	fprintf(stderr, "mkfullsparse: %s: %s: %s\n", path, what, strerror(errno));
	exit(1);
}

static void put(int fd, const char *path, const void *buf, size_t len, uint64_t off)
{
	if (vd_pwrite_full(fd, buf, len, off) < 0)
		die(path, "write failed");
}

/* GD (gt0 = sector of the first GT) and the GTs: entry i of the whole table
 * array is the sector of grain i. */
static void put_tables(int fd, const char *path, uint64_t gd_sec, uint64_t gt0, uint64_t n_gt,
		       uint64_t overhead)
{
	size_t gd_bytes = n_gt * 4, gts_bytes = n_gt * GTES * 4;
	uint8_t *gd = calloc(1, gd_bytes), *gts = malloc(gts_bytes);

	if (!gd || !gts)
		die(path, "out of memory");
	for (uint64_t i = 0; i < n_gt; i++)
		vd_put_le32(gd + 4 * i, (uint32_t)(gt0 + i * GTES * 4 / 512));
	for (uint64_t g = 0; g < n_gt * GTES; g++)
		vd_put_le32(gts + 4 * g, (uint32_t)(overhead + g * GRAIN_SECTORS));
	put(fd, path, gd, gd_bytes, gd_sec * 512);
	put(fd, path, gts, gts_bytes, gt0 * 512);
	free(gd);
	free(gts);
}

int main(int argc, char **argv)
{
	static const uint8_t nl[4] = {0x0a, 0x20, 0x0d, 0x0a};
	uint8_t hdr[512] = {0}, desc[DESC_SECTORS * 512] = {0}, stamp[512];
	uint64_t gib, every = 4096, sectors, grains, n_gt, gd_sectors, gts_sectors, rgd, gd, over;
	const char *out, *raw, *base;
	int fd, rfd;

	if (argc != 4 && !(argc == 6 && !strcmp(argv[4], "--stamp-every"))) {
		fprintf(stderr, "usage: mkfullsparse OUT.vmdk OUT.raw GIB [--stamp-every N]\n");
		return 2;
	}
	out = argv[1];
	raw = argv[2];
	gib = strtoull(argv[3], NULL, 0);
	if (argc == 6)
		every = strtoull(argv[5], NULL, 0);
	if (gib < 1 || gib > 2047 || every < 1) {
		fprintf(stderr, "mkfullsparse: GIB must be in [1, 2047], N >= 1\n");
		return 2;
	}
	sectors = gib << 21;
	grains = sectors / GRAIN_SECTORS;
	n_gt = grains / GTES;
	gd_sectors = (n_gt * 4 + 511) / 512;
	gts_sectors = n_gt * GTES * 4 / 512;
	rgd = 1 + DESC_SECTORS;
	gd = rgd + gd_sectors + gts_sectors;
	over = (gd + gd_sectors + gts_sectors + GRAIN_SECTORS - 1) / GRAIN_SECTORS * GRAIN_SECTORS;

	vd_put_le32(hdr + 0, 0x564d444bu); /* "KDMV" */
	vd_put_le32(hdr + 4, 1);
	vd_put_le32(hdr + 8, 0x3u); /* newline test, redundant GD */
	vd_put_le64(hdr + 12, sectors);
	vd_put_le64(hdr + 20, GRAIN_SECTORS);
	vd_put_le64(hdr + 28, 1);
	vd_put_le64(hdr + 36, DESC_SECTORS);
	vd_put_le32(hdr + 44, GTES);
	vd_put_le64(hdr + 48, rgd);
	vd_put_le64(hdr + 56, gd);
	vd_put_le64(hdr + 64, over);
	memcpy(hdr + 73, nl, sizeof(nl));
	base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
	snprintf((char *)desc, sizeof(desc),
		 "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=5eed5eed\n"
		 "parentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n"
		 "# Extent description\nRW %" PRIu64 " SPARSE \"%s\"\n\n"
		 "# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
		 "ddb.virtualHWVersion = \"14\"\n",
		 sectors, base);

	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(out, "cannot create");
	rfd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (rfd < 0)
		die(raw, "cannot create");
	put(fd, out, hdr, sizeof(hdr), 0);
	put(fd, out, desc, sizeof(desc), 512);
	put_tables(fd, out, rgd, rgd + gd_sectors, n_gt, over);
	put_tables(fd, out, gd, gd + gd_sectors, n_gt, over);
	for (uint64_t g = 0; g < grains; g += every) {
		for (unsigned i = 0; i < sizeof(stamp); i += 8)
			vd_put_le64(stamp + i,
				    (g * GRAIN_SECTORS * 512 + i) * 0x9e3779b97f4a7c15ull);
		put(fd, out, stamp, sizeof(stamp), (over + g * GRAIN_SECTORS) * 512);
		put(rfd, raw, stamp, sizeof(stamp), g * GRAIN_SECTORS * 512);
	}
	if (ftruncate(fd, (off_t)((over + sectors) * 512)) < 0 ||
	    ftruncate(rfd, (off_t)(sectors * 512)) < 0)
		die(out, "cannot set the size");
	if (close(fd) < 0 || close(rfd) < 0)
		die(out, "close failed");
	return 0;
}
