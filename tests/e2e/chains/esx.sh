# ESXi-style VMDK chains for the end-to-end tests (sourced by
# tests/e2e/vmdk_esx.sh and nbd_esx.sh; not a test itself).
#
# Chains as ESXi and OVA exports make them, built with our generators (qemu-img
# cannot write COWD, seSparse or VMware-layout streams):
#   - cowd: vmfs flat base (hand-written descriptor) + 2 vmfsSparse (COWD) deltas;
#   - sesparse: vmfs flat base + 2 seSparse deltas (data, zero and unmapped grains);
#   - vmstream: VMware-layout streamOptimized base (mkstream) + a hosted
#     sparse delta written by qemu-io;
#   - qstream: qemu-layout streamOptimized base (qemu-img convert) + a hosted
#     sparse delta.
# Expected raws: the generators' models (each layer over its parent's model)
# for COWD/seSparse, qemu-img convert -O raw of each layer for the stream chains
# (qemu follows the backing chain).
#
# Uses the caller's W, E, EXPECT and CHAINS, and the generators in $VD_BUILD/tests.

# vmfs_base DIR NAME SECTORS CID: random flat extent + a createType="vmfs" descriptor.
vmfs_base()
{
	local d=$1 n=$2 s=$3 cid=$4
	head -c $((s * 512)) /dev/urandom >"$d/$n-flat.vmdk"
	cat >"$d/$n.vmdk" <<EOF
# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=$cid
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"

# Extent description
RW $s VMFS "$n-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.virtualHWVersion = "14"
EOF
	cp "$d/$n-flat.vmdk" "$E/$n.raw"
	EXPECT[$d/$n.vmdk]=$E/$n.raw
}

build_cowd()
{
	local d=$W/cowd s=81920 # 40 MiB: 10 GTs at grain 1
	mkdir -p "$d"
	vmfs_base "$d" vm $s 1a2b3c4d
	(cd "$d" && "$TOOLS/mkcowd" vm-000001-delta.vmdk $s 1 \
		--write 0:100000:1 --write 5000000:70000:2 --write 20000001:1:3 \
		--write $((s * 512 - 512)):512:4 --model "$E/vm-000001.raw" --over "$E/vm.raw" \
		--descriptor vm-000001.vmdk --parent vm.vmdk --parent-cid 1a2b3c4d --cid 2b3c4d5e &&
		"$TOOLS/mkcowd" vm-000002-delta.vmdk $s 1 \
			--write 50000:100000:5 --write 5010000:3000000:6 --write 41000000:4096:7 \
			--model "$E/vm-000002.raw" --over "$E/vm-000001.raw" \
			--descriptor vm-000002.vmdk --parent vm-000001.vmdk --parent-cid 2b3c4d5e \
			--cid 3c4d5e6f) || vd_die "mkcowd"
	EXPECT[$d/vm-000001.vmdk]=$E/vm-000001.raw
	EXPECT[$d/vm-000002.vmdk]=$E/vm-000002.raw
	CHAINS+=("cowd|$d/vm.vmdk $d/vm-000001.vmdk $d/vm-000002.vmdk")
}

build_sesparse()
{
	local d=$W/ses s=131073 # 64 MiB + 1 sector: a partial last grain
	mkdir -p "$d"
	vmfs_base "$d" se $s 5e5e5e5e
	(cd "$d" && "$TOOLS/mksesparse" se-000001-sesparse.vmdk $s \
		--write 0:1048576:11 --write 30000000:200000:12 --zero 2097152:65536 \
		--unmap 4194304:8192 --write $((s * 512 - 512)):512:13 --cluster-start 4090 \
		--model "$E/se-000001.raw" --over "$E/se.raw" --descriptor se-000001.vmdk \
		--parent se.vmdk --parent-cid 5e5e5e5e --cid 6f6f6f6f &&
		"$TOOLS/mksesparse" se-000002-sesparse.vmdk $s \
			--write 500000:1000000:14 --zero 30000000:4096 --unmap 0:4096 \
			--write 60000000:8192:15 \
			--model "$E/se-000002.raw" --over "$E/se-000001.raw" \
			--descriptor se-000002.vmdk --parent se-000001.vmdk --parent-cid 6f6f6f6f \
			--cid 70707070) || vd_die "mksesparse"
	EXPECT[$d/se-000001.vmdk]=$E/se-000001.raw
	EXPECT[$d/se-000002.vmdk]=$E/se-000002.raw
	CHAINS+=("sesparse|$d/se.vmdk $d/se-000001.vmdk $d/se-000002.vmdk")
}

# stream_chain NAME BASE-MAKER: BASE-MAKER writes $d/NAME.vmdk from $d/src.raw.
stream_chain()
{
	local name=$1 maker=$2 d=$W/$1
	mkdir -p "$d"
	{
		head -c 3M /dev/urandom
		head -c 1M /dev/zero
		yes "vdmount stream" | head -c 4M
		head -c 2M /dev/zero
		head -c 1000000 /dev/urandom
	} >"$d/src.raw"
	truncate -s 11489792 "$d/src.raw" # 22441 sectors: a partial last grain
	$maker "$d/src.raw" "$d/$name.vmdk" || vd_die "$maker"
	rm -f "$d/src.raw"
	(cd "$d" && qemu-img create -q -f vmdk -b "$name.vmdk" -F vmdk "$name-1.vmdk") ||
		vd_die "qemu-img create -b $name.vmdk"
	qemu-io -f vmdk -c 'write -P 0x33 1M 300K' -c 'write -P 0x34 3M 1536K' \
		-c 'write -P 0x35 11000000 4096' "$d/$name-1.vmdk" >/dev/null || vd_die "qemu-io"
	CHAINS+=("$name|$d/$name.vmdk $d/$name-1.vmdk")
}

qemu_stream()
{
	qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$1" "$2"
}

# vd_chains_esx: builds every chain above and fills CHAINS and EXPECT.
vd_chains_esx()
{
	TOOLS=${VD_BUILD:?VD_BUILD not set}/tests
	local t
	for t in mkcowd mksesparse mkstream; do
		[ -x "$TOOLS/$t" ] || vd_die "generator $TOOLS/$t not built"
	done
	vd_say "building ESXi-style chains in $W"
	build_cowd
	build_sesparse
	stream_chain vmstream "$TOOLS/mkstream"
	stream_chain qstream qemu_stream
	vd_expect_convert
}
