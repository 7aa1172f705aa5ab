/* Views: (chain, level, start, size) windows onto the disk as seen from a
 * level. Every question is answered by the chain's top-down resolution
 * (vd_chain_read / vd_chain_block_status); a view only shifts and clamps.
 * For a partition, bytes past the disk's end (a table that claims more than
 * the disk has is skipped by vd_part_scan, so this is only a safety net)
 * read as zeros, as past any layer's end. */
#include "chain/part.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct vd_view vd_view_disk(struct vd_chain *c, unsigned level)
{
	struct vd_view v = {
	    .chain = c, .level = level, .start = 0, .size = vd_chain_size(c, level)};

	return v;
}

struct vd_view vd_view_part(struct vd_chain *c, unsigned level, const struct vd_part *p)
{
	struct vd_view v = {.chain = c, .level = level, .start = p->start, .size = p->size};

	return v;
}

int vd_view_read(const struct vd_view *v, void *buf, size_t len, uint64_t off)
{
	size_t n = len;

	if (off >= v->size) {
		memset(buf, 0, len);
		return 0;
	}
	if (n > v->size - off) {
		n = (size_t)(v->size - off);
		memset((uint8_t *)buf + n, 0, len - n);
	}
	return vd_chain_read(v->chain, v->level, buf, n, v->start + off);
}

int vd_view_block_status(const struct vd_view *v, uint64_t off, uint64_t len, uint64_t *pnum)
{
	if (off >= v->size || len == 0)
		return -EINVAL;
	len = vd_min_u64(len, v->size - off);
	return vd_chain_block_status(v->chain, v->level, v->start + off, len, pnum, NULL);
}

int vd_view_seek(const struct vd_view *v, uint64_t off, bool want_data, uint64_t *out)
{
	while (off < v->size) {
		uint64_t n;
		int st = vd_view_block_status(v, off, v->size - off, &n);

		if (st < 0)
			return st;
		if ((st == VD_DATA) == want_data) {
			*out = off;
			return 0;
		}
		off += n;
	}
	if (want_data || off > v->size)
		return -ENXIO;
	/* The end of the file is a hole (lseek(2)). */
	*out = v->size;
	return 0;
}

int vd_view_allocated(const struct vd_view *v, uint64_t max_calls, uint64_t *out)
{
	uint64_t off = 0, calls = 0;

	*out = 0;
	while (off < v->size) {
		uint64_t n;
		int st;

		if (calls++ == max_calls)
			return -E2BIG;
		st = vd_view_block_status(v, off, v->size - off, &n);

		if (st < 0)
			return st;
		if (st == VD_DATA)
			*out += n;
		off += n;
	}
	return 0;
}

const char *vd_view_fs_sniff(const struct vd_view *v)
{
	size_t n = (size_t)vd_min_u64(VD_FS_SNIFF_BYTES, v->size);
	uint8_t *buf = malloc(n ? n : 1);
	const char *fs = NULL;

	if (buf && vd_view_read(v, buf, n, 0) == 0)
		fs = vd_fs_sniff(buf, n);
	free(buf);
	return fs;
}
