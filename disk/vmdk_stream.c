/* Placeholder: the stream extent backend is not implemented yet; opening such an
 * extent fails with a clear message (never wrong data). */
#include <errno.h>

#include "disk/vmdk.h"

static int stream_open(struct vmdk_extent *e)
{
	vd_log_err("%s: %s extents are not supported yet", e->path, "stream");
	return -ENOTSUP;
}

const struct vmdk_extent_ops vmdk_stream_ops = {
	.name = "stream",
	.open = stream_open,
};
