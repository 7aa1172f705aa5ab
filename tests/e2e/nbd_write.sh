#!/usr/bin/env bash
# Writable exports of nbdkit-vdmount-plugin (write=delta|scratch, delta=,
# at=): copy-on-write into a new standard delta, through the core vdmount -w
# uses. For each format (a VHD chain of a qemu dynamic base and a mkvhd child;
# a qemu-made VMDK monolithicSparse chain):
#   - capabilities (nbdinfo --can/--is): disk writable, with flush, FUA,
#     zero, fast zero and multi-conn; trim only where a discard frees space;
#     every layer export read-only, and a write to one refused;
#   - nbdcopy --connections=4 of a whole seeded image with zero runs into
#     disk (parallel writes on four connections, zero requests), then a
#     seeded list of qemu-io requests over nbd+unix (1 byte ... 2 MiB + 3,
#     unaligned, across grains and blocks, the last sector and byte, FUA,
#     write zeroes with and without MAY_TRIM, trim, flush), every one applied
#     to an exact model; fast zero requests must do what they may (a
#     discard) or fail with ENOTSUP and change nothing. Read back through
#     the plugin while serving; after nbdkit exits, exactly one new file,
#     which vdmount (and qemu-img for VMDK, with qemu-img check) reads as
#     the model byte for byte;
#   - write=scratch leaves no file; delta=FILE with at=1 (a delta over the
#     base); delta=DIR with two file= (a delta each);
#   - SIGKILL right after a flush, and right after a FUA write: the delta
#     opens and holds what they made durable (a later unflushed write may
#     or may not be there);
#   - refused parameters (one error line each, no file made); the input
#     files never change (sha256).
#
# Env: VD_NBD_PLUGIN, VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 =
# skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_nbd_init nbd_write
MKVHD=${VD_BUILD:-}/tests/mkvhd
for t in qemu-img qemu-io sha256sum dd awk stdbuf; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -x "$MKVHD" ] || { echo "SKIP: $MKVHD not built"; exit 77; }
[ -n "${VDMOUNT:-}" ] && [ -x "$VDMOUNT" ] || vd_die "VDMOUNT is not set"

W=$VD_TMP/img
E=$VD_TMP/exp
M=$VD_TMP/mnt # vd_info_vhdimount
mkdir -p "$W" "$E" "$M"
cd "$W" || exit 1

# Seeded random bytes (mawk or gawk, C locale: one byte per %c).
R=$VD_TMP/random.bin
LC_ALL=C awk -v n=$((2 * 1024 * 1024 + 131072)) 'BEGIN { srand(13)
	for (i = 0; i < n; i++) printf "%c", int(rand() * 256) }' >"$R"

# make_chain FMT: $W/FMT/base.EXT and snap.EXT; $E/FMT.raw is what disk holds,
# $E/FMT-base.raw what the base holds.
make_chain()
{
	local fmt=$1 d=$W/$1
	mkdir -p "$d"
	case $fmt in
	vhd)
		qemu-img create -q -f vpc -o subformat=dynamic "$d/base.vhd" 24M
		vd_qemu_io vpc "$d/base.vhd" "write -P 0x31 0 5M" "write -P 0x32 20M 3M"
		qemu-img convert -f vpc -O raw "$d/base.vhd" "$E/vhd-base.raw"
		cp "$E/vhd-base.raw" "$E/vhd.raw"
		"$MKVHD" child "$d/base.vhd" "$d/snap.vhd" >/dev/null || vd_die "mkvhd child"
		"$MKVHD" write "$d/snap.vhd" --seed 5 --count 40 --mirror "$E/vhd.raw" \
			>/dev/null || vd_die "mkvhd write"
		;;
	vmdk)
		qemu-img create -q -f vmdk "$d/base.vmdk" 24M
		vd_qemu_io vmdk "$d/base.vmdk" "write -P 0x31 0 5M" "write -P 0x32 20M 3M"
		(cd "$d" && qemu-img create -q -f vmdk -b base.vmdk -F vmdk snap.vmdk)
		vd_qemu_io vmdk "$d/snap.vmdk" "write -P 0x33 1M 100k" "write -P 0x34 15M 1M"
		qemu-img convert -O raw "$d/base.vmdk" "$E/vmdk-base.raw"
		qemu-img convert -O raw "$d/snap.vmdk" "$E/vmdk.raw"
		;;
	esac
}

FORMATS=(vhd vmdk)
make_chain vhd
make_chain vmdk
mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"
find "$W" -type f | sort >"$VD_TMP/files.before"

# new_files: files in $W that were not there at the start.
new_files()
{
	comm -13 "$VD_TMP/files.before" <(find "$W" -type f | sort)
}

# zero_model MODEL OFF LEN / copy_model SRC MODEL OFF LEN: the model's side
# of a request.
zero_model()
{
	dd if=/dev/zero of="$1" bs=64K seek="$2" count="$3" oflag=seek_bytes \
		iflag=count_bytes conv=notrunc status=none
}

copy_model()
{
	dd if="$1" of="$2" bs=64K seek="$3" count="$4" oflag=seek_bytes \
		iflag=count_bytes conv=notrunc status=none
}

# chunk N ROFF LEN: $VD_TMP/chunks/N, LEN bytes of $R from ROFF.
chunk()
{
	dd if="$R" of="$VD_TMP/chunks/$1" bs=64K skip="$2" count="$3" \
		iflag=skip_bytes,count_bytes status=none
	echo "$VD_TMP/chunks/$1"
}

# requests SEED SIZE MODEL TRIM: prints qemu-io commands (one a line) for a
# seeded list of requests on a disk of SIZE bytes, and applies each to MODEL.
# TRIM=1 adds trims (which then read back as zeros).
requests()
{
	local seed=$1 size=$2 model=$3 trim=$4 i len off kind c
	local lens=(1 511 512 4096 65537 131072 1000000 2097155)
	local fixed=("$((size - 1)) 1" "$((size - 512)) 512" "$((65536 - 100)) 300"
		"$((2 * 1048576 - 256)) 1024" "$((size - 70000)) 70000")
	RANDOM=$seed
	rm -rf "$VD_TMP/chunks"
	mkdir -p "$VD_TMP/chunks"
	for ((i = 0; i < 45; i++)); do
		if ((i < ${#fixed[@]})); then
			read -r off len <<<"${fixed[i]}"
			kind=w
		else
			len=${lens[RANDOM % ${#lens[@]}]}
			off=$(((RANDOM * 32768 + RANDOM) % (size - len + 1)))
			((RANDOM % 3 == 0)) && off=$((off / 512 * 512))
			case $((RANDOM % 10)) in
			0) kind=z ;;
			1) kind=zu ;;
			2) kind=$([ "$trim" = 1 ] && echo t || echo wf) ;;
			3) kind=wf ;;
			4) kind=flush ;;
			*) kind=w ;;
			esac
		fi
		case $kind in
		w | wf)
			c=$(chunk "$i" $((RANDOM * 2)) "$len")
			copy_model "$c" "$model" "$off" "$len"
			echo "write $([ $kind = wf ] && echo -f) -s $c $off $len"
			;;
		z | zu)
			zero_model "$model" "$off" "$len"
			echo "write -z $([ $kind = zu ] && echo -u) $off $len"
			;;
		t)
			zero_model "$model" "$off" "$len"
			echo "discard $off $len"
			;;
		flush) echo flush ;;
		esac
	done
	echo flush
}

# qio URI CMD-FILE: runs the qemu-io commands in CMD-FILE (one a line) on URI,
# as raw over NBD, cache=writeback (FUA only on write -f); fails if any fails.
qio()
{
	local args=() c
	while read -r c; do
		args+=(-c "$c")
	done <"$2"
	qemu-io -t writeback -f raw "$1" "${args[@]}" >"$VD_TMP/qio.out" 2>&1 &&
		! grep -qiE 'failed|error' "$VD_TMP/qio.out" ||
		{ sed 's/^/    | /' "$VD_TMP/qio.out" | head -20 >&2; return 1; }
}

# fast_zero URI OFF LEN EXPECT [-u]: a fast zero request (qemu-io write -z -n,
# with -u: holes allowed) must succeed (EXPECT ok) or fail with ENOTSUP
# (EXPECT enotsup).
fast_zero()
{
	local out
	out=$(qemu-io -f raw "$1" -c "write -z -n ${5:-} $2 $3" 2>&1)
	case $4 in
	ok) ! grep -qi failed <<<"$out" ;;
	enotsup) grep -q "Operation not supported" <<<"$out" ;;
	esac || { echo "    fast zero $2 $3 ${5:-}: $out" >&2; return 1; }
}

# can URI WHAT EXPECT: nbdinfo --can WHAT (or --is WHAT for read-only) says
# EXPECT (yes/no).
can()
{
	local rc=0 flag=--can
	[ "$2" = read-only ] && flag=--is
	nbdinfo $flag "$2" "$1" || rc=$?
	case "$3:$rc" in
	yes:0 | no:2) return 0 ;;
	esac
	echo "    nbdinfo $flag $2: exit $rc, expected $3" >&2
	return 1
}

# read_same IMAGE MODEL: IMAGE's disk reads as MODEL: vdmount --hash when its
# parents lie in its own directory, else (vdmount --hash has no --search) the
# plugin read-only with search=$W/*.
read_same()
{
	local img=$1 model=$2 got exp
	if [ -e "$(dirname "$img")/snap.vhd" ] || [ -e "$(dirname "$img")/snap.vmdk" ]; then
		got=$("$VDMOUNT" --hash "$img" 2>"$VD_TMP/hash.err" | awk '$2 == "disk" { print $1 }')
		exp=$(sha256sum <"$model" | awk '{ print $1 }')
		[ -n "$got" ] && [ "$got" = "$exp" ] && return 0
		echo "    vdmount --hash $img: disk ${got:-?}, model $exp" >&2
		sed 's/^/    | /' "$VD_TMP/hash.err" >&2
		return 1
	fi
	rm -f "$VD_TMP/read.raw"
	vd_nbd_run 'nbdcopy "$uri" '"$VD_TMP/read.raw" file="$img" search="$W/vhd" \
		search="$W/vmdk" || { sed 's/^/    | /' "$VD_TMP/nbdkit.err" >&2; return 1; }
	cmp "$VD_TMP/read.raw" "$model" >&2
}

# qemu_same IMAGE MODEL: qemu-img reads IMAGE's chain as MODEL, and checks it.
qemu_same()
{
	qemu-img check -q "$1" >&2 || return 1
	rm -f "$VD_TMP/qemu.raw"
	qemu-img convert -O raw "$1" "$VD_TMP/qemu.raw" && cmp "$VD_TMP/qemu.raw" "$2" >&2
}

# delta_checks FMT DELTA MODEL DESC: DELTA (a new file, its parents in
# $W/FMT) reads as MODEL.
delta_checks()
{
	vd_check "$4: the delta reads as the model" read_same "$2" "$3"
	[ "$1" = vmdk ] && vd_check "$4: qemu-img check, and reads the delta as the model" \
		qemu_same "$2" "$3"
}

for fmt in "${FORMATS[@]}"; do
	top=$W/$fmt/snap.$fmt
	orig=$E/$fmt.raw # the chain's disk
	model=$VD_TMP/model-$fmt.raw
	cp "$orig" "$model"
	size=$(stat -c %s "$model")
	trim=no
	[ "$fmt" = vmdk ] && trim=yes

	# --- write=delta: capabilities, multi-conn nbdcopy, requests --------
	if vd_nbd_serve "w-$fmt" file="$top" write=delta; then
		disk=$(vd_nbd_uri disk)
		vd_check "[$fmt] disk: not read-only" can "$disk" read-only no
		for w in write flush fua zero fast-zero multi-conn; do
			vd_check "[$fmt] disk: can $w" can "$disk" $w yes
		done
		vd_check "[$fmt] disk: can trim = $trim" can "$disk" trim $trim
		for l in layers/01-base layers/02-snap layers/03-snap-vdm-000001; do
			vd_check "[$fmt] $l: read-only" can "$(vd_nbd_uri $l)" read-only yes
		done
		vd_check "[$fmt] a write to layers/01-base is refused" \
			bash -c '! qemu-io -f raw "$1" -c "write 0 512" 2>&1 | grep -q "^wrote"' _ \
			"$(vd_nbd_uri layers/01-base)"
		vd_check "[$fmt] the export list describes the new delta" \
			bash -c 'nbdinfo --list "$1" | grep -q "snap-vdm-000001.'$fmt': merged disk, 3 layers, writable (new delta over .*/snap.'$fmt')"' \
			_ "$disk"

		# A whole image: seeded data with zero runs (nbdcopy sends those
		# as zero requests), from four connections at once.
		cp "$model" "$VD_TMP/whole.raw"
		for ((o = 0; o + 2 * 1024 * 1024 <= size; o += 6 * 1024 * 1024)); do
			copy_model "$R" "$VD_TMP/whole.raw" $((o + 4097)) $((2 * 1024 * 1024))
			zero_model "$VD_TMP/whole.raw" $((o + 3 * 1024 * 1024 - 512)) 1500000
		done
		cp "$VD_TMP/whole.raw" "$model"
		vd_check "[$fmt] nbdcopy --connections=4 of a whole image into disk" \
			timeout 120 nbdcopy --connections=4 --flush "$VD_TMP/whole.raw" "$disk"
		vd_check "[$fmt] disk reads it back" vd_nbd_same "$disk" "$model"

		requests 7 "$size" "$model" $([ $trim = yes ] && echo 1 || echo 0) >"$VD_TMP/req"
		vd_check "[$fmt] $(wc -l <"$VD_TMP/req") seeded requests (qemu-io over nbd+unix)" \
			qio "$disk" "$VD_TMP/req"
		# Fast zero: a discard where it frees space and holes are allowed,
		# else ENOTSUP with nothing changed.
		vd_check "[$fmt] fast zero without MAY_TRIM: ENOTSUP" \
			fast_zero "$disk" 1048576 131072 enotsup
		if [ $trim = yes ]; then
			vd_check "[$fmt] fast zero with MAY_TRIM: done" \
				fast_zero "$disk" 3145728 196608 ok -u
			zero_model "$model" 3145728 196608
		else
			vd_check "[$fmt] fast zero with MAY_TRIM: ENOTSUP" \
				fast_zero "$disk" 3145728 196608 enotsup -u
		fi
		vd_check "[$fmt] disk reads as the model while served" vd_nbd_same "$disk" "$model"
		vd_check "[$fmt] nbdkit stops cleanly" vd_nbd_stop
		mapfile -t NEW < <(new_files)
		if [ ${#NEW[@]} -eq 1 ] && [ "${NEW[0]}" = "$W/$fmt/snap-vdm-000001.$fmt" ]; then
			vd_pass "[$fmt] exactly one new file: ${NEW[0]#"$W"/}"
			delta_checks "$fmt" "${NEW[0]}" "$model" "[$fmt] write=delta"
			[ "$fmt" = vhd ] && vd_info_vhdimount "${NEW[0]}" "$model" "the vhd delta" \
				"libvhdi reads this chain its own way"
		else
			vd_fail "[$fmt] new files: ${NEW[*]:-none} (expected snap-vdm-000001.$fmt)"
		fi
		rm -f "${NEW[@]}"
	else
		vd_fail "[$fmt] nbdkit serves write=delta"
	fi

	# --- write=scratch: nothing left behind --------------------------------
	mkdir -p "$VD_TMP/scratch-$fmt"
	if TMPDIR=$VD_TMP/scratch-$fmt vd_nbd_run \
		'qemu-io -f raw "$uri" -c "write -P 0x5a 1000 70000" -c "read -P 0x5a 1000 70000" |
			grep -q "^read 70000/70000" &&
		! find "$TMPDIR" -name "*vdm*" | grep -q .' file="$top" write=scratch; then
		vd_pass "[$fmt] write=scratch: writes read back, the delta has no name"
	else
		vd_fail "[$fmt] write=scratch"
		sed 's/^/    | /' "$VD_TMP/nbdkit.err"
	fi
	vd_check "[$fmt] write=scratch leaves no file" \
		bash -c '[ -z "$(find "$1" -name "*vdm*")" ] && [ -z "$2" ]' _ \
		"$VD_TMP/scratch-$fmt" "$(new_files)"

	# --- delta=FILE at=1: a delta over the base ----------------------------
	out=$VD_TMP/out-$fmt
	mkdir -p "$out"
	cp "$E/$fmt-base.raw" "$VD_TMP/at1.raw"
	copy_model "$R" "$VD_TMP/at1.raw" 300000 1000000
	chunk at1 0 1000000 >/dev/null
	if vd_nbd_run 'nbdinfo --list "$uri" | grep -q "new delta over .*/base.'$fmt'" &&
		qemu-io -f raw "$uri" -c "write -s '"$VD_TMP/chunks/at1"' 300000 1000000" >/dev/null' \
		file="$top" write=delta delta="$out/at1.$fmt" at=1; then
		vd_pass "[$fmt] delta=FILE at=1: served over the base"
		delta_checks "$fmt" "$out/at1.$fmt" "$VD_TMP/at1.raw" "[$fmt] delta=FILE at=1"
	else
		vd_fail "[$fmt] delta=FILE at=1"
		sed 's/^/    | /' "$VD_TMP/nbdkit.err"
	fi
	vd_check "[$fmt] delta=FILE at=1: no other new file" test -z "$(new_files)"

	# --- SIGKILL after a flush, or after a FUA write ----------------------
	# Each alone (a later flush would cover an earlier request): the
	# request, then an unflushed write, then the kill.
	chunk k3 0 4096 >/dev/null
	for how in flush fua; do
		k=$VD_TMP/kill-$fmt-$how
		mkdir -p "$k"
		cp "$orig" "$VD_TMP/kill.raw"
		if [ $how = flush ]; then
			copy_model "$R" "$VD_TMP/kill.raw" 500000 300000
			cmds=(-c "write -s $(chunk k1 0 300000) 500000 300000" -c flush)
		else
			copy_model "$R" "$VD_TMP/kill.raw" 9000000 65536
			cmds=(-c "write -f -s $(chunk k2 0 65536) 9000000 65536")
		fi
		cp "$VD_TMP/kill.raw" "$VD_TMP/kill-late.raw"
		copy_model "$R" "$VD_TMP/kill-late.raw" 12000000 4096
		if ! vd_nbd_serve "k-$fmt-$how" file="$top" write=delta delta="$k"; then
			vd_fail "[$fmt] nbdkit serves write=delta delta=DIR"
			continue
		fi
		# Writeback: qemu-io sets FUA only where asked (writethrough, its
		# default, sets it on every write). It flushes when it closes the
		# disk: it must still be connected, sleeping, when nbdkit is
		# killed. (Its output file is new: the shell may create it after
		# the first poll.)
		out=$VD_TMP/kill-$fmt-$how.out
		stdbuf -oL qemu-io -t writeback -f raw "$(vd_nbd_uri disk)" "${cmds[@]}" \
			-c "write -s $VD_TMP/chunks/k3 12000000 4096" -c "sleep 30000" >"$out" 2>&1 &
		qpid=$!
		for ((i = 0; i < 2000; i++)); do
			grep -q "^wrote 4096/4096 bytes at offset 12000000" "$out" 2>/dev/null && break
			kill -0 $qpid 2>/dev/null || break
			vd_nap 0.01
		done
		vd_check "[$fmt] kill after $how: the requests, then an unflushed write" \
			grep -q "^wrote 4096/4096 bytes at offset 12000000" "$out"
		kill -KILL "${VD_NBD_PIDS[${#VD_NBD_PIDS[@]} - 1]}"
		wait "${VD_NBD_PIDS[${#VD_NBD_PIDS[@]} - 1]}" 2>/dev/null
		kill $qpid 2>/dev/null
		wait $qpid 2>/dev/null
		kd=$k/snap-vdm-000001.$fmt
		if read_same "$kd" "$VD_TMP/kill.raw" 2>/dev/null; then
			vd_pass "[$fmt] kill after $how: the delta opens with that data (not the unflushed write)"
		else
			vd_check "[$fmt] kill after $how: the delta opens with that data (and the unflushed write)" \
				read_same "$kd" "$VD_TMP/kill-late.raw"
		fi
	done
done

# --- two file= with delta=DIR: a delta each --------------------------------
two=$VD_TMP/two
mkdir -p "$two"
cp "$E/vhd.raw" "$VD_TMP/two-snap.raw"
cp "$E/vhd-base.raw" "$VD_TMP/two-base.raw"
vd_qemu_io raw "$VD_TMP/two-snap.raw" "write -P 0x61 0 4096"
vd_qemu_io raw "$VD_TMP/two-base.raw" "write -P 0x62 8192 4096"
if vd_nbd_run 'qemu-io -f raw "nbd+unix:///snap/disk?socket=$unixsocket" -c "write -P 0x61 0 4096" &&
	qemu-io -f raw "nbd+unix:///base/disk?socket=$unixsocket" -c "write -P 0x62 8192 4096"' \
	file="$W/vhd/snap.vhd" file="$W/vhd/base.vhd" write=delta delta="$two" >/dev/null; then
	vd_check "two file= with delta=DIR: two deltas there" \
		bash -c '[ "$(ls "$1" | wc -l)" = 2 ]' _ "$two"
	vd_check "two file= with delta=DIR: snap's delta holds its write" \
		read_same "$two/snap-vdm-000001.vhd" "$VD_TMP/two-snap.raw"
	vd_check "two file= with delta=DIR: base's delta holds its write" \
		read_same "$two/base-vdm-000001.vhd" "$VD_TMP/two-base.raw"
else
	vd_fail "two file= with delta=DIR"
	sed 's/^/    | /' "$VD_TMP/nbdkit.err"
fi

# --- refused parameters ----------------------------------------------------
top=$W/vhd/snap.vhd
vd_nbd_refused "write=bogus refused" write=bogus "write=delta or write=scratch" \
	file="$top" write=bogus
vd_nbd_refused "delta= without write= refused" "delta=" "only with write=" \
	file="$top" delta="$VD_TMP/x.vhd"
vd_nbd_refused "at= without write= refused" "at=" "only with write=" file="$top" at=1
vd_nbd_refused "at=0 refused" "at=0" "numbered from 1" file="$top" write=delta at=0
vd_nbd_refused "at=3 of 2 refused" snap.vhd "at=3: .* has 2 layers" file="$top" write=delta at=3
vd_nbd_refused "delta=FILE with two file= refused" x.vhd "must be an existing directory" \
	file="$top" file="$W/vhd/base.vhd" write=delta delta="$VD_TMP/x.vhd"
vd_nbd_refused "delta= an existing file refused" base.vhd "exists" \
	file="$top" write=delta delta="$W/vhd/base.vhd"
vd_nbd_refused "layer=4 of 3 (with the delta) refused" snap.vhd "layer=4: .* has 3 layers" \
	file="$top" write=delta layer=4
vd_check "refusals made no file" test -z "$(new_files)"

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
