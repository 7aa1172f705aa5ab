#!/usr/bin/env bash
# End-to-end test of nbdkit-vdmount-plugin over the ESXi-style chains of
# tests/e2e/chains/esx.sh (COWD and seSparse deltas over vmfs flat bases,
# VMware- and qemu-layout streams with a hosted delta): nbdkit --run nbdcopy of
# the default export and nbdcopy of disk and every layers/NN-* export equal the
# generators' models or qemu-img convert; nbdinfo --list shows every layer;
# nbdinfo --map agrees with qemu-img map where qemu reads the chain; no source
# file changes.
#
# Env: VD_NBD_PLUGIN, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_nbd_init nbd_esx
for t in qemu-img qemu-io cmp sha256sum; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

vd_chains_init
. "$(dirname "$0")/chains/esx.sh"
vd_chains_esx
mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

declare -A NBD_MAP=([vmstream]=exact [qstream]=exact [cowd]=exact [sesparse]=exact)
vd_nbd_check_chains

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
