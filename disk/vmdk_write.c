/* Creating a VMDK delta: the one file create_child() makes over any VMDK
 * parent (hosted sparse, split, flat, vmfs, COWD, seSparse, stream).
 *
 * The delta is a hosted monolithicSparse file with an embedded descriptor,
 * laid out as VMware Workstation and QEMU lay theirs out (Virtual Disk
 * Format 5.0, "Hosted Sparse Extent Header" and "Grain Directories and Grain
 * Tables"; formats.md 2.2):
 *
 *   sector 0            header: version 2, flags NL test | redundant GD |
 *                       zeroed-grain GTE (0x7), 128-sector (64 KiB) grains
 *   1 .. 20             descriptor (text, NUL-padded)
 *   21                  redundant GD, then every redundant GT (4 sectors each)
 *   gdOffset            GD, then every GT
 *   overHead            (rounded up to a grain) first grain
 *
 * Version 2 with flag bit 2 is what the spec asks of an extent that may hold
 * zeroed-grain GTEs (value 1, "reads as zeros, stores nothing"), which is how
 * discard is written; VMware's hosted products and QEMU (which writes the
 * same header for zeroed_grain=on) read and write it, and QEMU refuses to
 * write version 3 without compression, so 2 is the only choice that gives
 * discard a zero GTE. Both GDs are written whole and point at all the GTs, which
 * are holes of the file (it is ftruncated to overHead): an allocation then
 * only ever changes GT entries, never the GD, and an empty delta of any size
 * takes a few KiB of disk.
 *
 * The descriptor: CID random (getrandom), parentCID the parent's CID,
 * parentFileNameHint the parent's path relative to the delta's directory
 * (the parent's directory resolved, its own name kept, so a symlinked
 * descriptor keeps resolving its extents as when it was opened), the
 * parent's DDB (adapterType, geometry, uuid, virtualHWVersion) and a fresh
 * longContentID ending in the CID, as VMware writes it.
 *
 * The file is built under a temporary name in the target directory and
 * renamed into place without replacing anything (vd_create_tmp/finish). */
#include "disk/vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/endian.h"
#include "disk/vmdk_desc.h"

#define DELTA_GRAIN 128u    /* sectors: 64 KiB */
#define DELTA_DESC_SIZE 20u /* sectors, as VMware and QEMU reserve */
#define GT_SECTORS 4u	    /* 512 entries of 4 bytes */

void vmdk_delta_header(uint64_t capacity, struct vmdk_kdmv_header *h)
{
	uint64_t grains = vd_div_round_up(capacity, DELTA_GRAIN);
	uint64_t n_gt = vd_div_round_up(grains, 512);
	uint64_t gd_sectors = vd_div_round_up(n_gt * 4, 512);
	uint64_t tables = gd_sectors + n_gt * GT_SECTORS;

	memset(h, 0, sizeof(*h));
	h->version = 2;
	h->flags = VMDK_FLAG_NL_TEST | VMDK_FLAG_RGD | VMDK_FLAG_ZERO_GTE;
	h->capacity = capacity;
	h->grain_size = DELTA_GRAIN;
	h->desc_offset = 1;
	h->desc_size = DELTA_DESC_SIZE;
	h->num_gtes_per_gt = 512;
	h->rgd_offset = 1 + DELTA_DESC_SIZE;
	h->gd_offset = h->rgd_offset + tables;
	h->overhead = vd_round_up(h->gd_offset + tables, DELTA_GRAIN);
}

void vmdk_gd_encode(uint64_t gd_offset, uint64_t n_gt, uint8_t *buf)
{
	uint64_t gt0 = gd_offset + vd_div_round_up(n_gt * 4, 512);

	for (uint64_t i = 0; i < n_gt; i++)
		vd_put_le32(buf + i * 4, (uint32_t)(gt0 + i * GT_SECTORS));
}

/* Path of parent as the delta at path should name it: relative to the
 * delta's directory, through the real path of the parent's directory and
 * the parent's own file name. Malloc'd, NULL with *err set. */
static char *parent_hint(const char *parent, const char *path, int *err)
{
	char *target, *hint;

	*err = vd_path_parent_of_delta("vmdk", parent, path, &target, &hint);
	free(target);
	return hint;
}

/* A CID that is neither "no parent" nor the parent's, and a VMware-style
 * longContentID: 24 random hex digits, then the CID. */
static int cid_new(uint32_t parent_cid, uint32_t *cid, char lcid[33])
{
	uint8_t r[16];
	int err;

	do {
		err = vd_random_bytes(r, sizeof(r));
		if (err < 0)
			return err;
		*cid = vd_get_be32(r + 12);
	} while (*cid == VMDK_CID_NONE || *cid == parent_cid);
	for (unsigned i = 0; i < 12; i++)
		snprintf(lcid + 2 * i, 3, "%02x", r[i]);
	snprintf(lcid + 24, 9, "%08" PRIx32, *cid);
	return 0;
}

/* The delta's descriptor as text, NUL-padded to DELTA_DESC_SIZE sectors. */
static int delta_desc(const struct vmdk_desc *pd, uint64_t capacity, const char *name, char *hint,
		      const char *path, uint8_t *out)
{
	struct vmdk_ddb ddb[16];
	struct vmdk_desc_extent x = {.access = VMDK_ACCESS_RW,
				     .type = VMDK_EXT_SPARSE,
				     .sectors = capacity,
				     .name = (char *)name};
	struct vmdk_desc d = {.version = 1,
			      .encoding = "UTF-8",
			      .parent_cid = pd->cid,
			      .create_type = "monolithicSparse",
			      .parent_hint = hint,
			      .extents = &x,
			      .n_extents = 1,
			      .ddb = ddb};
	char lcid[33];
	struct vd_buf b;
	int r = cid_new(pd->cid, &d.cid, lcid);

	if (r < 0) {
		vd_log_err("vmdk: %s: no random CID: %s", path, strerror(-r));
		return r;
	}
	/* The parent's DDB, but its own content id and charset. */
	for (unsigned i = 0; i < pd->n_ddb && d.n_ddb < 15; i++) {
		if (!strcasecmp(pd->ddb[i].key, "longContentID") ||
		    !strcasecmp(pd->ddb[i].key, "encoding"))
			continue;
		if (!vmdk_desc_value_ok(pd->ddb[i].value)) {
			vd_log_warn("vmdk: %s: not copying the parent's ddb.%s (unquotable value)",
				    path, pd->ddb[i].key);
			continue;
		}
		ddb[d.n_ddb++] = pd->ddb[i];
	}
	ddb[d.n_ddb++] = (struct vmdk_ddb){.key = "longContentID", .value = lcid};
	r = vmdk_desc_encode(&d, &b);
	if (r == -EINVAL)
		vd_log_err("vmdk: %s: cannot write a descriptor naming \"%s\" and \"%s\" (a quote "
			   "or line break in a file name)",
			   path, name, hint);
	if (r < 0)
		return r;
	if (b.len >= DELTA_DESC_SIZE * 512) {
		vd_log_err("vmdk: %s: the descriptor (%zu bytes) does not fit in %u sectors: "
			   "parent path too long",
			   path, b.len, DELTA_DESC_SIZE);
		vd_buf_free(&b);
		return -ENAMETOOLONG;
	}
	memset(out, 0, DELTA_DESC_SIZE * 512);
	memcpy(out, b.data, b.len);
	vd_buf_free(&b);
	return 0;
}

/* Writes header, descriptor and both GDs into fd and sizes it to overHead. */
static int delta_fill(int fd, const struct vmdk_kdmv_header *h, const uint8_t *desc)
{
	uint64_t n_gt = vd_div_round_up(vd_div_round_up(h->capacity, h->grain_size), 512);
	size_t gd_bytes = (size_t)vd_div_round_up(n_gt * 4, 512) * 512;
	uint8_t hdr[512], *gd = calloc(1, gd_bytes);
	int r;

	if (!gd)
		return -ENOMEM;
	vmdk_kdmv_encode(h, hdr);
	r = vd_pwrite_full(fd, hdr, sizeof(hdr), 0);
	if (r == 0)
		r = vd_pwrite_full(fd, desc, DELTA_DESC_SIZE * 512, h->desc_offset * 512);
	vmdk_gd_encode(h->rgd_offset, n_gt, gd);
	if (r == 0)
		r = vd_pwrite_full(fd, gd, gd_bytes, h->rgd_offset * 512);
	vmdk_gd_encode(h->gd_offset, n_gt, gd);
	if (r == 0)
		r = vd_pwrite_full(fd, gd, gd_bytes, h->gd_offset * 512);
	if (r == 0 && ftruncate(fd, (off_t)(h->overhead * 512)) < 0)
		r = -errno;
	free(gd);
	return r;
}

int vmdk_create_child(struct vd_image *parent, const char *path)
{
	const struct vmdk_desc *pd = vmdk_image_desc(parent);
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	uint64_t capacity = parent->size / 512;
	struct vmdk_kdmv_header h;
	uint8_t *desc = NULL;
	char *hint = NULL, *tmp;
	int fd, r;

	if (!pd) {
		vd_log_err("vmdk: %s: cannot make a delta of %s: it has no descriptor (CID) to "
			   "name as parent",
			   path, parent->path);
		return -EINVAL;
	}
	if (parent->size % 512 || capacity == 0 || capacity > (1ull << 32)) {
		vd_log_err("vmdk: %s: cannot make a delta of %s: %" PRIu64 " bytes is more than "
			   "a hosted sparse extent holds (2 TiB)",
			   path, parent->path, parent->size);
		return -EFBIG;
	}
	hint = parent_hint(parent->path, path, &r);
	desc = malloc(DELTA_DESC_SIZE * 512);
	if (!hint || !desc) {
		r = hint ? -ENOMEM : r;
		goto out;
	}
	r = delta_desc(pd, capacity, name, hint, path, desc);
	if (r < 0)
		goto out;
	vmdk_delta_header(capacity, &h);
	fd = vd_create_tmp(path, &tmp);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = delta_fill(fd, &h, desc);
	if (r < 0)
		vd_log_err("vmdk: %s: cannot write: %s", path, strerror(-r));
	r = vd_create_finish(fd, tmp, path, r);
out:
	free(hint);
	free(desc);
	return r;
}
