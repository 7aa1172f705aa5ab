#!/usr/bin/env bash
# Files that are not what vdmount mounts: each must be refused with one line
# that names the file, says what it is and what to do instead (issue 12):
# qcow2, VDI, EWF/E01, an OVA
# (naming the .vmdk inside), raw MBR/GPT disks and filesystems, and VMDK
# extent files given instead of their descriptor (-flat, -s001, -delta,
# -sesparse): "open <descriptor> instead" when a descriptor beside them lists
# them. No input file may change.
#
# Env: VDMOUNT, VD_BUILD (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init not_this_format
for t in qemu-img sfdisk mkfs.ext4 tar; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
TOOLS=${VD_BUILD:?VD_BUILD not set}/tests
for t in mkcowd mksesparse; do
	[ -x "$TOOLS/$t" ] || vd_die "generator $TOOLS/$t not built"
done

W=$VD_TMP/img
mkdir -p "$W"
cd "$W" || exit 1

# "name|image|text the error must contain (the file)|ERE for what it is and what to do"
CASES=()

qemu-img create -q -f qcow2 a.qcow2 4M
CASES+=("qcow2|a.qcow2|a.qcow2|qcow2.*qemu-img convert")
qemu-img create -q -f vdi a.vdi 4M
CASES+=("VDI|a.vdi|a.vdi|VDI.*qemu-img convert")
{
	printf 'EVF\x09\x0d\x0a\xff\x00\x01\x01\x00\x00\x00'
	head -c 2000 /dev/zero
} >a.E01
CASES+=("EWF/E01|a.E01|a.E01|EWF.*ewfmount")

qemu-img create -q -f vmdk -o subformat=streamOptimized disk1.vmdk 4M
printf '<?xml version="1.0"?><Envelope/>\n' >vm.ovf
tar -cf vm.ova vm.ovf disk1.vmdk
CASES+=("OVA|vm.ova|vm.ova|OVA.*disk1\.vmdk.*tar -xf")

truncate -s 4M mbr.img && printf 'label: dos\n,,83\n' | sfdisk -q mbr.img
CASES+=("raw disk (MBR)|mbr.img|mbr.img|raw disk image \(MBR.*losetup -r")
truncate -s 4M gpt.img && printf 'label: gpt\n,,L\n' | sfdisk -q gpt.img
CASES+=("raw disk (GPT)|gpt.img|gpt.img|raw disk image \(GPT.*losetup -r")
truncate -s 4M ext.img && mkfs.ext4 -q ext.img
CASES+=("raw ext4 filesystem|ext.img|ext.img|ext2/3/4 filesystem.*mount -o ro,loop")

# VMDK extents given instead of their descriptor.
qemu-img create -q -f vmdk -o subformat=monolithicFlat fl.vmdk 4M
CASES+=("-flat.vmdk|fl-flat.vmdk|fl-flat.vmdk|extent 1 .*open $W/fl.vmdk instead")
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse sp.vmdk 4M
CASES+=("-s001.vmdk|sp-s001.vmdk|sp-s001.vmdk|extent 1 .*open $W/sp.vmdk instead")
"$TOOLS/mkcowd" vm-000001-delta.vmdk 8192 1 --descriptor vm-000001.vmdk --cid 2b3c4d5e ||
	vd_die mkcowd
CASES+=("-delta.vmdk (COWD)|vm-000001-delta.vmdk|vm-000001-delta.vmdk|COWD.*open $W/vm-000001.vmdk instead")
"$TOOLS/mksesparse" se-000001-sesparse.vmdk 8192 --descriptor se-000001.vmdk --cid 6f6f6f6f ||
	vd_die mksesparse
CASES+=("-sesparse.vmdk|se-000001-sesparse.vmdk|se-000001-sesparse.vmdk|seSparse.*open $W/se-000001.vmdk instead")
# a renamed piece: found by what the descriptors list, not by its name
mkdir -p renamed && cp fl.vmdk renamed/ && cp fl-flat.vmdk renamed/data.bin &&
	sed -i 's/"fl-flat.vmdk"/"data.bin"/' renamed/fl.vmdk
CASES+=("a renamed flat extent|renamed/data.bin|renamed/data.bin|extent 1 .*open $W/renamed/fl.vmdk instead")
mkdir -p orphan && cp fl-flat.vmdk orphan/
CASES+=("a -flat.vmdk without its descriptor|orphan/fl-flat.vmdk|fl-flat.vmdk|flat extent.*no descriptor beside it")

mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"
for c in "${CASES[@]}"; do
	IFS='|' read -r desc img needle problem <<<"$c"
	vd_expect_fail "$desc" "$W/$img" "$needle" "$problem"
done
# a lone split piece (its descriptor gone) still mounts, with a warning
mkdir -p lone && cp sp-s001.vmdk lone/
if vd_mount "$W/lone/sp-s001.vmdk" "$VD_TMP/mnt-lone"; then
	vd_check "a lone -s001 piece mounts with a warning" grep -q "warning: .*without an embedded descriptor" \
		"$VD_TMP/mount.err"
	vd_check "... and chain.json lists the warning" vd_check_warnings "$VD_TMP/mnt-lone"
	vd_umount "$VD_TMP/mnt-lone"
else
	vd_fail "a lone -s001 piece mounts with a warning"
fi
vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
