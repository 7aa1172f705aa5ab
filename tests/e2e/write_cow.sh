#!/usr/bin/env bash
# Writable mounts (vdmount -w): copy-on-write into a new standard delta.
#
# For each format that vdmount can write a delta for (VHD: qemu dynamic
# base + a vdmount-made differencing child; VMDK: qemu-made sparse chain;
# VHDX: qemu dynamic base with 1 MiB blocks + an mkvhdx .avhdx child with
# 2 MiB blocks, the delta a .avhdx):
#   - a storm of writes from 4 threads (1 byte ... 2 MiB + 3, the last sector
#     and byte, overlapping earlier writes) through disk, fsync, unmount:
#     exactly one new file, every earlier file unchanged (sha256), the new
#     delta remounted read-only equals the model (and qemu-img reads VMDK;
#     qemu has no differencing VHDX, so libvhdi's vhdiinfo accepts the
#     .avhdx and vhdimount reads the whole chain as the model); while
#     mounted, the delta's layer file counts the written blocks and its
#     .changed lists them, though stat and read before the storm;
#   - --at 1, --scratch, --delta DIR (+ --search to remount it), and -w on
#     the new delta (stacking);
#   - guest use: mkfs.ext4 through a loop device and a copied tree; FAT made
#     and filled with mtools; both read back after remounting read-only;
#   - crash: the daemon SIGKILLed at random moments during a stream of
#     writes with fsyncs, 20 times: the delta mounts and holds every fsync'd
#     record (VHDX: the log is replayed in memory where the kill left one;
#     vhdiinfo accepts each delta);
#   - ENOSPC: a delta on a 2 MiB tmpfs fills up; the writer gets the error,
#     the delta mounts and holds everything fsync'd.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them); VD_KILLS (default 20);
# VD_WRITE_FORMATS (default "vhd vmdk vhdx").
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init write_cow
for t in qemu-img qemu-io mkfs.ext4 mformat mcopy losetup; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
WR=$VD_BUILD/tests/wrstorm
MKVHD=$VD_BUILD/tests/mkvhd
MKVHDX=$VD_BUILD/tests/mkvhdx
[ -x "$WR" ] && [ -x "$MKVHD" ] && [ -x "$MKVHDX" ] || vd_die "wrstorm/mkvhd/mkvhdx not built"
KILLS=${VD_KILLS:-20}

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"
cd "$W" || exit 1

# new_files BEFORE-LIST: files in $W not in BEFORE-LIST (one per line).
new_files()
{
	comm -13 "$1" <(find "$W" -type f | sort)
}

# Builds chain FMT in $W/FMT: prints "top raw" (raw = what disk holds).
make_chain()
{
	local fmt=$1 d=$W/$1
	mkdir -p "$d"
	case $fmt in
	vhd)
		qemu-img create -q -f vpc -o subformat=dynamic "$d/base.vhd" 48M
		vd_qemu_io vpc "$d/base.vhd" "write -P 0x31 0 5M" "write -P 0x32 20M 3M"
		"$MKVHD" child "$d/base.vhd" "$d/snap.vhd" >/dev/null || vd_die "mkvhd child"
		"$MKVHD" write "$d/snap.vhd" --seed 5 --count 40 >/dev/null || vd_die "mkvhd write"
		echo "$d/snap.vhd"
		;;
	vmdk)
		qemu-img create -q -f vmdk "$d/base.vmdk" 48M
		vd_qemu_io vmdk "$d/base.vmdk" "write -P 0x31 0 5M" "write -P 0x32 20M 3M"
		(cd "$d" && qemu-img create -q -f vmdk -b base.vmdk -F vmdk snap.vmdk)
		vd_qemu_io vmdk "$d/snap.vmdk" "write -P 0x33 1M 100k" "write -P 0x34 30M 1M"
		echo "$d/snap.vmdk"
		;;
	vhdx)
		qemu-img create -q -f vhdx -o subformat=dynamic,block_size=1M "$d/base.vhdx" 48M
		vd_qemu_io vhdx "$d/base.vhdx" "write -P 0x31 0 5M" "write -P 0x32 20M 3M"
		"$MKVHDX" "$d/snap.avhdx" $((48 << 20)) --parent "$d/base.vhdx" --block $((2 << 20)) \
			--seed 5 --writes 40 || vd_die "mkvhdx child"
		echo "$d/snap.avhdx"
		;;
	esac
}

# delta_ext FMT: the extension of the deltas vdmount writes for FMT.
delta_ext()
{
	[ "$1" = vhdx ] && echo avhdx || echo "$1"
}

# vhdi_accepts DELTA: libvhdi's vhdiinfo reads DELTA as a differencing VHDX.
vhdi_accepts()
{
	vhdiinfo "$1" >"$VD_TMP/vhdiinfo.out" 2>&1 &&
		grep -q "Disk type.*: Differential" "$VD_TMP/vhdiinfo.out" ||
		{ sed 's/^/    | /' "$VD_TMP/vhdiinfo.out" >&2; return 1; }
}

# raw_of TOP OUT: the disk as vdmount reads it (the model's starting point).
raw_of()
{
	local mnt=$M/rawof
	vd_mount "$1" "$mnt" || return 1
	cp "$mnt/disk" "$2"
	vd_umount_wait "$mnt"
}

# delta_of_mount MNT: the writable delta's path, from chain.json.
delta_of_mount()
{
	sed -n '/"writable_delta"/,/}/s/^ *"path": "\(.*\)",$/\1/p' "$1/chain.json" | head -1
}

test_storm()
{
	local fmt=$1 top=$2 mode=$3 opts=() mnt=$M/storm-$1-$3 before=$VD_TMP/before delta
	local layer blocks0 changed0
	[ "$mode" = single ] && opts=(-s)
	find "$W" -type f | sort >"$before"
	vd_sums_save "$VD_TMP/sums" $(cat "$before")
	raw_of "$top" "$VD_TMP/model.raw" || { vd_fail "[$fmt/$mode] read the chain"; return; }
	if ! vd_mount "${opts[@]}" -w "$top" "$mnt"; then
		vd_fail "[$fmt/$mode] -w mount"
		return
	fi
	layer=$(ls "$mnt/layers" | grep -vE '\.(changed|p[0-9]+)$' | sort | tail -1)
	blocks0=$(stat -c %b "$mnt/layers/$layer")
	changed0=$(md5sum <"$mnt/layers/$layer.changed")
	vd_check "[$fmt/$mode] storm of writes from 4 threads" \
		"$WR" storm "$mnt/disk" "$VD_TMP/model.raw" 7 4 150
	# the kernel held both (stat, read above): closing the disk refreshes them
	vd_check "[$fmt/$mode] the delta's layer file counts the written blocks (du)" \
		test "$(stat -c %b "$mnt/layers/$layer")" -gt "$blocks0"
	vd_check "[$fmt/$mode] the delta's .changed lists the writes" \
		test "$(md5sum <"$mnt/layers/$layer.changed")" != "$changed0"
	vd_check "[$fmt/$mode] read-your-writes before unmount" vd_same "$mnt/disk" "$VD_TMP/model.raw"
	vd_check "[$fmt/$mode] layers/ are read-only" vd_expect_erofs "$mnt/layers/$(ls "$mnt/layers" | head -1)"
	vd_check "[$fmt/$mode] truncate is refused" bash -c "! truncate -s 1M '$mnt/disk' 2>/dev/null"
	vd_check "[$fmt/$mode] statfs reports the delta's filesystem" \
		test "$(stat -f -c %b "$mnt")" -gt 1
	vd_check "[$fmt/$mode] unmount (daemon exits)" vd_umount_wait "$mnt"
	mapfile -t NEW < <(new_files "$before")
	if [ ${#NEW[@]} -ne 1 ]; then
		vd_fail "[$fmt/$mode] expected exactly one new file, got ${#NEW[@]}: ${NEW[*]}"
		return
	fi
	delta=${NEW[0]}
	vd_pass "[$fmt/$mode] one new file: $(basename "$delta")"
	vd_check "[$fmt/$mode] earlier files unchanged (sha256)" vd_sums_check "$VD_TMP/sums"
	case $(basename "$delta") in
	"$(vd_stem "$top")"-vdm-000001.$(delta_ext "$fmt")) vd_pass "[$fmt/$mode] named <stem>-vdm-000001" ;;
	*) vd_fail "[$fmt/$mode] unexpected delta name $(basename "$delta")" ;;
	esac
	if vd_mount "${opts[@]}" "$delta" "$mnt"; then
		vd_check "[$fmt/$mode] the new delta, remounted, equals the model" \
			vd_same "$mnt/disk" "$VD_TMP/model.raw"
		vd_umount_wait "$mnt"
	else
		vd_fail "[$fmt/$mode] remount of the new delta"
	fi
	if [ "$fmt" = vmdk ]; then
		vd_check "[$fmt/$mode] qemu-img check is clean" qemu-img check -q "$delta"
		vd_check "[$fmt/$mode] qemu-img info --backing-chain shows the chain" \
			bash -c "qemu-img info --backing-chain '$delta' | grep -q 'image: .*base.vmdk'"
		qemu-img convert -O raw "$delta" "$VD_TMP/q.raw"
		vd_check "[$fmt/$mode] qemu-img convert of the delta equals the model" \
			vd_same "$VD_TMP/q.raw" "$VD_TMP/model.raw"
		rm -f "$VD_TMP/q.raw"
	fi
	if [ "$fmt" = vhdx ]; then
		vd_check "[$fmt/$mode] libvhdi's vhdiinfo accepts the .avhdx" vhdi_accepts "$delta"
		if vd_yal_mount "$delta" "$M/vhdimount"; then
			vd_check "[$fmt/$mode] libvhdi's vhdimount reads the chain as the model" \
				vd_same "$VD_YAL_FILE" "$VD_TMP/model.raw"
			vd_umount "$M/vhdimount"
		else
			vd_fail "[$fmt/$mode] vhdimount could not open the new delta"
		fi
	fi
	rm -f "$delta"
}

test_options()
{
	local fmt=$1 top=$2 d=$W/$1 mnt=$M/opt-$1 base delta other=$VD_TMP/elsewhere-$1
	base=$(ls "$d"/base.*)
	# --at 1: a branch from the base; the snapshot is left out and untouched.
	raw_of "$base" "$VD_TMP/base.raw"
	if vd_mount -w --at 1 "$top" "$mnt"; then
		vd_check "[$fmt] --at 1: two layers" test "$(ls "$mnt/layers" | grep -cvE '\.(changed|p[0-9]+)$')" -eq 2
		vd_check "[$fmt] --at 1: disk starts as the base" vd_same "$mnt/disk" "$VD_TMP/base.raw"
		printf 'AT' | dd of="$mnt/disk" bs=1 seek=4097 conv=notrunc status=none
		printf 'AT' | dd of="$VD_TMP/base.raw" bs=1 seek=4097 conv=notrunc status=none
		delta=$(delta_of_mount "$mnt")
		vd_umount_wait "$mnt"
		vd_check "[$fmt] --at 1: the delta is named after the base" \
			test "$(basename "$delta")" = "base-vdm-000001.$(delta_ext "$fmt")"
		if vd_mount "$delta" "$mnt"; then
			vd_check "[$fmt] --at 1: the branch holds the write" vd_same "$mnt/disk" "$VD_TMP/base.raw"
			vd_umount_wait "$mnt"
		else
			vd_fail "[$fmt] --at 1: remount"
		fi
		rm -f "$delta"
	else
		vd_fail "[$fmt] -w --at 1"
	fi
	# --scratch: writable, and nothing left afterwards.
	find "$W" -type f | sort >"$VD_TMP/before"
	if vd_mount -w --scratch "$top" "$mnt"; then
		printf 'scratch' | dd of="$mnt/disk" bs=1 seek=100 conv=notrunc status=none
		vd_check "[$fmt] --scratch: write visible" bash -c "dd if='$mnt/disk' bs=1 skip=100 count=7 status=none | grep -q scratch"
		vd_umount_wait "$mnt"
		vd_check "[$fmt] --scratch: no file left" test -z "$(new_files "$VD_TMP/before")"
	else
		vd_fail "[$fmt] -w --scratch"
	fi
	# --delta DIR elsewhere: the parent is named by a relative path; the
	# delta mounts from there with --search for the evidence directory.
	mkdir -p "$other"
	if vd_mount -w --delta "$other" "$top" "$mnt"; then
		printf 'elsewhere' | dd of="$mnt/disk" bs=1 seek=5000 conv=notrunc status=none
		vd_umount_wait "$mnt"
		delta=$(ls "$other"/*)
		vd_check "[$fmt] --delta DIR: the delta is there" test -f "$delta"
		if vd_mount --search "$d" "$delta" "$mnt"; then
			vd_check "[$fmt] --delta DIR: remounted with --search, holds the write" \
				bash -c "dd if='$mnt/disk' bs=1 skip=5000 count=9 status=none | grep -q elsewhere"
			vd_umount_wait "$mnt"
		else
			vd_fail "[$fmt] --delta DIR: remount with --search"
		fi
		# stacking: -w on the new delta makes one more, numbered on
		if vd_mount -w --search "$d" "$delta" "$mnt"; then
			printf 'stack' | dd of="$mnt/disk" bs=1 seek=9000 conv=notrunc status=none
			vd_umount_wait "$mnt"
			vd_check "[$fmt] stacking: <stem>-vdm-000002 next to the first delta" \
				test -f "${delta%-vdm-000001.*}-vdm-000002.${delta##*.}"
		else
			vd_fail "[$fmt] -w on a vdmount delta"
		fi
	else
		vd_fail "[$fmt] -w --delta DIR"
	fi
	vd_expect_fail "[$fmt] --delta naming an existing file" "$top" "$(basename "$top")" \
		"exists already" -w --delta "$top"
	rm -rf "$other"
	# two images, --delta a directory: one delta each; the disks are named
	# after the images given (as the nbdkit plugin's exports), not the deltas
	mkdir -p "$other"
	if vd_mount -w --delta "$other" "$top" "$base" "$mnt"; then
		vd_check "[$fmt] two images -w: disks named after the images" \
			test "$(ls "$mnt" | tr '\n' ' ')" = "base snap "
		vd_check "[$fmt] two images -w: a delta each" test "$(ls "$other" | wc -l)" -eq 2
		vd_umount_wait "$mnt"
	else
		vd_fail "[$fmt] -w --delta DIR with two images"
	fi
	rm -rf "$other"
}

test_guest()
{
	local fmt=$1 top=$2 mnt=$M/guest-$1 g=$M/guest-fs-$1 delta loop tree=$VD_TMP/tree
	mkdir -p "$tree/a/b" "$g"
	for i in 1 2 3 4 5; do head -c $((i * 37111)) /dev/urandom >"$tree/a/f$i"; done
	head -c 1M /dev/urandom >"$tree/a/b/big"
	echo hello >"$tree/hello.txt"
	# ext4 over the whole disk through a loop device
	if vd_mount -w "$top" "$mnt"; then
		loop=$(losetup -f --show "$mnt/disk") && mkfs.ext4 -q -F "$loop" &&
			mount "$loop" "$g" && cp -a "$tree/." "$g/" && umount "$g" && losetup -d "$loop"
		vd_check "[$fmt] mkfs.ext4 + copy through the writable disk" test $? -eq 0
		delta=$(delta_of_mount "$mnt")
		vd_umount_wait "$mnt"
		if vd_mount "$delta" "$mnt"; then
			VD_MOUNTS+=("$g")
			mount -o loop,ro "$mnt/disk" "$g" &&
				vd_check "[$fmt] ext4 in the new delta: same tree" diff -r -x lost+found "$tree" "$g"
			umount "$g"
			vd_umount_wait "$mnt"
		else
			vd_fail "[$fmt] remount after mkfs.ext4"
		fi
		rm -f "$delta"
	else
		vd_fail "[$fmt] -w for ext4"
	fi
	# FAT with mtools, straight through the FUSE file
	if vd_mount -w "$top" "$mnt"; then
		mformat -i "$mnt/disk" -F :: && mcopy -s -i "$mnt/disk" "$tree/a" ::/ &&
			mcopy -i "$mnt/disk" "$tree/hello.txt" ::/
		vd_check "[$fmt] mformat + mcopy -s through the writable disk" test $? -eq 0
		delta=$(delta_of_mount "$mnt")
		vd_umount_wait "$mnt"
		rm -rf "$VD_TMP/fat-out" && mkdir -p "$VD_TMP/fat-out"
		if vd_mount "$delta" "$mnt"; then
			mcopy -s -i "$mnt/disk" ::/a ::/hello.txt "$VD_TMP/fat-out/"
			vd_check "[$fmt] FAT in the new delta: same tree" diff -r "$tree" "$VD_TMP/fat-out"
			vd_umount_wait "$mnt"
		else
			vd_fail "[$fmt] remount after mtools"
		fi
		rm -f "$delta"
	else
		vd_fail "[$fmt] -w for FAT"
	fi
}

test_crash()
{
	local fmt=$1 top=$2 mnt=$M/crash-$1 i ok=0 pid wpid delta log=$VD_TMP/fsync.log replays=0
	for ((i = 1; i <= KILLS; i++)); do
		vd_mount -w "$top" "$mnt" || { vd_fail "[$fmt] crash $i: -w mount"; continue; }
		pid=$(vd_daemon_pid "$mnt")
		delta=$(delta_of_mount "$mnt")
		"$WR" log "$mnt/disk" "$log" $i 2>/dev/null &
		wpid=$!
		sleep "0.$((RANDOM % 9 + 1))"
		kill -9 "$pid"
		wait "$wpid" # not a bare wait: vd_e2e_init's watchdog runs in the background
		fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt"
		if ! vd_mount "$delta" "$mnt"; then
			vd_fail "[$fmt] crash $i: the delta does not mount after SIGKILL"
		elif "$WR" check "$mnt/disk" "$log" $i >"$VD_TMP/check.out"; then
			ok=$((ok + 1))
		else
			vd_fail "[$fmt] crash $i: fsync'd data lost ($(cat "$VD_TMP/check.out"))"
		fi
		[ "$fmt" = vmdk ] && ! qemu-img check -q "$delta" && vd_fail "[$fmt] crash $i: qemu-img check"
		if [ "$fmt" = vhdx ]; then
			grep -q '"needed_replay": true' "$mnt/chain.json" && replays=$((replays + 1))
			vhdi_accepts "$delta" || vd_fail "[$fmt] crash $i: vhdiinfo refuses the delta"
		fi
		vd_umount_wait "$mnt"
		rm -f "$delta"
	done
	[ $ok -eq "$KILLS" ] && vd_pass "[$fmt] $KILLS SIGKILLs during writes: every delta mounts with all fsync'd data"
	[ "$fmt" = vhdx ] && echo "INFO [$fmt] $replays of $KILLS killed deltas had a log to replay"
}

test_enospc()
{
	local fmt=$1 top=$2 mnt=$M/nospc-$1 small=$VD_TMP/small-$1 delta
	mkdir -p "$small"
	mount -t tmpfs -o size=2M tmpfs "$small" || { vd_fail "[$fmt] tmpfs"; return; }
	VD_MOUNTS+=("$small")
	if vd_mount -w --delta "$small" "$top" "$mnt"; then
		"$WR" log "$mnt/disk" "$VD_TMP/nospc.log" 99 2>/dev/null
		vd_check "[$fmt] ENOSPC: the writes stopped with the filesystem full" \
			test "$(df --output=avail "$small" | tail -1)" -lt 64
		vd_umount_wait "$mnt"
		delta=$(ls "$small"/*)
		if vd_mount --search "$(dirname "$top")" "$delta" "$mnt"; then
			vd_check "[$fmt] ENOSPC: the delta mounts and holds every fsync'd record" \
				"$WR" check "$mnt/disk" "$VD_TMP/nospc.log" 99
			vd_umount_wait "$mnt"
		else
			vd_fail "[$fmt] ENOSPC: the full delta does not mount"
		fi
	else
		vd_fail "[$fmt] -w --delta on tmpfs"
	fi
	umount "$small"
}

for fmt in ${VD_WRITE_FORMATS:-vhd vmdk vhdx}; do
	top=$(make_chain $fmt)
	mkdir -p "$M/probe-$fmt"
	if ! "$VDMOUNT" -w "$top" "$M/probe-$fmt" 2>"$VD_TMP/probe.err"; then
		vd_fail "[$fmt] -w: $(cat "$VD_TMP/probe.err")"
		continue
	fi
	VD_MOUNTS+=("$M/probe-$fmt")
	vd_umount_wait "$M/probe-$fmt"
	rm -f "$(dirname "$top")"/*-vdm-*
	for mode in multi single; do
		test_storm $fmt "$top" $mode
	done
	test_options $fmt "$top"
	test_guest $fmt "$top"
	test_crash $fmt "$top"
	test_enospc $fmt "$top"
done

vd_asan_check
vd_finish
