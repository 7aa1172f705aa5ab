#!/usr/bin/env bash
# Guest filesystems through vdmount: one MBR disk with an ext4 partition and a
# FAT partition, as a monolithicSparse VMDK base plus a snapshot in which files
# in both filesystems changed. Each filesystem is then read from MOUNT/disk and
# from every MOUNT/layers/NN-* file: ext4 by a read-only loop mount at the
# partition offset, FAT with mtools (no vfat in every kernel). Runs with the
# multithreaded loop and with -s.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init guest_fs
for t in qemu-img qemu-io sfdisk mkfs.ext4 mformat mcopy mtype losetup; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: loop mounts need root"; exit 77; }
export MTOOLS_SKIP_CHECK=1

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"

SIZE=$((128 * 1048576))
EXT_OFF=$((1 * 1048576))   # partition 1: ext4, 60 MiB
EXT_SECTORS=$((60 * 2048))
FAT_OFF=$((62 * 1048576))  # partition 2: FAT, to the end of the disk
FAT_SECTORS=$(((SIZE - FAT_OFF) / 512))

# Throw-away loop mount of a raw image's ext4 partition, for editing it.
ext_edit()
{
	local raw=$1 dir=$VD_TMP/edit
	shift
	mkdir -p "$dir"
	mount -o loop,offset=$EXT_OFF,sizelimit=$((EXT_SECTORS * 512)) "$raw" "$dir" ||
		vd_die "cannot loop-mount $raw (offset $EXT_OFF)"
	VD_MOUNTS+=("$dir")
	(cd "$dir" && eval "$@")
	# Everything the edit wrote must be in the file before qemu-img reads
	# it: an unchecked umount that failed once left a dirty ext4 (no
	# sub/big.bin, and a base that a read-only mount refused) in an ASan
	# run beside other tests. Retry a busy umount, then wait until no loop
	# device holds the file any more (autoclear detaches it).
	local i
	for ((i = 0; i < 20; i++)); do
		umount "$dir" 2>/dev/null && break
		sleep 0.5
	done
	! mountpoint -q "$dir" || vd_die "cannot unmount the edit of $raw"
	for ((i = 0; i < 100; i++)); do
		[ -z "$(losetup -j "$raw" 2>/dev/null)" ] && break
		sleep 0.1
	done
	[ -z "$(losetup -j "$raw" 2>/dev/null)" ] || vd_die "a loop device still holds $raw"
}

loop_probe=$VD_TMP/probe.raw
truncate -s 8M "$loop_probe" && mkfs.ext4 -q -F "$loop_probe" && mkdir -p "$VD_TMP/probe" &&
	mount -o loop,ro "$loop_probe" "$VD_TMP/probe" 2>/dev/null ||
	{ echo "SKIP: loop mounts of ext4 do not work here"; exit 77; }
umount "$VD_TMP/probe"

vd_say "building a partitioned disk (ext4 + FAT) and a snapshot"
truncate -s $SIZE "$W/v1.raw"
printf 'label: dos\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=c\n' \
	$((EXT_OFF / 512)) $EXT_SECTORS $((FAT_OFF / 512)) $FAT_SECTORS |
	sfdisk -q "$W/v1.raw" >/dev/null || vd_die "sfdisk"
mkfs.ext4 -q -F -E offset=$EXT_OFF "$W/v1.raw" $((EXT_SECTORS / 2))k || vd_die "mkfs.ext4"
mformat -i "$W/v1.raw@@$FAT_OFF" -T $FAT_SECTORS -h 255 -s 63 -v GUESTFAT :: || vd_die "mformat"
echo "ext4 v1" >"$VD_TMP/e1"
echo "fat v1" >"$VD_TMP/f1"
head -c 300000 /dev/urandom >"$VD_TMP/big1"
ext_edit "$W/v1.raw" "cp $VD_TMP/e1 hello.txt && mkdir -p sub && cp $VD_TMP/big1 sub/big.bin"
mcopy -i "$W/v1.raw@@$FAT_OFF" "$VD_TMP/f1" ::/HELLO.TXT || vd_die "mcopy"
mcopy -i "$W/v1.raw@@$FAT_OFF" "$VD_TMP/big1" ::/BIG.BIN || vd_die "mcopy"
qemu-img convert -f raw -O vmdk "$W/v1.raw" "$W/gbase.vmdk" || vd_die "qemu-img convert"

cp --sparse=always "$W/v1.raw" "$W/v2.raw"
echo "ext4 v2, changed in the snapshot" >"$VD_TMP/e2"
echo "fat v2, changed in the snapshot" >"$VD_TMP/f2"
head -c 200000 /dev/urandom >"$VD_TMP/big2"
ext_edit "$W/v2.raw" "cp $VD_TMP/e2 hello.txt && cp $VD_TMP/big2 new.bin"
mcopy -o -i "$W/v2.raw@@$FAT_OFF" "$VD_TMP/f2" ::/HELLO.TXT || vd_die "mcopy"
mcopy -i "$W/v2.raw@@$FAT_OFF" "$VD_TMP/big2" ::/NEW.BIN || vd_die "mcopy"
vd_vmdk_delta "$W/v1.raw" "$W/v2.raw" "$W/gbase.vmdk" "$W/gsnap.vmdk" || vd_die "making the delta"
rm -f "$W/v1.raw" "$W/v2.raw"
vd_sums_save "$VD_TMP/sources.sha256" "$W/gbase.vmdk" "$W/gsnap.vmdk"

# check_ext FILE LABEL EXPECTED-HELLO [file=expected ...]
check_ext()
{
	local file=$1 label=$2 hello=$3 dir=$M/ext-$RANDOM
	shift 3
	mkdir -p "$dir"
	if ! timeout 60 mount -o loop,ro,offset=$EXT_OFF "$file" "$dir"; then
		vd_fail "$label: ext4 loop mount of $file"
		return
	fi
	VD_MOUNTS+=("$dir")
	vd_check "$label: ext4 hello.txt" cmp "$dir/hello.txt" "$hello"
	local kv
	for kv in "$@"; do
		case "$kv" in
		*=) vd_check "$label: ext4 ${kv%=} absent" test ! -e "$dir/${kv%=}" ;;
		*) vd_check "$label: ext4 ${kv%%=*}" cmp "$dir/${kv%%=*}" "${kv#*=}" ;;
		esac
	done
	umount "$dir" || vd_fail "$label: umount ext4"
}

# check_fat FILE LABEL EXPECTED-HELLO [NAME=expected ...]
check_fat()
{
	local file=$1 label=$2 hello=$3 kv
	shift 3
	vd_check "$label: FAT HELLO.TXT" cmp <(mtype -i "$file@@$FAT_OFF" ::/HELLO.TXT) "$hello"
	for kv in "$@"; do
		case "$kv" in
		*=) vd_check "$label: FAT ${kv%=} absent" \
			bash -c '! mdir -i "$1" "::/$2" >/dev/null 2>&1' _ "$file@@$FAT_OFF" "${kv%=}" ;;
		*) vd_check "$label: FAT ${kv%%=*}" \
			cmp <(mtype -i "$file@@$FAT_OFF" "::/${kv%%=*}") "${kv#*=}" ;;
		esac
	done
}

for mode in multi single; do
	opts=()
	[ $mode = single ] && opts=(-s)
	mnt=$M/$mode
	if ! vd_mount "${opts[@]}" "$W/gsnap.vmdk" "$mnt"; then
		vd_fail "[$mode] mount"
		continue
	fi
	l1=$(ls "$mnt/layers/" | grep -- '-gbase$')
	l2=$(ls "$mnt/layers/" | grep -- '-gsnap$')
	vd_check "[$mode] layers/ holds gbase and gsnap" test -n "$l1" -a -n "$l2"
	for f in disk "layers/$l2"; do
		check_ext "$mnt/$f" "[$mode] $f" "$VD_TMP/e2" "sub/big.bin=$VD_TMP/big1" \
			"new.bin=$VD_TMP/big2"
		check_fat "$mnt/$f" "[$mode] $f" "$VD_TMP/f2" "BIG.BIN=$VD_TMP/big1" \
			"NEW.BIN=$VD_TMP/big2"
	done
	check_ext "$mnt/layers/$l1" "[$mode] layers/$l1" "$VD_TMP/e1" "sub/big.bin=$VD_TMP/big1" \
		"new.bin="
	check_fat "$mnt/layers/$l1" "[$mode] layers/$l1" "$VD_TMP/f1" "BIG.BIN=$VD_TMP/big1" "NEW.BIN="
	vd_check "[$mode] unmount" vd_umount "$mnt"
done

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
