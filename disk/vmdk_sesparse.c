/* Placeholder: the sesparse extent backend is not implemented yet; opening such an
 * extent fails with a clear message (never wrong data). */
#include <errno.h>

#include "disk/vmdk.h"

static int sesparse_open(struct vmdk_extent *e)
{
	vd_log_err("%s: %s extents are not supported yet", e->path, "sesparse");
	return -ENOTSUP;
}

const struct vmdk_extent_ops vmdk_sesparse_ops = {
	.name = "sesparse",
	.open = sesparse_open,
};
