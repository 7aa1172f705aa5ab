/* VMDK driver: probe, open (descriptor -> extents), offset map, describe.
 *
 * One image = one descriptor and its extents in virtual-disk order. The
 * descriptor is either a text file whose extents are files next to it, or
 * embedded in a KDMV file that was opened directly; then that file is its
 * own single extent and the name written in the descriptor is not re-opened
 * (stream exports from OVAs name another file there). Extents keep their
 * place whatever their access or type, so extent i covers
 * [ext[i].start, ext[i].start + sectors*512) and the disk size is the sum.
 * Requests are split at extent boundaries here; backends see extent-relative
 * offsets only. NOACCESS extents are handled here (no backend, no file
 * opened): block_status says DATA, read says -EIO. All state is immutable
 * after open(); backends lock their own caches. Only a delta vdmount made
 * (one monolithicSparse file) opens for writing; its backend writes
 * (vmdk_alloc.c), create_child() is in vmdk_write.c. */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/formats.h"
#include "disk/text.h"
#include "disk/vmdk_desc.h"

#define COWD_MAGIC 0x44574f43u		     /* "COWD" as LE u32 */
#define SESPARSE_MAGIC 0x00000000cafebabeull /* seSparse const header, LE u64 */

struct vmdk_state {
	struct vmdk_desc desc;
	struct vmdk_extent *ext; /* [n_ext], immutable after open */
	unsigned n_ext;
	bool no_identity; /* KDMV opened directly without an embedded descriptor */
};

static int vmdk_probe(const uint8_t *head, size_t len, uint64_t file_size)
{
	(void)file_size;
	if (len >= 4 && vd_get_le32(head) == VMDK_KDMV_MAGIC)
		return 100;
	if (len >= 4 && vd_get_le32(head) == COWD_MAGIC)
		return 50;
	if (len >= 8 && vd_get_le64(head) == SESPARSE_MAGIC)
		return 50;
	if (vmdk_desc_sniff(head, len))
		return 90;
	return 0;
}

/* The charset file names and hints are written in: the header's encoding=,
 * else ddb.encoding; NULL when absent or already UTF-8. */
static const char *desc_charset(const struct vmdk_desc *d)
{
	const char *enc = d->encoding;

	for (unsigned i = 0; !enc && i < d->n_ddb; i++)
		if (!strcasecmp(d->ddb[i].key, "encoding"))
			enc = d->ddb[i].value;
	if (!enc || !strcasecmp(enc, "UTF-8") || !strcasecmp(enc, "UTF8"))
		return NULL;
	return enc;
}

/* A name written in charset, converted to UTF-8 (how Linux sees a file a
 * Windows tool named). Returns 0 with *out a malloc'd string, or with *out
 * NULL when there is nothing to convert, the charset is unknown to iconv, the
 * bytes are not valid in it, or the result is the same bytes; -ENOMEM. */
static int name_to_utf8(const char *charset, const char *name, char **out)
{
	int r;

	*out = NULL;
	if (!charset)
		return 0;
	r = vd_iconv_to_utf8(charset, name, VMDK_DESC_MAX, out);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !strcmp(*out, name)) {
		free(*out);
		*out = NULL;
	}
	return 0;
}

/* Chooses the backend of a SPARSE extent: compressed KDMV files are streams. */
static const struct vmdk_extent_ops *sparse_backend(struct vmdk_extent *e)
{
	uint8_t hdr[12];

	if (e->file_size >= sizeof(hdr) && vd_pread_full(e->fd, hdr, sizeof(hdr), 0) == 0 &&
	    vd_get_le32(hdr) == VMDK_KDMV_MAGIC && (vd_get_le32(hdr + 8) & VMDK_FLAG_COMPRESSED))
		return &vmdk_stream_ops;
	return &vmdk_sparse_ops;
}

static const struct vmdk_extent_ops *extent_backend(struct vmdk_extent *e)
{
	switch (e->type) {
	case VMDK_EXT_FLAT:
	case VMDK_EXT_VMFS:
		return &vmdk_flat_ops;
	case VMDK_EXT_ZERO:
		return &vmdk_zero_ops;
	case VMDK_EXT_SPARSE:
		return sparse_backend(e);
	case VMDK_EXT_VMFSSPARSE:
		return &vmdk_cowd_ops;
	case VMDK_EXT_SESPARSE:
		return &vmdk_sesparse_ops;
	default:
		return NULL; /* RDM/RAW: the parser refuses them */
	}
}

/* Opens extent name (as written, or its UTF-8 spelling) relative to the
 * descriptor, through the image's confinement policy. Sets e->path. Returns
 * the fd or -errno. */
static int extent_open_name(struct vd_image *img, struct vmdk_extent *e, const char *name)
{
	free(e->path);
	e->path = vd_path_beside(img->path, name);
	if (!e->path)
		return -ENOMEM;
	return vd_policy_open(img->policy, e->path, img->path, "extent");
}

/* Opens the file of extent e (text-descriptor case) and checks it is neither
 * the descriptor itself nor a directory. */
static int extent_open_file(struct vd_image *img, struct vmdk_extent *e)
{
	struct vmdk_state *st = img->priv;
	char *u8 = NULL;
	struct stat ds, es;
	int fd = -ENOENT, r;

	r = name_to_utf8(desc_charset(&st->desc), e->name, &u8);
	if (r < 0) {
		vd_log_err("vmdk: %s: out of memory converting extent name %s", img->path, e->name);
		return r;
	}
	/* A name in a legacy charset: the UTF-8 spelling first, then the bytes
	 * as written. */
	if (u8)
		fd = extent_open_name(img, e, u8);
	free(u8);
	if (fd == -ENOENT)
		fd = extent_open_name(img, e, e->name);
	if (fd == -EMFILE) {
		struct rlimit rl = {0};

		getrlimit(RLIMIT_NOFILE, &rl);
		vd_log_err("vmdk: %s: cannot open extent file %s: more files than the open-file "
			   "limit (%llu) allows; raise it (ulimit -n)",
			   img->path, e->path ? e->path : e->name, (unsigned long long)rl.rlim_cur);
		return fd;
	}
	if (fd < 0) {
		if (fd != -EPERM) /* a refusal was logged with its reason */
			vd_log_err("vmdk: %s: cannot open extent file %s: %s", img->path,
				   e->path ? e->path : e->name, strerror(-fd));
		return fd;
	}
	e->fd = fd;
	e->own_fd = true;
	r = vd_fstat(fd, &es);
	if (r == 0)
		r = vd_fstat(img->fd, &ds);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot stat extent file %s: %s", img->path, e->path,
			   strerror(-r));
		return r;
	}
	if (es.st_dev == ds.st_dev && es.st_ino == ds.st_ino) {
		vd_log_err("vmdk: %s: extent \"%s\" is the descriptor file itself", img->path,
			   e->name);
		return -EINVAL;
	}
	r = vd_file_info_get(fd, e->path, &e->file);
	if (r < 0) {
		vd_log_err("vmdk: %s: extent file %s is not a regular file or block device",
			   img->path, e->path);
		return r;
	}
	e->file_size = e->file.size;
	return 0;
}

struct file_key {
	dev_t dev;
	ino_t ino;
	unsigned idx;
};

static int file_key_cmp(const void *a, const void *b)
{
	const struct file_key *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

/* Refuses a descriptor that lists the same file twice (hazard checklist, section 9). */
static int extents_check_unique(struct vd_image *img, struct vmdk_state *st)
{
	struct file_key *k = calloc(st->n_ext ? st->n_ext : 1, sizeof(*k));
	unsigned n = 0;
	int r = 0;

	if (!k)
		return -ENOMEM;
	for (unsigned i = 0; i < st->n_ext; i++) {
		struct stat s;

		if (st->ext[i].fd < 0 || vd_fstat(st->ext[i].fd, &s) < 0)
			continue;
		k[n++] = (struct file_key){s.st_dev, s.st_ino, i};
	}
	qsort(k, n, sizeof(*k), file_key_cmp);
	for (unsigned i = 1; i < n; i++) {
		if (file_key_cmp(&k[i - 1], &k[i]) == 0) {
			vd_log_err("vmdk: %s: extent file %s is listed twice", img->path,
				   st->ext[k[i].idx].path);
			r = -EINVAL;
			break;
		}
	}
	free(k);
	return r;
}

/* Creates the extent table from the parsed descriptor. When self_sectors is
 * non-zero the descriptor was embedded in img's own KDMV file: that file is
 * the single extent. */
static int extents_build(struct vd_image *img, struct vmdk_state *st, uint64_t self_sectors)
{
	uint64_t start = 0;
	char *role;
	int r;

	st->ext = calloc(st->desc.n_extents, sizeof(*st->ext));
	if (!st->ext)
		return -ENOMEM;
	for (unsigned i = 0; i < st->desc.n_extents; i++) {
		const struct vmdk_desc_extent *d = &st->desc.extents[i];
		struct vmdk_extent *e = &st->ext[i];

		e->fd = -1;
		e->type = d->type;
		e->access = d->access;
		e->start = start;
		e->sectors = d->sectors;
		e->flat_offset = d->offset * 512; /* parser caps offset at 2^54 sectors */
		e->name = d->name;
		e->image_path = img->path;
		e->writable = (img->flags & VD_OPEN_RDWR) != 0;
		st->n_ext = i + 1;
		start += d->sectors * 512; /* parser caps the sum at 2^63 bytes */
		if (e->access == VMDK_ACCESS_NOACCESS)
			continue;
		if (self_sectors) {
			e->path = strdup(img->path);
			if (!e->path)
				return -ENOMEM;
			e->fd = img->fd;
			e->file_size = img->file_size;
			if (img->file.canonical &&
			    !(e->file.canonical = strdup(img->file.canonical)))
				return -ENOMEM;
			e->file.size = img->file.size;
			e->file.mtime = img->file.mtime;
			e->sectors = self_sectors;
		} else if (e->type != VMDK_EXT_ZERO) {
			r = extent_open_file(img, e);
			if (r < 0)
				return r;
		}
		e->ops = extent_backend(e);
		/* "... (extent 2 of /d/disk.vmdk)": the disk an extent's errors concern */
		role = NULL;
		if (!self_sectors && asprintf(&role, "extent %u of %s", i + 1, img->path) < 0)
			role = NULL;
		if (role)
			vd_log_context_push(role);
		r = e->ops->open(e);
		if (role)
			vd_log_context_pop();
		free(role);
		if (r < 0) {
			e->ops = NULL; /* open() cleaned up after itself */
			return r;
		}
	}
	return extents_check_unique(img, st);
}

/* Reads the descriptor embedded in img's KDMV file into a NUL-terminated
 * buffer. *out is NULL when there is none (desc_size 0 or an all-zero area,
 * as in QEMU's split extents). */
static int embedded_desc_read(struct vd_image *img, const struct vmdk_kdmv_header *h, char **out)
{
	uint64_t bytes, off, end;
	char *text;
	int r;

	*out = NULL;
	if (h->desc_offset == 0 || h->desc_size == 0)
		return 0;
	if (h->desc_size > VMDK_DESC_MAX / 512) {
		vd_log_err("vmdk: %s: embedded descriptor of %" PRIu64 " sectors exceeds %u bytes",
			   img->path, h->desc_size, VMDK_DESC_MAX);
		return -EINVAL;
	}
	bytes = h->desc_size * 512;
	if (vd_mul_ovf(h->desc_offset, 512, &off) || vd_add_ovf(off, bytes, &end) ||
	    end > img->file_size) {
		vd_log_err("vmdk: %s: embedded descriptor (sector %" PRIu64 ", %" PRIu64
			   " sectors) is outside the file",
			   img->path, h->desc_offset, h->desc_size);
		return -EINVAL;
	}
	text = calloc(1, bytes + 1);
	if (!text)
		return -ENOMEM;
	r = vd_pread_full(img->fd, text, bytes, off);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read the embedded descriptor: %s", img->path,
			   strerror(-r));
		free(text);
		return r;
	}
	if (text[0] == '\0') {
		free(text);
		return 0;
	}
	*out = text;
	return 0;
}

/* An extent file opened as if it were a disk: when a descriptor beside it
 * lists it, refuses with "open that descriptor instead" and returns true;
 * otherwise returns false, except for COWD and seSparse files (no disk
 * without a descriptor), which are refused either way (returns true). */
static bool piece_refuse(struct vd_image *img, const char *kind)
{
	unsigned no = 0;
	char *owner = vmdk_extent_owner(img->path, &no);
	bool sparse_piece = !strcmp(kind, "sparse piece");

	if (owner)
		vd_log_err("vmdk: %s: this is extent %u (%s) of the disk described by %s, not a "
			   "disk: open %s instead",
			   img->path, no, kind, owner, owner);
	else if (!sparse_piece)
		vd_log_err(
		    "vmdk: %s: this is a %s extent file, not a disk, and no descriptor "
		    "beside it lists it: open the disk's descriptor (.vmdk text file) instead",
		    img->path, kind);
	free(owner);
	return owner || !sparse_piece;
}

/* A KDMV file opened directly: it is the single extent of its own descriptor. */
static int open_kdmv(struct vd_image *img, struct vmdk_state *st, const uint8_t hdr[512])
{
	struct vmdk_kdmv_header h;
	char *text = NULL;
	int r;

	r = vmdk_kdmv_decode(hdr, img->path, &h);
	if (r < 0)
		return r;
	r = embedded_desc_read(img, &h, &text);
	if (r < 0)
		return r;
	if (!text && piece_refuse(img, "sparse piece"))
		return -EINVAL;
	if (!text) {
		vd_log_warn("vmdk: %s: sparse file without an embedded descriptor (one piece of a "
			    "split disk?): opening it alone, with no identity",
			    img->path);
		st->no_identity = true;
		if (asprintf(
			&text, "CID=ffffffff\ncreateType=\"%s\"\nRW %" PRIu64 " SPARSE \"-\"\n",
			(h.flags & VMDK_FLAG_COMPRESSED) ? "streamOptimized" : "monolithicSparse",
			h.capacity) < 0)
			return -ENOMEM;
	}
	r = vmdk_desc_parse(text, strlen(text), img->path, &st->desc);
	free(text);
	if (r < 0)
		return r;
	if (st->desc.n_extents != 1 || st->desc.extents[0].type != VMDK_EXT_SPARSE) {
		vd_log_err("vmdk: %s: embedded descriptor lists %u extents (or not one SPARSE "
			   "extent): open the disk's descriptor file instead",
			   img->path, st->desc.n_extents);
		return -EINVAL;
	}
	if (st->desc.total_sectors != h.capacity) {
		vd_log_err("vmdk: %s: embedded descriptor gives %" PRIu64
			   " sectors but the header capacity is %" PRIu64,
			   img->path, st->desc.total_sectors, h.capacity);
		return -EINVAL;
	}
	if ((img->flags & VD_OPEN_RDWR) &&
	    (st->no_identity || strcmp(st->desc.create_type, "monolithicSparse") != 0 ||
	     st->desc.parent_cid == VMDK_CID_NONE)) {
		vd_log_err("vmdk: %s: cannot open for writing: only a monolithicSparse delta "
			   "vdmount made is written",
			   img->path);
		return -EROFS;
	}
	r = extents_build(img, st, h.capacity);
	if (r == 0 && (img->flags & VD_OPEN_RDWR) && !st->ext[0].ops->write) {
		vd_log_err("vmdk: %s: cannot open for writing: a %s extent is read-only", img->path,
			   st->ext[0].ops->name);
		return -EROFS;
	}
	return r;
}

static int open_text(struct vd_image *img, struct vmdk_state *st)
{
	char *text;
	int r;

	if (img->flags & VD_OPEN_RDWR) {
		vd_log_err("vmdk: %s: cannot open for writing: a descriptor file (only a "
			   "monolithicSparse delta vdmount made is written)",
			   img->path);
		return -EROFS;
	}
	if (img->file_size > VMDK_DESC_MAX) {
		vd_log_err("vmdk: %s: descriptor file is larger than %u bytes", img->path,
			   VMDK_DESC_MAX);
		return -EINVAL;
	}
	text = malloc(img->file_size + 1);
	if (!text)
		return -ENOMEM;
	r = vd_pread_full(img->fd, text, img->file_size, 0);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read the descriptor: %s", img->path, strerror(-r));
		free(text);
		return r;
	}
	text[img->file_size] = '\0';
	r = vmdk_desc_parse(text, img->file_size, img->path, &st->desc);
	free(text);
	if (r < 0)
		return r;
	return extents_build(img, st, 0);
}

static int vmdk_inputs(struct vd_image *img, vd_input_fn fn, void *ctx)
{
	struct vmdk_state *st = img->priv;

	for (unsigned i = 0; i < st->n_ext; i++) {
		struct vmdk_extent *e = &st->ext[i];
		int r;

		if (!e->own_fd || e->fd < 0)
			continue;
		r = fn(ctx, e->path, e->fd, &e->file);
		if (r != 0)
			return r;
	}
	return 0;
}

static void vmdk_close(struct vd_image *img)
{
	struct vmdk_state *st = img->priv;

	if (!st)
		return;
	for (unsigned i = 0; i < st->n_ext; i++) {
		struct vmdk_extent *e = &st->ext[i];

		if (e->ops && e->ops->close)
			e->ops->close(e);
		if (e->own_fd && e->fd >= 0)
			vd_close(e->fd);
		vd_file_info_free(&e->file);
		free(e->path);
	}
	free(st->ext);
	vmdk_desc_free(&st->desc);
	free(st);
	img->priv = NULL;
}

static void vmdk_set_identity(struct vd_image *img, struct vmdk_state *st)
{
	const struct vmdk_desc *d = &st->desc;

	img->subformat = d->create_type;
	img->size = d->total_sectors * 512;
	img->cow_unit = 512;
	img->alloc_unit = 0;
	for (unsigned i = 0; i < st->n_ext; i++) {
		if (st->ext[i].grain_bytes) {
			img->cow_unit = (uint32_t)st->ext[i].grain_bytes;
			img->alloc_unit = st->ext[i].grain_bytes;
			break;
		}
	}
	if (st->no_identity)
		return;
	img->id.len = 4;
	vd_put_be32(img->id.bytes, d->cid);
	if (d->parent_cid != VMDK_CID_NONE) {
		img->has_parent = true;
		img->parent_id.len = 4;
		vd_put_be32(img->parent_id.bytes, d->parent_cid);
	}
}

static int vmdk_open(struct vd_image *img, unsigned flags)
{
	struct vmdk_state *st;
	uint8_t hdr[512] = {0};
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	img->priv = st;
	r = vd_pread_full(img->fd, hdr, (size_t)vd_min_u64(img->file_size, sizeof(hdr)), 0);
	if (r < 0) {
		vd_log_err("vmdk: %s: cannot read: %s", img->path, strerror(-r));
		return r;
	}
	if (vd_get_le32(hdr) == COWD_MAGIC || vd_get_le64(hdr) == SESPARSE_MAGIC) {
		piece_refuse(img, vd_get_le32(hdr) == COWD_MAGIC ? "COWD vmfsSparse" : "seSparse");
		return -EINVAL;
	}
	if (vd_get_le32(hdr) == VMDK_KDMV_MAGIC) {
		if (img->file_size < sizeof(hdr)) {
			vd_log_err("vmdk: %s: sparse header truncated (%" PRIu64 " bytes)",
				   img->path, img->file_size);
			return -EINVAL;
		}
		r = open_kdmv(img, st, hdr);
	} else {
		r = open_text(img, st);
	}
	if (r < 0)
		return r;
	vmdk_set_identity(img, st);
	if (img->has_parent) {
		char *u8 = NULL;

		/* the UTF-8 spelling of a legacy-charset hint first, then as written */
		r = name_to_utf8(desc_charset(&st->desc), st->desc.parent_hint, &u8);
		if (r < 0)
			vd_log_err("vmdk: %s: out of memory converting the parent hint", img->path);
		if (r == 0 && u8)
			r = vd_image_add_hint(img, "parentFileNameHint (UTF-8)", u8);
		free(u8);
		if (r == 0)
			r = vd_image_add_hint(img, "parentFileNameHint", st->desc.parent_hint);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Index of the extent holding byte off (off < img->size). */
static struct vmdk_extent *extent_find(struct vmdk_state *st, uint64_t off)
{
	unsigned lo = 0, hi = st->n_ext;

	while (hi - lo > 1) {
		unsigned mid = lo + (hi - lo) / 2;

		if (st->ext[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &st->ext[lo];
}

static int vmdk_block_status(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum,
			     struct vd_map *map)
{
	struct vmdk_state *st = img->priv;
	struct vmdk_extent *e = extent_find(st, off);
	uint64_t rel = off - e->start;
	uint64_t n = vd_min_u64(len, e->sectors * 512 - rel);

	if (e->access == VMDK_ACCESS_NOACCESS) {
		*pnum = n;
		map->fd = -1; /* vmdk_read() refuses it */
		return VD_DATA;
	}
	return e->ops->block_status(e, rel, n, pnum, map);
}

/* Reads a DATA run that is not stored verbatim: a stream extent's grains, or
 * a NOACCESS extent (an error). The run lies in one extent. */
static int vmdk_read(struct vd_image *img, void *buf, size_t len, uint64_t off)
{
	struct vmdk_state *st = img->priv;
	struct vmdk_extent *e = extent_find(st, off);

	if (e->access == VMDK_ACCESS_NOACCESS || !e->ops->read) {
		vd_log_err("vmdk: %s: read at offset %" PRIu64
			   " falls in a NOACCESS extent (descriptor line %u)",
			   img->path, off, st->desc.extents[e - st->ext].line);
		return -EIO;
	}
	return e->ops->read(e, buf, len, off - e->start);
}

const struct vmdk_desc *vmdk_image_desc(const struct vd_image *img)
{
	const struct vmdk_state *st = img->priv;

	return st && !st->no_identity ? &st->desc : NULL;
}

/* The extent a change of [off, off + len) goes to: 1 with *out set, 0 for
 * nothing to do (len 0), -EROFS or -EINVAL (logged) for a range outside the
 * disk or across extents (a writable image has one). */
static int extent_to_change(struct vd_image *img, uint64_t off, uint64_t len, const char *what,
			    struct vmdk_extent **out)
{
	struct vmdk_state *st = img->priv;
	struct vmdk_extent *e;

	if (!(img->flags & VD_OPEN_RDWR))
		return -EROFS;
	if (len == 0)
		return 0;
	if (off >= img->size || len > img->size - off) {
		vd_log_err("vmdk: %s: %s of %" PRIu64 " bytes at offset %" PRIu64
			   " is outside the disk",
			   img->path, what, len, off);
		return -EINVAL;
	}
	e = extent_find(st, off);
	if (off + len > e->start + e->sectors * 512) {
		vd_log_err("vmdk: %s: %s at offset %" PRIu64 " crosses an extent", img->path, what,
			   off);
		return -EINVAL;
	}
	*out = e;
	return 1;
}

static int vmdk_write(struct vd_image *img, const void *buf, size_t len, uint64_t off)
{
	struct vmdk_extent *e;
	int r = extent_to_change(img, off, len, "write", &e);

	return r <= 0 ? r : e->ops->write(e, buf, len, off - e->start);
}

static int vmdk_discard(struct vd_image *img, uint64_t off, uint64_t len)
{
	struct vmdk_extent *e;
	int r = extent_to_change(img, off, len, "discard", &e);

	return r <= 0 ? r : e->ops->discard(e, off - e->start, len);
}

static int vmdk_flush(struct vd_image *img)
{
	struct vmdk_state *st = img->priv;
	int r = 0;

	if (!(img->flags & VD_OPEN_RDWR))
		return 0;
	for (unsigned i = 0; r == 0 && i < st->n_ext; i++)
		if (st->ext[i].ops && st->ext[i].ops->flush)
			r = st->ext[i].ops->flush(&st->ext[i]);
	return r;
}

static void vmdk_describe(struct vd_image *img, struct vd_json *j)
{
	struct vmdk_state *st = img->priv;
	const struct vmdk_desc *d = &st->desc;

	vd_json_str(j, "createType", d->create_type);
	vd_json_str(j, "cid", st->no_identity ? NULL : d->cid_text);
	vd_json_str(j, "parentCID", st->no_identity ? NULL : d->parent_cid_text);
	vd_json_str(j, "parentFileNameHint", d->parent_hint);
	vd_json_str(j, "encoding", d->encoding);
	vd_json_arr_begin(j, "extents");
	for (unsigned i = 0; i < st->n_ext; i++) {
		struct vmdk_extent *e = &st->ext[i];

		vd_json_obj_begin(j, NULL);
		vd_json_str(j, "access", vmdk_access_name(e->access));
		vd_json_u64(j, "sectors", d->extents[i].sectors);
		vd_json_str(j, "type", vmdk_extent_type_name(e->type));
		vd_json_str(j, "file", e->name);
		if (e->path)
			vd_json_file(j, e->path, &e->file);
		vd_json_u64(j, "offset", d->extents[i].offset);
		vd_json_str(j, "backend", e->ops ? e->ops->name : NULL);
		if (e->ops && e->ops->describe)
			e->ops->describe(e, j);
		vd_json_obj_end(j);
	}
	vd_json_arr_end(j);
	vd_json_obj_begin(j, "ddb");
	for (unsigned i = 0; i < d->n_ddb; i++)
		vd_json_str(j, d->ddb[i].key, d->ddb[i].value);
	vd_json_obj_end(j);
}

/* Extents check their own files; flat and zero extents have no metadata to
 * check, stream extents have no check yet (said as a note). */
static int vmdk_check(struct vd_image *img, struct vd_check *chk)
{
	struct vmdk_state *st = img->priv;

	for (unsigned i = 0; i < st->n_ext; i++) {
		struct vmdk_extent *e = &st->ext[i];
		int r;

		if (e->ops == &vmdk_stream_ops)
			vd_check_note(chk, e->path, "streamOptimized grain tables are not checked");
		if (!e->ops || !e->ops->check)
			continue;
		r = e->ops->check(e, chk);
		if (r < 0)
			return r;
	}
	return 0;
}

const struct vd_format_ops vd_vmdk_ops = {
    .name = "vmdk",
    .probe = vmdk_probe,
    .open = vmdk_open,
    .close = vmdk_close,
    .block_status = vmdk_block_status,
    .read = vmdk_read,
    .write = vmdk_write,
    .flush = vmdk_flush,
    .create_child = vmdk_create_child,
    .describe = vmdk_describe,
    .check = vmdk_check,
    .inputs = vmdk_inputs,
    .discard = vmdk_discard,
};
