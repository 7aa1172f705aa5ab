/* The mount point and the system's mount table (/proc/self/mountinfo). */
#ifndef VD_FS_MNT_H
#define VD_FS_MNT_H

#include <stdbool.h>

/* One entry of /proc/self/mountinfo, octal escapes undone. */
struct mnt_entry {
	unsigned major, minor;
	const char *point, *fstype, *source;
};

/* Calls fn on each entry of /proc/self/mountinfo until it returns true.
 * Returns true when fn did, false otherwise (also when the file is unreadable). */
bool mnt_each(bool (*fn)(const struct mnt_entry *e, void *ctx), void *ctx);

/* Checks that given can take a new mount and sets *abs to its canonical
 * absolute path (malloc'd). Otherwise logs one error line that says which of
 * these it is, and how to fix it, and returns -errno: a stale FUSE mount
 * whose daemon died (-ENOTCONN: "fusermount3 -u"), missing (-ENOENT), not a
 * directory (-ENOTDIR), already a mount point (-EBUSY), not empty without
 * nonempty (-ENOTEMPTY). */
int mnt_point_check(const char *given, bool nonempty, char **abs);

/* Prints a note when image_abs (a canonical path) is already the source of a
 * vdmount mount elsewhere (a second read-only mount is harmless). */
void mnt_note_mounted(const char *image_abs);

/* Raises the kernel's readahead for the vdmount mount at abs (best effort). */
void mnt_readahead_raise(const char *abs, unsigned kb);

#endif
