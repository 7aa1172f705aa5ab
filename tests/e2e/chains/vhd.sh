# VHD chains for the end-to-end tests (sourced by tests/e2e/vhd_chain.sh and
# nbd_vhd.sh; not a test itself).
#
# qemu-made fixed and dynamic disks (expected content from `qemu-img convert
# -f vpc`), a 3-layer and a 16-layer differencing chain made by mkvhd (random
# sector-granular writes, runs ending mid-bitmap-byte, whole and straddled
# blocks; expected content from mkvhd's --mirror raw models) and a
# differencing child over a qemu dynamic base.
#
# Uses the caller's W, E, EXPECT and CHAINS, and $MKVHD.

mkv()
{
	"$MKVHD" "$@" || vd_die "mkvhd $*"
}

qvpc()
{
	local img=$1
	shift
	local args=() c
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f vpc "${args[@]}" "$img" >/dev/null || vd_die "qemu-io $* on $img"
}

# A qemu-made disk of subformat $1 with a few patterns; expected from convert.
build_qemu()
{
	local sub=$1 d=$W/q$1
	mkdir -p "$d"
	qemu-img create -q -f vpc -o subformat="$sub" "$d/q-$sub.vhd" 24M || vd_die "qemu-img"
	qvpc "$d/q-$sub.vhd" "write -P 0x11 0 1M" "write -P 0x22 3M 4097k" \
		"write -P 0x33 20M 512" "write -P 0x44 $((2 * 1024 * 1024 - 512)) 1536"
	EXPECT[$d/q-$sub.vhd]=$E/q-$sub.raw
	qemu-img convert -f vpc -O raw "$d/q-$sub.vhd" "$E/q-$sub.raw" || vd_die "convert"
	CHAINS+=("qemu-$sub|$d/q-$sub.vhd")
}

# build_diff NAME DEPTH SIZE BLOCK COUNT: a writer-made chain of DEPTH layers.
build_diff()
{
	local name=$1 depth=$2 size=$3 block=$4 count=$5 d=$W/$1 i prev layers
	mkdir -p "$d"
	prev=$d/$name-01.vhd
	mkv dynamic "$prev" "$size" --block "$block"
	: >"$E/$name-01.raw"
	mkv write "$prev" --seed 1 --count "$count" --mirror "$E/$name-01.raw"
	EXPECT[$prev]=$E/$name-01.raw
	layers=$prev
	for ((i = 2; i <= depth; i++)); do
		local cur
		cur=$d/$name-$(printf %02d $i).vhd
		mkv child "$prev" "$cur"
		cp "${EXPECT[$prev]}" "$E/$(basename "$cur" .vhd).raw"
		EXPECT[$cur]=$E/$(basename "$cur" .vhd).raw
		mkv write "$cur" --seed "$i" --count "$count" --max-len 40 --mirror "${EXPECT[$cur]}"
		layers="$layers $cur"
		prev=$cur
	done
	CHAINS+=("$name|$layers")
}

# A child over a qemu dynamic base.
build_qchild()
{
	local d=$W/qchild
	mkdir -p "$d"
	qemu-img create -q -f vpc -o subformat=dynamic "$d/qbase.vhd" 16M || vd_die "qemu-img"
	qvpc "$d/qbase.vhd" "write -P 0x11 0 1M" "write -P 0x55 5M 3M"
	qemu-img convert -f vpc -O raw "$d/qbase.vhd" "$E/qbase.raw" || vd_die "convert"
	EXPECT[$d/qbase.vhd]=$E/qbase.raw
	mkv child "$d/qbase.vhd" "$d/qtop.vhd"
	cp "$E/qbase.raw" "$E/qtop.raw"
	EXPECT[$d/qtop.vhd]=$E/qtop.raw
	mkv write "$d/qtop.vhd" --seed 77 --count 60 --mirror "$E/qtop.raw"
	CHAINS+=("qchild|$d/qbase.vhd $d/qtop.vhd")
}

# vd_chains_vhd: builds every chain above and fills CHAINS and EXPECT.
vd_chains_vhd()
{
	vd_say "building VHD chains in $W"
	build_qemu fixed
	build_qemu dynamic
	build_diff diff3 3 $((12 * 1024 * 1024 + 3 * 512)) $((512 * 1024)) 80
	build_diff diff16 16 $((4 * 1024 * 1024)) $((64 * 1024)) 25
	build_qchild
}
