/* FUSE glue (STYLE.md section 4): a fixed tree of names built at mount time,
 * read/getattr/readdir forwarded to the chain layer. Knows no format. */
#ifndef VD_FS_H
#define VD_FS_H

#define FUSE_USE_VERSION 35

#include <fuse.h>
#include <stdbool.h>

#include "chain/chain.h"

/* One mounted chain: its directory name (NULL when it sits at the root). */
struct fs_disk {
	struct vd_chain *chain;
	char *dir; /* stem, unique among the mounted images; NULL for a single image */
};

struct fs_tree;

/* Builds the namespace for the disks (disks[i].chain stays owned by the caller).
 * Returns 0 or -errno. */
int fs_tree_build(struct fs_disk *disks, unsigned n, struct fs_tree **out);
void fs_tree_free(struct fs_tree *t);

/* The FUSE operations over a tree passed as fuse_new()'s private data. */
extern const struct fuse_operations fs_ops;

#endif
