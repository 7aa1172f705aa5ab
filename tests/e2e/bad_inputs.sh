#!/usr/bin/env bash
# Hostile and broken inputs: every one must make vdmount exit non-zero within
# 20 s with exactly one "vdmount: error: <file>: <problem>" line naming the
# file, without a signal or a sanitizer report, and leave nothing mounted.
# Broken images are made from good qemu-img images by editing COPIES (dd
# conv=notrunc); every source file's sha256 must be unchanged afterwards.
# A CID mismatch must also mount with --force (and warn). Runs with the
# multithreaded loop and with -s.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init bad_inputs
for t in qemu-img qemu-io od dd; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"

. "$(dirname "$0")/chains/bad.sh"
vd_bad_cases

mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

for mode in multi single; do
	opts=()
	[ $mode = single ] && opts=(-s)
	for c in "${CASES[@]}"; do
		IFS='|' read -r desc img needle problem <<<"$c"
		vd_expect_fail "[$mode] $desc" "$img" "$needle" "$problem" "${opts[@]}"
	done

	# --force mounts the CID-mismatched delta, with a warning.
	mnt=$M/force
	if vd_mount "${opts[@]}" --force cid/snap.vmdk "$mnt"; then
		vd_check "[$mode] --force on a CID mismatch warns" grep -qi warn "$VD_TMP/mount.err"
		vd_check "[$mode] --force: the warning is in chain.json" vd_check_warnings "$mnt"
		vd_check "[$mode] --force: disk readable" \
			timeout 60 cmp "$mnt/disk" "$VD_TMP/snap.raw"
		vd_umount "$mnt"
	else
		vd_fail "[$mode] --force on a CID mismatch did not mount"
	fi
done

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
