#!/usr/bin/env bash
# Holes, allocation and per-layer change lists through a real FUSE mount.
#
# A 3-layer VMDK chain made by qemu-img/qemu-io (a base, a snapshot with
# zeroed grains, a snapshot over it) and a 2-layer VHD chain made by mkvhd
# (dynamic base, differencing child, every write logged). For disk and every
# layers/NN-x file:
#  - the SEEK_DATA/SEEK_HOLE map (tests/tools/seekmap) equals the data extents
#    `qemu-img map` reports for the same chain (VHD: the union of the writes,
#    rounded to blocks in the dynamic base);
#  - st_blocks (du) is exactly the allocated bytes of that map;
#  - `cp --sparse=always` gives the same bytes and an allocation within one
#    grain per extent;
#  - layers/NN-x.changed equals the extents qemu-img map shows at depth 0 of
#    that layer (VMDK) or the writer's log (VHD);
#  - each layer file's mtime is its image file's mtime.
# Then the same lists without mounting: vdmount --info --changes.
#
# Env: VDMOUNT, VD_BUILD (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init holes
SEEKMAP=${VD_BUILD:-}/tests/seekmap
MKVHD=${VD_BUILD:-}/tests/mkvhd
for t in qemu-img qemu-io cp du; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -x "$SEEKMAP" ] && [ -x "$MKVHD" ] || { echo "SKIP: test tools not built"; exit 77; }

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"
GRAIN=65536

# merge: "offset length" lines on stdin -> sorted, overlapping and adjacent
# extents merged.
merge()
{
	sort -n -k1,1 | awk '
		NF == 2 && $2 > 0 {
			if (n && $1 <= e) { if ($1 + $2 > e) e = $1 + $2; next }
			if (n) print s, e - s
			s = $1; e = $1 + $2; n = 1 }
		END { if (n) print s, e - s }'
}

# qmap IMG FIELD-TEST: extents of `qemu-img map --output=json IMG` whose entry
# passes the awk test (fields: start, len, depth, present, zero, data).
qmap()
{
	qemu-img map -f vmdk --output=json "$1" | sed -E 's/[][{}",:]/ /g' | awk -v want="$2" '
		NF { for (i = 1; i < NF; i++) f[$i] = $(i + 1)
		  if (want == "data" && f["data"] == "true") print f["start"], f["length"]
		  if (want == "own" && f["depth"] == 0 && f["present"] == "true")
			print f["start"], f["length"] }' | merge
}

sum_len()
{
	awk '{ s += $2 } END { print s + 0 }'
}

# check_view FILE EXPECTED_MAP NAME [TOL]: seek map, du and cp
# --sparse=always. The copy may punch holes where allocated blocks hold zeros:
# at most TOL bytes per extent (default: a grain), or anything with TOL "any".
check_view()
{
	local f=$1 exp=$2 name=$3 tol=${4:-$GRAIN} got alloc want n lo hi
	got=$("$SEEKMAP" "$f" | merge)
	if [ "$got" = "$exp" ]; then
		vd_pass "$name: SEEK_DATA/SEEK_HOLE map ($(wc -l <<<"$exp") extents)"
	else
		vd_fail "$name: SEEK map differs"
		diff <(echo "$exp") <(echo "$got") | head -10 | sed 's/^/    /'
	fi
	want=$(sum_len <<<"$exp")
	alloc=$(($(stat -c %b "$f") * 512))
	vd_check "$name: st_blocks = $want allocated bytes (got $alloc)" test "$alloc" = "$want"
	alloc=$(du -B1 "$f" | cut -f1)
	vd_check "$name: du = $want" test "$alloc" = "$want"
	rm -f "$VD_TMP/copy"
	cp --sparse=always "$f" "$VD_TMP/copy"
	vd_check "$name: cp --sparse=always copies the same bytes" cmp -s "$f" "$VD_TMP/copy"
	n=$(grep -c . <<<"$exp")
	alloc=$(($(stat -c %b "$VD_TMP/copy") * 512))
	lo=0
	[ "$tol" = any ] || lo=$((want - n * tol))
	hi=$((want + n * GRAIN))
	vd_check "$name: copy allocates $alloc, in [$lo, $hi] around $want" \
		test "$alloc" -ge "$lo" -a "$alloc" -le "$hi"
	rm -f "$VD_TMP/copy"
}

check_changed()
{
	local f=$1 exp=$2 name=$3 got
	got=$(grep -v '^#' "$f" | merge)
	if [ "$got" = "$exp" ] && head -1 "$f" | grep -q '^# offset length (bytes)'; then
		vd_pass "$name: $(basename "$f") ($(wc -l <<<"$exp") extents)"
	else
		vd_fail "$name: $(basename "$f") differs from the model"
		diff <(echo "$exp") <(echo "$got") | head -10 | sed 's/^/    /'
	fi
}

check_mtime()
{
	local f=$1 img=$2
	vd_check "$(basename "$f"): mtime is $(basename "$img")'s" \
		test "$(stat -c %Y "$f")" = "$(stat -c %Y "$img")"
}

# --- VMDK: base, zeroed-grain snapshot, snapshot ------------------------------
vd_say "VMDK chain (qemu-img)"
V=$W/vmdk
mkdir -p "$V"
# Each snapshot is made after its parent's last write: writing a parent
# changes its CID, and qemu then refuses to write the child.
qemu-img create -q -f vmdk "$V/base.vmdk" 60M || vd_die "qemu-img create"
vd_qemu_io vmdk "$V/base.vmdk" "write -P 0x11 0 1M" "write -P 0x12 5M 192k" \
	"write -P 0x13 $((20 * 1048576 + 4096)) 8192" "write -P 0x14 $((60 * 1048576 - 65536)) 64k"
(cd "$V" && qemu-img create -q -f vmdk -o zeroed_grain=on -b base.vmdk -F vmdk s1.vmdk) ||
	vd_die "qemu-img create s1"
vd_qemu_io vmdk "$V/s1.vmdk" "write -P 0x21 512k 1M" "write -z 5M 64k" "write -P 0x22 30M 128k"
(cd "$V" && qemu-img create -q -f vmdk -b s1.vmdk -F vmdk s2.vmdk) || vd_die "qemu-img create s2"
vd_qemu_io vmdk "$V/s2.vmdk" "write -P 0x31 $((30 * 1048576 + 65536)) 128k" "write -P 0x32 40M 64k"
touch -d '2020-01-02 03:04:05' "$V/base.vmdk"
touch -d '2021-02-03 04:05:06' "$V/s1.vmdk"
vd_sums_save "$VD_TMP/vmdk.sha256" "$V"/*.vmdk

LAYERS=("$V/base.vmdk" "$V/s1.vmdk" "$V/s2.vmdk")
if vd_mount "$V/s2.vmdk" "$M/v"; then
	check_view "$M/v/disk" "$(qmap "$V/s2.vmdk" data)" "vmdk disk"
	check_mtime "$M/v/disk" "$V/s2.vmdk"
	i=0
	for f in "$M"/v/layers/0?-base "$M"/v/layers/0?-s1 "$M"/v/layers/0?-s2; do
		l=${LAYERS[i]}
		check_view "$f" "$(qmap "$l" data)" "vmdk $(basename "$f")"
		check_changed "$f.changed" "$(qmap "$l" own)" "vmdk"
		check_mtime "$f" "$l"
		check_mtime "$f.changed" "$l"
		i=$((i + 1))
	done
	# The zeroed grain of s1 hides base data: it is a hole in the merged view
	# but a change of s1.
	vd_check "vmdk: s1's zeroed grain is listed in its .changed" \
		grep -qx "$((5 * 1048576)) 65536" "$M"/v/layers/02-s1.changed
	vd_check "vmdk: unmount" vd_umount "$M/v"
else
	vd_fail "vmdk: mount"
fi

out=$("$VDMOUNT" --info --changes "$V/s2.vmdk")
got=$(awk '/^layer 02-s1/ { on = 1; next } /^layer / { on = 0 }
	on && /^    [0-9]/ { print $1, $2 }' <<<"$out" | merge)
vd_check "--info --changes prints the same list for 02-s1" test "$got" = "$(qmap "$V/s1.vmdk" own)"

# --- VHD: dynamic base and differencing child, writes logged ----------------
vd_say "VHD chain (mkvhd)"
H=$W/vhd
mkdir -p "$H"
BLOCK=$((512 * 1024))
"$MKVHD" dynamic "$H/base.vhd" $((16 * 1048576)) --block $BLOCK || vd_die "mkvhd dynamic"
"$MKVHD" write "$H/base.vhd" --seed 3 --count 12 --max-len 300 --log "$H/base.log" ||
	vd_die "mkvhd write"
"$MKVHD" child "$H/base.vhd" "$H/child.vhd" || vd_die "mkvhd child"
"$MKVHD" write "$H/child.vhd" --seed 4 --count 20 --max-len 700 --log "$H/child.log" ||
	vd_die "mkvhd write"
vd_sums_save "$VD_TMP/vhd.sha256" "$H"/*.vhd
# A dynamic disk holds whole blocks; a differencing one the sectors written.
base_model=$(awk -v b=$BLOCK '{ s = int($1 / b) * b; e = int(($1 + $2 + b - 1) / b) * b
	print s, e - s }' "$H/base.log" | merge)
child_model=$(merge <"$H/child.log")
disk_model=$(printf '%s\n%s\n' "$base_model" "$child_model" | merge)
if vd_mount "$H/child.vhd" "$M/h"; then
	# Short writes leave most of each dynamic block zero: cp may punch it.
	check_view "$M/h/disk" "$disk_model" "vhd disk" any
	check_view "$M/h/layers/01-base" "$base_model" "vhd 01-base" any
	check_changed "$M/h/layers/01-base.changed" "$base_model" "vhd"
	check_changed "$M/h/layers/02-child.changed" "$child_model" "vhd"
	check_mtime "$M/h/layers/01-base" "$H/base.vhd"
	vd_check "vhd: unmount" vd_umount "$M/h"
else
	vd_fail "vhd: mount"
fi

vd_check "input files unchanged (VMDK)" vd_sums_check "$VD_TMP/vmdk.sha256"
vd_check "input files unchanged (VHD)" vd_sums_check "$VD_TMP/vhd.sha256"
vd_finish
