#!/usr/bin/env bash
# End-to-end test of nbdkit-vdmount-plugin over the VHD chains of
# tests/e2e/chains/vhd.sh (qemu-made fixed and dynamic disks, 3- and 16-layer
# differencing chains, a child over a qemu dynamic base): nbdkit --run nbdcopy
# of the default export and nbdcopy of disk and every layers/NN-* export equal
# qemu-img convert or mkvhd's models; nbdinfo --list shows every layer (the
# 16-layer chain pads to two digits); nbdinfo --map agrees with qemu-img map
# where qemu reads the chain (it has no differencing VHD); no source file
# changes.
#
# Env: VD_NBD_PLUGIN, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_nbd_init nbd_vhd
MKVHD=${VD_BUILD:-}/tests/mkvhd
for t in qemu-img qemu-io sha256sum; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -x "$MKVHD" ] || { echo "SKIP: $MKVHD not built"; exit 77; }

vd_chains_init
. "$(dirname "$0")/chains/vhd.sh"
vd_chains_vhd
mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

# A fixed disk is data to the plugin; qemu also sees the host file's holes.
declare -A NBD_MAP=([qemu-dynamic]=exact [qemu-fixed]=covers)
vd_nbd_check_chains

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
