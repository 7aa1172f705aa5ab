/* VMware virtual machine files: the .vmx configuration (which disks the VM
 * has, and the delta each one currently runs on) and the .vmsd snapshot
 * dictionary (the snapshot tree: names, parents, create times, and for each
 * snapshot the disk files it froze). Pure text parsing: no I/O, no logging;
 * -EINVAL with a reason in *why. Front ends read the files and decide what
 * to mount.
 *
 * Both files are "key = "value"" lines (VMware's dictionary format; keys are
 * case-insensitive, '#' starts a comment, and a '|' followed by two hex
 * digits escapes a byte in a value). */
#ifndef VD_CHAIN_VMX_H
#define VD_CHAIN_VMX_H

#include <stddef.h>
#include <stdint.h>

#define VD_VMX_MAX_TEXT (1u << 20) /* a .vmx/.vmsd larger than this is refused */
#define VD_VMSD_MAX_SNAPSHOTS 1024 /* snapshotN indices accepted */
#define VD_VMSD_MAX_DISKS 256	   /* diskM indices per snapshot accepted */

struct vd_vm_disk {
	char *node; /* "scsi0:0", "sata0:1", "ide0:0", "nvme0:0" */
	char *file; /* fileName as written (usually relative to the VM directory) */
};

struct vd_vmx {
	char *display_name;	  /* displayName, or NULL */
	char *vmsd;		  /* snapshot.fileName, or NULL */
	struct vd_vm_disk *disks; /* present hard disks (not CD-ROMs), in file order */
	unsigned n_disks;
};

struct vd_snapshot {
	uint32_t uid;	   /* snapshotN.uid (> 0) */
	uint32_t parent;   /* parent's uid, 0 for a root */
	char *name;	   /* displayName ("" when absent) */
	char *description; /* or NULL */
	int64_t create_us; /* createTimeHigh << 32 | createTimeLow: microseconds since 1970 */
	struct vd_vm_disk *disks; /* the disk files this snapshot froze */
	unsigned n_disks;
};

struct vd_vmsd {
	uint32_t current;	   /* snapshot.current: the snapshot the VM runs from (0 = none) */
	struct vd_snapshot *snaps; /* ordered by snapshotN index */
	unsigned n;
};

/* Parses a .vmx. Requires at least one present hard disk. Returns 0, -EINVAL
 * with *why, or -ENOMEM. out is freed by vd_vmx_free (also on failure). */
int vd_vmx_parse(const char *text, size_t len, struct vd_vmx *out, const char **why);
void vd_vmx_free(struct vd_vmx *v);

/* Parses a .vmsd. Every snapshot needs a unique non-zero uid; a parent or
 * current uid naming no snapshot, or a parent cycle, is -EINVAL. Returns 0,
 * -EINVAL with *why, or -ENOMEM. out is freed by vd_vmsd_free. */
int vd_vmsd_parse(const char *text, size_t len, struct vd_vmsd *out, const char **why);
void vd_vmsd_free(struct vd_vmsd *s);

/* The snapshot with this uid, or NULL. */
const struct vd_snapshot *vd_vmsd_find(const struct vd_vmsd *s, uint32_t uid);

/* The snapshot that froze disk file base (a file name without directories,
 * compared with the base name of each snapshot disk's fileName) of the disk
 * at node (NULL: any node), or NULL. */
const struct vd_snapshot *vd_vmsd_froze(const struct vd_vmsd *s, const char *node,
					const char *base);

#endif
