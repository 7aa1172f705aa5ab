#!/usr/bin/env bash
# Inputs that change under a mount, and a daemon that dies.
#
# For each format (VMDK monolithicSparse, streamOptimized, monolithicFlat,
# VHD dynamic and fixed) a copy is mounted and read whole, then, while
# mounted, its data file is
#   - truncated to half, then to 1000 bytes: a new open of the disk fails
#     with EIO (vdmount notices the changed size at open), and every 1 MiB
#     O_DIRECT read of the disk must give either the bytes read before or EIO;
#   - overwritten in place with random bytes (its metadata included): reads
#     may give anything or EIO (the tables are cached: the input must not
#     change while mounted, README says so), but never crash or hang;
# and afterwards the daemon must still answer, unmount cleanly and leave no
# sanitizer report. Then a daemon is killed (SIGKILL) while a reader is in
# the middle of reading: the reader must get an error within seconds, and
# fusermount3 -u must clear the dead mount. Every mount also runs
# vd_fds_check (no input open for writing).
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init live_change
vd_need qemu-img cmp dd truncate

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"
cd "$W" || exit 1
MIB=16

# A raw disk of random data with a hole, and every image made of it.
head -c $((MIB << 20)) /dev/urandom >disk.raw
dd if=/dev/zero of=disk.raw bs=1M seek=4 count=2 conv=notrunc status=none
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse disk.raw sparse.vmdk &&
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized disk.raw stream.vmdk &&
	qemu-img convert -f raw -O vmdk -o subformat=monolithicFlat disk.raw flat.vmdk &&
	qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on disk.raw dyn.vhd &&
	qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on disk.raw fixed.vhd ||
	vd_die "qemu-img convert"

# "name|image to mount|the file to damage (image or its extent)"
CASES=("sparse|sparse.vmdk|sparse.vmdk" "stream|stream.vmdk|stream.vmdk"
	"flat|flat.vmdk|flat-flat.vmdk" "vhd-dynamic|dyn.vhd|dyn.vhd" "vhd-fixed|fixed.vhd|fixed.vhd")

# reads_old_or_eio MNT BEFORE: every 1 MiB of MNT/disk read with O_DIRECT is
# either the same as in BEFORE or fails with EIO.
reads_old_or_eio()
{
	local mnt=$1 before=$2 i err bad=0
	for ((i = 0; i < MIB; i++)); do
		if timeout 20 dd if="$mnt/disk" of="$VD_TMP/chunk" bs=1M skip=$i count=1 \
			iflag=direct status=none 2>"$VD_TMP/dd.err"; then
			cmp -s "$VD_TMP/chunk" <(dd if="$before" bs=1M skip=$i count=1 status=none) ||
				{ echo "    MiB $i: new bytes, neither the old ones nor EIO" >&2; bad=1; }
		elif ! grep -q 'Input/output error' "$VD_TMP/dd.err"; then
			echo "    MiB $i: $(cat "$VD_TMP/dd.err") (expected EIO)" >&2
			bad=1
		fi
	done
	return $bad
}

# reads_survive MNT: every 1 MiB read returns (data or an error) within 20 s.
reads_survive()
{
	local mnt=$1 i rc
	for ((i = 0; i < MIB; i++)); do
		timeout 20 dd if="$mnt/disk" of=/dev/null bs=1M skip=$i count=1 iflag=direct \
			status=none 2>/dev/null
		rc=$?
		[ $rc -eq 124 ] && { echo "    MiB $i: read hung" >&2; return 1; }
	done
	return 0
}

alive()
{
	stat "$1/disk" >/dev/null && ls "$1/layers" >/dev/null
}

for c in "${CASES[@]}"; do
	IFS='|' read -r name img victim <<<"$c"
	L=$VD_TMP/live-$name
	mkdir -p "$L"
	cp "$W/$img" "$L/" && { [ "$victim" = "$img" ] || cp "$W/$victim" "$L/"; }
	mnt=$M/$name
	if ! vd_mount "$L/$img" "$mnt"; then
		vd_fail "$name: mount"
		continue
	fi
	cat "$mnt/disk" >"$VD_TMP/before.raw"
	vd_check "$name: reads the image before any change" cmp -s "$VD_TMP/before.raw" disk.raw
	size=$(stat -c %s "$L/$victim")
	truncate -s $((size / 2)) "$L/$victim"
	# a changed input is noticed (size, mtime) at the next open a second on
	sleep 1.1
	vd_check "$name: a new open after the change fails with EIO" \
		bash -c '! cat "$1/disk" 2>"$2" >/dev/null && grep -q "Input/output error" "$2"' \
		_ "$mnt" "$VD_TMP/open.err"
	vd_check "$name: truncated to half while mounted: old bytes or EIO" \
		reads_old_or_eio "$mnt" "$VD_TMP/before.raw"
	truncate -s 1000 "$L/$victim"
	vd_check "$name: truncated to 1000 bytes: old bytes or EIO" \
		reads_old_or_eio "$mnt" "$VD_TMP/before.raw"
	cp "$W/$victim" "$L/$victim.orig"
	cat "$L/$victim.orig" >"$L/$victim" # same inode, full size again
	dd if=/dev/urandom of="$L/$victim" bs=4096 count=64 conv=notrunc status=none
	dd if=/dev/urandom of="$L/$victim" bs=4096 count=16 seek=$((size / 4096 - 20)) \
		conv=notrunc status=none
	vd_check "$name: overwritten with random bytes: every read returns" reads_survive "$mnt"
	vd_check "$name: the daemon still answers" alive "$mnt"
	vd_check "$name: unmount" vd_umount "$mnt"
done

# A daemon killed mid-read: the reader errors out, fusermount3 -u clears the mount.
mnt=$M/killed
cp "$W/stream.vmdk" "$VD_TMP/killed.vmdk"
if vd_mount "$VD_TMP/killed.vmdk" "$mnt"; then
	pid=$(vd_daemon_pid "$mnt")
	(while dd if="$mnt/disk" of=/dev/null bs=64K iflag=direct status=none 2>/dev/null; do
		:
	done) &
	reader=$!
	sleep 0.5
	kill -KILL "$pid"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$reader" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$reader" 2>/dev/null; then
		vd_fail "killed daemon: the reader still hangs 10 s later"
		kill "$reader" 2>/dev/null
	else
		vd_pass "killed daemon: the reader got an error"
	fi
	wait "$reader" 2>/dev/null
	vd_check "killed daemon: the dead mount answers ENOTCONN" \
		bash -c 'stat "$1/disk" 2>&1 | grep -q "not connected"' _ "$mnt"
	vd_check "killed daemon: fusermount3 -u clears it" fusermount3 -u "$mnt"
	vd_check "killed daemon: nothing mounted any more" bash -c '! mountpoint -q "$1"' _ "$mnt"
else
	vd_fail "killed daemon: mount"
fi
vd_finish
