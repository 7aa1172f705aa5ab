/* Partition table changes in a writable mount (vdmount -w).
 *
 * A write or discard through `disk` or a disk.pN that vd_part_table_touched()
 * says may change the table (sfdisk, parted, wipefs) scans it again, after
 * the write, so the scan sees it. When the table differs from the one the
 * files show: the partition files of `disk` and of the delta's layers/ view
 * are replaced (a partition whose number, start and size stayed keeps its
 * file and its open handles), chain.json renders anew at its next use, and
 * the kernel drops its cached attributes of every changed name
 * (fuse_invalidate_path). Negative lookups are never cached in a writable
 * mount (fs_init), so a new disk.pN is seen at once.
 *
 * A handle still open on a removed or moved partition gets EIO for reads
 * and writes: its old bounds may now hold another partition or the table
 * itself, and a loop device over it must not write there. Its node leaves
 * the hash and the listing at once and is freed by its last reference
 * (fs.c's node_put), or at unmount. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"

/* Paths whose cached attributes the kernel must drop after a table change. */
struct fs_stale {
	char **paths;
	unsigned n;
	bool oom;
};

static void stale_add(struct fs_stale *s, const char *path)
{
	if (vd_strv_add(&s->paths, &s->n, path) < 0)
		s->oom = true;
}

/* Removes partition file p (under the write lock): freed now, or by its last
 * reference (an open handle, which then gets EIO). */
static void part_node_remove(struct fs_tree *t, struct fs_node *p, struct fs_stale *s)
{
	stale_add(s, p->path);
	HASH_DEL(t->nodes, p);
	if (atomic_load(&p->refs) == 0) {
		fs_node_free(t, p);
		return;
	}
	p->gone = true;
	p->gone_next = t->gone;
	if (t->gone)
		t->gone->gone_prev = p;
	t->gone = p;
}

static bool part_node_is(const struct fs_node *n, const struct vd_part *p)
{
	return n->part == p->number && n->view.start == p->start && n->view.size == p->size;
}

/* Gives view file v the partition files of table nt (under the write lock):
 * a partition at the same number, start and size keeps its node, the others
 * are replaced. Everything is allocated before anything changes, so on
 * -ENOMEM the old files stay. */
static int parts_rebuild(struct fs_tree *t, struct fs_node *v, const struct vd_part_table *nt,
			 struct fs_stale *s)
{
	struct fs_node *dir = v->dir, **kids = NULL, **fresh = NULL;
	unsigned old = 0, k = 0, first = 0;
	bool *made = NULL;
	int r = -ENOMEM;

	/* v's partition files follow it in the listing (view_add, and this). */
	for (unsigned i = 0; i < dir->n_kids; i++) {
		if (dir->kids[i] == v)
			first = i + 1;
		old += dir->kids[i]->base == v;
	}
	kids = calloc(dir->n_kids - old + nt->n + 1, sizeof(*kids));
	fresh = calloc(nt->n + 1, sizeof(*fresh));
	made = calloc(nt->n + 1, sizeof(*made));
	if (!kids || !fresh || !made)
		goto out;
	for (unsigned i = 0; i < nt->n; i++) {
		for (unsigned j = first; j < first + old && !fresh[i]; j++)
			if (part_node_is(dir->kids[j], &nt->parts[i]))
				fresh[i] = dir->kids[j];
		if (!fresh[i]) {
			fresh[i] = fs_part_node_new(t, v, &nt->parts[i]);
			made[i] = true;
			if (!fresh[i])
				goto out;
		}
	}
	r = 0;
	for (unsigned j = first; j < first + old; j++) {
		bool kept = false;
		for (unsigned i = 0; i < nt->n; i++)
			kept |= fresh[i] == dir->kids[j];
		if (!kept)
			part_node_remove(t, dir->kids[j], s);
	}
	for (unsigned i = 0; i < first; i++)
		kids[k++] = dir->kids[i];
	for (unsigned i = 0; i < nt->n; i++) {
		kids[k++] = fresh[i];
		if (made[i])
			HASH_ADD_KEYPTR(hh, t->nodes, fresh[i]->path, strlen(fresh[i]->path),
					fresh[i]);
	}
	for (unsigned i = first + old; i < dir->n_kids; i++)
		kids[k++] = dir->kids[i];
	free(dir->kids);
	dir->kids = kids;
	dir->n_kids = k;
	kids = NULL;
out:
	for (unsigned i = 0; r < 0 && fresh && made && i < nt->n; i++)
		if (made[i] && fresh[i])
			fs_node_free(t, fresh[i]);
	free(made);
	free(fresh);
	free(kids);
	return r;
}

/* Scans the table of writable disk d again; when it differs from the one its
 * files show, replaces the partition files of d and of its layers/ twin,
 * re-renders chain.json, and has the kernel drop what it cached of the old
 * names. Failures leave the old files and are logged: the write itself
 * succeeded. Called after the write, so the scan sees it. */
static void table_rescan(struct fs_tree *t, struct fs_node *d)
{
	struct vd_part_table *nt = NULL;
	struct fs_stale s = {0};
	const char *path = vd_chain_layer(d->view.chain, d->view.level)->path;
	int r;

	pthread_mutex_lock(&t->scan_lock);
	r = vd_part_scan(d->view.chain, d->view.level, &nt);
	if (r < 0) {
		vd_log_warn("%s: cannot read the changed partition table: %s", path, strerror(-r));
		goto out;
	}
	/* d->table changes only here, under scan_lock: readable without t->lock */
	if (d->table && vd_part_table_equal(d->table, nt))
		goto out;
	vd_log_info("%s: partition table changed: %u partition%s", path, nt->n,
		    nt->n == 1 ? "" : "s");
	for (unsigned i = 0; i < nt->n_warnings; i++)
		vd_log_warn("%s: %s", path, nt->warnings[i]);
	pthread_rwlock_wrlock(&t->lock);
	r = parts_rebuild(t, d, nt, &s);
	if (r == 0 && d->twin)
		r = parts_rebuild(t, d->twin, nt, &s);
	if (r == 0) {
		vd_part_table_free(d->table);
		d->table = nt;
		nt = NULL;
	}
	pthread_rwlock_unlock(&t->lock);
	if (r < 0)
		vd_log_warn("%s: partition files not updated: %s", path, strerror(-r));
	if (d->json) {
		fs_text_drop(t, d->json);
		stale_add(&s, d->json->path);
	}
out:
	pthread_mutex_unlock(&t->scan_lock);
	vd_part_table_free(nt);
	/* Only partition files and chain.json, which never use the page cache
	 * in a writable mount: invalidating them cannot wait on a page that a
	 * request this thread would have to answer keeps locked (as `disk`'s
	 * could, under -s). A name the kernel never looked up is not in
	 * libfuse's cache: that call fails with -ENOENT, harmlessly. */
	for (unsigned i = 0; i < s.n; i++) {
		fuse_invalidate_path(fuse_get_context()->fuse, s.paths[i]);
		free(s.paths[i]);
	}
	free(s.paths);
	if (s.oom)
		vd_log_warn("%s: out of memory: the kernel may show changed partition files "
			    "with their old sizes",
			    path);
}

/* After a write or discard of [off, off+len) of view n succeeded: scans the
 * table again if those bytes may hold it. */
void fs_table_watch(struct fs_tree *t, struct fs_node *n, uint64_t off, uint64_t len)
{
	struct fs_node *d = n->alias ? n->alias : n;
	bool hit;

	pthread_rwlock_rdlock(&t->lock);
	hit = vd_part_table_touched(d->table, n->view.start + off, len);
	pthread_rwlock_unlock(&t->lock);
	if (hit)
		table_rescan(t, d);
}
