/* Harness: whole chains. The input is an archive of several files (fuzz.h:
 * FZ_SEP) served through memfs; the first is opened with vd_chain_open(),
 * which probes it, parses descriptors, opens extents and follows parent
 * hints into the other files, so descriptors, extents, hints, identity
 * checks and every driver are fuzzed together. A chain that does not open
 * is tried again with VD_CHAIN_FORCE (and, for one input in eight, with
 * VD_CHAIN_ALLOW_MIXED), then every level is read at random ranges and the
 * chain is described. */
#include <limits.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char top[PATH_MAX];
	unsigned flags[2] = {0, VD_CHAIN_FORCE};
	struct fz_rng r;

	fz_init();
	fz_fs_reset();
	fz_rng_init(&r, data, size);
	if (fz_rng_below(&r, 8) == 0) {
		flags[0] |= VD_CHAIN_ALLOW_MIXED;
		flags[1] |= VD_CHAIN_ALLOW_MIXED;
	}
	if (fz_archive_unpack(data, size, top) == 0)
		return 0;
	for (unsigned i = 0; i < 2; i++) {
		struct vd_chain *c = NULL;
		unsigned errs = vd_log_error_count();
		int ret = vd_chain_open(top, flags[i], &c);

		if (ret < 0) {
			fz_check_open_failed(ret, errs, "vd_chain_open");
			continue;
		}
		fz_chain_run(c, &r);
		vd_chain_close(c);
		break;
	}
	fz_fs_reset();
	return 0;
}
