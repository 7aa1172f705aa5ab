#!/usr/bin/env bash
# Large reads, whose second half a helper thread reads (fs/split.h), and
# streamOptimized grains read straight from their stored blocks
# (disk/stored.h).
#
# A 24 MiB disk of random data (deflate stores it), text (deflate shrinks
# it) and a hole, as a streamOptimized VMDK and a 2-layer sparse VMDK chain
# written by qemu-img, is read with O_DIRECT in blocks of 512 KiB to 8 MiB,
# from offsets that are not a multiple of the block, by two readers at once
# and by a buffered one beside them: every byte must be qemu-img's. Then a
# byte of one random grain of the stream is damaged: a large read whose
# first or second half holds that grain fails with EIO (the helper's error is
# not lost), the error names the file, and the rest reads right.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init large_reads
vd_need qemu-img cmp dd python3

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"
cd "$W" || exit 1
MIB=24

head -c $((MIB << 20)) /dev/urandom >disk.raw
yes "vdmount large reads, text that deflate shrinks" | head -c $((4 << 20)) |
	dd of=disk.raw bs=1M seek=8 conv=notrunc status=none
dd if=/dev/zero of=disk.raw bs=1M seek=16 count=2 conv=notrunc status=none
head -c $((MIB << 20)) /dev/urandom >top.raw
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized disk.raw stream.vmdk &&
	qemu-img convert -f raw -O vmdk disk.raw base.vmdk &&
	qemu-img create -q -f vmdk -b base.vmdk -F vmdk top.vmdk || vd_die "qemu-img"
# the top layer writes every third MiB and a 64 KiB piece of another
for i in $(seq 0 3 $((MIB - 1))); do
	qemu-io -f vmdk -c "write -P $((i + 1)) $((i << 20)) 1M" top.vmdk >/dev/null ||
		vd_die "qemu-io write"
done
qemu-io -f vmdk -c "write -P 7 $(((5 << 20) + 4096)) 64K" top.vmdk >/dev/null ||
	vd_die "qemu-io write"
qemu-img convert -f vmdk -O raw top.vmdk chain.raw || vd_die "qemu-img convert chain"

# same_direct MNT RAW BS [SKIP_BYTES]: MNT/disk read with O_DIRECT in BS
# blocks from SKIP_BYTES on is RAW from there.
same_direct()
{
	local mnt=$1 raw=$2 bs=$3 skip=${4:-0}
	cmp <(dd if="$mnt/disk" bs="$bs" iflag=direct,skip_bytes skip="$skip" status=none) \
		<(tail -c +$((skip + 1)) "$raw")
}

# concurrent MNT RAW: two O_DIRECT readers of 4 MiB and 1 MiB blocks and a
# buffered one at once, each right.
concurrent()
{
	local mnt=$1 raw=$2 a b c
	same_direct "$mnt" "$raw" 4M & a=$!
	same_direct "$mnt" "$raw" 1M 1048576 & b=$!
	cmp "$mnt/disk" "$raw" & c=$!
	wait $a && wait $b && wait $c
}

# grain_at FILE OFFSET: byte offset in the stream FILE of the compressed
# data of the grain holding disk byte OFFSET (its markers scanned from
# overHead, as VMware's spec lays a stream out).
grain_at()
{
	python3 - "$1" "$2" <<'EOF'
import struct, sys
f = open(sys.argv[1], 'rb')
h = f.read(512)
grain, over = struct.unpack_from('<Q', h, 20)[0], struct.unpack_from('<Q', h, 64)[0]
want = int(sys.argv[2]) // 512 // grain * grain
sec = over
while True:
    f.seek(sec * 512)
    m = f.read(16)
    if len(m) < 16:
        sys.exit('no grain at lba %d' % want)
    lba, size = struct.unpack_from('<QI', m)
    if size == 0:
        if struct.unpack_from('<I', m, 12)[0] == 0:
            sys.exit('no grain at lba %d' % want)
        sec += 1 + lba
        continue
    if lba == want:
        print(sec * 512 + 12)
        break
    sec += (12 + size + 511) // 512
EOF
}

for c in "stream|stream.vmdk|disk.raw" "chain|top.vmdk|chain.raw"; do
	IFS='|' read -r name img raw <<<"$c"
	mnt=$M/$name
	mkdir -p "$mnt"
	vd_mount "$W/$img" "$mnt" || { vd_fail "$name: mount"; continue; }
	for bs in 512K 1M 3M 8M; do
		vd_check "$name: O_DIRECT in $bs blocks" same_direct "$mnt" "$raw" $bs
	done
	vd_check "$name: O_DIRECT 1 MiB blocks from 64 KiB on" same_direct "$mnt" "$raw" 1M 65536
	vd_check "$name: O_DIRECT 1.5 MiB blocks from 4 KiB on" same_direct "$mnt" "$raw" 1536K 4096
	vd_check "$name: two O_DIRECT readers and a buffered one at once" concurrent "$mnt" "$raw"
	cp "$mnt/chain.json" "$VD_TMP/$name.json"
	vd_fds_check "$mnt"
	vd_check "$name: unmount" vd_umount "$mnt"
done
vd_check "stream: random grains read straight from their stored blocks" \
	grep -Eq '"grains_read_stored": [1-9]' "$VD_TMP/stream.json"

# helper_threads PID: how many helper threads (fs/split.c) the daemon has.
helper_threads()
{
	grep -lx vd-split /proc/"$1"/task/*/comm 2>/dev/null | wc -l
}

# The helper is started by the first large read, and --single-thread has none.
mnt=$M/threads
for mode in default single; do
	opts=()
	[ $mode = single ] && opts=(-s)
	if vd_mount "${opts[@]}" "$W/stream.vmdk" "$mnt"; then
		pid=$(vd_daemon_pid "$mnt")
		vd_check "$mode: O_DIRECT in 1M blocks" same_direct "$mnt" disk.raw 1M
		want=1
		[ $mode = single ] && want=0
		vd_check "$mode: $want helper thread(s) after large reads" \
			test "$(helper_threads "$pid")" = $want
		vd_check "$mode: unmount" vd_umount "$mnt"
	else
		vd_fail "$mode: mount"
	fi
done

# A damaged grain at 2.5 MiB: in the second half of a 1 MiB read from 2 MiB,
# in the first half of one from 2.25 MiB (the kernel cuts larger O_DIRECT
# reads into requests of 1 MiB, and those of one reader at once may find the
# helper busy).
cp stream.vmdk bad.vmdk
at=$(grain_at bad.vmdk $((5 << 19))) || vd_die "no grain found at 2.5 MiB"
printf '\xff\xff\xff\xff' | dd of=bad.vmdk bs=1 seek=$((at + 4000)) conv=notrunc status=none
mnt=$M/bad
mkdir -p "$mnt"
eio_at()
{
	local skip=$1
	! dd if="$mnt/disk" of=/dev/null bs=1M count=1 iflag=direct,skip_bytes skip="$skip" \
		status=none 2>"$VD_TMP/dd.err" && grep -q 'Input/output error' "$VD_TMP/dd.err"
}
if vd_mount_fg "$W/bad.vmdk" "$mnt"; then
	vd_check "damaged grain in the helper's half: EIO" eio_at $((2 << 20))
	vd_check "damaged grain in the reader's half: EIO" eio_at $((9 << 18))
	vd_check "the rest of the damaged stream reads right" \
		same_direct "$mnt" disk.raw 4M $((4 << 20))
	vd_fds_check "$mnt"
	vd_check "damaged: unmount" vd_umount "$mnt"
	vd_check "damaged: vdmount -f exits 0" vd_fg_wait
	vd_check "the error names the file and the grain" \
		grep -q "error: vmdk: .*bad.vmdk: grain [0-9]* at byte" "$VD_TMP/spawn.err"
else
	vd_fail "damaged stream: mount"
fi
vd_finish
