#!/usr/bin/env bash
# vdmount demo: builds vdmount, makes a small VMDK snapshot chain holding an
# ext4 filesystem in which /hello.txt changes from snapshot to snapshot, mounts
# the chain and shows each layer's /hello.txt through read-only loop mounts of
# the partition files MOUNT/disk.p1 and MOUNT/layers/*.p1; then mounts it
# writable (-w), changes the file in the guest, and shows the new delta beside
# the untouched originals and the 4-layer chain it makes. Everything lives in
# a temporary directory and is unmounted and removed at exit. Needs root
# (loop mounts).
#
# Env: VD_BUILD_DIR (default build/), VD_KEEP=1 keeps the temporary directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[ "$(id -u)" -eq 0 ] || vd_die "the demo loop-mounts filesystems: run it as root"
bdir=${VD_BUILD_DIR:-$root/build}

run()
{
	printf '$ %s\n' "$*"
	"$@"
}

vd_say "installing what is missing"
vd_install_deps $VD_PKGS_BUILD qemu-utils e2fsprogs fdisk util-linux
vd_say "building vdmount in $bdir"
vd_build "$root" "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
VDMOUNT=$bdir/vdmount

VD_TMP=$(mktemp -d "${TMPDIR:-/tmp}/vdmount-demo.XXXXXX")
trap vd_cleanup EXIT
W=$VD_TMP/images
MNT=$VD_TMP/mnt
mkdir -p "$W" "$MNT"
cd "$W"

OFF=1048576 # the partition starts at 1 MiB
vd_say "making a 128 MiB disk: MBR, one ext4 partition at 1 MiB, /hello.txt"
run truncate -s 128M v1.raw
echo 'start=2048, type=83' | run sfdisk -q v1.raw
run mkfs.ext4 -q -F -E offset=$OFF v1.raw $((127 * 1024))k

# edit RAW TEXT: writes TEXT to /hello.txt of RAW's ext4 partition.
edit()
{
	local raw=$1 dir=$VD_TMP/edit
	mkdir -p "$dir"
	mount -o loop,offset=$OFF "$raw" "$dir"
	VD_MOUNTS+=("$dir")
	printf '%s\n' "$2" >"$dir/hello.txt"
	umount "$dir"
	echo "  /hello.txt in $raw is now: $2"
}
edit v1.raw "hello from the base disk"

vd_say "converting it to a monolithicSparse VMDK (the base)"
run qemu-img convert -f raw -O vmdk v1.raw base.vmdk

vd_say "snapshot 1: hello.txt changed (a delta holding only the changed 64 KiB grains)"
cp --sparse=always v1.raw v2.raw
edit v2.raw "hello from snapshot 1"
vd_vmdk_delta v1.raw v2.raw base.vmdk base-000001.vmdk
echo "  base-000001.vmdk: parent base.vmdk, $(du -k base-000001.vmdk | cut -f1) KiB on disk"

vd_say "snapshot 2: changed again"
cp --sparse=always v2.raw v3.raw
edit v3.raw "hello from snapshot 2"
vd_vmdk_delta v2.raw v3.raw base-000001.vmdk base-000002.vmdk
echo "  base-000002.vmdk: parent base-000001.vmdk, $(du -k base-000002.vmdk | cut -f1) KiB on disk"
rm -f v1.raw v2.raw v3.raw
run qemu-img info --backing-chain base-000002.vmdk | grep -E '^(image|backing file):'
sha256sum base.vmdk base-000001.vmdk base-000002.vmdk >"$VD_TMP/before.sha256"

vd_say "mounting the chain with vdmount (read-only)"
VD_MOUNTS+=("$MNT")
run "$VDMOUNT" base-000002.vmdk "$MNT"
run ls -l "$MNT" "$MNT/layers"
run cat "$MNT/chain.json"
echo

vd_say "what each file says /hello.txt is"
n=0
# Each view's partition 1 is a file of its own (disk.p1, layers/NN-x.p1).
for f in "$MNT/disk.p1" "$MNT"/layers/*.p1; do
	d=$VD_TMP/fs$n
	n=$((n + 1))
	mkdir -p "$d"
	VD_MOUNTS+=("$d")
	mount -o loop,ro "$f" "$d"
	printf '  %-28s /hello.txt: %s\n' "${f#"$MNT"/}" "$(cat "$d/hello.txt")"
	umount "$d"
done

vd_say "writing is refused"
if (: >>"$MNT/disk") 2>"$VD_TMP/err"; then
	echo "  unexpected: disk opened for writing"
else
	echo "  open(disk, O_WRONLY): $(sed 's/.*: //' "$VD_TMP/err")"
fi

vd_say "unmounting"
run fusermount3 -u "$MNT"
vd_say "the images are unchanged:"
sha256sum -c "$VD_TMP/before.sha256"

vd_say "the write half: vdmount -w writes into a NEW delta, never into these files"
run "$VDMOUNT" -w base-000002.vmdk "$MNT"
d=$VD_TMP/rw
mkdir -p "$d"
VD_MOUNTS+=("$d")
run mount -o loop,offset=$OFF "$MNT/disk" "$d"
echo "hello from a vdmount -w session" >"$d/hello.txt"
echo "  wrote /hello.txt through the writable disk"
run umount "$d"
pid=$(vd_daemon_pid "$MNT")
run fusermount3 -u "$MNT"
while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
run ls -l "$W"
vd_say "the originals are still unchanged:"
sha256sum -c "$VD_TMP/before.sha256"
run qemu-img info --backing-chain base-000002-vdm-000001.vmdk | grep -E '^(image|backing file):'

vd_say "the new 4-layer chain, read-only"
run "$VDMOUNT" base-000002-vdm-000001.vmdk "$MNT"
for f in "$MNT/disk.p1" "$MNT"/layers/*.p1; do
	mount -o loop,ro "$f" "$d"
	printf '  %-36s /hello.txt: %s\n' "${f#"$MNT"/}" "$(cat "$d/hello.txt")"
	umount "$d"
done
run fusermount3 -u "$MNT"
[ -n "${VD_KEEP:-}" ] && echo "(kept $VD_TMP)"
vd_say "demo done"
