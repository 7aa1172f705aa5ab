/* Driver tables of the formats vdmount knows, in probe order. */
#ifndef VD_FORMATS_H
#define VD_FORMATS_H

#include "disk/disk.h"

extern const struct vd_format_ops vd_vmdk_ops;
extern const struct vd_format_ops vd_vhd_ops;
extern const struct vd_format_ops vd_vhdx_ops;

#endif
