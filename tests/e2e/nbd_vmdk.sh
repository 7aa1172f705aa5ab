#!/usr/bin/env bash
# End-to-end test of nbdkit-vdmount-plugin over the VMDK chains of
# tests/e2e/chains/vmdk.sh (every flavour qemu makes, vmfs, ZERO/RDONLY
# extents): for each chain, `nbdkit -U - vdmount file=TOP --run 'nbdcopy
# "$uri" out'` and nbdcopy of disk and every layers/NN-* export equal the raw
# qemu-img convert makes of that layer (or the hand-built one), nbdinfo --list
# shows every layer, and nbdinfo --map agrees with qemu-img map. Then: several
# files (<stem>/... names, clashing stems), layer=N, TCP on 127.0.0.1 with
# nbdcopy --connections=4, -D vdmount.verbose=1, an unknown export, refused
# parameters, and that no source file changed.
#
# Env: VD_NBD_PLUGIN, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_nbd_init nbd_vmdk
for t in qemu-img qemu-io cmp dd; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

vd_chains_init
. "$(dirname "$0")/chains/vmdk.sh"
vd_chains_vmdk
mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

# Sparse formats: the same runs as qemu. Flat extents: qemu also sees the
# host file's holes; vmfs and ZERO extents: qemu reads those descriptors wrongly.
declare -A NBD_MAP=([sparse]=exact [twogb-sparse]=exact [zeroed-grain]=exact
	[flat]=covers [twogb-flat]=covers)
vd_nbd_check_chains

SP=$W/sparse
sp=("$SP/sp.vmdk" "$SP/sp-1.vmdk" "$SP/sp-2.vmdk" "$SP/sp-3.vmdk")
fl=("$W/flat/fl.vmdk" "$W/flat/fl-1.vmdk")

# Several files: <stem>/disk, <stem>/layers/...; a second file with the same
# stem (the same chain through a linked directory) becomes <stem>-2/; the
# default export is the first file's disk.
ln -s sparse "$W/sparse-link"
if vd_nbd_serve multi file="$SP/sp-3.vmdk" file="${fl[1]}" file="$W/sparse-link/sp-3.vmdk"; then
	vd_check "several files: nbdinfo --list" diff \
		<(vd_nbd_names sp-3/ "${sp[@]}"; vd_nbd_names fl-1/ "${fl[@]}"
		  vd_nbd_names sp-3-2/ "${sp[@]}") <(vd_nbd_list)
	vd_check "several files: default export = sp-3/disk" \
		vd_nbd_same "$(vd_nbd_uri '')" "${EXPECT[${sp[3]}]}"
	vd_check "several files: fl-1/layers/01-fl" \
		vd_nbd_same "$(vd_nbd_uri fl-1/layers/01-fl)" "${EXPECT[${fl[0]}]}"
	vd_check "several files: sp-3-2/layers/02-sp-1" \
		vd_nbd_same "$(vd_nbd_uri sp-3-2/layers/02-sp-1)" "${EXPECT[${sp[1]}]}"
	vd_check "several files: nbdkit stops cleanly" vd_nbd_stop
else
	vd_fail "several files: nbdkit serves them"
fi

# layer=N: the default export is that layer; the others are still listed.
if vd_nbd_serve layer file="${sp[3]}" layer=2; then
	vd_check "layer=2: default export = layers/02-sp-1" \
		vd_nbd_same "$(vd_nbd_uri '')" "${EXPECT[${sp[1]}]}"
	vd_check "layer=2: disk still served" \
		vd_nbd_same "$(vd_nbd_uri disk)" "${EXPECT[${sp[3]}]}"
	vd_check "layer=2: nbdkit stops cleanly" vd_nbd_stop
else
	vd_fail "layer=2: nbdkit serves the chain"
fi

# TCP on 127.0.0.1, four connections (the plugin offers multi-conn).
tcp_ok=0
for try in 1 2 3; do
	port=$((20000 + RANDOM % 30000))
	rm -f "$VD_TMP/tcp.raw"
	if timeout -k 5 300 nbdkit -v -i 127.0.0.1 -p $port "$VD_NBD_PLUGIN" \
		file="${sp[3]}" --run "nbdcopy --connections=4 --threads=4 \
			nbd://127.0.0.1:$port/disk '$VD_TMP/tcp.raw'" 2>"$VD_TMP/nbdkit.err" </dev/null
	then
		tcp_ok=1
		break
	fi
	grep -q 'in use' "$VD_TMP/nbdkit.err" || break
done
if [ $tcp_ok = 1 ]; then
	vd_check "TCP, nbdcopy --connections=4: same bytes" vd_same_sparse "$VD_TMP/tcp.raw" "${EXPECT[${sp[3]}]}"
	n=$(grep -c 'accepted connection' "$VD_TMP/nbdkit.err")
	vd_check "TCP: nbdcopy used 4 connections ($n)" test "$n" -ge 4
else
	vd_fail "TCP, nbdcopy --connections=4"
	sed 's/^/    | /' "$VD_TMP/nbdkit.err" | tail -20
fi
rm -f "$VD_TMP/tcp.raw"

# -D vdmount.verbose=1 (with -v): the chain's layers and each export opened.
if vd_nbd_run 'nbdinfo "$uri" >/dev/null' -v -D vdmount.verbose=1 file="${sp[3]}"; then
	vd_check "-D vdmount.verbose=1: layers logged" \
		grep -q "debug: .*sp-3.vmdk: layer 4: .*sp-3.vmdk (vmdk monolithicSparse" "$VD_TMP/nbdkit.err"
	vd_check "-D vdmount.verbose=1: export logged" \
		grep -q "export 'disk': .*merged disk, 4 layers" "$VD_TMP/nbdkit.err"
else
	vd_fail "-D vdmount.verbose=1: nbdkit"
fi
vd_nbd_run 'nbdinfo "$uri" >/dev/null' -v file="${sp[3]}"
vd_check "without the flag: no layer lines" bash -c '! grep -q "layer 4: " "$1"' _ "$VD_TMP/nbdkit.err"

# An export that does not exist: refused, and the server goes on.
if vd_nbd_serve bad file="${sp[3]}"; then
	vd_check "unknown export refused" bash -c '! nbdinfo "$1" >/dev/null 2>&1' _ \
		"$(vd_nbd_uri layers/nope)"
	vd_check "unknown export: nbdkit names it" grep -q "no export named 'layers/nope'" \
		"$VD_TMP/nbdkit.err"
	vd_check "unknown export: the server still answers" \
		vd_nbd_same "$(vd_nbd_uri layers/01-sp)" "${EXPECT[${sp[0]}]}"
	vd_check "unknown export: nbdkit stops cleanly" vd_nbd_stop
else
	vd_fail "nbdkit serves sp-3"
fi

vd_nbd_refused "delta= without write= refused" delta= "only with write=" file="${sp[3]}" \
	delta=x.vmdk
vd_nbd_refused "layer=0 refused" layer=0 "numbered from 1" file="${sp[3]}" layer=0
vd_nbd_refused "layer=5 of 4 refused" sp-3.vmdk "layer=5: .* has 4 layers" file="${sp[3]}" layer=5
vd_nbd_refused "layer=x refused" layer "number" file="${sp[3]}" layer=x
vd_nbd_refused "unknown parameter refused" bogus "unknown parameter" file="${sp[3]}" bogus=1
vd_nbd_refused "no file= refused" file=IMAGE "required" force=true

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
