#!/usr/bin/env bash
# VMware VM directories: a .vmx/.vmsd pair written here (VMware's dictionary
# format) for a VM with two disks and a snapshot tree with two branches:
#
#   snapshot 1 "Base install"   froze web.vmdk
#   |- snapshot 2 "Before patch" froze web-000001.vmdk   <- current
#   `- snapshot 3 "Other branch" froze web-000003.vmdk   (not in the chain)
#
# The VM runs on web-000002.vmdk (over web-000001 over web) and data.vmdk.
# Mounting the .vmx, the .vmsd or the directory gives web/ and data/; layers
# are named after the snapshots, with the snapshot create time as mtime; every
# file equals qemu-img's conversion of the same chain level. --info shows the
# whole tree including the other branch; --hash labels verify in the mount.
#
# Env: VDMOUNT (ctest sets it). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init vm
for t in qemu-img qemu-io sha256sum; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

V="$VD_TMP/My VM" # a space in the directory, as VMware names them
M=$VD_TMP/mnt
mkdir -p "$V" "$M"

vd_say "building the VM"
(
	cd "$V" &&
		qemu-img create -q -f vmdk web.vmdk 32M &&
		qemu-io -f vmdk -c 'write -P 0x11 0 1M' web.vmdk >/dev/null &&
		qemu-img create -q -f vmdk -b web.vmdk -F vmdk web-000001.vmdk &&
		qemu-io -f vmdk -c 'write -P 0x22 1M 1M' web-000001.vmdk >/dev/null &&
		qemu-img create -q -f vmdk -b web-000001.vmdk -F vmdk web-000002.vmdk &&
		qemu-io -f vmdk -c 'write -P 0x33 2M 64k' web-000002.vmdk >/dev/null &&
		qemu-img create -q -f vmdk -b web.vmdk -F vmdk web-000003.vmdk &&
		qemu-io -f vmdk -c 'write -P 0x44 3M 64k' web-000003.vmdk >/dev/null &&
		qemu-img create -q -f vmdk data.vmdk 8M &&
		qemu-io -f vmdk -c 'write -P 0x55 0 64k' data.vmdk >/dev/null
) || vd_die "making the disks"

# Create times: microseconds since 1970 split into two signed 32-bit words.
T1=$((1700000000 * 1000000 + 250000))
T2=$((1710000000 * 1000000))
T3=$((1720000000 * 1000000))
words()
{
	local hi=$(($1 >> 32)) lo=$(($1 & 0xffffffff))
	[ $lo -ge 2147483648 ] && lo=$((lo - 4294967296))
	printf 'snapshot%s.createTimeHigh = "%s"\nsnapshot%s.createTimeLow = "%s"\n' "$2" $hi "$2" $lo
}
cat >"$V/web.vmx" <<'EOF'
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "Web |22prod|22"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web-000002.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "data.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "install.iso"
snapshot.fileName = "web.vmsd"
EOF
{
	printf '.encoding = "UTF-8"\nsnapshot.lastUID = "3"\nsnapshot.current = "2"\n'
	printf 'snapshot0.uid = "1"\nsnapshot0.filename = "web-Snapshot1.vmsn"\n'
	printf 'snapshot0.displayName = "Base install"\n'
	words $T1 0
	printf 'snapshot0.numDisks = "1"\nsnapshot0.disk0.fileName = "web.vmdk"\n'
	printf 'snapshot0.disk0.node = "scsi0:0"\n'
	printf 'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot1.displayName = "Before patch"\n'
	printf 'snapshot1.description = "before KB 42"\n'
	words $T2 1
	printf 'snapshot1.numDisks = "1"\nsnapshot1.disk0.fileName = "web-000001.vmdk"\n'
	printf 'snapshot1.disk0.node = "scsi0:0"\n'
	printf 'snapshot2.uid = "3"\nsnapshot2.parent = "1"\nsnapshot2.displayName = "Other branch"\n'
	words $T3 2
	printf 'snapshot2.numDisks = "1"\nsnapshot2.disk0.fileName = "web-000003.vmdk"\n'
	printf 'snapshot2.disk0.node = "scsi0:0"\nsnapshot.numSnapshots = "3"\n'
} >"$V/web.vmsd"
vd_sums_save "$VD_TMP/sources.sha256" "$V"/*

declare -A RAW
for f in web web-000001 web-000002 data; do
	qemu-img convert -f vmdk -O raw "$V/$f.vmdk" "$VD_TMP/$f.raw" || vd_die "convert $f"
	RAW[$f]=$VD_TMP/$f.raw
done

check_vm()
{
	local how=$1 arg=$2 mnt=$M/$1
	if ! vd_mount "$arg" "$mnt"; then
		vd_fail "[$how] mount"
		return
	fi
	vd_check "[$how] one directory per disk (data, web)" \
		test "$(ls "$mnt" | tr '\n' ' ')" = "data web "
	vd_check "[$how] web/layers named after the snapshots" \
		test "$(ls "$mnt/web/layers" | grep -v '\.changed$' | tr '\n' '|')" = \
		"01-Base install|02-Before patch|03-web-000002|"
	vd_check "[$how] web/disk" vd_same "$mnt/web/disk" "${RAW[web-000002]}"
	vd_check "[$how] 01-Base install = web.vmdk" vd_same "$mnt/web/layers/01-Base install" "${RAW[web]}"
	vd_check "[$how] 02-Before patch = web-000001.vmdk" \
		vd_same "$mnt/web/layers/02-Before patch" "${RAW[web-000001]}"
	vd_check "[$how] data/disk" vd_same "$mnt/data/disk" "${RAW[data]}"
	vd_check "[$how] 01-Base install mtime = snapshot 1's create time" \
		test "$(stat -c %Y "$mnt/web/layers/01-Base install")" = $((T1 / 1000000))
	vd_check "[$how] 02-Before patch mtime = snapshot 2's create time" \
		test "$(stat -c %Y "$mnt/web/layers/02-Before patch")" = $((T2 / 1000000))
	vd_check "[$how] 03-web-000002 mtime = its file's" \
		test "$(stat -c %Y "$mnt/web/layers/03-web-000002")" = "$(stat -c %Y "$V/web-000002.vmdk")"
	vd_check "[$how] chain.json keeps the plain file names" \
		grep -q '"path": ".*web-000001.vmdk"' "$mnt/web/chain.json"
	if [ "$how" = vmx ]; then
		"$VDMOUNT" --hash "$arg" >"$VD_TMP/sums" 2>/dev/null
		vd_check "[$how] --hash lines (web/layers/02-Before patch, ...) verify in the mount" \
			bash -c 'cd "$1" && grep -q "  web/layers/02-Before patch$" "$2" &&
				sha256sum --quiet -c "$2"' _ "$mnt" "$VD_TMP/sums"
	fi
	vd_check "[$how] unmount" vd_umount "$mnt"
}

check_vm vmx "$V/web.vmx"
check_vm vmsd "$V/web.vmsd"
check_vm dir "$V"

info=$("$VDMOUNT" --info "$V/web.vmx")
vd_check "--info exit 0" test $? = 0
vd_check "--info shows the tree with both branches and the current snapshot" \
	bash -c 'grep -q "\* snapshot 1 \"Base install\", taken 2023-11-14 22:13:20 UTC" <<<"$1" &&
		grep -q "\`- snapshot 2 \"Before patch\".*<- current" <<<"$1" &&
		grep -q "\`- snapshot 3 \"Other branch\".*froze web-000003.vmdk" <<<"$1" &&
		grep -q "^layer 02-Before patch" <<<"$1"' _ "$info"
vd_check "--info names the VM (escapes decoded)" grep -q 'vm .*web.vmx ("Web "prod"")' <<<"$info"

# A .vmsd whose tree is broken: one clear error line naming it.
cp "$V/web.vmsd" "$VD_TMP/good.vmsd"
sed -i 's/snapshot1.parent = "1"/snapshot1.parent = "9"/' "$V/web.vmsd"
vd_expect_fail "a .vmsd with a dangling parent" "$V/web.vmx" "web.vmsd" "parent"
cp "$VD_TMP/good.vmsd" "$V/web.vmsd"
vd_check "VM files unchanged" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
