# VMDK chains qemu can make, for the end-to-end tests (sourced by
# tests/e2e/mount_vmdk.sh and nbd_vmdk.sh; not a test itself).
#
# One chain per VMDK flavour qemu can make (plus hand-written vmfs and
# ZERO/RDONLY descriptors); the layers get patterns and random data (writes
# straddling grains, odd virtual sizes, the 2 GiB extent boundary). Where qemu
# reads a descriptor wrongly (vmfs sizes, ZERO/RDONLY extents; Virtual Disk Format 5.0, extent descriptions)
# the expected raw is built here; every other layer's is qemu-img convert's.
#
# Uses the caller's W (images), E (expected raws), EXPECT and CHAINS (see
# vd_check_chains in scripts/lib.sh).

qio()
{
	vd_qemu_io vmdk "$@"
}

# rnd IMG OFF LEN [EXP]: random data at OFF into IMG (and into the raw EXP).
rnd()
{
	local img=$1 off=$2 len=$3 exp=${4:-}
	head -c "$len" /dev/urandom >"$VD_TMP/chunk"
	qio "$img" "write -s $VD_TMP/chunk $off $len"
	if [ -n "$exp" ]; then
		dd if="$VD_TMP/chunk" of="$exp" bs=64K seek="$off" oflag=seek_bytes conv=notrunc \
			status=none
	fi
}

mk()
{
	qemu-img create -q -f vmdk "$@" || vd_die "qemu-img create $*"
}

# delta DIR/NAME PARENT [SIZE [qemu-img options...]]: a child naming its
# parent by a relative hint (both in the same directory).
delta()
{
	local img=$1 parent=$2 size=${3:-}
	shift 2
	[ $# -gt 0 ] && shift
	(cd "$(dirname "$img")" &&
		mk -b "$(basename "$parent")" -F vmdk "$@" "$(basename "$img")" $size)
}

build_sparse()
{
	local d=$W/sparse
	mkdir -p "$d"
	mk "$d/sp.vmdk" 104858112 # not a whole number of 64 KiB grains
	qio "$d/sp.vmdk" "write -P 0x11 0 1M" "write -P 0x12 3M 4096"
	rnd "$d/sp.vmdk" 65000 70000
	rnd "$d/sp.vmdk" $((104858112 - 3000)) 3000
	delta "$d/sp-1.vmdk" "$d/sp.vmdk"
	qio "$d/sp-1.vmdk" "write -P 0x22 512K 128K" "write -P 0x23 1000 100"
	rnd "$d/sp-1.vmdk" $((10 * 1048576 + 300)) 200000
	delta "$d/sp-2.vmdk" "$d/sp-1.vmdk"
	rnd "$d/sp-2.vmdk" 65000 70000
	rnd "$d/sp-2.vmdk" $((104858112 - 70000)) 70000
	qio "$d/sp-2.vmdk" "write -z 2M 64K"
	delta "$d/sp-3.vmdk" "$d/sp-2.vmdk"
	rnd "$d/sp-3.vmdk" 131072 65536
	qio "$d/sp-3.vmdk" "write -P 0x33 20M 1M"
	CHAINS+=("sparse|$d/sp.vmdk $d/sp-1.vmdk $d/sp-2.vmdk $d/sp-3.vmdk")
}

build_twogb_sparse()
{
	local d=$W/tgs g2=$((2 * 1024 * 1024 * 1024))
	mkdir -p "$d"
	mk -o subformat=twoGbMaxExtentSparse "$d/tgs.vmdk" 5G
	rnd "$d/tgs.vmdk" $((g2 - 4096)) 8192
	rnd "$d/tgs.vmdk" 0 65536
	qio "$d/tgs.vmdk" "write -P 0x44 $((2 * g2 + 100)) 5000" "write -P 0x45 $((5 * g2 / 2 - 65536)) 65536"
	delta "$d/tgs-1.vmdk" "$d/tgs.vmdk"
	rnd "$d/tgs-1.vmdk" $((g2 - 1000)) 2000
	rnd "$d/tgs-1.vmdk" $((2 * g2 - 70000)) 140000
	CHAINS+=("twogb-sparse|$d/tgs.vmdk $d/tgs-1.vmdk")
}

build_flat()
{
	local d=$W/flat
	mkdir -p "$d"
	mk -o subformat=monolithicFlat "$d/fl.vmdk" 52429312
	rnd "$d/fl.vmdk" 0 1048576
	rnd "$d/fl.vmdk" $((52429312 - 10000)) 10000
	delta "$d/fl-1.vmdk" "$d/fl.vmdk"
	rnd "$d/fl-1.vmdk" 65000 70000
	qio "$d/fl-1.vmdk" "write -P 0x55 $((52429312 - 512)) 512"
	CHAINS+=("flat|$d/fl.vmdk $d/fl-1.vmdk")
}

build_twogb_flat()
{
	local d=$W/tgf g2=$((2 * 1024 * 1024 * 1024))
	mkdir -p "$d"
	mk -o subformat=twoGbMaxExtentFlat "$d/tgf.vmdk" 5G
	rnd "$d/tgf.vmdk" $((g2 - 4096)) 8192
	rnd "$d/tgf.vmdk" $((5 * g2 / 2 - 4096)) 4096
	delta "$d/tgf-1.vmdk" "$d/tgf.vmdk"
	rnd "$d/tgf-1.vmdk" $((g2 - 65536)) 131072
	qio "$d/tgf-1.vmdk" "write -P 0x66 1M 1M"
	CHAINS+=("twogb-flat|$d/tgf.vmdk $d/tgf-1.vmdk")
}

# vmfs: qemu cannot create it and sizes it wrongly, so the expected raws are
# built here: the base is its flat file, the delta is patched alongside.
build_vmfs()
{
	local d=$W/vmfs n=20482 # sectors; not a whole number of grains
	mkdir -p "$d"
	head -c $((n * 512)) /dev/urandom >"$d/vm-flat.vmdk"
	cat >"$d/vm.vmdk" <<EOF
# Disk DescriptorFile
version=1
CID=1a2b3c4d
parentCID=ffffffff
createType="vmfs"

# Extent description
RW $n VMFS "vm-flat.vmdk"

# The Disk Data Base
#DDB
ddb.adapterType = "lsilogic"
ddb.virtualHWVersion = "13"
EOF
	cp "$d/vm-flat.vmdk" "$E/vm.raw"
	EXPECT[$d/vm.vmdk]=$E/vm.raw
	delta "$d/vm-1.vmdk" "$d/vm.vmdk" $((n * 512))
	cp "$E/vm.raw" "$E/vm-1.raw"
	rnd "$d/vm-1.vmdk" 65000 70000 "$E/vm-1.raw"
	rnd "$d/vm-1.vmdk" $((n * 512 - 1024)) 1024 "$E/vm-1.raw"
	EXPECT[$d/vm-1.vmdk]=$E/vm-1.raw
	CHAINS+=("vmfs|$d/vm.vmdk $d/vm-1.vmdk")
}

build_zeroed()
{
	local d=$W/zg
	mkdir -p "$d"
	mk "$d/zg.vmdk" 16M
	qio "$d/zg.vmdk" "write -P 0x5a 0 16M"
	delta "$d/zg-1.vmdk" "$d/zg.vmdk" "" -o zeroed_grain=on
	qio "$d/zg-1.vmdk" "write -z 1M 256K" "write -z 4M 64K" "write -z 8M 1M"
	qio "$d/zg-1.vmdk" "write -z $((12 * 1048576 + 4096)) 8192"
	rnd "$d/zg-1.vmdk" $((8 * 1048576 + 65536)) 1000
	CHAINS+=("zeroed-grain|$d/zg.vmdk $d/zg-1.vmdk")
}

# FLAT, RDONLY FLAT, ZERO and FLAT at an offset: qemu skips ZERO/RDONLY lines.
build_zero_extent()
{
	local d=$W/ze
	mkdir -p "$d"
	head -c 1M /dev/urandom >"$d/ze-a.bin"
	head -c 2M /dev/urandom >"$d/ze-b.bin"
	head -c 3M /dev/urandom >"$d/ze-c.bin"
	cat >"$d/ze.vmdk" <<EOF
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "ze-a.bin" 0
RDONLY 4096 FLAT "ze-b.bin" 0
RW 3000 ZERO
RW 2049 FLAT "ze-c.bin" 1024

# The Disk Data Base
#DDB
ddb.adapterType = "ide"
EOF
	{
		cat "$d/ze-a.bin" "$d/ze-b.bin"
		head -c $((3000 * 512)) /dev/zero
		tail -c +$((1024 * 512 + 1)) "$d/ze-c.bin" | head -c $((2049 * 512))
	} >"$E/ze.raw"
	EXPECT[$d/ze.vmdk]=$E/ze.raw
	CHAINS+=("zero-extent|$d/ze.vmdk")
}

# vd_chains_vmdk: builds every chain above and fills CHAINS and EXPECT.
vd_chains_vmdk()
{
	vd_say "building VMDK chains in $W"
	build_sparse
	build_twogb_sparse
	build_flat
	build_twogb_flat
	build_vmfs
	build_zeroed
	build_zero_extent
	vd_expect_convert
}
