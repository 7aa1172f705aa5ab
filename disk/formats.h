/* Driver tables of the formats vdmount knows, and what it says of the rest. */
#ifndef VD_FORMATS_H
#define VD_FORMATS_H

#include "disk/disk.h"

extern const struct vd_format_ops vd_vmdk_ops;
extern const struct vd_format_ops vd_vhd_ops;
extern const struct vd_format_ops vd_vhdx_ops;

/* img (open, file_size set) is of no registered format: logs one error line
 * naming what it is instead (a VMDK extent of a descriptor beside it, qcow2,
 * VHDX while unsupported, EWF, an OVA's tar, a raw disk, ...) and what to do,
 * or the generic "not a VMDK or VHD image". Returns -EINVAL (or -ENOMEM). */
int vd_foreign_explain(struct vd_image *img);

#endif
