/* mkclaims: writes a small VMDK whose header claims far more than the file
 * holds (a huge capacity in tiny grains), for tests that resources follow
 * the evidence, not its claims (issue: hostile evidence, class 3).
 *
 *   mkclaims OUT.vmdk KIND CAPACITY GRAIN [--cid HEX] [--parent FILE HEX]
 *            [--data N] [--shared-gt]
 *
 * KIND: "sparse" (monolithicSparse; the GD is a hole but for what --data
 * and --shared-gt need), "stream" (streamOptimized, qemu layout: GD in the
 * header) or "scan" (streamOptimized without footer or GD: readers must scan
 * the markers). CAPACITY and GRAIN are in sectors. The file holds one grain
 * of data, grain number N (default 0), every byte (N + 1) & 0xff, so a chain
 * of such layers with distinct N shows each layer's grain. --shared-gt
 * (sparse only) points every GD entry at one grain table whose entries all
 * map grains: a few KiB of tables that claim every grain of the disk.
 * The embedded descriptor gives CID (default fffffffe) and, with --parent,
 * parentCID and parentFileNameHint. Files are sparse: their size follows the
 * GD the capacity needs, their blocks do not. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "disk/endian.h"
#include "disk/util.h"

#define DESC_SECTORS 2u

struct claims {
	const char *out, *kind, *cid, *parent, *parent_cid;
	uint64_t cap, grain, data;
	bool shared_gt;
	int fd;
};

static void __attribute__((noreturn)) die(const struct claims *c, const char *what)
{
	fprintf(stderr, "mkclaims: %s: %s: %s\n", c->out, what, strerror(errno));
	exit(1);
}

static void put(const struct claims *c, const void *buf, size_t len, uint64_t sector)
{
	if (vd_pwrite_full(c->fd, buf, len, sector * 512) < 0)
		die(c, "write failed");
}

static void put_le32(const struct claims *c, uint64_t byte_off, uint32_t v)
{
	uint8_t b[4];

	vd_put_le32(b, v);
	if (vd_pwrite_full(c->fd, b, 4, byte_off) < 0)
		die(c, "write failed");
}

static void header(const struct claims *c, uint64_t gd, uint64_t overhead, bool stream)
{
	uint8_t h[512] = {0};

	memcpy(h, "KDMV", 4);
	vd_put_le32(h + 4, stream ? 3 : 1);
	vd_put_le32(h + 8, stream ? 0x30001 : 0x1);
	vd_put_le64(h + 12, c->cap);
	vd_put_le64(h + 20, c->grain);
	vd_put_le64(h + 28, 1);
	vd_put_le64(h + 36, DESC_SECTORS);
	vd_put_le32(h + 44, 512);
	vd_put_le64(h + 48, 0);
	vd_put_le64(h + 56, gd);
	vd_put_le64(h + 64, overhead);
	memcpy(h + 73, "\n \r\n", 4);
	vd_put_le16(h + 77, stream ? 1 : 0);
	put(c, h, sizeof(h), 0);
}

static void descriptor(const struct claims *c, bool stream)
{
	char d[DESC_SECTORS * 512] = {0};
	const char *base = strrchr(c->out, '/') ? strrchr(c->out, '/') + 1 : c->out;
	int n = snprintf(d, sizeof(d),
			 "# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\n"
			 "createType=\"%s\"\n%s%s%sRW %" PRIu64 " SPARSE \"%s\"\n",
			 c->cid, c->parent ? c->parent_cid : "ffffffff",
			 stream ? "streamOptimized" : "monolithicSparse",
			 c->parent ? "parentFileNameHint=\"" : "", c->parent ? c->parent : "",
			 c->parent ? "\"\n" : "", c->cap, base);

	if (n < 0 || (size_t)n >= sizeof(d)) {
		errno = ENAMETOOLONG;
		die(c, "descriptor too long");
	}
	put(c, d, sizeof(d), 1);
}

/* The data grain, compressed for streams behind its 12-byte marker; returns
 * the sectors written at sector. */
static uint64_t data_grain(const struct claims *c, uint64_t sector, bool stream)
{
	uint64_t gb = c->grain * 512;
	uLongf clen = compressBound(gb);
	uint8_t *raw = malloc(gb), *rec = calloc(1, 12 + clen + 512);

	if (!raw || !rec)
		die(c, "out of memory");
	memset(raw, (int)((c->data + 1) & 0xff), gb);
	if (!stream) {
		put(c, raw, gb, sector);
		free(raw);
		free(rec);
		return c->grain;
	}
	if (compress2(rec + 12, &clen, raw, gb, 9) != Z_OK)
		die(c, "deflate failed");
	vd_put_le64(rec, c->data * c->grain);
	vd_put_le32(rec + 8, (uint32_t)clen);
	put(c, rec, (12 + clen + 511) / 512 * 512, sector);
	free(raw);
	free(rec);
	return (12 + clen + 511) / 512;
}

int main(int argc, char **argv)
{
	struct claims c = {.cid = "fffffffe"};
	uint64_t n_gd, gd_sectors, gd = 1 + DESC_SECTORS, gt, sec;
	uint8_t eos[512] = {0};

	if (argc < 5) {
		fprintf(stderr, "usage: mkclaims OUT.vmdk sparse|stream|scan CAPACITY GRAIN "
				"[--cid HEX] [--parent FILE HEX] [--data N] [--shared-gt]\n");
		return 2;
	}
	c.out = argv[1];
	c.kind = argv[2];
	c.cap = strtoull(argv[3], NULL, 0);
	c.grain = strtoull(argv[4], NULL, 0);
	for (int i = 5; i < argc; i++) {
		if (!strcmp(argv[i], "--cid") && i + 1 < argc) {
			c.cid = argv[++i];
		} else if (!strcmp(argv[i], "--parent") && i + 2 < argc) {
			c.parent = argv[++i];
			c.parent_cid = argv[++i];
		} else if (!strcmp(argv[i], "--data") && i + 1 < argc) {
			c.data = strtoull(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--shared-gt")) {
			c.shared_gt = true;
		} else {
			return 2;
		}
	}
	if (!c.grain || c.cap < c.grain || c.data >= c.cap / c.grain)
		return 2;
	n_gd = (c.cap / c.grain + 511) / 512;
	gd_sectors = (n_gd * 4 + 511) / 512;
	c.fd = open(c.out, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (c.fd < 0)
		die(&c, "cannot create");

	if (!strcmp(c.kind, "scan")) {
		/* markers only: header, descriptor, one grain, end of stream */
		sec = 1 + DESC_SECTORS;
		header(&c, UINT64_MAX, sec, true);
		descriptor(&c, true);
		sec += data_grain(&c, sec, true);
		put(&c, eos, sizeof(eos), sec);
	} else {
		bool stream = !strcmp(c.kind, "stream");

		if (!stream && strcmp(c.kind, "sparse"))
			return 2;
		gt = gd + gd_sectors;
		sec = gt + 4;
		header(&c, gd, sec, stream);
		descriptor(&c, stream);
		if (c.shared_gt) {
			uint8_t *all = malloc(n_gd * 4);

			if (!all)
				die(&c, "out of memory");
			for (uint64_t i = 0; i < n_gd; i++)
				vd_put_le32(all + i * 4, (uint32_t)gt);
			put(&c, all, n_gd * 4, gd);
			free(all);
		} else {
			put_le32(&c, gd * 512 + c.data / 512 * 4, (uint32_t)gt);
		}
		for (uint64_t k = 0; k < 512; k++)
			if (k == c.data % 512 || c.shared_gt)
				put_le32(&c, gt * 512 + k * 4, (uint32_t)sec);
		sec += data_grain(&c, sec, stream);
		if (ftruncate(c.fd, (off_t)(sec * 512)) < 0)
			die(&c, "truncate failed");
	}
	if (close(c.fd) < 0)
		die(&c, "close failed");
	return 0;
}
