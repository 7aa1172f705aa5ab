# shellcheck shell=bash
# Images for scripts/bench.sh (bash; sourced, not run).
#
# Everything lands in one directory ($BM_DIR) so parent hints stay relative
# and every tool resolves the same chains. Each disk comes with the raw file
# of its merged content (what the ceiling serves and the data check compares):
#   base.raw        SIZE, ~90% random data, one MiB in every ten a hole
#   base.vmdk       monolithicSparse made from base.raw
#   a1..a3.vmdk     3 deltas over base.vmdk, random writes in each; a3.raw
#   stream.vmdk     streamOptimized copy of base.raw
#   base.vhd        VHD dynamic copy of base.raw; v1.vhd, v2.vhd differencing
#                   children (tests/mkvhd); v2.raw
#   e001..e254.vmdk 254 deltas over base.vmdk (255 layers), a few writes in
#                   every 16th; e254.raw
#   sp1..spN.vmdk   twoGbMaxExtentSparse 2 TiB, 1,024 extent files each, sp2..
#                   deltas over sp1; a few MiB written at known offsets in each
#                   layer; sp.raw (sparse) replays the same writes, sp.at lists
#                   where (the data check reads there)
#   m01..m64.vmdk   64 monolithicSparse disks, the 64 slices of base.raw
#                   (m01..m64.raw)
#   fa.vmdk         1 TiB monolithicSparse with every grain allocated (sparse
#                   host file; tests/mkfullsparse); fa.raw
#   base.vhdx       VHDX dynamic copy of base.raw; x1.avhdx, x2.avhdx over it (x2.raw)
# bm_gen NAME makes one of them unless a stamp file says it is there with the
# same parameters (so VD_BENCH_DIR can keep them from one run to the next).

BM_CHUNK_MIB=1 # size of the random chunk file the deltas copy from

# bm_gen NAME: builds image set NAME (base chain4 stream vhd deep split multi
# full vhdx) if missing or stale. Sets nothing; fails if the images cannot be
# made (the caller skips the section).
bm_gen()
{
	local name=$1 stamp t0 rc=0
	stamp="v2 $name size=$BM_SIZE $(bm_gen_params "$name") base=$(cat "$BM_DIR/.gen-base" 2>/dev/null)"
	[ "$name" = base ] && stamp="v2 base size=$BM_SIZE"
	[ "$(cat "$BM_DIR/.gen-$name" 2>/dev/null)" = "$stamp" ] && return 0
	[ "$name" = base ] || bm_gen base || return 1
	rm -f "$BM_DIR/.gen-$name"
	vd_say "generating $name images"
	t0=$EPOCHREALTIME
	RANDOM=4242 # reproducible offsets
	(cd "$BM_DIR" && "bm_gen_$name") || rc=1
	if [ $rc -ne 0 ]; then
		bm_note "generating the $name images failed"
		return 1
	fi
	echo "$stamp" >"$BM_DIR/.gen-$name"
	vd_say "generated $name in $(bm_ms_since "$t0") ms"
}

bm_gen_params()
{
	case $1 in
	deep) echo "layers=$BM_DEEP_LAYERS" ;;
	split) echo "layers=$BM_SPLIT_LAYERS grain-aligned" ;;
	multi) echo "disks=$BM_MULTI" ;;
	full) echo "gib=$BM_FULL_GIB" ;;
	tree) echo "files=$BM_TREE_FILES" ;;
	esac
}

# bm_rand_writes N SIZE: sets BM_CMDS to N qemu-io write commands of the chunk
# file at pseudo-random offsets: half grain-aligned 256 KiB runs, half
# unaligned 4-68 KiB runs (they straddle grains). Uses $RANDOM, so the
# sequence continues from one delta to the next.
bm_rand_writes()
{
	local n=$1 size=$2 i off len mib=$(($2 >> 20))
	BM_CMDS=()
	for ((i = 0; i < n; i++)); do
		if ((i % 2 == 0)); then
			len=$((256 << 10))
			off=$(((RANDOM * 32768 + RANDOM) % (mib * 16 - 4) * 65536))
		else
			len=$((4096 + (RANDOM % 16) * 4096))
			off=$(((RANDOM * 32768 + RANDOM) % ((size - len) / 512) * 512))
		fi
		BM_CMDS+=("write -s chunk $off $len")
	done
}

# bm_delta_writes CHILD PARENT N: a VMDK delta naming its parent relatively,
# with N random writes (none when N is 0).
bm_delta_writes()
{
	qemu-img create -q -f vmdk -b "$2" -F vmdk "$1" || return 1
	(($3 > 0)) || return 0
	bm_rand_writes "$3" "$BM_SIZE"
	vd_qemu_io vmdk "$1" "${BM_CMDS[@]}"
}

bm_gen_base()
{
	local i mib=$((BM_SIZE >> 20))
	head -c $((BM_CHUNK_MIB << 20)) /dev/urandom >chunk || return 1
	head -c "$BM_SIZE" /dev/urandom >base.raw || return 1
	for ((i = 0; i + 10 <= mib; i += 10)); do
		fallocate -p -o $(((i + RANDOM % 10) << 20)) -l 1M base.raw || return 1
	done
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse base.raw base.vmdk
}

bm_gen_chain4()
{
	bm_delta_writes a1.vmdk base.vmdk 32 && bm_delta_writes a2.vmdk a1.vmdk 32 &&
		bm_delta_writes a3.vmdk a2.vmdk 32 && qemu-img convert -O raw a3.vmdk a3.raw
}

bm_gen_stream()
{
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized base.raw stream.vmdk
}

# qemu-img cannot write differencing VHDs: tests/mkvhd does.
bm_gen_vhd()
{
	qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on base.raw base.vhd &&
		cp --sparse=always base.raw v2.raw && "$BM_MKVHD" child base.vhd v1.vhd &&
		"$BM_MKVHD" write v1.vhd --seed 11 --count 64 --mirror v2.raw >/dev/null &&
		"$BM_MKVHD" child v1.vhd v2.vhd &&
		"$BM_MKVHD" write v2.vhd --seed 12 --count 64 --mirror v2.raw >/dev/null
}

# The tree the write section untars into a new ext4 (issue 9's "mkfs.ext4 +
# tar x"): BM_TREE_FILES files of 1-256 KiB of random bytes (2,400, about
# 300 MiB, for a 1 GiB disk: a third of the disk at most), 60 per directory,
# sizes drawn from a fixed seed.
bm_gen_tree()
{
	local i size
	rm -rf tree tree.tar
	RANDOM=99
	for ((i = 0; i < BM_TREE_FILES; i++)); do
		((i % 60 == 0)) && mkdir -p "tree/d$((i / 60))"
		size=$(((RANDOM % 256 + 1) * 1024))
		head -c "$size" /dev/urandom >"tree/d$((i / 60))/f$i" || return 1
	done
	tar -cf tree.tar tree && rm -rf tree
}

bm_gen_deep()
{
	local i prev=base.vmdk name n
	rm -f e[0-9][0-9][0-9].vmdk
	for ((i = 1; i < BM_DEEP_LAYERS; i++)); do
		name=$(printf 'e%03d.vmdk' "$i")
		n=0
		((i % 16 == 0)) && n=4
		bm_delta_writes "$name" "$prev" $n || return 1
		prev=$name
	done
	qemu-img convert -O raw "$prev" deep.raw
}

# The split chain: SIZE-independent (2 TiB); the writes go to the first and
# the last extent of each layer and to a few in between, and are replayed in
# the same order into the sparse sp.raw.
bm_gen_split()
{
	local l off len at=() t=$((2 << 40)) prev=
	rm -f sp[0-9]*.vmdk sp.raw sp.at
	truncate -s 2T sp.raw || return 1
	for ((l = 1; l <= BM_SPLIT_LAYERS; l++)); do
		qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse \
			${prev:+-b "$prev" -F vmdk} "sp$l.vmdk" 2T || return 1
		BM_CMDS=()
		# Grain-aligned: qemu 7.2's vmdk driver fills the rest of a
		# grain that a write covers in part (copy-on-write) from the
		# backing file at the offset inside the extent, not inside the
		# disk, so in every extent but the first the head of such a
		# grain reads as the wrong bytes (zeros here) through qemu and
		# vdmount alike, and no model can match it.
		for off in 0 $(((t / 3 + l * 65536 * 3) / 65536 * 65536)) $((t / 2 - 65536 * l)) \
			$((t - (1 << 20))); do
			len=$(((256 << 10) * l))
			((off + len > t)) && len=$((t - off))
			BM_CMDS+=("write -s chunk $off $len")
			dd if=chunk of=sp.raw bs=64K seek="$off" count="$len" conv=notrunc \
				oflag=seek_bytes iflag=count_bytes status=none || return 1
			at+=("$off $len")
		done
		vd_qemu_io vmdk "sp$l.vmdk" "${BM_CMDS[@]}"
		prev=sp$l.vmdk
	done
	printf '%s\n' "${at[@]}" >sp.at
}

bm_gen_multi()
{
	local i slice=$((BM_SIZE / BM_MULTI)) name
	rm -f m[0-9][0-9].vmdk m[0-9][0-9].raw
	for ((i = 0; i < BM_MULTI; i++)); do
		name=$(printf 'm%02d' $((i + 1)))
		dd if=base.raw of="$name.raw" bs=64K skip=$((i * slice)) count="$slice" \
			iflag=skip_bytes,count_bytes conv=sparse status=none || return 1
		qemu-img convert -f raw -O vmdk "$name.raw" "$name.vmdk" || return 1
	done
}

bm_gen_full()
{
	"$BM_MKFULL" fa.vmdk fa.raw "$BM_FULL_GIB"
}

# tests/mkvhdx writes the .avhdx children (qemu-img cannot) and their merged
# raws (--model, over the layer below's).
bm_gen_vhdx()
{
	local size
	size=$(stat -c %s base.raw) || return 1
	qemu-img convert -f raw -O vhdx -o subformat=dynamic base.raw base.vhdx &&
		"$BM_MKVHDX" x1.avhdx "$size" --parent base.vhdx --seed 21 --writes 64 \
			--model x1.raw --over base.raw >/dev/null &&
		"$BM_MKVHDX" x2.avhdx "$size" --parent x1.avhdx --seed 22 --writes 64 \
			--model x2.raw --over x1.raw >/dev/null
}

# A 32-layer .avhdx chain over base.vhdx (issue 11: "32-layer chains read
# about as fast as one layer"): y01..y31, 16 random writes each; only the
# top's merged raw is kept (each model is made over the one below, then
# that one is removed).
bm_gen_vhdx32()
{
	local size i prev=base.vhdx below=base.raw name
	size=$(stat -c %s base.raw) || return 1
	[ -s base.vhdx ] || qemu-img convert -f raw -O vhdx -o subformat=dynamic base.raw base.vhdx ||
		return 1
	rm -f y[0-9][0-9].avhdx y[0-9][0-9].raw
	for ((i = 1; i < 32; i++)); do
		name=$(printf 'y%02d' "$i")
		"$BM_MKVHDX" "$name.avhdx" "$size" --parent "$prev" --seed $((100 + i)) --writes 16 \
			--model "$name.raw" --over "$below" >/dev/null || return 1
		[ "$below" = base.raw ] || rm -f "$below"
		prev=$name.avhdx below=$name.raw
	done
	mv "$below" y32.raw
}
