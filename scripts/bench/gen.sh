# Image generation for scripts/bench.sh (bash; sourced, not run).
#
# Everything lands in one directory ($1 of bm_gen) so parent hints stay
# relative and every tool resolves the same chains:
#   base.raw        SIZE MiB, ~90% random data, every 10th MiB a hole
#   base.vmdk       monolithicSparse made from base.raw (depth-1 chain)
#   a1..a3.vmdk     3 deltas over base.vmdk, random writes in each; a3.raw = merged
#   d01..d31.vmdk   31 deltas over base.vmdk (a 32-layer chain), a few writes in
#                   every third one; d31.raw = merged
#   big.vmdk        2 TiB monolithicSparse, a few MiB of random data at known
#                   offsets (big.at lists "offset file" pairs to verify against)
#   stream.vmdk     streamOptimized copy of base.raw
#   base.vhd        VHD dynamic copy of base.raw (qemu-img, force_size)
#   v1.vhd, v2.vhd  VHD differencing children (tests/mkvhd); v2.raw = merged
# A stamp file records the parameters; with the same parameters (and
# VD_BENCH_DIR pointing at a kept directory) nothing is rebuilt. Optional
# images whose tool fails are simply absent; the sections that need them skip.

BM_CHUNK_MIB=1	# size of the random chunk file the deltas copy from

# bm_qio IMG FMT CMD...: one qemu-io run with several -c commands.
bm_qio()
{
	local img=$1 fmt=$2 c args=()
	shift 2
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null
}

# bm_delta DIR CHILD PARENT: a VMDK delta naming its parent relatively.
bm_delta()
{
	(cd "$1" && qemu-img create -q -f vmdk -b "$3" -F vmdk "$2")
}

# bm_rand_writes N SIZE: sets BM_CMDS to N qemu-io write commands of the chunk
# file at pseudo-random offsets: half grain-aligned 256 KiB runs, half
# unaligned 4-68 KiB runs (they straddle grains). Uses $RANDOM, seeded by the
# caller; no subshell, so the sequence continues from one delta to the next.
bm_rand_writes()
{
	local n=$1 size=$2 i off len
	local mib=$((size >> 20))
	BM_CMDS=()
	for ((i = 0; i < n; i++)); do
		if ((i % 2 == 0)); then
			len=$((256 << 10))
			off=$(((RANDOM * 32768 + RANDOM) % (mib * 16 - 4) * 65536))
		else
			len=$((4096 + (RANDOM % 16) * 4096))
			off=$(((RANDOM * 32768 + RANDOM) % ((size - len) / 512) * 512))
		fi
		BM_CMDS+=("write -s $BM_GEN_DIR/chunk $off $len")
	done
}

# bm_gen_writes IMG N SIZE: applies bm_rand_writes to a VMDK.
bm_gen_writes()
{
	bm_rand_writes "$2" "$3"
	bm_qio "$1" vmdk "${BM_CMDS[@]}"
}

bm_gen_base()
{
	local d=$1 size=$2 i
	local mib=$((size >> 20))
	head -c "$size" /dev/urandom >"$d/base.raw" || return 1
	# ~10% holes: one MiB in every ten, at a varying position
	for ((i = 0; i + 10 <= mib; i += 10)); do
		fallocate -p -o $(((i + RANDOM % 10) << 20)) -l 1M "$d/base.raw" || return 1
	done
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$d/base.raw" \
		"$d/base.vmdk"
}

bm_gen_chain4()
{
	local d=$1 size=$2 i prev=base.vmdk
	for i in 1 2 3; do
		bm_delta "$d" "a$i.vmdk" "$prev" || return 1
		bm_gen_writes "$d/a$i.vmdk" 32 "$size" || return 1
		prev=a$i.vmdk
	done
	qemu-img convert -O raw "$d/a3.vmdk" "$d/a3.raw"
}

bm_gen_deep()
{
	local d=$1 size=$2 i prev=base.vmdk name
	for ((i = 1; i <= 31; i++)); do
		name=$(printf 'd%02d.vmdk' "$i")
		bm_delta "$d" "$name" "$prev" || return 1
		if ((i % 3 == 0)); then
			bm_gen_writes "$d/$name" 4 "$size" || return 1
		fi
		prev=$name
	done
	qemu-img convert -O raw "$d/d31.vmdk" "$d/d31.raw"
}

bm_gen_big()
{
	local d=$1 off len cmds=() at=()
	qemu-img create -q -f vmdk "$d/big.vmdk" 2T || return 1
	# offset:length pairs; a few MiB in all, spread over the 2 TiB
	for off in 0:4194304 1099511693312:1048576 1649267441664:262144 \
		2199021158400:2097152; do
		len=${off#*:}
		off=${off%:*}
		head -c "$len" /dev/urandom >"$d/big.$off" || return 1
		cmds+=("write -s $d/big.$off $off $len")
		at+=("$off $d/big.$off")
	done
	bm_qio "$d/big.vmdk" vmdk "${cmds[@]}" || return 1
	printf '%s\n' "${at[@]}" >"$d/big.at"
}

bm_gen_stream()
{
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$1/base.raw" \
		"$1/stream.vmdk"
}

# The VHD chain needs tests/mkvhd (qemu-img cannot write differencing VHDs).
bm_gen_vhd()
{
	local d=$1 mkvhd=$2
	qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$d/base.raw" \
		"$d/base.vhd" || return 1
	[ -x "$mkvhd" ] || { echo "mkvhd not built: no VHD differencing chain"; return 0; }
	if ! { cp --sparse=always "$d/base.raw" "$d/v2.raw" &&
		(cd "$d" && "$mkvhd" child base.vhd v1.vhd) &&
		"$mkvhd" write "$d/v1.vhd" --seed 11 --count 64 --mirror "$d/v2.raw" >/dev/null &&
		(cd "$d" && "$mkvhd" child v1.vhd v2.vhd) &&
		"$mkvhd" write "$d/v2.vhd" --seed 12 --count 64 --mirror "$d/v2.raw" >/dev/null; }; then
		echo "mkvhd failed: no VHD differencing chain"
		rm -f "$d"/v[12].*
	fi
}

# bm_gen DIR SIZE_BYTES MKVHD: builds whatever is missing or stale.
bm_gen()
{
	local d=$1 size=$2 mkvhd=$3 stamp step t0
	stamp="v1 size=$size"
	BM_GEN_DIR=$d
	if [ "$(cat "$d/stamp" 2>/dev/null)" = "$stamp" ]; then
		vd_say "reusing images in $d"
		return 0
	fi
	rm -f "$d"/*.vmdk "$d"/*.vhd "$d"/*.raw "$d"/big.* "$d/stamp"
	RANDOM=4242 # reproducible offsets
	head -c $((BM_CHUNK_MIB << 20)) /dev/urandom >"$d/chunk" || return 1
	for step in base chain4 deep big stream vhd; do
		t0=$(bm_now_ns)
		case $step in
		base | chain4 | deep)
			"bm_gen_$step" "$d" "$size" || { echo "generating $step failed"; return 1; } ;;
		big | stream)
			"bm_gen_$step" "$d" || echo "generating $step failed (section skipped)" ;;
		vhd)
			bm_gen_vhd "$d" "$mkvhd" || echo "generating base.vhd failed (section skipped)" ;;
		esac
		vd_say "generated $step in $(bm_ms_since "$t0") ms"
	done
	echo "$stamp" >"$d/stamp"
}
