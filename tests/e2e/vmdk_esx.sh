#!/usr/bin/env bash
# End-to-end test of ESXi-style VMDK chains through a real FUSE mount.
#
# Chains as ESXi and OVA exports make them (tests/e2e/chains/esx.sh: COWD and
# seSparse deltas over vmfs flat bases, VMware- and qemu-layout streams with a
# hosted delta), with expected raws from the generators' models or qemu-img
# convert. MOUNT/disk and every MOUNT/layers/NN-* are
# compared with them, with the multithreaded loop and with -s; no source file
# may change. A daemonized mount inflates stream grains ahead. Also: a vmfsSparse descriptor whose delta file is missing and a
# truncated stream must fail with one clear error line.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init vmdk_esx
for t in qemu-img qemu-io cmp sha256sum; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

vd_chains_init

. "$(dirname "$0")/chains/esx.sh"
vd_chains_esx
# qemu-img reads COWD chains too: cross-check the generator models once.
qemu-img convert -O raw "$W/cowd/vm-000002.vmdk" "$VD_TMP/q.raw" &&
	vd_check "qemu-img agrees with the COWD model" cmp "$VD_TMP/q.raw" "$E/vm-000002.raw"
rm -f "$VD_TMP/q.raw"
# libvmdk reads the whole COWD chain (delta over the vmfs base): a second
# independent reader of the generator's output.
if command -v vmdkmount >/dev/null; then
	if vd_yal_mount "$W/cowd/vm-000002.vmdk" "$M/vmdkmount"; then
		vd_check "libvmdk's vmdkmount agrees with the COWD model" \
			cmp "$VD_YAL_FILE" "$E/vm-000002.raw"
		vd_umount "$M/vmdkmount"
	else
		vd_fail "vmdkmount could not open the COWD chain"
	fi
fi
mapfile -t SOURCES < <(find "$W" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

vd_check_chains multi
vd_check_chains single

# vdmount daemonizes after reading the partition tables, which starts the
# stream's inflate-ahead worker: the daemon must still inflate ahead of a
# sequential reader (the fork once left it without a worker: 0 ahead).
for s in qstream vmstream; do
	if vd_mount "$W/$s/$s.vmdk" "$M/ahead"; then
		cat "$M/ahead/disk" >/dev/null
		n=$(grep -o '"grains_inflated_ahead": [0-9]*' "$M/ahead/chain.json" | awk '{n += $2} END {print n + 0}')
		if [ "$n" -gt 0 ]; then
			vd_pass "$s: the daemon inflates ahead of a sequential read ($n grains)"
		else
			vd_fail "$s: the daemon inflated no grain ahead of a sequential read"
		fi
		vd_umount "$M/ahead"
	else
		vd_fail "$s: mount"
	fi
done

# A vmfsSparse descriptor whose COWD file is missing; a truncated stream.
mkdir -p "$VD_TMP/neg"
sed 's/vm-000002-delta.vmdk/gone-delta.vmdk/' "$W/cowd/vm-000002.vmdk" >"$VD_TMP/neg/gone.vmdk"
vd_expect_fail "missing COWD extent" "$VD_TMP/neg/gone.vmdk" gone-delta.vmdk \
	'no such file|not found|missing|cannot open'
head -c 300000 "$W/vmstream/vmstream.vmdk" >"$VD_TMP/neg/cut.vmdk"
vd_expect_fail "truncated stream" "$VD_TMP/neg/cut.vmdk" cut.vmdk 'truncated'

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
