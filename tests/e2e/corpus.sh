#!/usr/bin/env bash
# Real-world images ($VD_SHARED/corpus, not part of the project: skipped when
# absent). For each row of corpus/expected.tsv:
#  - ok: mount; stat -c %s disk == raw_size; sha256(disk) == raw_sha256.
#  - negative: vdmount must fail within 20 s with one clear error line naming
#    the file, without a signal; the truncated govmomi stream may instead mount
#    with a warning, and then reading the whole disk must end (no hang/crash).
# VHDX rows are real: a dirty log is replayed in memory (the file's sha256
# stays the same, checked at the end for every corpus file), and the .avhdx
# whose parent is absent must fail naming every locator path it tried.
#
# Big images (> 4 GiB: 127 GiB all-zero VHDs, 16 GiB stream VMDK): hashing
# them through FUSE takes minutes, so unless VD_CORPUS_FULL=1 they get the
# size check plus five 64 MiB windows (start, 1/4, 1/2, 3/4, end) compared
# with qemu-img's raw conversion, which is where expected.tsv's hashes come
# from (bytes past qemu's shorter size count as zeros: virtualpc-dynamic.vhd).
# The line says "sampled" so nobody mistakes it for a full hash check.
# qemu-img will not read a VHDX whose log needs replay without writing to it,
# so its reference comes from a scratch copy that `qemu-img check -r all`
# replays; and a big VHDX is also hashed whole through vdcat (the same core
# library without FUSE, fast enough for 10 GiB of mostly zeros).
#
# One PASS/FAIL/SKIP line per image, then the seconds it took. An image that
# takes more than VD_CORPUS_WATCH seconds (300; an hour with VD_CORPUS_FULL)
# is shown (the daemon's threads) and ended, and fails: a hang must name its
# image and say where it hangs, not leave ctest to kill the test silently.
# Env: VDMOUNT, VD_SHARED. Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
C=${VD_SHARED:-}/corpus
if [ -z "${VD_SHARED:-}" ] || [ ! -f "$C/expected.tsv" ] || [ ! -f "$C/unpack.sh" ]; then
	echo "SKIP corpus: \$VD_SHARED/corpus is absent"
	exit 77
fi
vd_e2e_init corpus
VDCAT=${VD_BUILD:-}/tests/vdcat
[ -x "$VDCAT" ] || vd_die "vdcat not built (VD_BUILD=${VD_BUILD:-})"

U=$VD_TMP/corpus
M=$VD_TMP/mnt
mkdir -p "$U" "$M"
sh "$C/unpack.sh" "$U" >/dev/null || vd_die "unpacking the corpus"
mapfile -t SOURCES < <(find "$U" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

BIG=$((4 * 1024 * 1024 * 1024))
# An image's checks take 90 s at most here under ASan on a busy machine; a
# hung one is shown and ended (vd_watchdog_start) long before ctest's limit.
WATCH=${VD_CORPUS_WATCH:-300}
[ "${VD_CORPUS_FULL:-0}" = 1 ] && WATCH=3600
WIN=$((64 * 1024 * 1024))

# window FILE OFF: sha256 of WIN bytes at OFF, zero-padded when FILE is short.
window()
{
	{
		timeout 120 dd if="$1" bs=1M skip="$2" count="$WIN" iflag=skip_bytes,count_bytes status=none
		head -c "$WIN" /dev/zero
	} | head -c "$WIN" | sha256sum | cut -d' ' -f1
}

# sampled DISK IMAGE SIZE: the five windows of DISK equal qemu-img's.
sampled()
{
	local disk=$1 img=$2 size=$3 fmt=vmdk off ref=$VD_TMP/ref.raw src=$2
	case "$img" in
	*.vhd) fmt=vpc ;;
	*.vhdx)
		fmt=vhdx
		src=$VD_TMP/replayed.vhdx
		cp --sparse=always "$img" "$src" &&
			timeout 300 qemu-img check -q -r all -f vhdx "$src" >/dev/null 2>&1
		;;
	esac
	rm -f "$ref"
	timeout 300 qemu-img convert -f $fmt -O raw "$src" "$ref" || {
		echo "    qemu-img cannot convert $img" >&2
		return 1
	}
	[ "$src" != "$img" ] && rm -f "$src"
	for off in 0 $((size / 4 / WIN * WIN)) $((size / 2 / WIN * WIN)) \
		$((size * 3 / 4 / WIN * WIN)) $((size - WIN)); do
		if [ "$(window "$disk" $off)" != "$(window "$ref" $off)" ]; then
			echo "    differs from qemu-img in the 64 MiB window at $off" >&2
			rm -f "$ref"
			return 1
		fi
	done
	rm -f "$ref"
}

check_ok()
{
	local name=$1 img=$2 size=$3 sum=$4 mnt=$M/ok got how
	if ! vd_mount "$img" "$mnt"; then
		vd_fail "$name: mount"
		return
	fi
	got=$(stat -c %s "$mnt/disk" 2>/dev/null)
	if [ "$got" != "$size" ]; then
		vd_fail "$name: size $got, expected $size"
	elif [ "$size" -le $BIG ] || [ "${VD_CORPUS_FULL:-0}" = 1 ]; then
		got=$(timeout 1800 sha256sum "$mnt/disk" | cut -d' ' -f1)
		if [ "$got" = "$sum" ]; then
			vd_pass "$name (size, sha256)"
		else
			vd_fail "$name: sha256 $got, expected $sum"
		fi
	elif sampled "$mnt/disk" "$img" "$size"; then
		vd_pass "$name (size, sampled 64 MiB windows vs qemu-img; VD_CORPUS_FULL=1 hashes all)"
		case "$img" in
		*.vhdx)
			got=$(timeout 900 "$VDCAT" "$img" 2>/dev/null | sha256sum | cut -d' ' -f1)
			if [ "$got" = "$sum" ]; then
				vd_pass "$name (whole-disk sha256 through vdcat)"
			else
				vd_fail "$name: vdcat sha256 $got, expected $sum"
			fi
			;;
		esac
	else
		vd_fail "$name: sampled windows"
	fi
	vd_umount "$mnt" || vd_fail "$name: unmount"
}

# A truncated stream may be refused (one error line) or mount with a warning
# and serve what was present before the cut.
check_truncated_stream()
{
	local name=$1 img=$2 mnt=$M/trunc rc=0
	mkdir -p "$mnt"
	VD_MOUNTS+=("$mnt")
	timeout -k 5 20 "$VDMOUNT" "$img" "$mnt" 2>"$VD_TMP/err" </dev/null || rc=$?
	if [ $rc -ne 0 ]; then
		vd_expect_fail "$name" "$img" "$(basename "$img")" "trunc|EOF|end of file|footer|marker|missing|short|past"
		return
	fi
	if ! grep -qi warn "$VD_TMP/err"; then
		vd_fail "$name: mounted without a warning"
	elif timeout 120 cat "$mnt/disk" >/dev/null 2>&1 || [ $? -ne 124 ]; then
		vd_pass "$name: mounted with a warning, read to the end: $(head -1 "$VD_TMP/err")"
	else
		vd_fail "$name: reading the disk hung"
	fi
	vd_umount "$mnt" || vd_fail "$name: unmount"
}

while IFS=$'\t' read -r image expect size sum; do
	case "$image" in "#"* | "") continue ;; esac
	img=$U/$image
	t0=$SECONDS
	if [ ! -e "$img" ]; then
		vd_fail "$image: missing after unpacking"
		continue
	fi
	vd_watchdog_start "$WATCH" "$image" "$M"
	case "$expect" in
	ok) check_ok "$image" "$img" "$size" "$sum" ;;
	negative)
		case "$image" in
		govmomi/*) check_truncated_stream "$image" "$img" ;;
		*-000001.vmdk) vd_expect_fail "$image" "$img" "$(basename "$image" .vmdk)-delta.vmdk" \
			"not found|no such|missing|cannot open" ;;
		*.avhdx) vd_expect_fail "$image" "$img" "$(basename "$image")" \
			"parent not found.*relative_path.*volume_path.*absolute_win32_path" ;;
		*differen*) vd_expect_fail "$image" "$img" "$(basename "$image" | cut -d- -f1)-" \
			"parent" ;;
		*) vd_expect_fail "$image" "$img" "$(basename "$image")" "." ;;
		esac
		;;
	*) vd_fail "$image: unknown expectation '$expect'" ;;
	esac
	vd_watchdog_stop
	echo "    ($image: $((SECONDS - t0)) s)"
done <"$C/expected.tsv"

vd_check "corpus files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
