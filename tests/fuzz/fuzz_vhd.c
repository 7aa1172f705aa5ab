/* Harness: the VHD reader (disk/vhd.c, disk/vhd_meta.c) on one file: footer
 * search, dynamic header, BAT, locators and parent name, sector bitmaps.
 * Input: a VHD file. Footer and header checksums stored as 0 are filled in
 * first (fz_vhd_fix_checksums), so mutants get past them; any other value is
 * checked as it is. */
#include <stdlib.h>
#include <string.h>

#include "disk/formats.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct vd_format_ops *const only_vhd[] = {&vd_vhd_ops, NULL};
	static const char path[] = FZ_ROOT "/disk.vhd";
	struct vd_image *img;
	struct fz_rng r;
	uint8_t *copy;
	unsigned errs;
	int ret;

	fz_init();
	fz_fs_reset();
	vd_formats_set(only_vhd);
	fz_rng_init(&r, data, size);
	copy = malloc(size ? size : 1);
	if (!copy)
		fz_fail("out of memory");
	memcpy(copy, data, size);
	fz_vhd_fix_checksums(copy, size);
	if (fz_fs_add(path, copy, size) < 0)
		fz_fail("memfs: cannot add the input");
	free(copy);
	errs = vd_log_error_count();
	ret = vd_image_open(path, 0, &img);
	if (ret < 0) {
		fz_check_open_failed(ret, errs, "vhd open");
	} else {
		if (img->has_parent && img->n_hints == 0)
			fz_fail("vhd: a differencing disk without hints was accepted");
		fz_image_run(img, &r);
	}
	fz_fs_reset();
	return 0;
}
