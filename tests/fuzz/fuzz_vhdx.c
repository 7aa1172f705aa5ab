/* Harness: the VHDX reader (disk/vhdx.c, vhdx_meta.c, vhdx_log.c) on one
 * file: identifier, both headers, the log replayed in memory, both region
 * tables, metadata table and items, parent locator, the BAT scan, sector
 * bitmaps, reads through the replay overlay, describe.
 *
 * Input: an archive (fuzz.h) whose first member names the file; a VHDX is
 * given in pieces ("d.vhdx@65536", ...) because its structures lie 1 MiB
 * apart. Checksums stored as 0 are filled in (fz_vhdx_fix_checksums), so
 * mutants reach what the CRCs guard. An open that fails is tried again with
 * VD_OPEN_FORCE, which skips a corrupt log. */
#include <limits.h>

#include "disk/formats.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct vd_format_ops *const only_vhdx[] = {&vd_vhdx_ops, NULL};
	static const unsigned flags[2] = {0, VD_OPEN_FORCE};
	char top[PATH_MAX];
	struct fz_rng r;

	fz_init();
	fz_fs_reset();
	vd_formats_set(only_vhdx);
	fz_rng_init(&r, data, size);
	if (fz_archive_unpack(data, size, top) == 0)
		return 0;
	for (unsigned i = 0; i < 2; i++) {
		unsigned errs = vd_log_error_count();
		struct vd_image *img;
		int ret = vd_image_open(top, flags[i], &img);

		if (ret < 0) {
			fz_check_open_failed(ret, errs, "vhdx open");
			continue;
		}
		if (img->size == 0 || img->cow_unit == 0 || img->alloc_unit == 0)
			fz_fail("vhdx: opened with size %llu, sector %u, block %llu",
				(unsigned long long)img->size, img->cow_unit,
				(unsigned long long)img->alloc_unit);
		if (img->has_parent && (img->n_hints == 0 || img->parent_id.len == 0))
			fz_fail(
			    "vhdx: a differencing disk without hints or parent id was accepted");
		fz_image_run(img, &r);
		break;
	}
	fz_fs_reset();
	return 0;
}
