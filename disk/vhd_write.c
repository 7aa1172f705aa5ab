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
 * know (VHD spec, "Hard Disk Footer Format": Disk Geometry and Current Size); claiming Hyper-V
 * makes them use the current size, which is what we copy from the parent and what vdmount reads.
 *
 * W2ku holds the parent's absolute POSIX real path with '/' turned into '\',
 * because that is all we know; a Windows reader falls back to W2ru. MacX holds
 * the same absolute path as a file:// URL, which POSIX readers (vdmount,
 * blktap) use when the child has been moved away from its parent.
 *
 * Writing into an image opened VD_OPEN_RDWR follows the contract in
 * disk/disk.h: data now, tables at flush, after the data is durable.
 *   - A new block goes at the end: the footer first moves past it (the block
 *     is a hole until written), then the old footer's place is overwritten
 *     by the block's zeroed bitmap; its BAT entry exists in memory only.
 *   - Data is pwritten outside any lock; then the block's bitmap bits are
 *     set in the pinned in-memory copy (vhd_bitmap.c) and the block is put
 *     on the dirty list. Readers see the new sectors from then on.
 *   - flush(): snapshot the dirty blocks' bitmaps and BAT sectors;
 *     fdatasync (everything they point at is durable); write them;
 *     fdatasync. Two syncs per flush, none per write.
 * A crash at any moment leaves the BAT and bitmaps of the last flush, with
 * a valid footer at EOF or, if the crash tore the footer's move, the copy at
 * offset 0 (the reader accepts that, with a warning): never a table entry
 * pointing at data that did not reach the disk. Footer timestamps (both
 * copies) are refreshed when a written image is closed. */
#include "disk/vhd_drv.h"

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
	char *tmp;
	int fd, r;

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
	if (!bat) {
		r = -ENOMEM;
		goto out;
	}
	memset(bat, 0xFF, bat_bytes);
	fd = vd_create_tmp(path, &tmp);
	if (fd < 0) {
		r = fd;
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
	if (r < 0)
		vd_log_err("vhd: %s: cannot write: %s", path, strerror(-r));
	/* Never replaces an existing file: the name may be anyone's image. */
	r = vd_create_finish(fd, tmp, path, r);
out:
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

static int sync_fd(int fd)
{
	return fdatasync(fd) < 0 ? -errno : 0;
}

/* Notes that block b's BAT entry or bitmap changed. st->lock held for
 * writing. */
static int dirty_add(struct vhd_state *st, uint32_t b)
{
	if (!st->dirty_map) {
		st->dirty_map = calloc(vd_div_round_up(st->n_blocks, 8), 1);
		if (!st->dirty_map)
			return -ENOMEM;
	}
	if (st->dirty_map[b / 8] & (1u << (b % 8)))
		return 0;
	if (st->n_dirty == st->cap_dirty) {
		uint32_t ncap = st->cap_dirty ? st->cap_dirty * 2 : 64;
		uint32_t *nd = realloc(st->dirty, ncap * sizeof(*nd));

		if (!nd)
			return -ENOMEM;
		st->dirty = nd;
		st->cap_dirty = ncap;
	}
	st->dirty[st->n_dirty++] = b;
	st->dirty_map[b / 8] |= (uint8_t)(1u << (b % 8));
	return 0;
}

/* Gives block b its place at the end of the file. st->lock held for
 * writing. The footer moves to the block's end first (the file grows, the
 * block is a hole), and only then is the old footer overwritten by the
 * block's bitmap, zeroed: at no moment does the file lack a footer at EOF,
 * and a crash before the next flush leaves a block nothing points at.
 * ENOSPC on the footer write shrinks the file back. */
static int block_alloc(struct vd_image *img, struct vhd_state *st, uint32_t b)
{
	uint8_t fbuf[VHD_FOOTER_SIZE], zero[VHD_SECTOR];
	uint64_t at = st->data_end, new_end = at + st->bitmap_bytes + st->block_size;
	int r;

	if (at % VHD_SECTOR || at / VHD_SECTOR >= VHD_BAT_UNUSED)
		return -EFBIG;
	vhd_footer_encode(&st->ftr, fbuf);
	r = vd_pwrite_full(img->fd, fbuf, sizeof(fbuf), new_end);
	if (r < 0) {
		if (ftruncate(img->fd, (off_t)(at + VHD_FOOTER_SIZE)) < 0)
			vd_log_warn("vhd: %s: cannot shrink back after a failed write", img->path);
		return r;
	}
	memset(zero, 0, sizeof(zero));
	for (uint32_t o = 0; r == 0 && o < st->bitmap_bytes; o += VHD_SECTOR)
		r = vd_pwrite_full(img->fd, zero, sizeof(zero), at + o);
	if (r == 0)
		r = vhd_bitmap_fresh(st, b);
	if (r == 0)
		r = dirty_add(st, b);
	if (r < 0)
		return r;
	st->bat[b] = (uint32_t)(at / VHD_SECTOR);
	st->data_end = new_end;
	return 0;
}

/* Writes n bytes at in inside block b (n and in sector multiples). */
static int block_write(struct vd_image *img, struct vhd_state *st, uint32_t b, const uint8_t *p,
		       size_t n, uint64_t in)
{
	uint32_t sector;
	int r = 0;

	pthread_rwlock_rdlock(&st->lock);
	sector = st->bat[b];
	pthread_rwlock_unlock(&st->lock);
	if (sector == VHD_BAT_UNUSED) {
		pthread_rwlock_wrlock(&st->lock);
		if (st->bat[b] == VHD_BAT_UNUSED)
			r = block_alloc(img, st, b);
		sector = st->bat[b];
		pthread_rwlock_unlock(&st->lock);
		if (r < 0)
			return r;
	}
	/* An allocated BAT entry never moves: the data write needs no lock. */
	r = vd_pwrite_full(img->fd, p, n, (uint64_t)sector * VHD_SECTOR + st->bitmap_bytes + in);
	if (r < 0)
		return r;
	/* The bits go up only now that the data is in the file. */
	pthread_rwlock_wrlock(&st->lock);
	r = vhd_bitmap_mark(st, b, (uint32_t)(in / VHD_SECTOR), (uint32_t)(n / VHD_SECTOR));
	if (r == 0)
		r = dirty_add(st, b);
	st->written = true;
	pthread_rwlock_unlock(&st->lock);
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
		__atomic_store_n(&st->written, true, __ATOMIC_RELAXED);
		goto out;
	}
	while (len && r == 0) {
		uint64_t in = off % st->block_size;
		size_t n = (size_t)vd_min_u64(len, st->block_size - in);

		r = block_write(img, st, (uint32_t)(off / st->block_size), p, n, in);
		p += n;
		off += n;
		len -= n;
	}
out:
	if (r < 0)
		vd_log_err("vhd: %s: write at %" PRIu64 " failed: %s", img->path, off,
			   strerror(-r));
	return r;
}

/* What one flush writes: the dirty blocks' bitmaps and the BAT sectors that
 * hold their entries, as they were when the flush began. */
struct flush_set {
	uint32_t *blocks;
	uint32_t n;
	uint8_t *bitmaps;   /* n * bitmap_bytes */
	uint64_t *bat_secs; /* distinct BAT sector numbers, ascending */
	uint8_t *bat_raw;   /* their contents, big-endian, 512 bytes each */
	uint32_t n_secs;
};

static void flush_set_free(struct flush_set *f)
{
	free(f->blocks);
	free(f->bitmaps);
	free(f->bat_secs);
	free(f->bat_raw);
	memset(f, 0, sizeof(*f));
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Takes the dirty list (st->lock held for writing). */
static int flush_snapshot(struct vhd_state *st, struct flush_set *f)
{
	const uint32_t per_sec = VHD_SECTOR / 4;

	f->n = st->n_dirty;
	if (!f->n)
		return 0;
	f->blocks = st->dirty;
	st->dirty = NULL;
	st->n_dirty = st->cap_dirty = 0;
	qsort(f->blocks, f->n, sizeof(*f->blocks), u32_cmp);
	for (uint32_t i = 0; i < f->n; i++)
		st->dirty_map[f->blocks[i] / 8] &= (uint8_t) ~(1u << (f->blocks[i] % 8));
	f->bitmaps = malloc((size_t)f->n * st->bitmap_bytes);
	f->bat_secs = malloc((size_t)f->n * sizeof(*f->bat_secs));
	f->bat_raw = malloc((size_t)f->n * VHD_SECTOR);
	if (!f->bitmaps || !f->bat_secs || !f->bat_raw)
		return -ENOMEM;
	for (uint32_t i = 0; i < f->n; i++) {
		uint32_t b = f->blocks[i], s = b / per_sec;
		int r;

		r = vhd_bitmap_copy(st, b, f->bitmaps + (size_t)i * st->bitmap_bytes);
		if (r < 0)
			return r;
		if (f->n_secs && f->bat_secs[f->n_secs - 1] == s)
			continue;
		for (uint32_t k = 0; k < per_sec; k++) {
			uint32_t e = s * per_sec + k;
			vd_put_be32(f->bat_raw + (size_t)f->n_secs * VHD_SECTOR + 4 * k,
				    e < st->n_blocks ? st->bat[e] : VHD_BAT_UNUSED);
		}
		f->bat_secs[f->n_secs++] = s;
	}
	return 0;
}

/* Puts a failed flush's blocks back on the dirty list (st->lock held). */
static void flush_restore(struct vhd_state *st, struct flush_set *f)
{
	for (uint32_t i = 0; i < f->n; i++)
		if (dirty_add(st, f->blocks[i]) < 0)
			break;
}

int vhd_flush(struct vd_image *img)
{
	struct vhd_state *st = img->priv;
	struct flush_set f = {0};
	int r;

	if (st->ftr.type == VHD_TYPE_FIXED || !st->flush_lock_init)
		goto sync;
	pthread_mutex_lock(&st->flush_lock);
	pthread_rwlock_wrlock(&st->lock);
	r = flush_snapshot(st, &f);
	pthread_rwlock_unlock(&st->lock);
	/* 1. Everything the snapshot points at (data, zeroed bitmaps, the file's
	 * growth and its footer) is durable before any table names it. */
	if (r == 0)
		r = sync_fd(img->fd);
	/* 2. The bitmaps, then the BAT sectors, as of the snapshot. */
	for (uint32_t i = 0; r == 0 && i < f.n; i++)
		r = vd_pwrite_full(img->fd, f.bitmaps + (size_t)i * st->bitmap_bytes,
				   st->bitmap_bytes, (uint64_t)st->bat[f.blocks[i]] * VHD_SECTOR);
	for (uint32_t i = 0; r == 0 && i < f.n_secs; i++)
		r = vd_pwrite_full(img->fd, f.bat_raw + (size_t)i * VHD_SECTOR, VHD_SECTOR,
				   st->hdr.table_offset + f.bat_secs[i] * VHD_SECTOR);
	/* 3. And those are durable when flush returns. */
	if (r == 0 && f.n)
		r = sync_fd(img->fd);
	if (r < 0) {
		pthread_rwlock_wrlock(&st->lock);
		flush_restore(st, &f);
		pthread_rwlock_unlock(&st->lock);
	}
	pthread_mutex_unlock(&st->flush_lock);
	flush_set_free(&f);
	goto out;
sync:
	r = sync_fd(img->fd);
out:
	if (r < 0)
		vd_log_err("vhd: %s: flush: %s", img->path, strerror(-r));
	return r;
}

int vhd_close_update(struct vd_image *img)
{
	struct vhd_state *st = img->priv;
	uint8_t fbuf[VHD_FOOTER_SIZE];
	int r = vhd_flush(img);

	if (r < 0)
		return r;
	st->ftr.timestamp = vhd_now();
	vhd_footer_encode(&st->ftr, fbuf);
	r = vd_pwrite_full(img->fd, fbuf, sizeof(fbuf),
			   st->ftr.type == VHD_TYPE_FIXED ? img->size : st->data_end);
	if (r == 0)
		r = sync_fd(img->fd);
	if (r == 0 && st->ftr.type != VHD_TYPE_FIXED)
		r = vd_pwrite_full(img->fd, fbuf, sizeof(fbuf), 0);
	if (r == 0)
		r = sync_fd(img->fd);
	if (r < 0)
		vd_log_err("vhd: %s: cannot update the footer: %s", img->path, strerror(-r));
	st->written = false;
	return r;
}

int vhd_write_init(struct vhd_state *st)
{
	if (pthread_mutex_init(&st->flush_lock, NULL))
		return -ENOMEM;
	st->flush_lock_init = true;
	return 0;
}

void vhd_write_free(struct vhd_state *st)
{
	free(st->dirty);
	free(st->dirty_map);
	st->dirty = NULL;
	st->dirty_map = NULL;
	if (st->flush_lock_init)
		pthread_mutex_destroy(&st->flush_lock);
	st->flush_lock_init = false;
}
