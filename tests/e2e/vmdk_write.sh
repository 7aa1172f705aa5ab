#!/usr/bin/env bash
# End-to-end test of the VMDK write side: vdmount's delta (create_child,
# write, discard, flush, close) over every kind of VMDK chain, read back by
# independent readers.
#
# Chains: qemu-made monolithicSparse (base + delta, a size that is not a
# whole number of grains), a split disk (twoGbMaxExtentSparse descriptor,
# writes across its extent boundary), monolithicFlat + delta; and the
# ESXi-style chains of tests/e2e/chains/esx.sh: vmfs flat bases with two
# COWD (vmfsSparse) or two seSparse deltas, VMware- and qemu-layout
# streamOptimized bases with a hosted sparse delta. On each,
# tests/tools/vdwrite makes a delta beside the top image, writes a seeded
# random stream into it (1 byte to 3 MiB, the last sector, overlaps,
# discards, flushes; reading back as it goes) and writes the exact model of
# the disk. Then:
#   - exactly one new file exists and no pre-existing file changed (sha256);
#   - qemu-img check is clean, qemu-img info --backing-chain lists the whole
#     chain, qemu-img convert -O raw of the delta equals the model;
#   - vdmount with the delta as the top image: disk equals the model.
# Also: a delta of our delta (stacking); an existing file is never replaced;
# the delta SIGKILLed VD_KILL_RUNS (default 20) times after a random number
# of operations (opens cleanly, reads as of the last flush, marked unclean);
# a delta on a small tmpfs that fills up (ENOSPC goes to the writer, the
# delta stays consistent and holds every flush), with its parent in another
# directory (a relative "../" hint).
#
# Env: VDMOUNT, VD_BUILD (ctest sets them), VD_KILL_RUNS. Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init vmdk_write
for t in qemu-img qemu-io cmp sha256sum od; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
TOOLS=${VD_BUILD:?VD_BUILD not set}/tests
for t in vdwrite vdcat mkcowd mksesparse mkstream; do
	[ -x "$TOOLS/$t" ] || vd_die "test tool $TOOLS/$t not built"
done
vd_chains_init
. "$(dirname "$0")/chains/esx.sh"
KILL_RUNS=${VD_KILL_RUNS:-20}

qio()
{
	vd_qemu_io vmdk "$@"
}

# rnd IMG OFF LEN: random data at OFF.
rnd()
{
	head -c "$3" /dev/urandom >"$VD_TMP/chunk"
	qio "$1" "write -s $VD_TMP/chunk $2 $3"
}

child()
{
	(cd "$(dirname "$1")" && qemu-img create -q -f vmdk -b "$(basename "$2")" -F vmdk \
		"$(basename "$1")") || vd_die "qemu-img create -b $2"
}

# Small qemu-made chains (CHAINS entries: "name|layer ... top", base first).
build_small_sparse()
{
	local d=$W/sparse
	mkdir -p "$d"
	qemu-img create -q -f vmdk "$d/base.vmdk" $((24 * 1048576 + 3 * 512)) || vd_die create
	rnd "$d/base.vmdk" 0 1048576
	rnd "$d/base.vmdk" $((24 * 1048576 - 65536)) $((65536 + 3 * 512))
	qio "$d/base.vmdk" "write -P 0x61 10000000 3000000"
	child "$d/mid.vmdk" "$d/base.vmdk"
	rnd "$d/mid.vmdk" 500000 700000
	qio "$d/mid.vmdk" "write -z 11534336 1048576"
	CHAINS+=("sparse|$d/base.vmdk $d/mid.vmdk")
}

# A split disk as VMware lays it out (descriptor + pieces), but with 12 MiB
# pieces that qemu-img made: qemu's own split pieces are 2 GiB, which makes
# every full read here slow (mount_vmdk.sh reads a real one).
build_small_split()
{
	local d=$W/split
	mkdir -p "$d"
	qemu-img create -q -f vmdk "$d/split-s001.vmdk" 12M || vd_die create
	qemu-img create -q -f vmdk "$d/split-s002.vmdk" $((12 * 1048576 - 1024)) || vd_die create
	cat >"$d/split.vmdk" <<EOF
# Disk DescriptorFile
version=1
CID=0badcafe
parentCID=ffffffff
createType="twoGbMaxExtentSparse"

# Extent description
RW 24576 SPARSE "split-s001.vmdk"
RW 24574 SPARSE "split-s002.vmdk"

ddb.adapterType = "buslogic"
ddb.virtualHWVersion = "7"
EOF
	rnd "$d/split.vmdk" $((12 * 1048576 - 300000)) 600000
	rnd "$d/split.vmdk" 0 200000
	CHAINS+=("split|$d/split.vmdk")
}

build_small_flat()
{
	local d=$W/flat
	mkdir -p "$d"
	qemu-img create -q -f vmdk -o subformat=monolithicFlat "$d/flat.vmdk" 40M || vd_die create
	rnd "$d/flat.vmdk" 0 $((40 * 1048576))
	child "$d/flat-1.vmdk" "$d/flat.vmdk"
	rnd "$d/flat-1.vmdk" 3000000 2000000
	CHAINS+=("flat|$d/flat.vmdk $d/flat-1.vmdk")
}

# delta_of PARENT: the name vdmount gives a delta of PARENT.
delta_of()
{
	echo "${1%.vmdk}-vdm-000001.vmdk"
}

# readers_agree NAME DELTA MODEL LAYERS [vdmount options]: qemu-img and
# vdmount read DELTA (LAYERS images in all) as MODEL.
readers_agree()
{
	local name=$1 delta=$2 model=$3 layers=$4 mnt=$M/$1 n
	shift 4
	vd_check "$name: qemu-img check is clean" qemu-img check -q "$delta"
	n=$(qemu-img info --backing-chain "$delta" | grep -c '^image:')
	vd_check "$name: qemu-img info --backing-chain shows $layers images ($n)" \
		test "$n" = "$layers"
	qemu-img convert -O raw "$delta" "$VD_TMP/q.raw" &&
		vd_check "$name: qemu-img convert -O raw equals the model" vd_same "$VD_TMP/q.raw" "$model"
	rm -f "$VD_TMP/q.raw"
	if vd_mount "$@" "$delta" "$mnt"; then
		vd_check "$name: vdmount disk equals the model" vd_same "$mnt/disk" "$model"
		n=$(ls "$mnt/layers" | grep -Evc '\.(changed|p[0-9]+)$')
		vd_check "$name: vdmount shows $layers layers ($n)" test "$n" = "$layers"
		vd_check "$name: unmount" vd_umount "$mnt"
	else
		vd_fail "$name: vdmount of the delta"
	fi
}

# write_check NAME TOP BELOW SEED [vdwrite options]: a delta of TOP (BELOW
# layers under it) written by vdwrite, checked.
write_check()
{
	local name=$1 top=$2 below=$3 seed=$4 dir delta model=$E/$1.raw
	shift 4
	dir=$(dirname "$top")
	delta=$(delta_of "$top")
	ls -A "$dir" | sort >"$VD_TMP/before"
	vd_sums_save "$VD_TMP/$name.sums" "$dir"/*
	if ! "$TOOLS/vdwrite" --seed "$seed" --check 20 --model "$model" "$@" "$top" "$delta"; then
		vd_fail "$name: vdwrite"
		return
	fi
	ls -A "$dir" | sort >"$VD_TMP/after"
	vd_check "$name: exactly one new file, $(basename "$delta")" \
		test "$(comm -13 "$VD_TMP/before" "$VD_TMP/after")" = "$(basename "$delta")" -a \
		-z "$(comm -23 "$VD_TMP/before" "$VD_TMP/after")"
	vd_check "$name: no pre-existing file changed (sha256)" vd_sums_check "$VD_TMP/$name.sums"
	vd_check "$name: closed cleanly (uncleanShutdown 0)" \
		test "$(od -An -tu1 -j72 -N1 "$delta" | tr -d ' ')" = 0
	"$TOOLS/vdcat" "$top" >"$VD_TMP/parent.raw" &&
		vd_check "$name: the writes changed the disk" \
			bash -c '! cmp -s "$1" "$2"' _ "$VD_TMP/parent.raw" "$model"
	rm -f "$VD_TMP/parent.raw"
	readers_agree "$name" "$delta" "$model" $((below + 1))
}

vd_say "building chains in $W"
build_small_sparse
build_small_split
build_small_flat
build_cowd
build_sesparse
stream_chain vmstream "$TOOLS/mkstream"
stream_chain qstream qemu_stream

seed=1
for c in "${CHAINS[@]}"; do
	read -r -a layers <<<"${c#*|}"
	write_check "${c%%|*}" "${layers[${#layers[@]} - 1]}" ${#layers[@]} $seed --ops 150
	seed=$((seed + 1))
done

# libvmdk reads the header, descriptor and chain of our delta too.
if command -v vmdkinfo >/dev/null; then
	vd_check "vmdkinfo reads a delta" bash -c \
		'vmdkinfo "$1" | grep -q "Parent content identifier"' _ "$(delta_of "$W/sparse/mid.vmdk")"
fi

# A delta of our delta.
d1=$(delta_of "$W/sparse/mid.vmdk")
write_check stacked "$d1" 3 42 --ops 80 --flush-every 5

# An existing file is never replaced (here: the delta just made).
d2=$(delta_of "$d1")
vd_sums_save "$VD_TMP/exist.sums" "$d2"
if "$TOOLS/vdwrite" "$d1" "$d2" 2>"$VD_TMP/exist.err"; then
	vd_fail "vdwrite over an existing file succeeded"
else
	vd_check "an existing delta is not replaced" grep -q "exists already" "$VD_TMP/exist.err"
fi
vd_check "the existing file is unchanged" vd_sums_check "$VD_TMP/exist.sums"

# Killed at random points: the delta holds exactly the last flush.
parent=$W/sparse/mid.vmdk
vd_sums_save "$VD_TMP/kill.sums" "$W"/sparse/base.vmdk "$parent"
ok=0
for ((i = 1; i <= KILL_RUNS; i++)); do
	delta=$W/sparse/kill.vmdk
	rm -f "$delta" "$E/kill.raw"
	after=$((3 + (i * 61) % 170))
	# (a subshell, so that the shell's "Killed" notice goes to the log too)
	("$TOOLS/vdwrite" --seed $((100 + i)) --ops 1000 --flush-every 7 --max-write 400000 \
		--kill-after $after --model "$E/kill.raw" "$parent" "$delta"
	exit $?) 2>>"$VD_TMP/kill.err"
	rc=$?
	why=
	if [ $rc -ne 137 ]; then
		why="vdwrite exit $rc, not SIGKILL"
	elif [ "$(od -An -tu1 -j72 -N1 "$delta" | tr -d ' ')" != 1 ]; then
		why="uncleanShutdown is not set"
	elif ! qemu-img check -q "$delta"; then
		why="qemu-img check"
	elif ! qemu-img convert -O raw "$delta" "$VD_TMP/q.raw" ||
		! cmp -s "$VD_TMP/q.raw" "$E/kill.raw"; then
		why="qemu-img reads something else than the last flush"
	elif ! "$TOOLS/vdcat" "$delta" >"$VD_TMP/v.raw" || ! cmp -s "$VD_TMP/v.raw" "$E/kill.raw"; then
		why="vdcat reads something else than the last flush"
	fi
	if [ -z "$why" ]; then
		ok=$((ok + 1))
	else
		vd_fail "kill run $i (after $after operations): $why"
	fi
	[ $i -eq 1 ] && [ -z "$why" ] && readers_agree killed "$delta" "$E/kill.raw" 3
	rm -f "$VD_TMP/q.raw" "$VD_TMP/v.raw"
done
rm -f "$W/sparse/kill.vmdk"
vd_check "killed $KILL_RUNS times: $ok deltas consistent, holding their last flush" \
	test $ok -eq "$KILL_RUNS"
vd_check "the parents of the killed deltas are unchanged" vd_sums_check "$VD_TMP/kill.sums"

# A delta on a filesystem that fills up, its parent in another directory.
small=$VD_TMP/small
mkdir -p "$small"
if mount -t tmpfs -o size=4m tmpfs "$small" 2>/dev/null; then
	VD_MOUNTS+=("$small")
	"$TOOLS/vdwrite" --seed 9 --ops 20000 --flush-every 6 --crash-on-error \
		--model "$E/full.raw" "$parent" "$small/full.vmdk" 2>"$VD_TMP/full.err"
	rc=$?
	vd_check "full filesystem: the writer gets ENOSPC (exit $rc)" test $rc -eq 3
	grep -q "No space left on device" "$VD_TMP/full.err" ||
		vd_fail "full filesystem: no ENOSPC message"
	if [ -e "$E/full.raw.alt" ]; then
		# ENOSPC hit a flush: each grain reads as of that flush or the one before.
		qemu-img convert -O raw "$small/full.vmdk" "$VD_TMP/q.raw"
		vd_check "full filesystem: qemu-img reads one of the last two flushes" \
			"$TOOLS/vdwrite" --cmp 65536 "$VD_TMP/q.raw" "$E/full.raw" "$E/full.raw.alt"
		rm -f "$VD_TMP/q.raw"
	else
		readers_agree full "$small/full.vmdk" "$E/full.raw" 3 --search "$W/sparse"
	fi
	umount "$small"
else
	echo "    (no tmpfs mount: ENOSPC case skipped)"
fi

vd_finish
