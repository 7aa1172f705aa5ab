#!/usr/bin/env bash
# Partition files of a writable mount (vdmount -w), and partition tables
# written through it, without remounting. For a VHD chain (multithreaded)
# and a VMDK chain (-s):
#   - sfdisk writes a GPT onto MOUNT/disk: disk.p1 and disk.p2 (and the
#     delta's layers/ view's .pN) appear with the sizes `sfdisk -d` reports
#     (a stat cached before the change, and a negative lookup, do not
#     linger); chain.json lists the new table; sfdisk again (p1 kept, p2
#     grown): a handle open on p1 keeps working, one on the old p2 gets EIO;
#   - a write past the end of disk.p2 fails (ENOSPC), one across it is cut
#     at the end: the byte after the partition is unchanged in `disk`;
#     layers/*.pN stay read-only;
#   - mkfs.ext4 on disk.p1 through a loop device, files copied in; unmount,
#     mount the new delta read-only: e2fsck -fn of disk.p1 is clean, the
#     files are there, disk.p1 is bytes [start, start+size) of disk (sha256),
#     and an independent reader of the new chain (qemu-img convert for
#     VMDK, libvhdi's vhdimount for VHD) equals disk; inputs unchanged;
#   - with --scratch (VMDK, -s): an MBR with an extended partition and two logicals
#     (EBRs written after sector 0) gives p1 p2 p3 p5 p6; a GPT on 4096-byte
#     sectors (sfdisk through a loop device with --sector-size 4096) gives
#     its sizes; wipefs -a leaves no partition file.
#
# Env: VDMOUNT, VD_BUILD (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init write_parts
vd_need qemu-img qemu-io sfdisk wipefs mkfs.ext4 e2fsck losetup jq
[ "$(id -u)" -eq 0 ] || { echo "SKIP: loop devices need root"; exit 77; }
MKVHD=$VD_BUILD/tests/mkvhd
[ -x "$MKVHD" ] || vd_die "mkvhd not built"

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"
MIB=1048576

# make_chain FMT: a 64 MiB base with data at 40-42 MiB and a snapshot over
# it in $W/FMT; prints the top.
make_chain()
{
	local d=$W/$1
	mkdir -p "$d"
	case $1 in
	vhd)
		qemu-img create -q -f vpc -o subformat=dynamic "$d/base.vhd" 64M
		vd_qemu_io vpc "$d/base.vhd" "write -P 0x41 40M 2M"
		"$MKVHD" child "$d/base.vhd" "$d/snap.vhd" >/dev/null || vd_die "mkvhd child"
		echo "$d/snap.vhd"
		;;
	vmdk)
		qemu-img create -q -f vmdk "$d/base.vmdk" 64M
		vd_qemu_io vmdk "$d/base.vmdk" "write -P 0x41 40M 2M"
		(cd "$d" && qemu-img create -q -f vmdk -b base.vmdk -F vmdk snap.vmdk)
		vd_qemu_io vmdk "$d/snap.vmdk" "write -P 0x42 41M 64k"
		echo "$d/snap.vmdk"
		;;
	esac
}

# parts DEV SS: "N START SIZE" (bytes) per partition as sfdisk reads DEV,
# without extended containers.
parts()
{
	sfdisk -d "$1" |
		sed -nE 's|^.*[^0-9]([0-9]+) *: *start= *([0-9]+), *size= *([0-9]+), *type=([0-9A-Fa-f-]+).*|\1 \2 \3 \4|p' |
		awk -v ss="$2" '$4 != "5" && $4 != "f" && $4 != "85" { print $1, $2 * ss, $3 * ss }'
}

# files_match DIR FILE PARTS: DIR/FILE.pN exist exactly for the partitions in
# PARTS ("N START SIZE" lines), each of its size.
files_match()
{
	local dir=$1 file=$2 want got n start len
	want=$(awk -v f="$file" 'NF { print f ".p" $1 }' <<<"$3" | sort)
	got=$(cd "$dir" && ls -d "$file".p* 2>/dev/null | sort)
	if [ "$got" != "$want" ]; then
		echo "    partition files of $file: [$(echo $got)], expected [$(echo $want)]" >&2
		return 1
	fi
	while read -r n start len; do
		[ -n "$n" ] || continue
		got=$(stat -c %s "$dir/$file.p$n")
		[ "$got" = "$len" ] || { echo "    $file.p$n: size $got, expected $len" >&2; return 1; }
	done <<<"$3"
}

# json_match MNT PARTS: chain.json's partitions.entries are PARTS.
json_match()
{
	local got
	got=$(jq -r '.partitions.entries[] | "\(.number) \(.start) \(.size)"' "$1/chain.json")
	[ "$got" = "$(sed '/^$/d' <<<"$2")" ] || {
		echo "    chain.json: [$got], expected [$2]" >&2
		return 1
	}
}

# table_step TAG MNT LAYER NAME P2SIZE: sfdisk writes a GPT (p1 16 MiB at
# 1 MiB, p2 of P2SIZE after it) onto MNT/disk; disk.pN, the delta's layers/
# view's LAYER.pN and chain.json must show what sfdisk reads back, which
# goes into P ("N START SIZE" lines).
table_step()
{
	local tag=$1 mnt=$2 layer=$3 name=$4
	sfdisk -q "$mnt/disk" >/dev/null <<<"label: gpt
start=2048, size=16M
size=$5" || vd_fail "$tag sfdisk $name"
	P=$(parts "$mnt/disk" 512)
	vd_check "$tag sfdisk $name: disk.pN with sfdisk's sizes (none stale)" \
		files_match "$mnt" disk "$P"
	vd_check "$tag sfdisk $name: the delta's layers/ view too" \
		files_match "$mnt/layers" "$layer" "$P"
	vd_check "$tag sfdisk $name: chain.json lists the new table" json_match "$mnt" "$P"
}

range_sum()
{
	dd if="$1" bs=1M skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none |
		sha256sum | cut -d' ' -f1
}

# independent FMT TOP OUT: the merged disk of the chain ending in TOP as a
# reader other than vdmount sees it (qemu-img for VMDK; for VHD libvhdi's
# vhdimount: QEMU's vpc driver has no backing files).
independent()
{
	if [ "$1" = vmdk ]; then
		qemu-img convert -O raw "$2" "$3"
	else
		vd_yal_mount "$2" "$M/yal" && cp "$VD_YAL_FILE" "$3"
		local rc=$?
		umount "$M/yal" 2>/dev/null || fusermount3 -u "$M/yal"
		return $rc
	fi
}

test_format()
{
	local fmt=$1 top=$2 opts=("${@:3}") mnt=$M/$1 tag="[$1]" delta p layer before
	local tree=$VD_TMP/tree-$1 g=$M/guest-$1 loop start len
	vd_sums_save "$VD_TMP/$fmt.sums" "$W/$fmt"/*
	vd_mount "${opts[@]}" -w "$top" "$mnt" || { vd_fail "$tag -w mount"; return; }
	delta=$(jq -r .writable_delta.path "$mnt/chain.json")
	layer=$(basename "$(ls -d "$mnt"/layers/* | grep -vE '\.(changed|p[0-9]+)$' | sort | tail -1)")
	vd_check "$tag no partition files before sfdisk" test -z "$(ls -d "$mnt"/disk.p* 2>/dev/null)"
	stat "$mnt/disk.p2" >/dev/null 2>&1 # a negative lookup the kernel might keep

	# Table A: p1 16 MiB at 1 MiB, p2 8 MiB after it.
	table_step "$tag" "$mnt" "$layer" A 8M
	vd_check "$tag layers/*.pN are read-only" vd_expect_erofs "$mnt/layers/$layer.p1"

	# Table B: p1 kept, p2 grown to 20 MiB; handles open across the change.
	exec 7<"$mnt/disk.p1" 8<"$mnt/disk.p2"
	table_step "$tag" "$mnt" "$layer" B 20M
	p=$P
	vd_check "$tag a handle on the kept p1 still reads" \
		test "$(head -c 4096 <&7 | wc -c)" = 4096
	vd_check "$tag a handle on the replaced p2 gets EIO" \
		bash -c "! head -c 1 <&8 2>'$VD_TMP/eio' && grep -q 'Input/output error' '$VD_TMP/eio'"
	exec 7<&- 8<&-

	# Writes past the end of disk.p2 are refused; one across it is cut.
	read -r _ start len < <(sed -n 2p <<<"$p")
	before=$(range_sum "$mnt/disk" $((start + len)) 4096)
	vd_check "$tag a write past the end of disk.p2 fails with ENOSPC" bash -c \
		"! dd if=/dev/zero of='$mnt/disk.p2' bs=4096 seek=$((len / 4096)) count=1 conv=notrunc status=none 2>'$VD_TMP/nospc' && grep -q 'No space left' '$VD_TMP/nospc'"
	head -c 8192 /dev/urandom >"$VD_TMP/straddle"
	dd if="$VD_TMP/straddle" of="$mnt/disk.p2" bs=8192 seek=$((len - 4096)) oflag=seek_bytes \
		conv=notrunc status=none 2>/dev/null
	vd_check "$tag a write across the end of disk.p2 stops there" test \
		"$(range_sum "$mnt/disk" $((start + len - 4096)) 4096)" = "$(head -c 4096 "$VD_TMP/straddle" | sha256sum | cut -d' ' -f1)"
	vd_check "$tag ... and the byte after disk.p2 is unchanged" test \
		"$(range_sum "$mnt/disk" $((start + len)) 4096)" = "$before"

	# ext4 on disk.p1 through a loop device.
	mkdir -p "$tree/d" "$g"
	for i in 1 2 3; do head -c $((i * 100000)) /dev/urandom >"$tree/d/f$i"; done
	echo "$fmt" >"$tree/hello.txt"
	loop=$(losetup -f --show "$mnt/disk.p1") && mkfs.ext4 -q -F "$loop" &&
		mount "$loop" "$g" && cp -a "$tree/." "$g/" && umount "$g" && losetup -d "$loop"
	vd_check "$tag mkfs.ext4 + copy through disk.p1 on a loop device" test $? -eq 0
	vd_check "$tag chain.json still lists two partitions" \
		test "$(jq '.partitions.entries | length' "$mnt/chain.json")" = 2
	vd_check "$tag unmount" vd_umount_wait "$mnt"

	# The new delta, read-only.
	vd_check "$tag inputs unchanged (sha256)" vd_sums_check "$VD_TMP/$fmt.sums"
	if ! vd_mount "${opts[@]}" "$delta" "$mnt"; then
		vd_fail "$tag mount of the new delta"
		return
	fi
	vd_check "$tag the new delta: partition files with sfdisk's sizes" files_match "$mnt" disk "$p"
	vd_check "$tag e2fsck -fn disk.p1 is clean" e2fsck -fn "$mnt/disk.p1"
	read -r _ start len < <(sed -n 1p <<<"$p")
	vd_check "$tag disk.p1 = bytes $start+$len of disk (sha256)" \
		test "$(sha256sum <"$mnt/disk.p1" | cut -d' ' -f1)" = "$(range_sum "$mnt/disk" "$start" "$len")"
	if mount -o loop,ro "$mnt/disk.p1" "$g"; then
		VD_MOUNTS+=("$g")
		vd_check "$tag the guest files are in ext4" diff -r -x lost+found "$tree" "$g"
		umount "$g"
	else
		vd_fail "$tag mount -o loop,ro disk.p1"
	fi
	if independent "$fmt" "$delta" "$VD_TMP/ind.raw"; then
		vd_check "$tag an independent reader of the new chain equals disk" \
			vd_same "$mnt/disk" "$VD_TMP/ind.raw"
	else
		vd_fail "$tag independent reader of $delta"
	fi
	rm -f "$VD_TMP/ind.raw"
	vd_umount_wait "$mnt"
	[ "$fmt" = vmdk ] && vd_check "$tag qemu-img check of the delta" qemu-img check -q "$delta"
	rm -f "$delta"
}

# test_tables FMT TOP [vdmount options]: MBR with logicals, GPT on 4096-byte
# sectors, wipefs.
test_tables()
{
	local fmt=$1 top=$2 opts=("${@:3}") mnt=$M/tables-$1 tag="[$1 --scratch]" p loop
	vd_mount "${opts[@]}" -w --scratch "$top" "$mnt" || { vd_fail "$tag -w mount"; return; }
	sfdisk -q "$mnt/disk" >/dev/null <<<"label: dos
start=2048, size=8M, type=83
size=6M, type=c
size=6M, type=83
type=5
size=10M, type=83
size=12M, type=c" || vd_fail "$tag sfdisk MBR"
	p=$(parts "$mnt/disk" 512)
	vd_check "$tag MBR: p1 p2 p3 p5 p6 (logicals) with sfdisk's sizes" files_match "$mnt" disk "$p"
	vd_check "$tag MBR: five partitions" test "$(wc -l <<<"$p")" = 5
	vd_check "$tag MBR: chain.json" json_match "$mnt" "$p"
	loop=$(losetup -f --show --sector-size 4096 "$mnt/disk") &&
		sfdisk -q "$loop" >/dev/null 2>&1 <<<"label: gpt
size=12M
size=20M" && p=$(parts "$loop" 4096) && losetup -d "$loop"
	vd_check "$tag GPT on 4096-byte sectors: sfdisk through a loop device" test $? -eq 0
	vd_check "$tag GPT 4K: p1 p2 with sfdisk's sizes" files_match "$mnt" disk "$p"
	vd_check "$tag GPT 4K: chain.json sector_size 4096" \
		test "$(jq .partitions.sector_size "$mnt/chain.json")" = 4096
	wipefs -a -q -f "$mnt/disk" # -f: wipefs calls a file "not a whole disk"
	vd_check "$tag wipefs -a: no partition file left" test -z "$(ls -d "$mnt"/disk.p* 2>/dev/null)"
	vd_check "$tag wipefs -a: chain.json has no partitions" \
		test "$(jq '.partitions.entries | length' "$mnt/chain.json")" = 0
	vd_umount_wait "$mnt"
}

for fmt in vhd vmdk; do
	top=$(make_chain $fmt)
	opts=()
	[ $fmt = vmdk ] && opts=(-s)
	test_format $fmt "$top" "${opts[@]}"
done
# The table logic knows no format: once, single-threaded (the mode where an
# invalidation waiting on the daemon would hang).
test_tables vmdk "$top" -s

vd_asan_check
vd_finish
