/* mkvhd: builds VHD test images with the vdcore writer (qemu-img cannot make
 * differencing VHDs), plus an exact raw model of what each one should read as.
 *
 *   mkvhd dynamic OUT.vhd SIZE [--block BYTES]   empty dynamic base
 *   mkvhd child PARENT.vhd CHILD.vhd              differencing child (create_child)
 *   mkvhd write IMG.vhd --seed S --count N [--max-len SECTORS] [--mirror RAW] [--log LOG]
 *       N pseudo-random sector-granular writes of pseudo-random data: short
 *       runs (ending mid-bitmap-byte), whole blocks, and block-straddling
 *       runs. With --mirror every write is applied to RAW too (a raw file of
 *       the disk as seen from the parent, e.g. the parent's model copied), so
 *       RAW becomes the expected content of IMG's layer. With --log each
 *       write's "offset length" (bytes) is appended to LOG: the layer's
 *       change list model.
 *
 * Exit status 0 on success, 1 on error (logged), 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/vhd.h"

static int usage(void)
{
	fprintf(stderr, "usage: mkvhd dynamic OUT SIZE [--block BYTES]\n"
			"       mkvhd child PARENT CHILD\n"
			"       mkvhd write IMG --seed S --count N [--max-len SECTORS] "
			"[--mirror RAW] [--log LOG]\n");
	return 2;
}

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64: good enough spread for test patterns, fully reproducible */
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int cmd_dynamic(int argc, char **argv)
{
	uint64_t block = 2u << 20, size;

	if (argc != 4 && !(argc == 6 && !strcmp(argv[4], "--block")))
		return usage();
	size = strtoull(argv[3], NULL, 0);
	if (argc == 6)
		block = strtoull(argv[5], NULL, 0);
	if (block > UINT32_MAX)
		return usage();
	return vhd_create_dynamic(argv[2], size, (uint32_t)block) < 0;
}

static int cmd_child(int argc, char **argv)
{
	struct vd_image *parent;
	int r;

	if (argc != 4)
		return usage();
	r = vd_image_open(argv[2], 0, &parent);
	if (r < 0)
		return 1;
	if (!parent->ops->create_child) {
		fprintf(stderr, "mkvhd: %s: format %s cannot create children\n", argv[2],
			parent->ops->name);
		vd_image_close(parent);
		return 1;
	}
	r = parent->ops->create_child(parent, argv[3]);
	vd_image_close(parent);
	return r < 0;
}

/* Picks one write: (off, len) in sectors, inside the disk. */
static void pick(uint64_t *rng, uint64_t sectors, uint64_t spb, uint64_t max_len, uint64_t *off,
		 uint64_t *len)
{
	uint64_t kind = rng_next(rng) % 4;

	if (kind == 0 && spb <= max_len * 4) {
		/* a whole block */
		*off = rng_next(rng) % ((sectors + spb - 1) / spb) * spb;
		*len = spb;
	} else if (kind == 1) {
		/* straddles a block boundary */
		uint64_t b = 1 + rng_next(rng) % ((sectors + spb - 1) / spb);
		uint64_t back = 1 + rng_next(rng) % max_len;
		*off = b * spb > back ? b * spb - back : 0;
		*len = 1 + rng_next(rng) % max_len;
	} else {
		/* a short run anywhere: usually ends mid-bitmap-byte */
		*off = rng_next(rng) % sectors;
		*len = 1 + rng_next(rng) % max_len;
	}
	if (*off >= sectors)
		*off = sectors - 1;
	if (*len > sectors - *off)
		*len = sectors - *off;
}

static int cmd_write(int argc, char **argv)
{
	uint64_t seed = 1, count = 16, max_len = 64, rng;
	const char *mirror = NULL, *logpath = NULL;
	FILE *log = NULL;
	struct vd_image *img = NULL;
	uint8_t *buf = NULL;
	int mfd = -1, rc = 1;

	if (argc < 3)
		return usage();
	for (int i = 3; i < argc; i++) {
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(argv[i], "--seed"))
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--count"))
			count = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--max-len"))
			max_len = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--mirror"))
			mirror = argv[++i];
		else if (!strcmp(argv[i], "--log"))
			logpath = argv[++i];
		else
			return usage();
	}
	if (!max_len || max_len > 65536)
		return usage();
	if (vd_image_open(argv[2], VD_OPEN_RDWR, &img) < 0)
		return 1;
	if (logpath && !(log = fopen(logpath, "a"))) {
		fprintf(stderr, "mkvhd: %s: %s\n", logpath, strerror(errno));
		goto out;
	}
	if (mirror) {
		mfd = open(mirror, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (mfd < 0 || ftruncate(mfd, (off_t)img->size) < 0) {
			fprintf(stderr, "mkvhd: %s: %s\n", mirror, strerror(errno));
			goto out;
		}
	}
	{
		uint64_t spb = img->alloc_unit / 512, sectors = img->size / 512;
		uint64_t cap = (spb > max_len ? spb : max_len) * 512;
		buf = malloc(cap);
		if (!buf || !sectors)
			goto out;
		rng = seed;
		for (uint64_t w = 0; w < count; w++) {
			uint64_t off, len;
			pick(&rng, sectors, spb ? spb : 1, max_len, &off, &len);
			for (uint64_t i = 0; i < len * 512; i += 8) {
				uint64_t v = rng_next(&rng);
				memcpy(buf + i, &v, 8);
			}
			if (img->ops->write(img, buf, len * 512, off * 512) < 0)
				goto out;
			if (log)
				fprintf(log, "%" PRIu64 " %" PRIu64 "\n", off * 512, len * 512);
			if (mfd >= 0 && vd_pwrite_full(mfd, buf, len * 512, off * 512) < 0) {
				fprintf(stderr, "mkvhd: %s: write failed\n", mirror);
				goto out;
			}
		}
	}
	rc = 0;
out:
	free(buf);
	if (log && fclose(log) != 0)
		rc = 1;
	if (mfd >= 0)
		close(mfd);
	vd_image_close(img);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	if (!strcmp(argv[1], "dynamic"))
		return cmd_dynamic(argc, argv);
	if (!strcmp(argv[1], "child"))
		return cmd_child(argc, argv);
	if (!strcmp(argv[1], "write"))
		return cmd_write(argc, argv);
	return usage();
}
