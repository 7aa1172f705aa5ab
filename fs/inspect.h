/* vdmount --info / --json / --check / --hash (fs/inspect.c). */
#ifndef VD_FS_INSPECT_H
#define VD_FS_INSPECT_H

/* Runs an inspection when argv asks for one (--info, --json, --check or
 * --hash before any "--") and returns the exit status; returns -1 when it
 * does not, and then has touched nothing. */
int fs_inspect_main(int argc, char **argv);

#endif
