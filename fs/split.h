/* Large reads on two cores.
 *
 * A sequential reader with large blocks (dd bs=1M iflag=direct, qemu-img
 * convert, a backup tool) has one request in flight at a time: the kernel
 * waits for the whole MiB before asking for the next, so one FUSE thread
 * resolves, reads, inflates and checks it while the other core idles. A
 * request of at least FS_SPLIT_MIN bytes has its second half read by a helper
 * thread meanwhile, when it is the only read in flight and the helper is
 * free; otherwise (buffered reads keep several requests in flight, which use
 * both cores already) the request is read whole as before. Reads of a view
 * may run concurrently (chain/part.h), so the halves need nothing more. */
#ifndef VD_FS_SPLIT_H
#define VD_FS_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "chain/part.h"

#define FS_SPLIT_MIN (512u << 10)

/* vd_view_read(v, buf, len, off), the second half on the helper when a
 * request is large and the helper free. Starts the helper on first use:
 * call only after the daemon forked. */
int fs_split_read(const struct vd_view *v, void *buf, size_t len, uint64_t off);

/* No helper: every request is read whole by the thread that got it
 * (--single-thread). Call before the first read. */
void fs_split_disable(void);

#endif
