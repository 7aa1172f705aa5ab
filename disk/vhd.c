/* Placeholder until the vhd driver lands: recognises nothing. */
#include "disk/formats.h"

static int vhd_probe(const uint8_t *head, size_t len, uint64_t file_size)
{
	(void)head;
	(void)len;
	(void)file_size;
	return 0;
}

const struct vd_format_ops vd_vhd_ops = {
	.name = "vhd",
	.probe = vhd_probe,
};
