/* Format registry and the generic part of opening one layer: open the file
 * read-only (or read-write when asked), probe every driver on the first 64 KiB,
 * hand the image to the most confident driver. */
#include "disk/disk.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/formats.h"

const struct vd_format_ops *const vd_formats[] = {&vd_vmdk_ops, &vd_vhdx_ops, &vd_vhd_ops, NULL};

/* Probe list in use; tests swap in fake drivers through vd_formats_set(). */
static const struct vd_format_ops *const *formats = vd_formats;

void vd_formats_set(const struct vd_format_ops *const *list)
{
	formats = list ? list : vd_formats;
}

#define PROBE_LEN 65536

static int image_alloc(const char *path, unsigned flags, struct vd_policy *policy,
		       const char *referrer, struct vd_image **out)
{
	struct vd_image *img = calloc(1, sizeof(*img));
	int fd, r;

	if (!img)
		return -ENOMEM;
	img->fd = -1;
	img->path = strdup(path);
	if (!img->path) {
		free(img);
		return -ENOMEM;
	}
	img->policy = policy;
	if (!policy) {
		img->policy = malloc(sizeof(*img->policy));
		if (!img->policy) {
			r = -ENOMEM;
			goto fail;
		}
		vd_policy_init(img->policy);
		img->own_policy = true;
		r = vd_policy_add_image(img->policy, path);
		if (r < 0)
			goto fail;
	}
	if (flags & VD_OPEN_RDWR)
		fd = open(path, O_RDWR | O_CLOEXEC);
	else if (referrer)
		fd = vd_policy_open(img->policy, path, referrer, "parent");
	else
		fd = vd_open_ro(path);
	if (fd < 0) {
		r = fd;
		if (r != -EPERM) /* a refusal was logged with its reason */
			vd_log_err("%s: cannot open: %s", path, strerror(-r));
		goto fail;
	}
	img->fd = fd;
	r = vd_file_info_get(fd, path, &img->file);
	if (r < 0) {
		vd_log_err("%s: not a regular file or block device", path);
		goto fail;
	}
	img->file_size = img->file.size;
	img->flags = flags;
	*out = img;
	return 0;
fail:
	vd_image_close(img);
	return r;
}

static int image_finish_open(struct vd_image *img, unsigned flags)
{
	char idbuf[37];
	int r = img->ops->open(img, flags);

	if (r == -EMEDIUMTYPE)
		return vd_foreign_explain(img);
	if (r < 0)
		return r;
	/* Every front end hands the size to the kernel as an off_t (st_size, read
	 * offsets): a larger disk would mount and then fail every stat. */
	if (img->size > (uint64_t)INT64_MAX) {
		vd_log_err("%s: virtual size of %" PRIu64 " bytes is larger than a Linux file can "
			   "be (off_t: at most 2^63 - 1 bytes)",
			   img->path, img->size);
		return -EFBIG;
	}
	if (img->has_parent && img->n_hints == 0) {
		vd_log_err("%s: %s delta (parent id %s) names no parent file", img->path,
			   img->ops->name, vd_id_format(&img->parent_id, idbuf));
		return -EINVAL;
	}
	return 0;
}

int vd_image_open(const char *path, unsigned flags, struct vd_image **out)
{
	return vd_image_open_in(path, flags, NULL, NULL, out);
}

int vd_image_open_in(const char *path, unsigned flags, struct vd_policy *policy,
		     const char *referrer, struct vd_image **out)
{
	const struct vd_format_ops *best = NULL;
	struct vd_image *img;
	uint8_t *head = NULL;
	size_t len;
	int best_score = 0, r;

	r = image_alloc(path, flags, policy, referrer, &img);
	if (r < 0)
		return r;
	len = img->file_size < PROBE_LEN ? (size_t)img->file_size : PROBE_LEN;
	head = malloc(len ? len : 1);
	if (!head) {
		r = -ENOMEM;
		goto fail;
	}
	r = vd_pread_full(img->fd, head, len, 0);
	if (r < 0) {
		vd_log_err("%s: cannot read: %s", path, strerror(-r));
		goto fail;
	}
	for (size_t i = 0; formats[i]; i++) {
		int s = formats[i]->probe(head, len, img->file_size);
		if (s > best_score) {
			best_score = s;
			best = formats[i];
		}
	}
	if (!best) {
		r = vd_foreign_explain(img);
		goto fail;
	}
	img->ops = best;
	r = image_finish_open(img, flags);
	if (r < 0)
		goto fail;
	free(head);
	*out = img;
	return 0;
fail:
	free(head);
	vd_image_close(img);
	return r;
}

int vd_image_inputs(struct vd_image *img, vd_input_fn fn, void *ctx)
{
	int r = fn(ctx, img->path, img->fd, &img->file);

	if (r == 0 && img->ops->inputs)
		r = img->ops->inputs(img, fn, ctx);
	return r;
}

struct changed_ctx {
	char *why;
	size_t n;
};

static int input_changed(void *ctx, const char *path, int fd, const struct vd_file_info *fi)
{
	struct changed_ctx *x = ctx;
	char what[160];
	int r = vd_file_info_changed(fd, fi, what, sizeof(what));

	if (r == 1)
		snprintf(x->why, x->n, "%s: %s", path, what);
	return r;
}

int vd_image_inputs_changed(struct vd_image *img, char *why, size_t n)
{
	struct changed_ctx x = {why, n};

	if (img->flags & VD_OPEN_RDWR)
		return 0;
	return vd_image_inputs(img, input_changed, &x);
}

void vd_image_close(struct vd_image *img)
{
	if (!img)
		return;
	if (img->ops && img->ops->close)
		img->ops->close(img);
	for (unsigned i = 0; i < img->n_hints; i++) {
		free(img->hints[i].kind);
		free(img->hints[i].path);
	}
	if (img->fd >= 0)
		vd_close(img->fd);
	if (img->own_policy) {
		vd_policy_free(img->policy);
		free(img->policy);
	}
	vd_file_info_free(&img->file);
	free(img->path);
	free(img);
}

int vd_image_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			  struct vd_map *map)
{
	struct vd_map scratch;
	int st = img->ops->block_status(img, off, len, pnum, map ? map : &scratch);

	if (st >= 0 && (*pnum == 0 || *pnum > len)) {
		vd_log_err("%s: driver returned a bad run length at offset %" PRIu64, img->path,
			   off);
		return -EIO;
	}
	return st;
}

static int image_read_mapped(struct vd_image *img, void *buf, size_t len, uint64_t off,
			     const struct vd_map *map)
{
	int r;

	if (map->fd < 0)
		return img->ops->read ? img->ops->read(img, buf, len, off) : -EIO;
	r = vd_pread_full(map->fd, buf, len, map->off);
	if (r < 0)
		vd_log_err("%s: cannot read %zu bytes at file offset %" PRIu64 ": %s", img->path,
			   len, map->off, strerror(-r));
	return r;
}

int vd_image_read(struct vd_image *img, void *buf, size_t len, uint64_t off,
		  const struct vd_map *map)
{
	uint8_t *p = buf;

	if (map)
		return image_read_mapped(img, buf, len, off, map);
	while (len) {
		struct vd_map m;
		uint64_t n;
		int st, r = 0;

		if (off >= img->size) {
			memset(p, 0, len);
			return 0;
		}
		st = vd_image_block_status(img, off, vd_min_u64(len, img->size - off), &n, &m);
		if (st < 0)
			return st;
		if (st == VD_DATA)
			r = image_read_mapped(img, p, (size_t)n, off, &m);
		else
			memset(p, 0, (size_t)n);
		if (r < 0)
			return r;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Range check shared by write and discard. */
static int image_range_ok(struct vd_image *img, uint64_t off, uint64_t len, const char *what)
{
	if (off <= img->size && len <= img->size - off)
		return 0;
	vd_log_err("%s: %s of %" PRIu64 " bytes at offset %" PRIu64 " is past the end (%" PRIu64
		   " bytes)",
		   img->path, what, len, off, img->size);
	return -EINVAL;
}

int vd_image_write(struct vd_image *img, const void *buf, size_t len, uint64_t off)
{
	if (!(img->flags & VD_OPEN_RDWR) || !img->ops->write)
		return -EROFS;
	if (len == 0)
		return 0;
	if (image_range_ok(img, off, len, "write") < 0)
		return -EINVAL;
	return img->ops->write(img, buf, len, off);
}

int vd_image_discard(struct vd_image *img, uint64_t off, uint64_t len)
{
	if (!(img->flags & VD_OPEN_RDWR))
		return -EROFS;
	if (!img->ops->discard)
		return -ENOTSUP;
	if (len == 0)
		return 0;
	if (image_range_ok(img, off, len, "discard") < 0)
		return -EINVAL;
	return img->ops->discard(img, off, len);
}

int vd_image_flush(struct vd_image *img)
{
	if (!(img->flags & VD_OPEN_RDWR) || !img->ops->flush)
		return 0;
	return img->ops->flush(img);
}

int vd_image_create_child(struct vd_image *parent, const char *path)
{
	if (!parent->ops->create_child) {
		vd_log_err("%s: cannot create a delta of a %s image", path, parent->ops->name);
		return -ENOTSUP;
	}
	return parent->ops->create_child(parent, path);
}

int vd_image_add_hint(struct vd_image *img, const char *kind, const char *path)
{
	struct vd_hint *h;

	if (img->n_hints >= VD_MAX_HINTS)
		return -E2BIG;
	h = &img->hints[img->n_hints];
	h->kind = strdup(kind);
	h->path = strdup(path);
	if (!h->kind || !h->path) {
		free(h->kind);
		free(h->path);
		h->kind = h->path = NULL;
		return -ENOMEM;
	}
	img->n_hints++;
	return 0;
}

void vd_check_note(struct vd_check *chk, const char *path, const char *msg)
{
	if (chk->note)
		chk->note(chk->ctx, path, msg);
}

void vd_check_report(struct vd_check *chk, const char *path, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	chk->problems++;
	if (chk->report)
		chk->report(chk->ctx, path, msg);
}

const char *vd_id_format(const struct vd_id *id, char buf[37])
{
	const uint8_t *b = id->bytes;

	if (id->len == 4) {
		snprintf(buf, 37, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
	} else if (id->len == 16) {
		snprintf(buf, 37,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
			 b[12], b[13], b[14], b[15]);
	} else {
		snprintf(buf, 37, "none");
	}
	return buf;
}
