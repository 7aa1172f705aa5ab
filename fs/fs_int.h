/* The FUSE daemon's tree, shared by fs.c (building it, the callbacks) and
 * fs_table.c (partition table changes in a writable mount). Not for other
 * modules: they see fs.h. Locks and their order are in fs.c's opening
 * comment. */
#ifndef VD_FS_INT_H
#define VD_FS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uthash.h>

#include "chain/part.h"
#include "fs/fs.h"

enum fs_kind { FS_DIR, FS_VIEW, FS_JSON, FS_CHANGES };

/* A rendering of chain.json or a change list; refs protected by tree->text_lock. */
struct fs_text {
	unsigned refs;
	size_t len;
	char data[];
};

struct fs_node {
	char *path; /* hash key */
	const char *name;
	enum fs_kind kind;
	struct vd_view view;   /* FS_VIEW; view.chain/level also for FS_JSON, FS_CHANGES */
	struct timespec mtime; /* the image file's for views and change lists */
	struct fs_node *dir;   /* the directory holding it (NULL for the root) */
	struct fs_node **kids; /* FS_DIR, in listing order; protected by tree->lock */
	unsigned n_kids;
	struct fs_text *text; /* FS_JSON, FS_CHANGES: current rendering or NULL; text_lock */
	int64_t alloc;	      /* FS_VIEW: allocated bytes, -1 until known; protected by text_lock */
	bool writable;	      /* FS_VIEW: disk (or disk.pN) of a chain with a writable delta */
	bool uncached;	      /* another view of the writable delta's bytes than `disk` (a
				 layers/ file, a partition file), or chain.json of a writable
				 mount: no page cache, never stale */
	struct fs_node *alias; /* FS_VIEW writable partition file: its `disk`, whose page
				  cache a write here makes stale (invalidated) */
	struct fs_node *base;  /* partition file: the view file it is a partition of */
	unsigned part;	       /* partition file: its number */
	/* `disk` of a writable chain: the partition table its files show
	 * (NULL if unreadable; written under tree->scan_lock and tree->lock);
	 * the delta's layers/ view, whose partition files follow the same
	 * table; its chain.json. */
	struct vd_part_table *table;
	struct fs_node *twin, *json, *changes; /* changes: the delta's .changed */
	/* FS_VIEW allocation or text of a live node (node_live, fs.c): t->writes
	 * when it was made; text_lock */
	uint64_t seen;
	atomic_uint refs; /* open handles and calls in progress holding the node */
	atomic_bool gone; /* removed by a table change, freed at refs 0; tree->lock */
	struct fs_node *gone_prev, *gone_next; /* tree->gone list; tree->lock */
	UT_hash_handle hh;
};

/* One open(2) or opendir(2): fi->fh. */
struct fs_file {
	struct fs_node *node; /* holds a reference */
	struct fs_text *text; /* FS_JSON, FS_CHANGES: the rendering opened on */
};

struct fs_tree {
	struct fs_node *nodes; /* uthash by path; protected by lock */
	struct fs_node *gone;  /* removed nodes still open (unmount frees any left); lock */
	char *delta_dir;       /* directory of the (first) writable delta, for statfs */
	bool rescans;	       /* a writable chain: the partition files may change */
	pthread_rwlock_t lock;
	pthread_mutex_t scan_lock;
	pthread_mutex_t text_lock;
	struct timespec mtime; /* mount time, shown on directories and chain.json */
	uid_t uid;
	gid_t gid;
	/* writes and discards through the writable views (atomic), and the
	 * count and CLOCK_MONOTONIC ns when the delta's other files were last
	 * invalidated in the kernel (fs_refresh; atomic, races only repeat it) */
	uint64_t writes, refreshed_writes;
	int64_t refreshed_ns;
};

/* A node named name in dir (the root when dir is NULL), not linked into the
 * tree; NULL on -ENOMEM. */
struct fs_node *fs_node_new(struct fs_tree *t, struct fs_node *dir, const char *name,
			    enum fs_kind kind);

/* Frees a node that is in no list (its text reference, table, kids array). */
void fs_node_free(struct fs_tree *t, struct fs_node *n);

/* The file for partition p of view file v, not linked; NULL on -ENOMEM. */
struct fs_node *fs_part_node_new(struct fs_tree *t, struct fs_node *v, const struct vd_part *p);

/* Makes chain.json or a change list render again at its next use; open
 * handles keep the text they have. */
void fs_text_drop(struct fs_tree *t, struct fs_node *n);

/* Called after a write or discard of [off, off+len) of writable view n
 * succeeded: when those bytes may hold the partition table, scans it again
 * and, if it changed, replaces the partition files (fs_table.c). Takes
 * tree->lock; must not be called with it held. Never fails the write. */
void fs_table_watch(struct fs_tree *t, struct fs_node *n, uint64_t off, uint64_t len);

#endif
