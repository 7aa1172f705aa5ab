#!/usr/bin/env bash
# What an image may make vdmount open (issue "Hostile evidence", class 2).
# A descriptor or parent hint that names a file outside the directories of
# the images given (absolute path, ../, a symlink leaving the tree), or a
# block device, is refused with one error line naming the file, the image
# that named it and the option that allows it; with --allow-outside /
# --allow-devices it mounts, the bytes are the named file's, and chain.json
# records the exception. --search and --parent find a parent that moved.
# Before the fix, every refused case here mounted and served the file.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init confinement
for t in qemu-img losetup; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

W=$VD_TMP/case
O=$VD_TMP/outside
M=$VD_TMP/mnt
mkdir -p "$W" "$O" "$M"
cd "$W" || exit 1

# A root-only file outside the evidence directory, 1 MiB.
head -c 1M /dev/urandom >"$O/secret.raw"
chmod 600 "$O/secret.raw"

flat_desc()
{
	printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
	printf 'createType="monolithicFlat"\n\n# Extent description\nRW 2048 FLAT "%s" 0\n' "$1"
	printf '\n# The Disk Data Base\nddb.adapterType = "ide"\n'
}

flat_desc "$O/secret.raw" >abs.vmdk
flat_desc "../outside/secret.raw" >dotdot.vmdk
ln -s "$O/secret.raw" link-flat.vmdk
flat_desc "link-flat.vmdk" >symlink.vmdk
flat_desc "/etc/shadow" >shadow.vmdk

loopdev=$(losetup -f --show "$O/secret.raw") || { echo "SKIP: no loop device"; exit 77; }
trap 'losetup -d "$loopdev" 2>/dev/null; vd_cleanup' EXIT
flat_desc "$loopdev" >device.vmdk

# A parent hint that leaves the directory: a snapshot whose base lives in $O.
qemu-img create -q -f vmdk "$O/base.vmdk" 4M
qemu-io -f vmdk -c "write -P 0x5a 0 64k" "$O/base.vmdk" >/dev/null
qemu-img create -q -f vmdk -b "$O/base.vmdk" -F vmdk snap.vmdk
qemu-img convert -O raw snap.vmdk "$VD_TMP/snap.raw"
# Copies of the base that "moved": one found by name with --search, one
# renamed that only --parent (by identity) can supply.
mkdir -p "$VD_TMP/moved" "$VD_TMP/renamed"
cp "$O/base.vmdk" "$VD_TMP/moved/base.vmdk"
cp "$O/base.vmdk" "$VD_TMP/renamed/old-base.vmdk"

mapfile -t SOURCES < <(find "$W" "$O" "$VD_TMP/moved" "$VD_TMP/renamed" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

for mode in multi single; do
	opts=()
	[ $mode = single ] && opts=(-s)
	vd_expect_fail "[$mode] absolute extent outside" abs.vmdk secret.raw "--allow-outside" "${opts[@]}"
	vd_expect_fail "[$mode] ../ extent" dotdot.vmdk secret.raw "--allow-outside" "${opts[@]}"
	vd_expect_fail "[$mode] symlinked extent leaving the tree" symlink.vmdk "really $O/secret.raw" \
		"--allow-outside" "${opts[@]}"
	vd_expect_fail "[$mode] /etc/shadow as an extent" shadow.vmdk /etc/shadow "--allow-outside" "${opts[@]}"
	vd_expect_fail "[$mode] block device extent" device.vmdk "$loopdev" "--allow-devices" "${opts[@]}"
	vd_expect_fail "[$mode] parent hint outside" snap.vmdk "base.vmdk" "--allow-outside" "${opts[@]}"

	mnt=$M/allowed
	if vd_mount "${opts[@]}" --allow-outside abs.vmdk "$mnt"; then
		vd_check "[$mode] --allow-outside serves the named file" cmp "$mnt/disk" "$O/secret.raw"
		vd_check "[$mode] chain.json records the exception" \
			grep -q "secret.raw: outside the image directories, allowed by --allow-outside" \
			"$mnt/chain.json"
		vd_umount "$mnt"
	else
		vd_fail "[$mode] --allow-outside did not mount"
	fi
	if vd_mount "${opts[@]}" --allow-devices --allow-outside device.vmdk "$mnt"; then
		vd_check "[$mode] --allow-devices serves the device" cmp "$mnt/disk" "$O/secret.raw"
		vd_check "[$mode] chain.json records the device" \
			grep -q "block device, allowed by --allow-devices" "$mnt/chain.json"
		vd_umount "$mnt"
	else
		vd_fail "[$mode] --allow-devices did not mount"
	fi
	if vd_mount "${opts[@]}" --search "$VD_TMP/moved" snap.vmdk "$mnt"; then
		vd_check "[$mode] --search finds the parent" cmp "$mnt/disk" "$VD_TMP/snap.raw"
		vd_check "[$mode] chain.json says how" grep -q 'base name, in --search' "$mnt/chain.json"
		vd_umount "$mnt"
	else
		vd_fail "[$mode] --search did not mount"
	fi
	if vd_mount "${opts[@]}" --parent "$VD_TMP/renamed/old-base.vmdk" snap.vmdk "$mnt"; then
		vd_check "[$mode] --parent supplies the parent" cmp "$mnt/disk" "$VD_TMP/snap.raw"
		vd_check "[$mode] chain.json says --parent" grep -q '"parent_found_by": "--parent"' \
			"$mnt/chain.json"
		vd_umount "$mnt"
	else
		vd_fail "[$mode] --parent did not mount"
	fi
done

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_asan_check
vd_finish
