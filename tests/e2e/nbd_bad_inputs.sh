#!/usr/bin/env bash
# Hostile and broken inputs through nbdkit-vdmount-plugin (the cases of
# tests/e2e/chains/bad.sh): nbdkit must refuse each at startup with exactly
# one error line naming the file and the problem, without a signal, a hang or
# a sanitizer report. force=true serves the CID-mismatched delta (its exports
# say so). A read that fails (a NOACCESS extent) is an NBD error for that
# request, logged by nbdkit, and the server goes on. Confinement works as
# with vdmount (allow-outside=, search=, parent=). No source file changes.
#
# Env: VD_NBD_PLUGIN, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_nbd_init nbd_bad_inputs
for t in qemu-img qemu-io od dd; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done

W=$VD_TMP/img
mkdir -p "$W"
. "$(dirname "$0")/chains/bad.sh"
vd_bad_cases

# A descriptor whose second extent is NOACCESS: it opens, its reads fail.
head -c 1M /dev/urandom >na-a.bin
cat >na.vmdk <<EOD
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "na-a.bin" 0
NOACCESS 2048 FLAT "na-gone.bin" 0

# The Disk Data Base
#DDB
ddb.adapterType = "ide"
EOD

# Confinement (disk/confine.h), as with vdmount: an extent outside the
# directories of the files given is refused unless allow-outside=true;
# search=DIR finds a parent that moved away, parent=FILE one that was renamed.
O=$VD_TMP/outside
mkdir -p "$O" conf lone renamed
head -c 1M /dev/urandom >"$O/secret.raw"
printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\nRW 2048 FLAT "%s" 0\n' \
	"$O/secret.raw" >conf/abs.vmdk
cp chain/snap.vmdk lone/
cp chain/base.vmdk renamed/old-base.vmdk

mapfile -t SOURCES < <(find "$W" "$O" -type f | sort)
vd_sums_save "$VD_TMP/sources.sha256" "${SOURCES[@]}"

for c in "${CASES[@]}"; do
	IFS='|' read -r desc img needle problem <<<"$c"
	vd_nbd_refused "$desc" "$needle" "$problem" file="$img"
done

vd_nbd_refused "extent outside the image directories" secret.raw "allow-outside" \
	file=conf/abs.vmdk
if vd_nbd_serve outside file=conf/abs.vmdk allow-outside=true; then
	vd_check "allow-outside=true: the named file's bytes" \
		vd_nbd_same "$(vd_nbd_uri disk)" "$O/secret.raw"
	vd_check "allow-outside=true: nbdkit stops cleanly" vd_nbd_stop
else
	vd_fail "allow-outside=true: nbdkit serves conf/abs.vmdk"
fi
for how in "search=$W/chain" "parent=$W/renamed/old-base.vmdk"; do
	if vd_nbd_serve moved file=lone/snap.vmdk "$how"; then
		vd_check "${how%%=*}=: finds the parent" \
			vd_nbd_same "$(vd_nbd_uri disk)" "$VD_TMP/snap.raw"
		vd_check "${how%%=*}=: nbdkit stops cleanly" vd_nbd_stop
	else
		vd_fail "${how%%=*}=: nbdkit serves lone/snap.vmdk"
	fi
done

# force=true serves the CID-mismatched delta, and says so.
if vd_nbd_serve force file=cid/snap.vmdk force=true; then
	vd_check "force=true: disk" vd_nbd_same "$(vd_nbd_uri disk)" "$VD_TMP/snap.raw"
	vd_check "force=true: the export description names the warning" \
		bash -c 'nbdinfo --list "$1" | grep -q "description: .*1 validation warning (forced)"' _ \
		"$(vd_nbd_uri '')"
	vd_check "force=true: nbdkit stops cleanly" vd_nbd_stop
else
	vd_fail "force=true: nbdkit serves the CID-mismatched delta"
fi

# Reads of the NOACCESS extent fail (EIO) and are logged; others still work.
# One request at a time (qemu-io): nbdkit 1.32 itself aborts when a client
# hangs up with requests in flight (its file plugin too), which nbdcopy does
# after a failed read.
nbd_read()
{
	local out
	out=$(qemu-io -r -f raw -c "read $2 $3" "$1" 2>&1) || return 1
	case "$out" in *failed* | *error*) return 1 ;; esac
}
if vd_nbd_serve na file=na.vmdk; then
	vd_check "NOACCESS: a read there fails" bash -c "$(declare -f nbd_read); ! nbd_read \"\$1\" 1M 4k" _ \
		"$(vd_nbd_uri disk)"
	vd_check "NOACCESS: nbdkit logged an error naming the file" \
		grep -q 'error: .*na.vmdk: read at offset 1048576 falls in a NOACCESS extent' \
		"$VD_TMP/nbdkit.err"
	vd_check "NOACCESS: the readable extent still reads" nbd_read "$(vd_nbd_uri disk)" 0 1M
	vd_check "NOACCESS: nbdkit stops cleanly" vd_nbd_stop
else
	vd_fail "NOACCESS: nbdkit serves na.vmdk"
fi

vd_check "source files unchanged (sha256)" vd_sums_check "$VD_TMP/sources.sha256"
vd_finish
