/* What a file is when no driver takes it, so the error says what to do.
 *
 * Evidence arrives in many containers; "not a VMDK, VHD or VHDX image" helps
 * nobody. When every driver has declined a file, it is matched, in order,
 * against: a VMDK descriptor beside it that lists it as an extent (a flat
 * extent given instead of its descriptor); the magic numbers of formats we do
 * not mount (foreign_magic[]); a tar archive (an OVA: name the .vmdk inside);
 * a raw disk or filesystem image. Nothing matched: the generic message.
 *
 * A row whose name is a registered driver's is skipped (here and in --help):
 * a format recognised here until its driver lands (VHDX was) stops being
 * called foreign by itself. Magic numbers: qcow2 "QFI\xfb" (QEMU docs/interop/
 * qcow2.txt), EWF "EVF\x09\x0d\x0a\xff\x00"
 * and EWF2 "EVF2\x0d\x0a\x81\x00" (libewf's format documents), VDI
 * 0xbeda107f at 64 (VirtualBox VDICore.h), ustar at 257 (POSIX pax), GPT
 * "EFI PART" at LBA 1 (UEFI 2.10 5.3.2), MBR 0x55aa at 510. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "disk/endian.h"
#include "disk/formats.h"
#include "disk/vmdk.h"

#define HEAD_LEN 65536

struct foreign_magic {
	const char *name;  /* a driver of this name, once registered, makes the row void */
	const char *label; /* for --help */
	unsigned off;
	const char *magic;
	unsigned len;
	const char *what, *todo;
};

#define TODO_CONVERT "convert it (qemu-img convert -O vmdk) or serve it with qemu-nbd --read-only"
#define TODO_EWF "expose its raw disk with ewfmount (ewf-tools) and mount or attach that"
#define TODO_UNPACK "unpack it first"

static const struct foreign_magic foreign_magic[] = {
    {"qcow2", "qcow2", 0, "QFI\xfb", 4, "a QEMU qcow2 image", TODO_CONVERT},
    {"vdi", "VDI", 64, "\x7f\x10\xda\xbe", 4, "a VirtualBox VDI image", TODO_CONVERT},
    {"ewf", "EWF/E01", 0, "EVF\x09\x0d\x0a\xff\x00", 8, "an EWF (E01) evidence file", TODO_EWF},
    {"ewf2", "EWF2/Ex01", 0, "EVF2\x0d\x0a\x81\x00", 8, "an EWF2 (Ex01) evidence file", TODO_EWF},
    {"gzip", "gzip", 0, "\x1f\x8b", 2, "gzip-compressed", TODO_UNPACK},
    {"xz", "xz", 0,
     "\xfd"
     "7zXZ\x00",
     6, "xz-compressed", TODO_UNPACK},
    {"bzip2", "bzip2", 0, "BZh", 3, "bzip2-compressed", TODO_UNPACK},
    {"zstd", "zstd", 0, "\x28\xb5\x2f\xfd", 4, "zstd-compressed", TODO_UNPACK},
    {"zip", "zip", 0, "PK\x03\x04", 4, "a zip archive", TODO_UNPACK},
    {"7z", "7z", 0, "7z\xbc\xaf\x27\x1c", 6, "a 7z archive", TODO_UNPACK},
};

#define N_MAGIC (sizeof(foreign_magic) / sizeof(foreign_magic[0]))

static bool driver_registered(const char *name)
{
	for (size_t i = 0; vd_formats[i]; i++)
		if (!strcmp(vd_formats[i]->name, name))
			return true;
	return false;
}

const char *vd_foreign_list(void)
{
	static char list[512];

	if (list[0])
		return list;
	for (size_t i = 0; i < N_MAGIC; i++) {
		if (driver_registered(foreign_magic[i].name))
			continue;
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s, ",
			 foreign_magic[i].label);
	}
	snprintf(list + strlen(list), sizeof(list) - strlen(list),
		 "OVA (tar; names the .vmdk inside), raw disk and filesystem images, and VMDK "
		 "extent files given instead of their descriptor");
	return list;
}

/* An octal tar number field (GNU base-256 for sizes of 8 GiB and more). */
static uint64_t tar_number(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	if (p[0] & 0x80) {
		for (size_t i = 1; i < n; i++)
			v = v << 8 | p[i];
		return v;
	}
	for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '7'; i++)
		v = v << 3 | (uint64_t)(p[i] - '0');
	return v;
}

/* A tar archive: lists the .vmdk members (at most 64 headers looked at). */
static int tar_explain(struct vd_image *img)
{
	struct vd_buf names = {0};
	uint8_t h[512];
	uint64_t off = 0;
	unsigned n_vmdk = 0;
	char first_name[256] = "";

	for (unsigned k = 0; k < 64 && off + 512 <= img->file_size; k++) {
		uint64_t size;
		char name[256];
		size_t nl;

		if (vd_pread_full(img->fd, h, sizeof(h), off) < 0 || vd_mem_is_zero(h, sizeof(h)))
			break;
		if (memcmp(h + 257, "ustar", 5))
			break;
		/* ustar: prefix (155 bytes at 345) "/" name (100 bytes at 0) */
		snprintf(name, sizeof(name), "%.*s%s%.*s", (int)strnlen((char *)h + 345, 155),
			 (char *)h + 345, h[345] ? "/" : "", (int)strnlen((char *)h, 100),
			 (char *)h);
		nl = strlen(name);
		if ((h[156] == '0' || h[156] == 0) && nl > 5 &&
		    !strcasecmp(name + nl - 5, ".vmdk")) {
			if (!n_vmdk++)
				snprintf(first_name, sizeof(first_name), "%s", name);
			if (n_vmdk <= 4)
				vd_buf_printf(&names, "%s%s", names.len ? ", " : "", name);
		}
		size = tar_number(h + 124, 12);
		if (vd_add_ovf(off, 512 + vd_round_up(vd_min_u64(size, UINT64_MAX / 2), 512), &off))
			break;
	}
	if (n_vmdk)
		vd_log_err("%s: an OVA package or tar archive holding %s%s: extract the disk first "
			   "(tar -xf %s '%s') and mount the .vmdk",
			   img->path, names.data ? names.data : "", n_vmdk > 4 ? ", ..." : "",
			   img->path, first_name);
	else
		vd_log_err("%s: a tar archive with no .vmdk among its first members: not a disk "
			   "image",
			   img->path);
	vd_buf_free(&names);
	return -EINVAL;
}

/* A raw disk (partition table) or filesystem image: what kind, or NULL. */
static const char *raw_kind(const uint8_t *h, size_t len)
{
	if (len >= 1024 && !memcmp(h + 512, "EFI PART", 8))
		return "a raw disk image (GPT partition table)";
	if (len >= 512 && !memcmp(h + 3, "NTFS    ", 8))
		return "a raw NTFS filesystem image";
	if (len >= 512 && (!memcmp(h + 54, "FAT1", 4) || !memcmp(h + 82, "FAT32   ", 8)))
		return "a raw FAT filesystem image";
	if (len >= 4 && !memcmp(h, "XFSB", 4))
		return "a raw XFS filesystem image";
	if (len >= 1082 && vd_get_le16(h + 1080) == 0xef53)
		return "a raw ext2/3/4 filesystem image";
	if (len >= 32774 && !memcmp(h + 32769, "CD001", 5))
		return "an ISO 9660 image";
	if (len >= 512 && h[510] == 0x55 && h[511] == 0xaa) {
		/* an MBR's four entries have boot flags 0x00 or 0x80 */
		for (unsigned i = 0; i < 4; i++)
			if (h[446 + 16 * i] != 0 && h[446 + 16 * i] != 0x80)
				return NULL;
		return "a raw disk image (MBR partition table)";
	}
	return NULL;
}

/* "not a VMDK, VHD or VHDX image", naming the registered formats. */
static void generic_error(struct vd_image *img, const char *why)
{
	struct vd_buf b = {0};
	size_t n = 0;

	while (vd_formats[n])
		n++;
	for (size_t i = 0; i < n; i++) {
		vd_buf_printf(&b, "%s", i == 0 ? "" : i + 1 == n ? " or " : ", ");
		for (const char *p = vd_formats[i]->name; *p; p++)
			vd_buf_printf(&b, "%c", *p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
	}
	vd_log_err("%s: not a %s image (%s)", img->path, b.data ? b.data : "disk", why);
	vd_buf_free(&b);
}

int vd_foreign_explain(struct vd_image *img)
{
	size_t len = (size_t)vd_min_u64(img->file_size, HEAD_LEN);
	uint8_t *h = malloc(len ? len : 1);
	const char *raw;
	unsigned ext_no = 0;
	char *owner;
	size_t nl = strlen(img->path);
	int r = -EINVAL;

	if (!h)
		return -ENOMEM;
	if (vd_pread_full(img->fd, h, len, 0) < 0)
		len = 0;
	owner = vmdk_extent_owner(img->path, &ext_no);
	if (owner) {
		vd_log_err(
		    "%s: this is extent %u (raw data) of the VMDK disk described by %s, not a "
		    "disk: open %s instead",
		    img->path, ext_no, owner, owner);
		free(owner);
		goto out;
	}
	for (size_t i = 0; i < N_MAGIC; i++) {
		const struct foreign_magic *m = &foreign_magic[i];

		if (len < m->off + m->len || memcmp(h + m->off, m->magic, m->len) ||
		    driver_registered(m->name))
			continue;
		vd_log_err("%s: %s, not a disk vdmount mounts: %s", img->path, m->what, m->todo);
		goto out;
	}
	if (len >= 512 && !memcmp(h + 257, "ustar", 5)) {
		r = tar_explain(img);
		goto out;
	}
	if (nl > 10 && (!strcasecmp(img->path + nl - 10, "-flat.vmdk"))) {
		vd_log_err(
		    "%s: a VMDK flat extent (raw data), and no descriptor beside it lists it: "
		    "open the disk's descriptor (.vmdk text file) instead",
		    img->path);
		goto out;
	}
	raw = raw_kind(h, len);
	if (raw) {
		vd_log_err(
		    "%s: %s, not a virtual disk image: it needs no vdmount; attach it read-only "
		    "(losetup -r -P --show %s) or mount -o ro,loop",
		    img->path, raw, img->path);
		goto out;
	}
	if (img->file_size == 0)
		generic_error(img, "empty file");
	else
		generic_error(img, "unrecognised header, and no VHD footer at the end");
out:
	free(h);
	return r;
}
