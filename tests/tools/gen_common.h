/* Shared parts of the ESXi test generators (mkcowd, mksesparse): the in-memory
 * model of one layer, command-line parsing, deterministic data, the model and
 * mask outputs and the text descriptor. Header-only because every
 * generator .c file is its own executable.
 *
 * Model: a layer of `sectors` sectors in grains of `grain` sectors. Each grain
 * has a state (GEN_ABSENT, GEN_UNMAPPED, GEN_ZERO, GEN_DATA); writes are
 * widened to whole grains (a real delta holds whole grains too) and filled
 * with data that depends only on the seed and the absolute byte offset. */
#ifndef VD_GEN_COMMON_H
#define VD_GEN_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/util.h"

enum gen_state { GEN_ABSENT = 0, GEN_UNMAPPED = 1, GEN_ZERO = 2, GEN_DATA = 3 };

struct gen_model {
	const char *out, *model, *mask, *over, *desc, *parent;
	const char *cid, *parent_cid;
	uint64_t sectors, grain, grains;
	uint8_t *data;	 /* sectors * 512 bytes */
	uint8_t *gstate; /* per grain: enum gen_state */
};

static inline void __attribute__((noreturn, format(printf, 1, 2))) gen_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("generator: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static inline uint64_t gen_word(uint64_t seed, uint64_t idx)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + idx * 0xbf58476d1ce4e5b9ull + 1;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Parses "OFF:LEN[:SEED]" (bytes; 0x prefixes allowed) and applies it. */
static inline void gen_apply(struct gen_model *m, const char *spec, enum gen_state st)
{
	char *end;
	uint64_t off = strtoull(spec, &end, 0), len, seed = 0, gb = m->grain * 512;

	if (*end != ':')
		gen_die("bad range '%s' (want OFF:LEN[:SEED])", spec);
	len = strtoull(end + 1, &end, 0);
	if (*end == ':')
		seed = strtoull(end + 1, &end, 0);
	if (*end || !len || off + len > m->sectors * 512 || off + len < off)
		gen_die("bad range '%s' for a disk of %" PRIu64 " sectors", spec, m->sectors);
	for (uint64_t g = off / gb; g <= (off + len - 1) / gb; g++) {
		uint64_t a = g * gb, b = vd_min_u64(a + gb, m->sectors * 512);

		m->gstate[g] = (uint8_t)st;
		for (uint64_t p = a; p < b; p += 8)
			vd_put_le64(m->data + p, st == GEN_DATA ? gen_word(seed, p / 8) : 0);
	}
}

static inline void gen_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || vd_pwrite_full(fd, buf, len, 0) < 0 || close(fd) < 0)
		gen_die("%s: cannot write: %s", path, strerror(errno));
}

static inline void gen_usage(const char *prog, bool has_grain)
{
	fprintf(stderr,
		"usage: %s OUT SECTORS%s [--write OFF:LEN:SEED]...%s\n"
		"       [--model OUT.raw [--over PARENT.raw]] [--mask OUT.mask]\n"
		"       [--descriptor DESC [--parent PARENT_DESC --parent-cid HEX] --cid HEX]\n",
		prog, has_grain ? " GRAIN" : "",
		has_grain ? "" : " [--zero OFF:LEN]... [--unmap OFF:LEN]...");
	exit(2);
}

/* Parses argv into m. has_grain: GRAIN is the third positional argument
 * (mkcowd); otherwise the grain is fixed_grain and --zero/--unmap exist. */
static inline void gen_parse(struct gen_model *m, int argc, char **argv, bool has_grain,
			     uint64_t fixed_grain)
{
	int i = has_grain ? 4 : 3;

	memset(m, 0, sizeof(*m));
	if (argc < i)
		gen_usage(argv[0], has_grain);
	m->out = argv[1];
	m->sectors = strtoull(argv[2], NULL, 0);
	m->grain = has_grain ? strtoull(argv[3], NULL, 0) : fixed_grain;
	if (!m->sectors || !m->grain || m->sectors > (1ull << 32))
		gen_die("bad SECTORS or GRAIN");
	m->grains = (m->sectors + m->grain - 1) / m->grain;
	m->data = calloc(m->sectors, 512);
	m->gstate = calloc(m->grains, 1);
	if (!m->data || !m->gstate)
		gen_die("out of memory");
	for (; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			gen_usage(argv[0], has_grain);
		i++;
		if (!strcmp(a, "--write"))
			gen_apply(m, v, GEN_DATA);
		else if (!strcmp(a, "--zero") && !has_grain)
			gen_apply(m, v, GEN_ZERO);
		else if (!strcmp(a, "--unmap") && !has_grain)
			gen_apply(m, v, GEN_UNMAPPED);
		else if (!strcmp(a, "--model"))
			m->model = v;
		else if (!strcmp(a, "--over"))
			m->over = v;
		else if (!strcmp(a, "--mask"))
			m->mask = v;
		else if (!strcmp(a, "--descriptor"))
			m->desc = v;
		else if (!strcmp(a, "--parent"))
			m->parent = v;
		else if (!strcmp(a, "--parent-cid"))
			m->parent_cid = v;
		else if (!strcmp(a, "--cid"))
			m->cid = v;
		else
			gen_usage(argv[0], has_grain);
	}
}

/* Writes the model (this layer over --over or zeros) and the per-sector mask. */
static inline void gen_write_model(const struct gen_model *m)
{
	uint64_t bytes = m->sectors * 512, gb = m->grain * 512;

	if (m->model) {
		uint8_t *img = calloc(bytes, 1);

		if (!img)
			gen_die("out of memory");
		if (m->over) {
			int fd = open(m->over, O_RDONLY);
			ssize_t n = fd < 0 ? -1 : pread(fd, img, bytes, 0);

			if (n < 0)
				gen_die("%s: cannot read: %s", m->over, strerror(errno));
			close(fd);
		}
		for (uint64_t g = 0; g < m->grains; g++)
			if (m->gstate[g] != GEN_ABSENT)
				memcpy(img + g * gb, m->data + g * gb,
				       vd_min_u64(gb, bytes - g * gb));
		gen_write_file(m->model, img, bytes);
		free(img);
	}
	if (m->mask) {
		uint8_t *mask = malloc(m->sectors);

		if (!mask)
			gen_die("out of memory");
		for (uint64_t s = 0; s < m->sectors; s++)
			mask[s] = m->gstate[s / m->grain] != GEN_ABSENT;
		gen_write_file(m->mask, mask, m->sectors);
		free(mask);
	}
}

/* Writes the text descriptor for the extent m->out (named by its basename). */
static inline void gen_write_descriptor(const struct gen_model *m, const char *create_type,
					const char *extent_type)
{
	const char *base = strrchr(m->out, '/') ? strrchr(m->out, '/') + 1 : m->out;
	const char *cid = m->cid ? m->cid : "12345678";
	FILE *f;

	if (!m->desc)
		return;
	f = fopen(m->desc, "w");
	if (!f)
		gen_die("%s: cannot create: %s", m->desc, strerror(errno));
	fprintf(f, "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=%s\nparentCID=%s\n",
		cid, m->parent ? (m->parent_cid ? m->parent_cid : "ffffffff") : "ffffffff");
	fprintf(f, "isNativeSnapshot=\"no\"\ncreateType=\"%s\"\n", create_type);
	if (m->parent)
		fprintf(f, "parentFileNameHint=\"%s\"\n", m->parent);
	fprintf(f, "\n# Extent description\nRW %" PRIu64 " %s \"%s\"\n\n", m->sectors, extent_type,
		base);
	fprintf(f,
		"# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
		"ddb.virtualHWVersion = \"14\"\nddb.longContentID = \"0000000000000000000000"
		"00%s\"\n",
		cid);
	if (fclose(f))
		gen_die("%s: cannot write: %s", m->desc, strerror(errno));
}

#endif
