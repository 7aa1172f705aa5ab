/* Tiny KDMV writer for unit tests (see vmdk_gen_helper.h). Layout: header at
 * sector 0, optional descriptor at sector 1 (20 sectors), GD, then every GT,
 * padded to a grain boundary; grains are appended in the order allocated so
 * tests can make file-contiguous and non-contiguous runs at will. */
#include "vmdk_gen_helper.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"
#include "disk/endian.h"
#include "test_util.h"

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p)
		abort();
	return p;
}

/* Geometric growth: a file built grain by grain (131,072 grains in
 * test_linear_tables_stay_cached) must not copy itself each time (minutes
 * under ASan). */
static void grow(struct kgen *g, size_t n)
{
	if (n > g->room) {
		g->room = n > 2 * g->room ? n : 2 * g->room;
		g->file = xrealloc(g->file, g->room);
	}
	memset(g->file + g->len, 0, n - g->len);
	g->len = n;
}

void kgen_init(struct kgen *g, uint64_t cap, uint64_t grain, uint32_t version, uint32_t flags,
	       const char *desc)
{
	uint64_t grains = (cap + grain - 1) / grain, gd_sectors, end;
	uint8_t *h;

	memset(g, 0, sizeof(*g));
	g->cap = cap;
	g->grain = grain;
	g->n_gt = (grains + 511) / 512;
	gd_sectors = (g->n_gt * 4 + 511) / 512;
	g->gd_off = desc ? 21 : 1;
	end = g->gd_off + gd_sectors + g->n_gt * 4;
	g->overhead = (end + grain - 1) / grain * grain;
	grow(g, g->overhead * 512);
	g->model = calloc(cap, 512);
	if (!g->model)
		abort();
	h = g->file;
	memcpy(h, "KDMV", 4);
	vd_put_le32(h + 4, version);
	vd_put_le32(h + 8, flags);
	vd_put_le64(h + 12, cap);
	vd_put_le64(h + 20, grain);
	vd_put_le64(h + 28, desc ? 1 : 0);
	vd_put_le64(h + 36, desc ? 20 : 0);
	vd_put_le32(h + 44, 512);
	vd_put_le64(h + 48, 0);
	vd_put_le64(h + 56, g->gd_off);
	vd_put_le64(h + 64, g->overhead);
	memcpy(h + 73, "\n \r\n", 4);
	if (desc)
		memcpy(g->file + 512, desc, strlen(desc) < 10240 ? strlen(desc) : 10240);
	for (uint64_t i = 0; i < g->n_gt; i++)
		vd_put_le32(g->file + g->gd_off * 512 + i * 4,
			    (uint32_t)(g->gd_off + gd_sectors + i * 4));
}

uint64_t kgen_gte_off(const struct kgen *g, uint64_t idx)
{
	uint64_t gde = vd_get_le32(g->file + g->gd_off * 512 + idx / 512 * 4);

	return gde * 512 + idx % 512 * 4;
}

void kgen_set_gte(struct kgen *g, uint64_t idx, uint32_t v)
{
	vd_put_le32(g->file + kgen_gte_off(g, idx), v);
	if (v == 1) {
		uint64_t start = idx * g->grain * 512;
		uint64_t n = g->grain * 512;

		if (start + n > g->cap * 512)
			n = g->cap * 512 - start;
		memset(g->model + start, 0, n);
	}
}

void kgen_alloc(struct kgen *g, uint64_t idx, uint8_t seed)
{
	uint64_t gb = g->grain * 512, start = idx * gb, at = g->len;

	grow(g, g->len + gb);
	for (uint64_t i = 0; i < gb; i++) {
		uint64_t v = (start + i) / 512 * 131 + i * 7 + seed;

		g->file[at + i] = (uint8_t)(v ^ (v >> 8));
	}
	vd_put_le32(g->file + kgen_gte_off(g, idx), (uint32_t)(at / 512));
	for (uint64_t i = 0; i < gb && start + i < g->cap * 512; i++)
		g->model[start + i] = g->file[at + i];
}

void kgen_write(const struct kgen *g, const char *path)
{
	tu_write_file(path, g->file, g->len);
}

void kgen_free(struct kgen *g)
{
	free(g->file);
	free(g->model);
	memset(g, 0, sizeof(*g));
}

int kgen_compare_chain(const char *image, unsigned level_from_top, const char *raw)
{
	struct vd_chain *c = NULL;
	uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
	int fd = open(raw, O_RDONLY), r;
	uint64_t size;
	unsigned level;

	if (!a || !b || fd < 0)
		abort();
	r = vd_chain_open(image, 0, &c);
	if (r < 0)
		goto out;
	level = vd_chain_depth(c) - 1 - level_from_top;
	size = vd_chain_size(c, level);
	if ((uint64_t)lseek(fd, 0, SEEK_END) != size) {
		fprintf(stderr, "size %llu differs from %s\n", (unsigned long long)size, raw);
		r = 1;
		goto out;
	}
	for (uint64_t off = 0; off < size; off += 1 << 20) {
		size_t n = size - off < (1 << 20) ? (size_t)(size - off) : (1 << 20);

		r = vd_chain_read(c, level, a, n, off);
		if (r < 0)
			goto out;
		if (pread(fd, b, n, (off_t)off) != (ssize_t)n)
			abort();
		if (memcmp(a, b, n) != 0) {
			fprintf(stderr, "%s differs from %s in the MiB at %llu\n", image, raw,
				(unsigned long long)off);
			r = 1;
			goto out;
		}
	}
	r = 0;
out:
	vd_chain_close(c);
	close(fd);
	free(a);
	free(b);
	return r;
}
