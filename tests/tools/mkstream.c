/* mkstream: writes a VMware-layout streamOptimized VMDK from a raw file, for
 * tests (Virtual Disk Format 5.0, stream-optimized), since qemu-img only writes the qemu layout.
 *
 *   mkstream IN.raw OUT.vmdk [--grain SECTORS] [--raw-deflate] [--no-footer]
 *            [--store LEVEL] [--cid HEX]
 *
 * Layout: header (gdOffset = GD_AT_END), embedded descriptor at sector 1 (20
 * sectors), grains from overHead as grain markers + zlib data, a GT marker +
 * GT after the grains of each GT range, then GD marker + GD, footer marker +
 * footer (the header with the real gdOffset) and the end-of-stream marker.
 * All-zero grains are left out (GTE 0). The final partial grain compresses
 * only the bytes inside the disk. --raw-deflate emits RFC 1951 data (readers
 * should fall back to it); --no-footer replaces footer marker and footer with
 * nothing (only EOS at the end: readers must scan); --store 0 makes every
 * grain incompressible-sized (zlib level 0: compressed > grain). */
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

struct out {
	int fd;
	uint64_t sec; /* next free sector */
	const char *path;
};

static void die(const char *what, const char *path)
{
	fprintf(stderr, "mkstream: %s: %s: %s\n", path, what, strerror(errno));
	exit(1);
}

static void put(struct out *o, const void *buf, size_t len)
{
	size_t padded = (len + 511) / 512 * 512;
	uint8_t *tmp = calloc(padded ? padded : 1, 1);

	if (!tmp)
		die("out of memory", o->path);
	memcpy(tmp, buf, len);
	if (vd_pwrite_full(o->fd, tmp, padded, o->sec * 512) < 0)
		die("write failed", o->path);
	o->sec += padded / 512;
	free(tmp);
}

static void put_meta(struct out *o, uint64_t sectors, uint32_t type)
{
	uint8_t m[512] = {0};

	vd_put_le64(m, sectors);
	vd_put_le32(m + 12, type);
	put(o, m, sizeof(m));
}

static void header(uint8_t *h, uint64_t cap, uint64_t grain, uint64_t gd, uint64_t overhead)
{
	memset(h, 0, 512);
	memcpy(h, "KDMV", 4);
	vd_put_le32(h + 4, 3);
	vd_put_le32(h + 8, 0x30001);
	vd_put_le64(h + 12, cap);
	vd_put_le64(h + 20, grain);
	vd_put_le64(h + 28, 1);
	vd_put_le64(h + 36, 20);
	vd_put_le32(h + 44, 512);
	vd_put_le64(h + 56, gd);
	vd_put_le64(h + 64, overhead);
	memcpy(h + 73, "\n \r\n", 4);
	vd_put_le16(h + 77, 1);
}

static uLong deflate_buf(const uint8_t *in, uLong len, uint8_t *out, uLong cap, int level, bool raw)
{
	z_stream zs;

	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, level, Z_DEFLATED, raw ? -15 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return 0;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		zs.total_out = 0;
	deflateEnd(&zs);
	return zs.total_out;
}

int main(int argc, char **argv)
{
	uint64_t grain = 128, size, cap, n_grains, n_gd, gd_sectors, overhead, gb;
	int level = Z_DEFAULT_COMPRESSION, in;
	bool raw = false, footer = true;
	const char *cid = "a1b2c3d4", *base;
	uint8_t h[512], *data, *cbuf, *gd, gt[2048];
	char desc[20 * 512];
	struct out o;

	if (argc < 3) {
		fprintf(stderr, "usage: mkstream IN.raw OUT.vmdk [--grain N] [--raw-deflate] "
				"[--no-footer] [--store LEVEL] [--cid HEX]\n");
		return 2;
	}
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--grain") && i + 1 < argc)
			grain = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--store") && i + 1 < argc)
			level = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--cid") && i + 1 < argc)
			cid = argv[++i];
		else if (!strcmp(argv[i], "--raw-deflate"))
			raw = true;
		else if (!strcmp(argv[i], "--no-footer"))
			footer = false;
		else
			return 2;
	}
	in = open(argv[1], O_RDONLY);
	if (in < 0 || vd_fd_size(in, &size) < 0)
		die("cannot open", argv[1]);
	if (!grain || grain > 2048 || (grain & (grain - 1)) || !size)
		return 2;
	gb = grain * 512;
	cap = (size + 511) / 512;
	n_grains = (cap + grain - 1) / grain;
	n_gd = (n_grains + 511) / 512;
	gd_sectors = (n_gd * 4 + 511) / 512;
	overhead = (21 + grain - 1) / grain * grain;
	data = calloc(1, gb);
	cbuf = malloc(compressBound(gb));
	gd = calloc(gd_sectors, 512);
	if (!data || !cbuf || !gd)
		die("out of memory", argv[2]);
	o.path = argv[2];
	o.fd = open(o.path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (o.fd < 0)
		die("cannot create", o.path);

	o.sec = overhead;
	for (uint64_t i = 0; i < n_gd; i++) {
		bool any = false;

		memset(gt, 0, sizeof(gt));
		for (uint64_t k = 0; k < 512 && i * 512 + k < n_grains; k++) {
			uint64_t g = i * 512 + k, len = vd_min_u64(gb, size - g * gb), clen;
			uint8_t *rec;
			bool zero = true;

			memset(data, 0, gb);
			if (vd_pread_full(in, data, len, g * gb) < 0)
				die("read failed", argv[1]);
			for (uint64_t b = 0; b < len && zero; b++)
				zero = !data[b];
			if (zero)
				continue;
			/* the final partial grain covers only the sectors inside the disk */
			len = vd_min_u64(gb, (cap - g * grain) * 512);
			clen = deflate_buf(data, len, cbuf, compressBound(gb), level, raw);
			if (!clen)
				die("deflate failed", o.path);
			rec = malloc(12 + clen);
			if (!rec)
				die("out of memory", o.path);
			vd_put_le64(rec, g * grain);
			vd_put_le32(rec + 8, (uint32_t)clen);
			memcpy(rec + 12, cbuf, clen);
			vd_put_le32(gt + 4 * k, (uint32_t)o.sec);
			put(&o, rec, 12 + clen);
			free(rec);
			any = true;
		}
		if (!any)
			continue;
		put_meta(&o, 4, 1);
		vd_put_le32(gd + 4 * i, (uint32_t)o.sec);
		put(&o, gt, sizeof(gt));
	}
	put_meta(&o, gd_sectors, 2);
	header(h, cap, grain, o.sec, overhead);
	put(&o, gd, gd_sectors * 512);
	if (footer) {
		put_meta(&o, 1, 3);
		put(&o, h, 512);
	}
	put_meta(&o, 0, 0);

	header(h, cap, grain, 0xffffffffffffffffull, overhead);
	if (vd_pwrite_full(o.fd, h, 512, 0) < 0)
		die("write failed", o.path);
	base = strrchr(o.path, '/') ? strrchr(o.path, '/') + 1 : o.path;
	memset(desc, 0, sizeof(desc));
	snprintf(desc, sizeof(desc),
		 "# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=ffffffff\n"
		 "createType=\"streamOptimized\"\n\n# Extent description\nRW %" PRIu64
		 " SPARSE \"%s\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
		 "ddb.virtualHWVersion = \"4\"\n",
		 cid, cap, base);
	if (vd_pwrite_full(o.fd, desc, sizeof(desc), 512) < 0 || close(o.fd) < 0)
		die("write failed", o.path);
	close(in);
	free(data);
	free(cbuf);
	free(gd);
	return 0;
}
