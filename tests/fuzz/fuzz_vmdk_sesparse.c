/* Harness: the VMDK seSparse: const and volatile headers, grain directory and tables
 * (disk/vmdk_sesparse.c), as one extent on its own. Input: the extent file. */
#include "fz_extent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_extent_harness(&vmdk_sesparse_ops, data, size, 16, 8);
}
