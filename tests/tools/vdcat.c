/* vdcat: writes the merged raw disk of a chain to stdout, as seen from one
 * layer (default: the top), via vd_chain_open + vd_chain_read in 1 MiB
 * chunks. A test tool for comparing against `qemu-img convert -O raw`.
 *
 *   vdcat [--force] [--layer N] IMAGE
 *
 * Exit status 0 on success, 1 on any error (already logged), 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"

#define CHUNK (1u << 20)

static int usage(void)
{
	fprintf(stderr, "usage: vdcat [--force] [--layer N] IMAGE\n");
	return 2;
}

static int write_all(const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDOUT_FILENO, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "vdcat: write to stdout: %s\n", strerror(errno));
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct vd_chain *c = NULL;
	const char *path = NULL;
	unsigned flags = 0, level;
	long layer = -1;
	uint8_t *buf = NULL;
	uint64_t size, off;
	int rc = 1, r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--force") == 0) {
			flags |= VD_CHAIN_FORCE;
		} else if (strcmp(argv[i], "--layer") == 0 && i + 1 < argc) {
			char *end;

			layer = strtol(argv[++i], &end, 10);
			if (*end || layer < 0)
				return usage();
		} else if (!path && argv[i][0] != '-') {
			path = argv[i];
		} else {
			return usage();
		}
	}
	if (!path)
		return usage();
	r = vd_chain_open(path, flags, &c);
	if (r < 0)
		return 1;
	level = vd_chain_depth(c) - 1;
	if (layer >= 0) {
		if ((unsigned long)layer >= vd_chain_depth(c)) {
			fprintf(stderr, "vdcat: %s: layer %ld out of range (chain has %u layers)\n",
				path, layer, vd_chain_depth(c));
			goto out;
		}
		level = (unsigned)layer;
	}
	buf = malloc(CHUNK);
	if (!buf)
		goto out;
	size = vd_chain_size(c, level);
	for (off = 0; off < size; off += CHUNK) {
		size_t n = (size_t)(size - off < CHUNK ? size - off : CHUNK);

		r = vd_chain_read(c, level, buf, n, off);
		if (r < 0) {
			fprintf(stderr, "vdcat: %s: read of %zu bytes at %" PRIu64 " failed: %s\n",
				path, n, off, strerror(-r));
			goto out;
		}
		if (write_all(buf, n) < 0)
			goto out;
	}
	rc = 0;
out:
	free(buf);
	vd_chain_close(c);
	return rc;
}
