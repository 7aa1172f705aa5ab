/* Confinement: which files an image may make vdmount open.
 *
 * An image names other files (VMDK extents, parent hints, VHD locators), and
 * a hostile image could name any host file or disk that vdmount, usually run
 * as root, would then serve as disk content. The policy: a file that an image
 * refers to must be a regular file whose real path (symlinks resolved, as the
 * kernel opened it) lies inside one of the policy's roots: the directories of
 * the images given on the command line and the --search directories, or below
 * them. allow_outside and allow_devices lift the two rules; every file opened
 * only because of them is recorded (chain.json shows the list). The images
 * the user names themselves are not checked: the user chose them. */
#ifndef VD_CONFINE_H
#define VD_CONFINE_H

#include <pthread.h>
#include <stdbool.h>

struct vd_policy {
	char **roots; /* real paths of directories whose trees may be read */
	unsigned n_roots;
	char **search; /* real paths of --search directories (roots too) */
	unsigned n_search;
	bool allow_outside; /* --allow-outside */
	bool allow_devices; /* --allow-devices */

	pthread_mutex_t lock; /* protects the exceptions list */
	char **exceptions;    /* "<path>: <why it was allowed>" */
	unsigned n_exceptions;
};

/* Initialises an empty policy (nothing is inside it yet). */
void vd_policy_init(struct vd_policy *p);

/* Frees everything; safe on a zeroed policy. */
void vd_policy_free(struct vd_policy *p);

/* Makes the directory of image path a root: both the directory as given and
 * the directory of the file's real path (when the image is a symlink, its
 * extents lie beside the target). Returns 0 or -errno (logged). */
int vd_policy_add_image(struct vd_policy *p, const char *path);

/* Makes dir a root and a place to look for parents by name (--search).
 * Returns 0 or -errno (logged). */
int vd_policy_add_search(struct vd_policy *p, const char *dir);

/* Opens path read-only for an image: referrer (the image file that names it)
 * calls it role ("extent", "parent"). Returns the fd, or -errno: the open's
 * own error (not logged: the caller knows what it was looking for), or
 * -EPERM after logging one line that names the file, the referrer, the rule
 * and the option that lifts it. */
int vd_policy_open(struct vd_policy *p, const char *path, const char *referrer, const char *role);

/* Like vd_policy_open() without keeping the file and without logging:
 * 0 when path exists and may be opened, -ENOENT (or another open error) when
 * it cannot be opened, -EPERM when the policy refuses it; then *why (if
 * non-NULL) gets a malloc'd reason naming the option that lifts it. */
int vd_policy_check(struct vd_policy *p, const char *path, char **why);

#endif
