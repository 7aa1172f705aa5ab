#!/usr/bin/env bash
# End-to-end test of VHD chains through a real FUSE mount.
#
# Chains (tests/e2e/chains/vhd.sh): qemu-made fixed and dynamic disks, 3- and
# 16-layer differencing chains made by mkvhd (expected content from its
# --mirror raw models) and a differencing child over a qemu dynamic base.
# MOUNT/disk and every
# MOUNT/layers/NN-* are compared by sha256 with the models, in the
# multithreaded loop and with -s. Bad inputs (missing parent, unique id
# mismatch, bad footer checksum) must fail with one clear line. No input file
# may change. For information only, libvhdi's vhdimount is run on the 3-layer
# chain (it misreads bitmap runs ending mid-byte); its result never fails us.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init vhd_chain
MKVHD=${VD_BUILD:-}/tests/mkvhd
for t in qemu-img qemu-io sha256sum; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -x "$MKVHD" ] || { echo "SKIP: $MKVHD not built"; exit 77; }

vd_chains_init

. "$(dirname "$0")/chains/vhd.sh"
vd_chains_vhd

# Bad inputs, each in its own directory.
B=$W/bad
mkdir -p "$B/missing" "$B/uuid"
mkv dynamic "$B/missing/p.vhd" 1048576 --block 65536
mkv child "$B/missing/p.vhd" "$B/missing/c.vhd"
rm "$B/missing/p.vhd"
mkv dynamic "$B/uuid/p.vhd" 1048576 --block 65536
mkv child "$B/uuid/p.vhd" "$B/uuid/c.vhd"
rm "$B/uuid/p.vhd" # recreate under the same name: a new unique id
mkv dynamic "$B/uuid/p.vhd" 1048576 --block 65536
cp "$W/qfixed/q-fixed.vhd" "$B/badsum.vhd"
sz=$(stat -c %s "$B/badsum.vhd")
printf '\x5a' | dd of="$B/badsum.vhd" bs=1 seek=$((sz - 512 + 64)) conv=notrunc status=none

mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

run_pass()
{
	local mode=$1 opts=()
	[ "$mode" = single ] && opts=(-s)
	vd_check_chains "$mode"
	vd_expect_fail "[$mode] missing parent" "$B/missing/c.vhd" "$B/missing/c.vhd" \
		"parent not found" "${opts[@]}"
	vd_expect_fail "[$mode] unique id mismatch" "$B/uuid/c.vhd" "$B/uuid/c.vhd" \
		"unique id" "${opts[@]}"
	vd_expect_fail "[$mode] bad footer checksum" "$B/badsum.vhd" "$B/badsum.vhd" \
		"checksum" "${opts[@]}"
}

run_pass multi
run_pass single

# Informational: libvhdi's view of the 3-layer chain (its mid-byte runs bug).
vd_info_vhdimount "$W/diff3/diff3-03.vhd" "${EXPECT[$W/diff3/diff3-03.vhd]}" diff3 \
	"libvhdi mid-byte bitmap runs"

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
