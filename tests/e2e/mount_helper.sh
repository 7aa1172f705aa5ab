#!/usr/bin/env bash
# vdmount through mount(8) (issue 12): "mount -t fuse.vdmount", an /etc/fstab
# line (a temporary fstab through mount -T) and the command a systemd .mount
# unit runs (README) all reach vdmount through mount.fuse3, which passes
# "IMAGE MOUNTPOINT -o ro,dev,suid,..." and runs vdmount from a fixed PATH.
# Each must mount (findmnt: source = the image, type fuse.vdmount, read-only),
# read right, and unmount with umount.
#
# mount(8) drops the caller's PATH, so the vdmount under test is put first in
# mount.fuse3's default PATH by bind-mounting a directory holding it over
# /usr/local/sbin, in a private mount namespace (unshare -m): the host's
# mounts and its /usr/local/sbin are not touched.
#
# Env: VDMOUNT (ctest sets it). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init mount_helper
for t in qemu-img unshare findmnt mount.fuse3; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -d /usr/local/sbin ] || { echo "SKIP: no /usr/local/sbin to stand in for"; exit 77; }

W="$VD_TMP/img dir" # a space: fstab needs it written \040
M=$VD_TMP/mnt
mkdir -p "$W" "$M/t" "$M/fstab" "$M/unit" "$VD_TMP/bin"
qemu-img create -q -f vmdk "$W/disk.vmdk" 4M || vd_die "qemu-img create"
vd_qemu_io vmdk "$W/disk.vmdk" "write -P 0x3c 64k 64k"
qemu-img convert -O raw "$W/disk.vmdk" "$VD_TMP/disk.raw" || vd_die "qemu-img convert"
ln -s "$VDMOUNT" "$VD_TMP/bin/vdmount"
esc=${W// /\\040}
cat >"$VD_TMP/fstab" <<EOF
# a temporary fstab, as /etc/fstab would have it
$esc/disk.vmdk  $M/fstab  fuse.vdmount  ro,allow_other,nofail  0 0
$esc/disk.vmdk  $M/unit  fuse.vdmount  defaults,x-systemd.automount,_netdev,nofail,force  0 0
EOF

# Runs in the private namespace; prints PASS/FAIL lines.
inner()
{
	local ok=0
	mount --bind "$VD_TMP/bin" /usr/local/sbin || { echo "FAIL bind-mount over /usr/local/sbin"; return; }
	trap 'for m in "$M/t" "$M/fstab" "$M/unit"; do umount "$m" 2>/dev/null; done' EXIT
	# check MNT DESC: mounted by vdmount, from the image, read-only, reads right, umount works
	check()
	{
		local mnt=$1 desc=$2 src opts
		if ! mountpoint -q "$mnt"; then
			echo "FAIL $desc: not mounted"
			return
		fi
		src=$(findmnt -n -o SOURCE --mountpoint "$mnt")
		opts=$(findmnt -n -o FSTYPE,OPTIONS --mountpoint "$mnt")
		[ "$src" = "$W/disk.vmdk" ] && echo "PASS $desc: source $src" ||
			echo "FAIL $desc: source '$src', expected '$W/disk.vmdk'"
		[[ $opts == "fuse.vdmount "* ]] && echo "PASS $desc: type fuse.vdmount" ||
			echo "FAIL $desc: type/options '$opts'"
		[[ $opts =~ [[:space:],]ro(,|$) ]] && echo "PASS $desc: read-only" ||
			echo "FAIL $desc: not read-only ('$opts')"
		cmp -s "$mnt/disk" "$VD_TMP/disk.raw" && echo "PASS $desc: disk reads right" ||
			echo "FAIL $desc: disk differs"
		umount "$mnt" && ! mountpoint -q "$mnt" && echo "PASS $desc: umount" ||
			echo "FAIL $desc: umount"
	}
	mount -t fuse.vdmount "$W/disk.vmdk" "$M/t" -o ro,allow_other 2>"$VD_TMP/err.t" ||
		{ echo "FAIL mount -t fuse.vdmount: exit $?"; cat "$VD_TMP/err.t"; }
	check "$M/t" "mount -t fuse.vdmount"
	findmnt -n --mountpoint "$M/t" >/dev/null && ok=1
	mount -T "$VD_TMP/fstab" "$M/fstab" 2>"$VD_TMP/err.f" ||
		{ echo "FAIL mount -T fstab: exit $?"; cat "$VD_TMP/err.f"; }
	grep -q allow_other <<<"$(findmnt -n -o OPTIONS --mountpoint "$M/fstab")" &&
		echo "PASS fstab: allow_other reaches the kernel" || echo "FAIL fstab: no allow_other"
	check "$M/fstab" "fstab line"
	# what systemd runs for a .mount unit (What=, Where=, Type=, Options=)
	mount "$W/disk.vmdk" "$M/unit" -t fuse.vdmount -o ro,allow_other,nofail 2>"$VD_TMP/err.u" ||
		{ echo "FAIL .mount unit command: exit $?"; cat "$VD_TMP/err.u"; }
	check "$M/unit" "a systemd .mount unit's mount command"
	# fstab's defaults (rw) and systemd's x-* options, and vdmount's own -o force
	mount -T "$VD_TMP/fstab" "$M/unit" 2>"$VD_TMP/err.d" ||
		{ echo "FAIL fstab with defaults,x-systemd.automount,_netdev,force: exit $?"; cat "$VD_TMP/err.d"; }
	check "$M/unit" "fstab with defaults,x-systemd.*,_netdev,force"
	[ $ok = 0 ] || echo "FAIL a mount is left behind"
}
export -f inner
export W M VD_TMP

unshare -m --propagation private bash -c inner >"$VD_TMP/results" 2>&1
cat "$VD_TMP/results"
VD_FAILS=$(grep -c '^FAIL' "$VD_TMP/results")
[ "$(grep -c '^PASS' "$VD_TMP/results")" -ge 20 ] || vd_fail "fewer checks ran than expected"
vd_finish
