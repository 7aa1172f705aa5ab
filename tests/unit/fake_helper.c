/* The fake format of fake_helper.h. Grain states live in a byte array:
 * 0 unallocated, 1 data, 2 zero. */
#include "fake_helper.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned long fake_status_calls, fake_read_calls;

struct fake_state {
	uint64_t grain;
	uint64_t n_grains;
	unsigned tag;
	uint8_t *map;
};

static int fake_probe(const uint8_t *head, size_t len, uint64_t file_size)
{
	(void)file_size;
	return len >= 8 && !memcmp(head, "FAKEDISK", 8) ? 100 : 0;
}

static int fake2_probe(const uint8_t *head, size_t len, uint64_t file_size)
{
	(void)file_size;
	return len >= 8 && !memcmp(head, "FAKEDIS2", 8) ? 100 : 0;
}

static void id_set(struct vd_id *id, unsigned long v)
{
	id->len = 4;
	id->bytes[0] = (uint8_t)(v >> 24);
	id->bytes[1] = (uint8_t)(v >> 16);
	id->bytes[2] = (uint8_t)(v >> 8);
	id->bytes[3] = (uint8_t)v;
}

static int fake_open(struct vd_image *img, unsigned flags)
{
	struct fake_state *s = calloc(1, sizeof(*s));
	char *text = calloc(1, img->file_size + 1);
	int r = -EINVAL;

	(void)flags;
	img->priv = s;
	if (!s || !text) {
		free(text);
		return -ENOMEM;
	}
	if (vd_pread_full(img->fd, text, img->file_size, 0) < 0)
		goto out;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char key[32], val[4096];
		unsigned long long a, b;
		if (sscanf(line, "size %llu", &a) == 1) {
			img->size = a;
		} else if (sscanf(line, "grain %llu", &a) == 1) {
			s->grain = a;
		} else if (sscanf(line, "tag %llu", &a) == 1) {
			s->tag = (unsigned)a;
		} else if (sscanf(line, "id %llx", &a) == 1) {
			id_set(&img->id, (unsigned long)a);
		} else if (sscanf(line, "parentid %llx", &a) == 1) {
			id_set(&img->parent_id, (unsigned long)a);
			img->has_parent = true;
		} else if (sscanf(line, "parent %4095s", val) == 1) {
			vd_image_add_hint(img, "parent", val);
		} else if (sscanf(line, "%31s %llu %llu", key, &a, &b) == 3) {
			if (!s->map) {
				s->n_grains = (img->size + s->grain - 1) / s->grain;
				s->map = calloc(s->n_grains + 1, 1);
				if (!s->map) {
					r = -ENOMEM;
					goto out;
				}
			}
			if (a + b > s->n_grains)
				goto out;
			memset(s->map + a, !strcmp(key, "data") ? 1 : 2, b);
		}
	}
	if (!s->grain || !img->size)
		goto out;
	if (!s->map) {
		s->n_grains = (img->size + s->grain - 1) / s->grain;
		s->map = calloc(s->n_grains + 1, 1);
		if (!s->map) {
			r = -ENOMEM;
			goto out;
		}
	}
	img->cow_unit = (uint32_t)s->grain;
	img->alloc_unit = s->grain;
	img->subformat = "fake";
	r = 0;
out:
	free(text);
	return r;
}

static void fake_close(struct vd_image *img)
{
	struct fake_state *s = img->priv;

	if (s)
		free(s->map);
	free(s);
}

static int fake_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	struct fake_state *s = img->priv;
	uint64_t g = off / s->grain;
	uint8_t st = s->map[g];
	uint64_t end = (g + 1) * s->grain;

	__atomic_add_fetch(&fake_status_calls, 1, __ATOMIC_RELAXED);
	while (end < off + len && s->map[end / s->grain] == st)
		end += s->grain;
	*pnum = vd_min_u64(end, off + len) - off;
	map->fd = -1; /* no file: fake_read() makes the bytes */
	return st == 1 ? VD_DATA : st == 2 ? VD_ZERO : VD_UNALLOC;
}

static int fake_read(struct vd_image *img, void *buf, size_t len, uint64_t off)
{
	struct fake_state *s = img->priv;
	uint8_t *p = buf;

	__atomic_add_fetch(&fake_read_calls, 1, __ATOMIC_RELAXED);
	for (size_t i = 0; i < len; i++) {
		if (s->map[(off + i) / s->grain] != 1)
			return -EIO; /* the chain asked for a range it was not told is DATA */
		p[i] = fake_byte(s->tag, off + i);
	}
	return 0;
}

const struct vd_format_ops fake_ops = {
    .name = "fake",
    .probe = fake_probe,
    .open = fake_open,
    .close = fake_close,
    .block_status = fake_block_status,
    .read = fake_read,
};

const struct vd_format_ops fake2_ops = {
    .name = "fake2",
    .probe = fake2_probe,
    .open = fake_open,
    .close = fake_close,
    .block_status = fake_block_status,
    .read = fake_read,
};

const struct vd_format_ops *const fake_formats[] = {&fake_ops, &fake2_ops, NULL};
