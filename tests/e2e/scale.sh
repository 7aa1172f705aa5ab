#!/usr/bin/env bash
# Resources follow the evidence, not its claims, through a real mount:
#  - a chain whose extent files outnumber the usual soft open-file limit
#    (2 TiB twoGbMaxExtentSparse: 1,024 extents in the base, 1,024 in the
#    delta) mounts with `ulimit -Sn 1024` and reads right;
#  - 255 layers of a few KiB each that claim 32 GiB in 512-byte grains
#    (scanned streamOptimized and monolithicSparse, tests/tools/mkclaims)
#    mount in seconds at most, in under 32 MiB, and read right; ls -l, which
#    renders chain.json, stays fast;
#  - a 4 MiB layer whose every GD entry names one grain table (2^29 grains
#    claimed): ls -l stays fast and chain.json says the usage was not counted;
#  - 64 disks in one mount stay under 32 MiB.
# The RSS bounds are skipped under ASan (its shadow memory is not ours).
#
# Env: VDMOUNT, VD_BUILD (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init scale
for t in qemu-img qemu-io dd od; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
MKCLAIMS=${VD_BUILD:-}/tests/mkclaims
[ -x "$MKCLAIMS" ] || { echo "SKIP: mkclaims not built ($MKCLAIMS)"; exit 77; }

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"

# bytes_are FILE OFF LEN HEX: LEN bytes at OFF of FILE all equal 0xHEX.
bytes_are()
{
	local n
	n=$(dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none |
		od -An -v -tx1 | tr -s ' ' '\n' | grep -c -v -e "^$4\$" -e '^$')
	[ "$n" = 0 ] && [ "$(dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$2" \
		count="$3" status=none | wc -c)" = "$3" ]
}

pid_of()
{
	pgrep -f -- "$VDMOUNT.* $1\$" | head -n 1
}

hwm_kb()
{
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# check_hwm NAME MNT: the daemon serving MNT peaked below 32 MiB.
check_hwm()
{
	local pid kb
	[ "$VD_ASAN" = 1 ] && return 0
	pid=$(pid_of "$2")
	kb=$(hwm_kb "$pid")
	echo "    $1: VmHWM ${kb:-?} kB"
	vd_check "$1: peak RSS ${kb:-?} kB < 32 MiB" test "${kb:-999999}" -lt 32768
}

now_ms()
{
	echo $(($(date +%s%N) / 1000000))
}

# --- more extent files than the soft open-file limit -----------------------
fd_limit()
{
	local d=$W/split g=$((2 << 30)) mnt=$M/split hard pid
	hard=$(ulimit -Hn)
	if [ "$hard" != unlimited ] && [ "$hard" -lt 1100 ]; then
		echo "    (hard open-file limit $hard < 1100: the split-disk check cannot run)"
		return 0
	fi
	mkdir -p "$d"
	# the base is written before the delta is made (a write changes its CID)
	(cd "$d" && qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse base.vmdk 2T) ||
		vd_die "qemu-img create (split base)"
	vd_qemu_io vmdk "$d/base.vmdk" "write -P 0x31 0 64K" \
		"write -P 0x32 $((700 * g - 2048)) 8192" "write -P 0x33 $((1024 * g - 65536)) 64K"
	(cd "$d" && qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse \
		-b base.vmdk -F vmdk top.vmdk) || vd_die "qemu-img create (split delta)"
	# a whole grain: qemu copies the rest of a partial one from the wrong
	# place of a split parent
	vd_qemu_io vmdk "$d/top.vmdk" "write -P 0x41 $((700 * g + 65536)) 65536"
	VD_MOUNTS+=("$mnt") # vd_mount records it in the subshell only
	if ! (ulimit -Sn 1024 && vd_mount "$d/top.vmdk" "$mnt"); then
		vd_fail "split disk: mount with a soft open-file limit of 1024"
		return
	fi
	pid=$(pid_of "$mnt")
	vd_check "split disk: the daemon holds more than 1024 files ($(ls "/proc/$pid/fd" | wc -l))" \
		test "$(ls "/proc/$pid/fd" | wc -l)" -gt 1024
	vd_check "split disk: base data in extent 1" bytes_are "$mnt/disk" 0 65536 31
	vd_check "split disk: base data across extents 700/701" \
		bytes_are "$mnt/disk" $((700 * g - 2048)) 8192 32
	vd_check "split disk: delta data in extent 701" \
		bytes_are "$mnt/disk" $((700 * g + 65536)) 65536 41
	vd_check "split disk: base data in extent 1024" \
		bytes_are "$mnt/disk" $((1024 * g - 65536)) 65536 33
	vd_check "split disk: zeros elsewhere" bytes_are "$mnt/disk" $((300 * g)) 65536 00
	vd_check "split disk: chain.json lists 1024 extents of the base" \
		test "$(grep -c '"file": "base-s[0-9]*.vmdk"' "$mnt/chain.json")" = 1024
	vd_check "split disk: unmount" vd_umount "$mnt"
}

# --- 255 layers claiming 32 GiB in 512-byte grains -------------------------
claims_chain()
{
	local d=$W/claims mnt=$M/claims i kind name prev t0 t1 ok=1
	mkdir -p "$d"
	for ((i = 0; i < 255; i++)); do
		name=$(printf 'l%03d.vmdk' "$i")
		kind=sparse
		((i % 2 == 0)) && kind=scan
		if ((i == 0)); then
			"$MKCLAIMS" "$d/$name" $kind $((1 << 26)) 1 --cid 10000000 --data 0
		else
			"$MKCLAIMS" "$d/$name" $kind $((1 << 26)) 1 --cid "$(printf '%08x' $((0x10000000 + i)))" \
				--parent "$prev" "$(printf '%08x' $((0x10000000 + i - 1)))" --data $i
		fi || vd_die "mkclaims $name"
		prev=$name
	done
	echo "    255 layers: $(du -sk "$d" | cut -f1) KiB on disk"
	t0=$(now_ms)
	if ! vd_mount "$d/l254.vmdk" "$mnt"; then
		vd_fail "claims: mount"
		return
	fi
	t1=$(now_ms)
	echo "    claims: mounted in $((t1 - t0)) ms"
	vd_check "claims: mounted in $((t1 - t0)) ms (< 5000)" test $((t1 - t0)) -lt 5000
	# layer i holds sector i, every byte (i + 1) & 0xff
	for ((i = 0; i < 255; i++)); do
		bytes_are "$mnt/disk" $((i * 512)) 512 "$(printf '%02x' $(((i + 1) & 255)))" || ok=0
	done
	vd_check "claims: every layer's sector reads through the chain" test $ok = 1
	vd_check "claims: zeros past the layers' data" bytes_are "$mnt/disk" $((255 * 512)) 65536 00
	t0=$(now_ms)
	ls -l "$mnt" >/dev/null
	t1=$(now_ms)
	vd_check "claims: ls -l (chain.json) in $((t1 - t0)) ms (< 5000)" test $((t1 - t0)) -lt 5000
	vd_check "claims: chain.json has 255 layers" grep -q '"depth": 255' "$mnt/chain.json"
	check_hwm claims "$mnt"
	vd_check "claims: unmount" vd_umount "$mnt"
}

# --- one grain table behind every GD entry ---------------------------------
shared_gt()
{
	local d=$W/shared mnt=$M/shared t0 t1
	mkdir -p "$d"
	"$MKCLAIMS" "$d/g.vmdk" sparse $((1 << 32)) 8 --shared-gt || vd_die "mkclaims --shared-gt"
	vd_mount "$d/g.vmdk" "$mnt" || { vd_fail "shared GT: mount"; return; }
	t0=$(now_ms)
	ls -l "$mnt" >/dev/null
	t1=$(now_ms)
	vd_check "shared GT: ls -l (chain.json) in $((t1 - t0)) ms (< 5000)" test $((t1 - t0)) -lt 5000
	vd_check "shared GT: chain.json says usage was not counted" \
		grep -q '"usage_note": "not counted' "$mnt/chain.json"
	check_hwm "shared GT" "$mnt"
	vd_check "shared GT: unmount" vd_umount "$mnt"
}

# --- 64 disks in one mount ---------------------------------------------------
many_disks()
{
	local d=$W/many mnt=$M/many i imgs=() ok=1
	mkdir -p "$d"
	for ((i = 0; i < 64; i++)); do
		imgs+=("$d/d$(printf '%02d' $i).vmdk")
		qemu-img create -q -f vmdk "${imgs[-1]}" 1G || vd_die "qemu-img create"
		vd_qemu_io vmdk "${imgs[-1]}" "write -P $((i + 1)) $((i << 20)) 64K"
	done
	vd_mount "${imgs[@]}" "$mnt" || { vd_fail "64 disks: mount"; return; }
	for ((i = 0; i < 64; i++)); do
		bytes_are "$mnt/d$(printf '%02d' $i)/disk" $((i << 20)) 65536 \
			"$(printf '%02x' $((i + 1)))" || ok=0
	done
	vd_check "64 disks: each disk reads its own data" test $ok = 1
	check_hwm "64 disks" "$mnt"
	vd_check "64 disks: unmount" vd_umount "$mnt"
}

fd_limit
claims_chain
shared_gt
many_disks
vd_finish
