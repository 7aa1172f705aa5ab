/* VHD writer: creating dynamic and differencing files, and writing into an
 * image opened with VD_OPEN_RDWR (the copy-on-write target).
 *
 * Layout of a file we create: footer copy @0, dynamic header @512, BAT @1536
 * (all 0xFFFFFFFF, padded to a sector), parent locators (W2ru, W2ku, MacX),
 * each padded to 512 bytes with the data space stored in bytes, then blocks,
 * then the footer at EOF. Files are built under a temporary name in the
 * target directory and rename()d into place; a parent is never opened for
 * writing.
 *
 * Creator: "win " (Hyper-V), version 10.0, host "Wi2k". QEMU and readers like
 * it take the virtual size from the CHS geometry for any creator they do not
 * know (formats.md 6.1); claiming Hyper-V makes them use the current size,
 * which is what we copy from the parent and what vdmount reads.
 *
 * W2ku holds the parent's absolute POSIX real path with '/' turned into '\',
 * because that is all we know; a Windows reader falls back to W2ru. MacX holds
 * the same absolute path as a file:// URL, which POSIX readers (vdmount,
 * blktap) use when the child has been moved away from its parent.
 *
 * Block allocation order (formats.md 6.3), each step fdatasync'd: (1) the new
 * footer at the new EOF (the gap in between is a hole, so unwritten sectors
 * read as zeros), (2) bitmap with bits only for the sectors written, and the
 * data, (3) the BAT entry. A crash before (3) only leaks space. Rewriting an
 * allocated block writes the data, syncs, then sets the bits. Footer
 * timestamps (both copies) are refreshed on close of a written image.
 *
 * Writes hold st->lock for writing around the metadata and data I/O of a
 * block: writes are rare next to reads and this keeps allocation simple. */
#include "disk/vhd.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "disk/endian.h"

#define VHD_NEW_BAT_OFF 1536u
#define VHD_DEFAULT_BLOCK (2u << 20)

static uint32_t vhd_now(void)
{
	time_t t = time(NULL);

	return t > VHD_EPOCH ? (uint32_t)(t - VHD_EPOCH) : 0;
}

static int uuid_random(uint8_t *u)
{
	size_t got = 0;

	while (got < 16) {
		ssize_t n = getrandom(u + got, 16 - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	u[6] = (uint8_t)((u[6] & 0x0F) | 0x40); /* RFC 4122 version 4 */
	u[8] = (uint8_t)((u[8] & 0x3F) | 0x80);
	return 0;
}

static void footer_new(struct vhd_footer *f, uint32_t type, uint64_t size)
{
	memset(f, 0, sizeof(*f));
	f->features = 2;
	f->version = VHD_VERSION;
	f->data_offset = VHD_FOOTER_SIZE;
	f->timestamp = vhd_now();
	memcpy(f->creator_app, "win ", 4);
	f->creator_ver = 0x000A0000;
	f->creator_os = 0x5769326B; /* "Wi2k" */
	f->orig_size = f->cur_size = size;
	vhd_chs(size, &f->cyls, &f->heads, &f->spt);
	f->type = type;
}

/* One locator payload to place after the BAT. */
struct loc_data {
	uint32_t code;
	uint8_t *buf;
	size_t len;
};

/* Writes a new sparse VHD under a temporary name and renames it to path. */
static int layout_create(const char *path, struct vhd_footer *f, struct vhd_header *h,
			 struct loc_data *locs, int n_locs)
{
	uint32_t n = (uint32_t)vd_div_round_up(f->cur_size, h->block_size);
	uint64_t bat_bytes = vhd_bat_bytes(n);
	uint64_t off = VHD_NEW_BAT_OFF + bat_bytes;
	uint8_t fbuf[VHD_FOOTER_SIZE], hbuf[VHD_HEADER_SIZE];
	uint8_t *bat = NULL;
	char *tmp = NULL;
	int fd = -1, r;

	h->table_offset = VHD_NEW_BAT_OFF;
	h->max_entries = n;
	h->version = VHD_VERSION;
	for (int i = 0; i < n_locs; i++) {
		size_t span = vd_round_up(locs[i].len, VHD_SECTOR);
		h->loc[i].code = locs[i].code;
		h->loc[i].space = (uint32_t)(span ? span : VHD_SECTOR);
		h->loc[i].length = (uint32_t)locs[i].len;
		h->loc[i].offset = off;
		off += h->loc[i].space;
	}
	f->data_offset = VHD_FOOTER_SIZE;
	vhd_footer_encode(f, fbuf);
	vhd_header_encode(h, hbuf);
	bat = malloc(bat_bytes);
	if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
		tmp = NULL;
	if (!bat || !tmp) {
		r = -ENOMEM;
		goto out;
	}
	memset(bat, 0xFF, bat_bytes);
	fd = mkstemp(tmp);
	if (fd < 0) {
		r = -errno;
		vd_log_err("vhd: %s: cannot create: %s", tmp, strerror(-r));
		goto out;
	}
	r = vd_pwrite_full(fd, fbuf, sizeof(fbuf), 0);
	if (r == 0)
		r = vd_pwrite_full(fd, hbuf, sizeof(hbuf), VHD_FOOTER_SIZE);
	if (r == 0)
		r = vd_pwrite_full(fd, bat, bat_bytes, VHD_NEW_BAT_OFF);
	for (int i = 0; r == 0 && i < n_locs; i++)
		r = vd_pwrite_full(fd, locs[i].buf, locs[i].len, h->loc[i].offset);
	if (r == 0)
		r = vd_pwrite_full(fd, fbuf, sizeof(fbuf), off);
	if (r == 0 && (fchmod(fd, 0644) < 0 || fsync(fd) < 0))
		r = -errno;
	/* Never replace an existing file: the name may be anyone's image. */
	if (r == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
		r = -errno;
		if (r == -EINVAL || r == -ENOSYS) { /* fs without RENAME_NOREPLACE */
			r = link(tmp, path) < 0 ? -errno : 0;
			if (r == 0)
				unlink(tmp);
		}
	}
	if (r < 0) {
		vd_log_err("vhd: %s: cannot write: %s", path, strerror(-r));
		unlink(tmp);
	}
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(bat);
	return r;
}

int vhd_create_dynamic(const char *path, uint64_t size, uint32_t block_size)
{
	struct vhd_footer f;
	struct vhd_header h;
	int r;

	if (!size || size % VHD_SECTOR || size > VHD_MAX_SIZE || !vd_is_pow2(block_size) ||
	    block_size < VHD_MIN_BLOCK || block_size > VHD_MAX_BLOCK ||
	    vd_div_round_up(size, block_size) > VHD_MAX_BAT) {
		vd_log_err("vhd: %s: bad size %" PRIu64 " or block size %" PRIu32, path, size,
			   block_size);
		return -EINVAL;
	}
	footer_new(&f, VHD_TYPE_DYNAMIC, size);
	memset(&h, 0, sizeof(h));
	h.block_size = block_size;
	r = uuid_random(f.uuid);
	if (r < 0)
		return r;
	return layout_create(path, &f, &h, NULL, 0);
}

static int loc_utf16le(struct loc_data *l, uint32_t code, const char *path, char sep)
{
	size_t cap = strlen(path) * 4 + 4;
	char *p = strdup(path);
	long n;

	l->buf = malloc(cap);
	if (!p || !l->buf) {
		free(p);
		return -ENOMEM;
	}
	for (char *q = p; *q; q++)
		if (*q == '/')
			*q = sep;
	n = vd_utf8_to_utf16(p, false, l->buf, cap);
	free(p);
	if (n < 0)
		return (int)n;
	l->code = code;
	l->len = (size_t)n;
	return 0;
}

static int loc_macx(struct loc_data *l, const char *path)
{
	static const char hex[] = "0123456789ABCDEF";
	struct vd_buf b = {0};

	vd_buf_printf(&b, "file://");
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("/-._~", *p))
			vd_buf_printf(&b, "%c", *p);
		else
			vd_buf_printf(&b, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
	}
	if (b.oom) {
		vd_buf_free(&b);
		return -ENOMEM;
	}
	l->code = VHD_PLAT_MACX;
	l->buf = (uint8_t *)b.data;
	l->len = b.len;
	return 0;
}

int vhd_create_child(struct vd_image *parent, const char *path)
{
	struct vhd_state *ps = parent->priv;
	struct loc_data locs[3] = {{0}};
	char *preal = NULL, *cdir = NULL, *rel = NULL, *dot = NULL;
	const char *base;
	struct vhd_footer f;
	struct vhd_header h;
	long n;
	int r;

	preal = realpath(parent->path, NULL);
	cdir = strdup(path);
	if (!preal || !cdir) {
		r = preal ? -ENOMEM : -errno;
		goto out;
	}
	if (strrchr(cdir, '/'))
		*strrchr(cdir, '/') = 0;
	else
		strcpy(cdir, ".");
	{
		char *real = realpath(cdir[0] ? cdir : "/", NULL);
		if (!real) {
			r = -errno;
			vd_log_err("vhd: %s: cannot resolve the directory: %s", path, strerror(-r));
			goto out;
		}
		free(cdir);
		cdir = real;
	}
	rel = vd_path_relative(cdir, preal);
	if (!rel || asprintf(&dot, "./%s", rel) < 0) {
		dot = NULL;
		r = -ENOMEM;
		goto out;
	}
	footer_new(&f, VHD_TYPE_DIFF, parent->size);
	f.orig_size = parent->size;
	f.cyls = ps->ftr.cyls;
	f.heads = ps->ftr.heads;
	f.spt = ps->ftr.spt;
	r = uuid_random(f.uuid);
	if (r < 0)
		goto out;
	memset(&h, 0, sizeof(h));
	h.block_size = ps->ftr.type == VHD_TYPE_FIXED ? VHD_DEFAULT_BLOCK : ps->block_size;
	memcpy(h.parent_uuid, ps->ftr.uuid, 16);
	h.parent_stamp = ps->ftr.timestamp;
	base = strrchr(preal, '/') ? strrchr(preal, '/') + 1 : preal;
	n = vd_utf8_to_utf16(base, true, h.parent_name, sizeof(h.parent_name));
	if (n < 0) {
		vd_log_err("vhd: %s: parent name %s does not fit the header", path, base);
		r = -ENAMETOOLONG;
		goto out;
	}
	r = loc_utf16le(&locs[0], VHD_PLAT_W2RU, dot, '\\');
	if (r == 0)
		r = loc_utf16le(&locs[1], VHD_PLAT_W2KU, preal, '\\');
	if (r == 0)
		r = loc_macx(&locs[2], preal);
	if (r < 0) {
		vd_log_err("vhd: %s: cannot encode the parent path %s", path, preal);
		goto out;
	}
	r = layout_create(path, &f, &h, locs, 3);
out:
	for (int i = 0; i < 3; i++)
		free(locs[i].buf);
	free(preal);
	free(cdir);
	free(rel);
	free(dot);
	return r;
}

/* Bitmap of an allocated block, from the cache when the image has one. */
static int bitmap_load(struct vd_image *img, uint32_t block, uint8_t *bits)
{
	struct vhd_state *st = img->priv;

	if (st->slots)
		return vhd_bitmap_get(img, block, bits);
	return vd_pread_full(img->fd, bits, st->bitmap_bytes,
			     (uint64_t)st->bat[block] * VHD_SECTOR);
}

static void bits_set(uint8_t *bits, uint32_t first, uint32_t count, bool *changed)
{
	for (uint32_t k = first; k < first + count; k++) {
		uint8_t m = (uint8_t)(0x80u >> (k % 8));
		if (!(bits[k / 8] & m)) {
			bits[k / 8] |= m;
			*changed = true;
		}
	}
}

static int sync_fd(int fd)
{
	return fdatasync(fd) < 0 ? -errno : 0;
}

/* Writes n bytes at in inside block b. Caller holds st->lock for writing. */
static int block_write(struct vd_image *img, uint32_t b, const uint8_t *p, size_t n, uint64_t in)
{
	struct vhd_state *st = img->priv;
	uint8_t fbuf[VHD_FOOTER_SIZE], be[4], *bits = calloc(1, st->bitmap_bytes);
	bool alloc = st->bat[b] == VHD_BAT_UNUSED, changed = false;
	uint64_t at = alloc ? st->data_end : (uint64_t)st->bat[b] * VHD_SECTOR;
	uint64_t new_end = at + st->bitmap_bytes + st->block_size;
	int r = 0;

	if (!bits)
		return -ENOMEM;
	if (alloc) {
		if (at / VHD_SECTOR >= VHD_BAT_UNUSED) {
			r = -EFBIG;
			goto out;
		}
		vhd_footer_encode(&st->ftr, fbuf);
		r = vd_pwrite_full(img->fd, fbuf, sizeof(fbuf), new_end);
		if (r == 0)
			r = sync_fd(img->fd);
	} else {
		r = bitmap_load(img, b, bits);
	}
	if (r < 0)
		goto out;
	bits_set(bits, (uint32_t)(in / VHD_SECTOR), (uint32_t)(n / VHD_SECTOR), &changed);
	r = vd_pwrite_full(img->fd, p, n, at + st->bitmap_bytes + in);
	if (r == 0 && changed && !alloc)
		r = sync_fd(img->fd); /* data before the bits that expose it */
	if (r == 0 && changed)
		r = vd_pwrite_full(img->fd, bits, st->bitmap_bytes, at);
	if (r == 0 && alloc) {
		r = sync_fd(img->fd);
		vd_put_be32(be, (uint32_t)(at / VHD_SECTOR));
		if (r == 0)
			r = vd_pwrite_full(img->fd, be, 4, st->hdr.table_offset + 4 * (uint64_t)b);
		if (r == 0)
			r = sync_fd(img->fd);
		if (r == 0) {
			st->bat[b] = (uint32_t)(at / VHD_SECTOR);
			st->data_end = new_end;
		}
	}
	if (r == 0 && changed && st->slots)
		vhd_cache_put(st, b, bits);
out:
	if (r < 0)
		vd_log_err("vhd: %s: write into block %" PRIu32 " failed: %s", img->path, b,
			   strerror(-r));
	free(bits);
	return r;
}

int vhd_write(struct vd_image *img, const void *buf, size_t len, uint64_t off)
{
	struct vhd_state *st = img->priv;
	const uint8_t *p = buf;
	int r = 0;

	if (!(img->flags & VD_OPEN_RDWR))
		return -EROFS;
	if (off % VHD_SECTOR || len % VHD_SECTOR || off > img->size || len > img->size - off)
		return -EINVAL;
	if (st->ftr.type == VHD_TYPE_FIXED) {
		r = vd_pwrite_full(img->fd, buf, len, off);
		if (r < 0)
			vd_log_err("vhd: %s: write at %" PRIu64 " failed: %s", img->path, off,
				   strerror(-r));
		return r;
	}
	pthread_rwlock_wrlock(&st->lock);
	st->dirty = true;
	while (len && r == 0) {
		uint64_t in = off % st->block_size;
		size_t n = (size_t)vd_min_u64(len, st->block_size - in);

		r = block_write(img, (uint32_t)(off / st->block_size), p, n, in);
		p += n;
		off += n;
		len -= n;
	}
	pthread_rwlock_unlock(&st->lock);
	return r;
}

int vhd_flush(struct vd_image *img)
{
	int r = sync_fd(img->fd);

	if (r < 0)
		vd_log_err("vhd: %s: fdatasync: %s", img->path, strerror(-r));
	return r;
}

int vhd_close_update(struct vd_image *img)
{
	struct vhd_state *st = img->priv;
	uint8_t fbuf[VHD_FOOTER_SIZE];
	int r;

	st->ftr.timestamp = vhd_now();
	vhd_footer_encode(&st->ftr, fbuf);
	r = vd_pwrite_full(img->fd, fbuf, sizeof(fbuf), st->data_end);
	if (r == 0)
		r = sync_fd(img->fd);
	if (r == 0)
		r = vd_pwrite_full(img->fd, fbuf, sizeof(fbuf), 0);
	if (r == 0)
		r = sync_fd(img->fd);
	if (r < 0)
		vd_log_err("vhd: %s: cannot update the footer: %s", img->path, strerror(-r));
	st->dirty = false;
	return r;
}
