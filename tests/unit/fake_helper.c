/* The fake format of fake_helper.h. Grain states live in a byte array:
 * 0 unallocated, 1 data, 2 zero. */
#include "fake_helper.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

unsigned long fake_status_calls, fake_read_calls;
unsigned long fake_write_calls, fake_flush_calls, fake_contract_breaks;
unsigned fake_write_delay_us;

/* map values: 0 unallocated, 1 data (fake_byte), 2 zero, 3 written here
 * (bytes in data[]: a writable fake opened VD_OPEN_RDWR) */
struct fake_state {
	uint64_t grain;
	uint64_t n_grains;
	unsigned tag;
	uint8_t *map;
	uint8_t *data; /* n_grains * grain, RDWR only */
	pthread_mutex_t lock;
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
	pthread_mutex_init(&s->lock, NULL);
	if (flags & VD_OPEN_RDWR) {
		s->data = calloc(s->n_grains, s->grain);
		if (!s->data) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = 0;
out:
	free(text);
	return r;
}

static void fake_close(struct vd_image *img)
{
	struct fake_state *s = img->priv;

	if (s) {
		free(s->map);
		free(s->data);
	}
	free(s);
}

static int fake_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	struct fake_state *s = img->priv;
	uint64_t g = off / s->grain;
	uint8_t st = __atomic_load_n(&s->map[g], __ATOMIC_ACQUIRE);
	uint64_t end = (g + 1) * s->grain;

	__atomic_add_fetch(&fake_status_calls, 1, __ATOMIC_RELAXED);
	while (end < off + len && __atomic_load_n(&s->map[end / s->grain], __ATOMIC_ACQUIRE) == st)
		end += s->grain;
	*pnum = vd_min_u64(end, off + len) - off;
	map->fd = -1; /* no file: fake_read() makes the bytes */
	return st == 1 || st == 3 ? VD_DATA : st == 2 ? VD_ZERO : VD_UNALLOC;
}

static int fake_read(struct vd_image *img, void *buf, size_t len, uint64_t off)
{
	struct fake_state *s = img->priv;
	uint8_t *p = buf;

	__atomic_add_fetch(&fake_read_calls, 1, __ATOMIC_RELAXED);
	for (size_t i = 0; i < len; i++) {
		uint8_t st = __atomic_load_n(&s->map[(off + i) / s->grain], __ATOMIC_ACQUIRE);
		if (st != 1 && st != 3)
			return -EIO; /* the chain asked for a range it was not told is DATA */
		p[i] = st == 3 ? s->data[off + i] : fake_byte(s->tag, off + i);
	}
	return 0;
}

/* The write contract of disk/disk.h, checked: whole sectors only; a grain not
 * held here arrives whole. A break is counted (and refused) for the tests. */
static int fake_write(struct vd_image *img, const void *buf, size_t len, uint64_t off)
{
	struct fake_state *s = img->priv;
	const uint8_t *p = buf;

	__atomic_add_fetch(&fake_write_calls, 1, __ATOMIC_RELAXED);
	if (!s->data || off % 512 || (len % 512 && off + len != img->size) || off + len > img->size)
		goto bad;
	for (uint64_t g = off / s->grain; g <= (off + len - 1) / s->grain; g++) {
		uint64_t gs = g * s->grain, ge = vd_min_u64(gs + s->grain, img->size);
		uint8_t st = __atomic_load_n(&s->map[g], __ATOMIC_ACQUIRE);

		if (st != 3 && (off > gs || off + len < ge))
			goto bad;
	}
	if (fake_write_delay_us)
		usleep(fake_write_delay_us); /* widen race windows for the tests */
	memcpy(s->data + off, p, len);
	for (uint64_t g = off / s->grain; g <= (off + len - 1) / s->grain; g++)
		__atomic_store_n(&s->map[g], 3, __ATOMIC_RELEASE);
	return 0;
bad:
	__atomic_add_fetch(&fake_contract_breaks, 1, __ATOMIC_RELAXED);
	return -EPROTO;
}

static int fake_flush(struct vd_image *img)
{
	(void)img;
	__atomic_add_fetch(&fake_flush_calls, 1, __ATOMIC_RELAXED);
	return 0;
}

/* A child: same size and grain, a new tag and id, the parent by base name. */
static int fake_create_child(struct vd_image *parent, const char *path)
{
	struct fake_state *ps = parent->priv;
	const char *base = strrchr(parent->path, '/');
	unsigned long pid = (unsigned long)parent->id.bytes[0] << 24 | parent->id.bytes[1] << 16 |
			    parent->id.bytes[2] << 8 | parent->id.bytes[3];
	FILE *f;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);

	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	fprintf(f, "FAKEDISK\nsize %llu\ngrain %llu\ntag %u\nid %lx\nparentid %lx\nparent %s\n",
		(unsigned long long)parent->size, (unsigned long long)ps->grain, ps->tag + 100,
		pid + 0x10000, pid, base ? base + 1 : parent->path);
	fclose(f);
	return 0;
}

const struct vd_format_ops fake_ops = {
    .name = "fake",
    .probe = fake_probe,
    .open = fake_open,
    .close = fake_close,
    .block_status = fake_block_status,
    .read = fake_read,
    .write = fake_write,
    .flush = fake_flush,
    .create_child = fake_create_child,
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

void fake_dir_begin(const char *tag)
{
	tu_dir_new(tag);
	vd_formats_set(fake_formats);
}

void fake_dir_end(void)
{
	vd_formats_set(NULL);
	assert_int_equal(tu_dir_remove(), 0);
}
