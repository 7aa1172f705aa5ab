/* Harness: the VMDK hosted sparse (KDMV): header, grain directory and tables
 * (disk/vmdk_sparse.c), as one extent on its own. Input: the extent file. */
#include "fz_extent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_extent_harness(&vmdk_sparse_ops, data, size, 12, 8);
}
