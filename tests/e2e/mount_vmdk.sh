#!/usr/bin/env bash
# End-to-end test of VMDK chains through a real FUSE mount.
#
# Builds the chains of tests/e2e/chains/vmdk.sh (one per VMDK flavour qemu
# can make, plus hand-written vmfs and ZERO/RDONLY descriptors), then mounts
# each chain and compares MOUNT/disk and every MOUNT/layers/NN-* with the raw
# image qemu-img produces from that layer (qemu-img follows the backing chain
# down from it), or the one built by hand where qemu reads a descriptor
# wrongly. Also: sizes, chain.json, EROFS on open for write, a multi-image mount, a
# foreground (-f) mount, and that no source file changed. The whole run is
# repeated with the multithreaded loop and with -s.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init mount_vmdk
for t in qemu-img qemu-io cmp dd; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

vd_chains_init

. "$(dirname "$0")/chains/vmdk.sh"
vd_chains_vmdk
mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"


run_pass()
{
	local mode=$1 opts=()
	[ "$mode" = single ] && opts=(-s)
	local mnt
	vd_check_chains "$mode"

	# Several images in one mount: MOUNT/<stem>/{disk,layers,chain.json}.
	local a=$W/sparse/sp-3.vmdk b=$W/flat/fl-1.vmdk
	mnt=$M/$mode-multi
	if vd_mount "${opts[@]}" "$a" "$b" "$mnt"; then
		vd_check_tree "$mnt/sp-3" "[$mode] multi sp-3" $W/sparse/sp{,-1,-2,-3}.vmdk
		vd_check_tree "$mnt/fl-1" "[$mode] multi fl-1" $W/flat/fl{,-1}.vmdk
		vd_check "[$mode] multi: unmount" vd_umount "$mnt"
	else
		vd_fail "[$mode] multi-image mount"
	fi

	# Foreground mount, polled with mountpoint -q.
	mnt=$M/$mode-fg
	if vd_mount_fg "${opts[@]}" "$W/zg/zg-1.vmdk" "$mnt"; then
		vd_check "[$mode] -f: disk" vd_same "$mnt/disk" "${EXPECT[$W/zg/zg-1.vmdk]}"
		vd_check "[$mode] -f: unmount" vd_umount "$mnt"
		vd_check "[$mode] -f: vdmount exits 0 after unmount" vd_fg_wait
	else
		vd_fail "[$mode] -f mount"
	fi
}

run_pass multi
run_pass single
vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
