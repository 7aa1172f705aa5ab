/* VMware VM directories as inputs (fs/vm.c): a .vmx, a .vmsd or a directory
 * holding one .vmx stands for every hard disk of the VM at its current
 * snapshot, and layers take the names and create times of the snapshots in
 * the .vmsd. The parsing is the core's (chain/vmx.h); this file reads the
 * files, keeps what it loaded for the process's lifetime, and answers the
 * front ends' naming questions. Not thread-safe against fs_vm_expand: call it
 * before any thread starts. */
#ifndef VD_FS_VM_H
#define VD_FS_VM_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "chain/chain.h"

/* Replaces each VM argument (.vmx, .vmsd, directory) in *images with the
 * current top file of each of its disks; other arguments are kept. *images
 * then points to an array owned here. Returns 0 or -errno after logging one
 * line naming the file and the problem. */
int fs_vm_expand(char ***images, unsigned *n);

/* True when some argument was a VM (disks then always get a directory). */
bool fs_vm_active(void);

/* Directory name for chain c: the VM disk's base file stem (its first
 * snapshot's file, else the top's) for a VM disk, else the top file's stem.
 * Malloc'd, or NULL. */
char *fs_disk_stem(struct vd_chain *c);

/* Name of layer i of c as every front end shows it: "NN-<snapshot name>"
 * when the .vmsd says a snapshot froze that layer's file, else
 * vd_chain_layer_name(). *mtime (if non-NULL) gets the snapshot's create
 * time, else the image file's mtime. Malloc'd, or NULL. */
char *fs_layer_name(struct vd_chain *c, unsigned i, struct timespec *mtime);

/* Prints the snapshot tree of the VM whose disk c is (all branches, the
 * current one marked), or nothing for a chain that is not a VM disk. */
void fs_vm_print(struct vd_chain *c, FILE *f);

/* Frees what fs_vm_expand loaded. */
void fs_vm_release(void);

#endif
