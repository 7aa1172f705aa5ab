/* Creating a differencing VHDX (.avhdx) over a VHDX parent, laid out as
 * Hyper-V lays out its checkpoints ([MS-VHDX] v8.0; the corpus's
 * Windows-made files agree):
 *
 *   0        file type identifier, creator "vdmount <version>" (2.2.1)
 *   64 KiB   header 1 (SequenceNumber 1), 128 KiB header 2 (2, current):
 *            fresh FileWriteGuid and DataWriteGuid (getrandom), LogGuid zero,
 *            the log at 1 MiB, 1 MiB long (2.2.2)
 *   192 KiB  region table, 256 KiB its copy: metadata @ 2 MiB (1 MiB), BAT
 *            @ 3 MiB, both required (2.2.3)
 *   1 MiB    log (empty: zeros)
 *   2 MiB    metadata: file parameters (the parent's block size, or 2 MiB
 *            over a fixed parent; HasParent), the parent's virtual size, page
 *            83 id and sector sizes (2.6.2.4: a child's logical sector size
 *            is its parent's), the parent locator (2.6.2.6.3)
 *   3 MiB    BAT, every entry NOT_PRESENT (zeros), then EOF
 *
 * Parent locator: parent_linkage = the parent's current DataWriteGuid;
 * relative_path = the parent relative to the child's directory (the
 * parent's directory resolved, its own file name kept, as vdmount opened
 * it), with '\' separators and ".\" for the same directory as Hyper-V
 * writes it; absolute_win32_path = the parent's absolute path on Wine's Z:
 * drive ("\\?\Z:\dir\parent.vhdx"), the one drive-letter form a POSIX path
 * has (Wine maps Z: to /), read back by vdmount's parent search. No
 * volume_path: a volume GUID is assigned by the Windows mount manager, and
 * no value Linux knows would lead Windows to the right volume; a made-up one
 * would only be tried first and fail. No parent_linkage2 (optional).
 *
 * The log region and the BAT are holes: an empty delta of any size takes a
 * few KiB of disk. The file is built under a temporary name and renamed in
 * without replacing anything (vd_create_tmp/vd_create_finish). */
#include "disk/vhdx.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VHDX_NEW_LOG_OFF VHDX_MiB
#define VHDX_NEW_META_OFF (2 * VHDX_MiB)
#define VHDX_NEW_BAT_OFF (3 * VHDX_MiB)
#define VHDX_DEFAULT_BLOCK (2u << 20)
#define VHDX_LOC_MAX (64u * 1024)

/* A fresh random GUID (RFC 4122 version 4, in the on-disk layout). */
static int guid_random(uint8_t g[16])
{
	int r = vd_random_bytes(g, 16);

	g[7] = (uint8_t)((g[7] & 0x0F) | 0x40); /* Data3 is little-endian: its high byte */
	g[8] = (uint8_t)((g[8] & 0x3F) | 0x80);
	return r;
}

int vhdx_guid_new(uint8_t g[16])
{
	int r;

	do
		r = guid_random(g);
	while (r == 0 && vhdx_guid_is_zero(g));
	return r;
}

/* s with every '/' turned into '\', after prefix (malloc'd, or NULL). */
static char *win_path(const char *prefix, const char *s)
{
	char *out;

	if (asprintf(&out, "%s%s", prefix, s) < 0)
		return NULL;
	for (char *q = out; *q; q++)
		if (*q == '/')
			*q = '\\';
	return out;
}

/* relative_path and absolute_win32_path of parent as a child at path names
 * it (see the top of the file). Returns 0 or -errno (logged). */
static int locator_paths(const char *parent, const char *path, struct vhdx_locator *l)
{
	char *target, *rel;
	int r = vd_path_parent_of_delta("vhdx", parent, path, &target, &rel);

	if (r < 0)
		return r;
	l->relative_path = win_path(strncmp(rel, "../", 3) ? "./" : "", rel);
	l->absolute_win32_path = win_path("\\\\?\\Z:", target);
	r = l->relative_path && l->absolute_win32_path ? 0 : -ENOMEM;
	free(target);
	free(rel);
	return r;
}

/* Everything but the BAT (holes) and the log (holes): ident, headers,
 * region tables, metadata. */
static int layout_write(int fd, const struct vhdx_header *h1, const struct vhdx_regions *rt,
			const uint8_t *meta, size_t meta_len, uint64_t file_size)
{
	uint8_t *buf = malloc(VHDX_RT_SIZE);
	struct vhdx_header h2 = *h1;
	int r;

	if (!buf)
		return -ENOMEM;
	r = vhdx_ident_encode("vdmount " VD_VERSION, buf);
	if (r == 0)
		r = vd_pwrite_full(fd, buf, VHDX_HEADER_SIZE, VHDX_IDENT_OFF);
	if (r == 0) {
		vhdx_header_encode(h1, buf);
		r = vd_pwrite_full(fd, buf, VHDX_HEADER_SIZE, VHDX_HEADER1_OFF);
	}
	if (r == 0) {
		h2.seq = h1->seq + 1;
		vhdx_header_encode(&h2, buf);
		r = vd_pwrite_full(fd, buf, VHDX_HEADER_SIZE, VHDX_HEADER2_OFF);
	}
	/* The tables are 64 KiB of which the first 4 KiB hold anything. */
	vhdx_region_table_encode(rt, buf);
	if (r == 0)
		r = vd_pwrite_full(fd, buf, VHDX_HEADER_SIZE, VHDX_RT1_OFF);
	if (r == 0)
		r = vd_pwrite_full(fd, buf, VHDX_HEADER_SIZE, VHDX_RT2_OFF);
	if (r == 0)
		r = vd_pwrite_full(fd, meta, VHDX_HEADER_SIZE, rt->meta.offset);
	if (r == 0)
		r = vd_pwrite_full(fd, meta + VHDX_MT_SIZE, meta_len - VHDX_MT_SIZE,
				   rt->meta.offset + VHDX_MT_SIZE);
	if (r == 0 && ftruncate(fd, (off_t)file_size) < 0)
		r = -errno;
	free(buf);
	return r;
}

int vhdx_create_child(struct vd_image *parent, const char *path)
{
	const struct vhdx_state *ps = parent->priv;
	struct vhdx_params p = ps->par;
	struct vhdx_locator l = {0};
	struct vhdx_regions rt = {0};
	struct vhdx_header h = {0};
	struct vhdx_geom g;
	char linkage[VHDX_GUID_TEXT];
	uint8_t *loc = malloc(VHDX_LOC_MAX), *meta = NULL;
	const char *why;
	long loc_len;
	char *tmp;
	int fd, r;

	if (!loc)
		return -ENOMEM;
	if (p.leave_allocated && !p.has_parent)
		p.block_size = VHDX_DEFAULT_BLOCK;
	p.has_parent = true;
	p.leave_allocated = false;
	r = vhdx_geom_compute(&p, UINT32_MAX, &g, &why);
	if (r < 0) {
		vd_log_err("vhdx: %s: %s", path, why);
		goto out;
	}
	rt.meta = (struct vhdx_region){.offset = VHDX_NEW_META_OFF, .length = VHDX_MiB};
	rt.bat = (struct vhdx_region){.offset = VHDX_NEW_BAT_OFF,
				      .length = (uint32_t)vd_round_up(g.bat_entries * 8, VHDX_MiB)};
	rt.meta.required = rt.bat.required = true;
	vhdx_guid_format(ps->hdr.data_write, linkage);
	l.linkage = linkage;
	r = locator_paths(parent->path, path, &l);
	if (r < 0)
		goto out;
	loc_len = vhdx_locator_encode(&l, loc, VHDX_LOC_MAX);
	meta = malloc(VHDX_META_ITEMS_END + VHDX_LOC_MAX);
	if (loc_len < 0 || !meta) {
		r = !meta ? -ENOMEM : (int)loc_len;
		vd_log_err("vhdx: %s: cannot encode the parent locator for %s: %s", path,
			   parent->path, strerror(-r));
		goto out;
	}
	r = vhdx_metadata_encode(&p, loc, (uint32_t)loc_len, meta,
				 VHDX_META_ITEMS_END + VHDX_LOC_MAX);
	h = (struct vhdx_header){
	    .seq = 1, .version = 1, .log_length = VHDX_MiB, .log_offset = VHDX_NEW_LOG_OFF};
	if (r == 0)
		r = vhdx_guid_new(h.file_write);
	if (r == 0)
		r = vhdx_guid_new(h.data_write);
	if (r < 0)
		goto out;
	fd = vd_create_tmp(path, &tmp);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = layout_write(fd, &h, &rt, meta, VHDX_META_ITEMS_END + (size_t)loc_len,
			 rt.bat.offset + rt.bat.length);
	if (r < 0)
		vd_log_err("vhdx: %s: cannot write: %s", path, strerror(-r));
	/* Never replaces an existing file: the name may be anyone's image. */
	r = vd_create_finish(fd, tmp, path, r);
out:
	free((char *)l.relative_path);
	free((char *)l.absolute_win32_path);
	free(loc);
	free(meta);
	return r;
}
