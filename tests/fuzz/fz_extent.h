/* The body of the per-backend VMDK extent harnesses (fuzz_vmdk_sparse.c,
 * fuzz_vmdk_stream.c, fuzz_vmdk_cowd.c, fuzz_vmdk_sesparse.c): the input is
 * one extent file; it is opened with the backend alone, as vmdk.c would with
 * SECTORS taken from the header's own capacity field (cap_off, cap_width
 * bytes LE), or, for one input in eight, a neighbouring value, so the
 * descriptor/header disagreement checks are reached too. */
#ifndef VD_FZ_EXTENT_H
#define VD_FZ_EXTENT_H

#include "disk/endian.h"
#include "esx_helper.h"
#include "fuzz.h"

static inline int fz_extent_harness(const struct vmdk_extent_ops *ops, const uint8_t *data,
				    size_t size, size_t cap_off, unsigned cap_width)
{
	static const char path[] = FZ_ROOT "/extent.vmdk";
	struct vmdk_extent e;
	struct fz_rng r;
	uint64_t sectors = 1;
	unsigned errs;
	int ret;

	fz_init();
	fz_fs_reset();
	fz_rng_init(&r, data, size);
	if (size >= cap_off + cap_width)
		sectors =
		    cap_width == 8 ? vd_get_le64(data + cap_off) : vd_get_le32(data + cap_off);
	if (fz_rng_below(&r, 8) == 0)
		sectors += fz_rng_below(&r, 3) - 1;
	if (sectors == 0 || sectors > (1ull << 54))
		sectors = 1; /* the descriptor parser refuses these */
	if (fz_fs_add(path, data, size) < 0)
		fz_fail("memfs: cannot add the input");
	errs = vd_log_error_count();
	ret = esx_extent_open(ops, path, sectors, &e);
	if (ret < 0) {
		fz_check_open_failed(ret, errs, ops->name);
	} else {
		if (e.grain_bytes > (1u << 20))
			fz_fail("%s: grain of %llu bytes", ops->name,
				(unsigned long long)e.grain_bytes);
		fz_extent_run(&e, &r);
	}
	fz_fs_reset();
	return 0;
}

#endif
