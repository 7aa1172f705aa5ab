#!/usr/bin/env bash
# Partition files through a real FUSE mount, on disks made with sfdisk:
#  - MBR: three primaries and an extended partition holding two logicals
#    (files p1 p2 p3 p5 p6, numbered as Linux does);
#  - GPT with five entries;
#  - GPT on 4096-byte logical sectors (table written through a loop device
#    with --sector-size 4096: this sfdisk has no option for image files).
# Every partition holds a filesystem (ext4 or FAT). Each disk is a VMDK base
# plus a snapshot in which one ext4 and one FAT file changed. For disk.pN and
# layers/01-<base>.pN: content equals the byte range sfdisk reports, both of
# the raw image it was made from and of MOUNT/disk (sha256); every ext4
# partition of a disk is loop-mounted through its .pN file at the same time;
# FAT is read with mtools; the base layer's files show the old content.
# vdmount --info lists the partitions with their filesystems.
#
# Env: VDMOUNT (ctest sets it). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init partitions
for t in qemu-img qemu-io sfdisk mkfs.ext4 mformat mcopy mtype losetup; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: loop mounts need root"; exit 77; }
export MTOOLS_SKIP_CHECK=1

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"

probe=$VD_TMP/probe.raw
truncate -s 8M "$probe" && mkfs.ext4 -q -F "$probe" && mkdir -p "$VD_TMP/probe" &&
	mount -o loop,ro "$probe" "$VD_TMP/probe" 2>/dev/null ||
	{ echo "SKIP: loop mounts of ext4 do not work here"; exit 77; }
umount "$VD_TMP/probe"

# table RAW SS: "N START SIZE" in bytes for each partition sfdisk sees,
# except the extended container (which holds only EBRs).
table()
{
	local raw=$1 ss=$2 dev=$1 loop=
	if [ "$ss" != 512 ]; then
		loop=$(losetup -f --show --sector-size "$ss" "$raw") || return 1
		dev=$loop
	fi
	sfdisk -d "$dev" |
		sed -nE "s|^${dev}p?([0-9]+) *: *start= *([0-9]+), *size= *([0-9]+), *type=([0-9A-Fa-f-]+).*|\1 \2 \3 \4|p" |
		awk -v ss="$ss" '$4 != "5" && $4 != "f" && $4 != "85" { print $1, $2 * ss, $3 * ss }'
	[ -z "$loop" ] || losetup -d "$loop"
}

# mkdisk NAME SIZE SS FSLIST SCRIPT: writes $W/NAME-v1.raw with the table
# and a filesystem per partition ("N:ext4" or "N:fat" in FSLIST); records
# the layout in $W/NAME.table ("N START SIZE FS").
mkdisk()
{
	local name=$1 size=$2 ss=$3 fslist=$4 script=$5 raw=$W/$1-v1.raw n start len fs loop
	truncate -s "$size" "$raw"
	if [ "$ss" = 512 ]; then
		sfdisk -q "$raw" <<<"$script" >/dev/null || vd_die "sfdisk $name"
	else
		loop=$(losetup -f --show --sector-size "$ss" "$raw") || vd_die "losetup"
		sfdisk -q "$loop" <<<"$script" >/dev/null 2>&1
		losetup -d "$loop"
	fi
	table "$raw" "$ss" >"$W/$name.parts" || vd_die "reading back the table of $name"
	: >"$W/$name.table"
	while read -r n start len; do
		fs=$(tr ' ' '\n' <<<"$fslist" | sed -n "s/^$n://p")
		[ -n "$fs" ] || vd_die "$name: no filesystem given for partition $n"
		echo "$n $start $len $fs" >>"$W/$name.table"
		mkdir -p "$VD_TMP/src-$name-$n"
		echo "$name p$n v1" >"$VD_TMP/src-$name-$n/hello.txt"
		if [ "$fs" = ext4 ]; then
			mkfs.ext4 -q -F -E offset="$start" -d "$VD_TMP/src-$name-$n" "$raw" \
				"$((len / 1024))k" || vd_die "mkfs.ext4 $name p$n"
		else
			mformat -i "$raw@@$start" -T $((len / 512)) -h 16 -s 32 :: ||
				vd_die "mformat $name p$n"
			mcopy -i "$raw@@$start" "$VD_TMP/src-$name-$n/hello.txt" ::/HELLO.TXT ||
				vd_die "mcopy $name p$n"
		fi
	done <"$W/$name.parts"
	[ -s "$W/$name.table" ] || vd_die "$name: sfdisk made no partition"
}

# snapshot NAME: v2 = v1 with hello.txt changed in the first ext4 and the
# first FAT partition; base.vmdk + snap.vmdk hold v1 and v2.
snapshot()
{
	local name=$1 v1=$W/$1-v1.raw v2=$W/$1-v2.raw n start len fs ext= fat= dir=$VD_TMP/edit
	cp --sparse=always "$v1" "$v2"
	while read -r n start len fs; do
		[ "$fs" = ext4 ] && [ -z "$ext" ] && ext=$n && {
			echo "$name p$n v2" >"$VD_TMP/v2-$name-$n"
			mkdir -p "$dir"
			mount -o loop,offset="$start",sizelimit="$len" "$v2" "$dir" || vd_die "edit mount"
			cp "$VD_TMP/v2-$name-$n" "$dir/hello.txt"
			umount "$dir"
		}
		[ "$fs" = fat ] && [ -z "$fat" ] && fat=$n && {
			echo "$name p$n v2" >"$VD_TMP/v2-$name-$n"
			mcopy -o -i "$v2@@$start" "$VD_TMP/v2-$name-$n" ::/HELLO.TXT || vd_die "mcopy"
		}
	done <"$W/$name.table"
	qemu-img convert -f raw -O vmdk "$v1" "$W/$name-base.vmdk" || vd_die "qemu-img convert"
	vd_vmdk_delta "$v1" "$v2" "$W/$name-base.vmdk" "$W/$name-snap.vmdk" || vd_die "delta"
}

# expected NAME N LAYER: the hello.txt text partition N must show in LAYER
# (v1 = base, v2 = snapshot).
expected()
{
	if [ "$3" = v2 ] && [ -f "$VD_TMP/v2-$1-$2" ]; then
		cat "$VD_TMP/v2-$1-$2"
	else
		echo "$1 p$2 v1"
	fi
}

range_sum()
{
	dd if="$1" bs=1M skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none | sha256sum |
		cut -d' ' -f1
}

# check_view NAME DIR FILE VER RAW: the .pN files beside DIR/FILE.
check_view()
{
	local name=$1 dir=$2 file=$3 ver=$4 raw=$5 n start len fs got want mounted=() mp
	want=$(awk -v f="$file" '{ printf "%s.p%s\n", f, $1 }' "$W/$name.table" | sort)
	got=$(cd "$dir" && ls -d "$file".p* 2>/dev/null | sort)
	vd_check "$name $file: partition files $(echo $want)" test "$got" = "$want"
	while read -r n start len fs; do
		local p=$dir/$file.p$n label="$name $file.p$n"
		vd_check "$label: size $len" test "$(stat -c %s "$p" 2>/dev/null)" = "$len"
		want=$(range_sum "$raw" "$start" "$len")
		vd_check "$label: sha256 = bytes $start+$len of the raw image" \
			test "$(sha256sum <"$p" | cut -d' ' -f1)" = "$want"
		vd_check "$label: sha256 = bytes $start+$len of $file" \
			test "$(range_sum "$dir/$file" "$start" "$len")" = "$want"
		if [ "$fs" = ext4 ]; then
			mp=$M/loop-$name-$n-$ver
			mkdir -p "$mp"
			if timeout 60 mount -o loop,ro "$p" "$mp"; then
				VD_MOUNTS+=("$mp")
				mounted+=("$mp")
				vd_check "$label: ext4 hello.txt ($ver)" \
					test "$(cat "$mp/hello.txt")" = "$(expected "$name" "$n" "$ver")"
			else
				vd_fail "$label: mount -o loop,ro"
			fi
		else
			vd_check "$label: FAT HELLO.TXT ($ver)" \
				test "$(mtype -i "$p" ::/HELLO.TXT)" = "$(expected "$name" "$n" "$ver")"
		fi
	done <"$W/$name.table"
	# Every ext4 partition of the disk was mounted at once.
	[ ${#mounted[@]} -ge 2 ] && vd_pass "$name $file: ${#mounted[@]} ext4 partitions loop-mounted at once"
	for mp in "${mounted[@]}"; do
		umount "$mp" || vd_fail "umount $mp"
	done
}

check_disk()
{
	local name=$1 mnt=$M/$1 base info n start len fs
	vd_sums_save "$VD_TMP/$name.sha256" "$W/$name-base.vmdk" "$W/$name-snap.vmdk"
	if ! vd_mount "$W/$name-snap.vmdk" "$mnt"; then
		vd_fail "$name: mount"
		return
	fi
	check_view "$name" "$mnt" disk v2 "$W/$name-v2.raw"
	base=$(cd "$mnt/layers" && ls | grep -- "-$name-base\$")
	check_view "$name" "$mnt/layers" "$base" v1 "$W/$name-v1.raw"
	vd_check "$name: chain.json names the scheme ($2)" grep -q "\"scheme\": \"$2\"" "$mnt/chain.json"
	vd_check "$name: unmount" vd_umount "$mnt"
	info=$("$VDMOUNT" --info "$W/$name-snap.vmdk")
	while read -r n start len fs; do
		[ "$fs" = fat ] && fs=fat1
		vd_check "$name: --info lists p$n at $start with $fs" \
			grep -qE "^  p$n +$start +$len .* $fs" <<<"$info"
	done <"$W/$name.table"
	vd_check "$name: inputs unchanged" vd_sums_check "$VD_TMP/$name.sha256"
}

MIB=1048576
vd_say "MBR: 3 primaries + extended with 2 logicals"
mkdisk mbr $((48 * MIB)) 512 "1:ext4 2:fat 3:ext4 5:ext4 6:fat" "label: dos
start=2048, size=20480, type=83
size=12288, type=e
size=12288, type=83
type=5
size=12288, type=83
type=6"
vd_say "GPT: 5 entries"
mkdisk gpt $((48 * MIB)) 512 "1:ext4 2:fat 3:ext4 4:fat 5:ext4" "label: gpt
size=8M
size=6M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
size=8M
size=6M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
size=8M"
vd_say "GPT on 4096-byte sectors"
mkdisk gpt4k $((48 * MIB)) 4096 "1:ext4 2:fat 3:ext4" "label: gpt
size=12M
size=8M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
size=12M"
n_mbr=$(wc -l <"$W/mbr.table")
vd_check "sfdisk made 5 MBR partitions (p4 is the extended container)" test "$n_mbr" = 5
for d in mbr gpt gpt4k; do
	snapshot "$d"
done
check_disk mbr mbr
check_disk gpt gpt
check_disk gpt4k gpt
vd_finish
