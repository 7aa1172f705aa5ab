#!/usr/bin/env bash
# End-to-end test of VHDX (.vhdx/.avhdx) chains through a real FUSE mount.
#
# Images: qemu-made dynamic and fixed disks (qemu-io patterns, and a raw
# converted with 32 MiB blocks; expected content from `qemu-img convert -f
# vhdx`), and mkvhdx chains with exact raw models: 3 layers (1 and 2 MiB
# blocks, a size not a whole number of blocks, ZERO/UNMAPPED/UNDEFINED
# blocks, runs ending mid-bitmap-byte), 16 layers of 4096-byte sectors, a
# 256 MiB-block pair, and a 3-layer chain whose every layer has a pending
# log (replayed in memory). qemu-img also reads mkvhdx's bases (an
# independent reader of the generator's layout). MOUNT/disk and every
# MOUNT/layers/NN-* are compared with the models, in the multithreaded loop
# and with -s. Bad inputs must fail with one clear line: a missing parent
# (every locator path named), a parent_linkage mismatch, a corrupt log, a
# VHD parent. --force mounts the corrupt log with a warning. No input file
# may change. libvhdi's vhdimount reading the 3-layer chain is informational
# (it reads the parent where a differencing disk says ZERO).
#
# Env: VDMOUNT, VD_BUILD (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init vhdx_chain
MKVHDX=${VD_BUILD:-}/tests/mkvhdx
MKVHD=${VD_BUILD:-}/tests/mkvhd
for t in qemu-img qemu-io sha256sum; do
	command -v $t >/dev/null || {
		echo "SKIP: $t missing"
		exit 77
	}
done
[ -x "$MKVHDX" ] || {
	echo "SKIP: $MKVHDX not built"
	exit 77
}

W=$VD_TMP/img # source images
E=$VD_TMP/exp # expected raws
M=$VD_TMP/mnt
mkdir -p "$W" "$E" "$M"

declare -A EXPECT # layer file -> expected raw
CHAINS=()	  # "name|layer1 ... top" (base first)

mkx()
{
	"$MKVHDX" "$@" || vd_die "mkvhdx $*"
}

# A qemu-made disk; expected content from qemu-img convert.
build_qemu()
{
	local sub=$1 bs=$2 d=$W/q$1
	mkdir -p "$d"
	qemu-img create -q -f vhdx -o subformat="$sub",block_size="$bs" "$d/q-$sub.vhdx" 40M ||
		vd_die "qemu-img create"
	vd_qemu_io vhdx "$d/q-$sub.vhdx" "write -P 0x11 0 1M" "write -P 0x22 3M 4097k" \
		"write -P 0x33 20M 512" "write -P 0x44 $((2 * 1024 * 1024 - 512)) 1536" \
		"write -z 24M 2M"
	qemu-img convert -f vhdx -O raw "$d/q-$sub.vhdx" "$E/q-$sub.raw" || vd_die "convert"
	EXPECT[$d/q-$sub.vhdx]=$E/q-$sub.raw
	CHAINS+=("qemu-$sub|$d/q-$sub.vhdx")
}

# A raw of random runs converted by qemu-img into a 32 MiB-block dynamic VHDX.
build_qconvert()
{
	local d=$W/qconv
	mkdir -p "$d"
	mkx "$d/seed.vhdx" $((70 * 1024 * 1024 + 512)) --block $((1 << 20)) --writes 40 \
		--seed 9 --model "$E/qconv.raw"
	rm "$d/seed.vhdx"
	qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=32M "$E/qconv.raw" \
		"$d/qconv.vhdx" || vd_die "convert to vhdx"
	EXPECT[$d/qconv.vhdx]=$E/qconv.raw
	CHAINS+=("qconvert|$d/qconv.vhdx")
}

# build_chain NAME DEPTH SIZE "BASE OPTS" "CHILD OPTS": an mkvhdx chain.
build_chain()
{
	local name=$1 depth=$2 size=$3 bopts=$4 copts=$5 d=$W/$1 i prev cur layers ext
	mkdir -p "$d"
	prev=$d/$name-01.vhdx
	# shellcheck disable=SC2086
	mkx "$prev" "$size" $bopts --seed 1 --model "$E/$name-01.raw"
	EXPECT[$prev]=$E/$name-01.raw
	layers=$prev
	for ((i = 2; i <= depth; i++)); do
		cur=$d/$name-$(printf %02d $i).avhdx
		# shellcheck disable=SC2086
		mkx "$cur" "$size" --parent "$prev" $copts --seed "$i" \
			--model "$E/$name-$i.raw" --over "${EXPECT[$prev]}"
		EXPECT[$cur]=$E/$name-$i.raw
		layers="$layers $cur"
		prev=$cur
	done
	CHAINS+=("$name|$layers")
}

vd_say "building images in $W"
build_qemu dynamic 1M
build_qemu fixed 8M
build_qconvert
build_chain diff3 3 $((13 * 1024 * 1024 + 3 * 512)) \
	"--block 1048576 --writes 40 --zero-blocks 3" "--block 2097152 --writes 60 --max-len 40 --zero-blocks 2"
build_chain diff16 16 $((6 * 1024 * 1024 + 8192)) \
	"--block 1048576 --sector 4096 --writes 20" "--block 1048576 --sector 4096 --writes 12 --max-len 9 --zero-blocks 1"
build_chain big 2 $((300 * 1024 * 1024)) \
	"--block 268435456 --writes 10 --max-len 300" "--block 268435456 --writes 30 --max-len 20 --zero-blocks 1"
build_chain logs 3 $((9 * 1024 * 1024 + 512)) \
	"--block 1048576 --writes 30 --log" "--block 1048576 --writes 40 --max-len 30 --log"

# qemu-img reads mkvhdx bases: the generator's layout is sound.
for b in "$W/diff3/diff3-01.vhdx" "$W/big/big-01.vhdx"; do
	qemu-img convert -f vhdx -O raw "$b" "$VD_TMP/q.raw" || vd_die "qemu-img cannot read $b"
	vd_check "qemu-img reads $(basename "$b") as its model" cmp -s "$VD_TMP/q.raw" "${EXPECT[$b]}"
	rm -f "$VD_TMP/q.raw"
done

# Bad inputs, each in its own directory.
B=$W/bad
mkdir -p "$B/missing" "$B/id" "$B/log" "$B/mixed"
mkx "$B/missing/p.vhdx" 4194304 --writes 4
mkx "$B/missing/c.avhdx" 4194304 --parent "$B/missing/p.vhdx" --writes 4
rm "$B/missing/p.vhdx"
mkx "$B/id/p.vhdx" 4194304 --writes 4 --seed 1
mkx "$B/id/c.avhdx" 4194304 --parent "$B/id/p.vhdx" --writes 4
mkx "$B/id/p.vhdx" 4194304 --writes 4 --seed 2 # same name, new DataWriteGuid
# every log entry's CRC-32C broken, metadata in place current
mkx "$B/log/l.vhdx" 4194304 --writes 8 --corrupt-log --model "$E/forced.raw"
if [ -x "$MKVHD" ]; then
	"$MKVHD" dynamic "$B/mixed/p.vhdx" 4194304 || vd_die mkvhd
	mv "$B/mixed/p.vhdx" "$B/mixed/v.vhd"
	mkx "$B/mixed/p.vhdx" 4194304 --writes 2
	mkx "$B/mixed/c.avhdx" 4194304 --parent "$B/mixed/p.vhdx" --writes 2
	rm "$B/mixed/p.vhdx"
	ln -s v.vhd "$B/mixed/p.vhdx"
fi

mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

run_pass()
{
	local mode=$1 opts=()
	[ "$mode" = single ] && opts=(-s)
	vd_check_chains "$mode"
	vd_expect_fail "[$mode] missing parent" "$B/missing/c.avhdx" "$B/missing/c.avhdx" \
		"parent not found.*relative_path.*volume_path.*absolute_win32_path" "${opts[@]}"
	vd_expect_fail "[$mode] parent_linkage mismatch" "$B/id/c.avhdx" "$B/id/c.avhdx" \
		"unique id" "${opts[@]}"
	vd_expect_fail "[$mode] corrupt log" "$B/log/l.vhdx" "$B/log/l.vhdx" \
		"corrupt log" "${opts[@]}"
	[ -x "$MKVHD" ] && vd_expect_fail "[$mode] VHD parent of a VHDX child" \
		"$B/mixed/c.avhdx" "$B/mixed/c.avhdx" "mixed-format" "${opts[@]}"
}

run_pass multi
run_pass single

# --force mounts the corrupt log without replay, saying so.
if vd_mount --force "$B/log/l.vhdx" "$M/forced"; then
	vd_check "--force on a corrupt log warns that content may be stale" \
		grep -q "may be stale" "$VD_TMP/mount.err"
	vd_check "chain.json says the corrupt log was ignored" \
		grep -q '"corrupt_log_ignored": true' "$M/forced/chain.json"
	vd_check "--force: the metadata in place is read" vd_same "$M/forced/disk" "$E/forced.raw"
	vd_umount "$M/forced" || vd_fail "unmount forced"
else
	vd_fail "--force on a corrupt log: mount"
fi
# chain.json of a replayed layer says how many entries were replayed.
if vd_mount "$W/logs/logs-03.avhdx" "$M/logjson"; then
	vd_check "chain.json: log replayed in memory" grep -q '"replayed_in_memory": true' \
		"$M/logjson/chain.json"
	vd_check "chain.json: entries counted" grep -qE '"entries_replayed": [1-9]' \
		"$M/logjson/chain.json"
	vd_umount "$M/logjson" || vd_fail "unmount logjson"
else
	vd_fail "logs chain: mount for chain.json"
fi

# Informational: libvhdi 20210425 reads the parent for a differencing
# disk's ZERO blocks; [MS-VHDX] 2.5.1.1 says they MUST read as zeros.
vd_info_vhdimount "$W/diff3/diff3-03.avhdx" "${EXPECT[$W/diff3/diff3-03.avhdx]}" diff3 \
	"libvhdi reads the parent for ZERO blocks"

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
