/* Harness: the VMDK text descriptor parser (disk/vmdk_desc.c) on its own.
 * Input: descriptor text, as a file or an embedded descriptor holds it. */
#include <stdlib.h>
#include <string.h>

#include "disk/vmdk_desc.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmdk_desc d;
	unsigned errs;
	uint64_t sum = 0;
	int r;

	fz_init();
	(void)vmdk_desc_sniff(data, size);
	errs = vd_log_error_count();
	r = vmdk_desc_parse((const char *)data, size, FZ_ROOT "/d.vmdk", &d);
	if (r < 0) {
		fz_check_open_failed(r, errs, "vmdk_desc_parse");
		return 0;
	}
	/* What the driver relies on after a successful parse. */
	if (!d.create_type || d.n_extents == 0 || d.n_extents > VMDK_DESC_MAX_EXTENTS)
		fz_fail("descriptor: createType %p, %u extents", (const void *)d.create_type,
			d.n_extents);
	if (d.parent_cid != VMDK_CID_NONE && !d.parent_hint)
		fz_fail("descriptor: parentCID without a hint");
	for (unsigned i = 0; i < d.n_extents; i++) {
		const struct vmdk_desc_extent *x = &d.extents[i];

		if (x->type != VMDK_EXT_ZERO && !x->name)
			fz_fail("descriptor: extent %u has no file name", i);
		if (x->type == VMDK_EXT_VMFSRDM || x->type == VMDK_EXT_VMFSRAW)
			fz_fail("descriptor: raw device extent %u accepted", i);
		sum += x->sectors;
		(void)vmdk_extent_type_name(x->type);
		(void)vmdk_access_name(x->access);
	}
	if (sum != d.total_sectors)
		fz_fail("descriptor: total %llu sectors, extents add up to %llu",
			(unsigned long long)d.total_sectors, (unsigned long long)sum);
	vmdk_desc_free(&d);
	return 0;
}
