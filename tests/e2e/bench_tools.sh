#!/usr/bin/env bash
# Smoke test of scripts/bench.sh's machinery, in seconds and without
# measuring anything: the ceiling builds warning-free; every installed
# contender (vdmount, the ceiling, qemu-storage-daemon, vmdkmount, the raw
# file) serves a small 2-layer chain, and two disks at once where it can,
# byte for byte equal to the raw files, and leaves no mount and no process
# behind; so do the NBD ones (the nbdkit plugin, nbdkit's file plugin,
# qemu-nbd); a row runs its alternated rounds and the table shows it with its
# data check; scripts/bench/targets.tsv parses and names only known metrics;
# bench.sh itself parses.
#
# Env: VDMOUNT, VD_NBD_PLUGIN (ctest sets them). Exit 77 = skipped.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
. "$src/scripts/lib.sh"
vd_e2e_init bench_tools
for t in qemu-img qemu-io cc pkg-config; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
. "$src/scripts/bench/tools.sh"
. "$src/scripts/bench/measure.sh"

vd_check "bench.sh parses" bash -n "$src/scripts/bench.sh"
BM_DIR=$VD_TMP/img
mkdir -p "$BM_DIR"
BM_CEILING=$VD_TMP/ceiling
vd_check "the ceiling builds with -Werror" bm_build_ceiling "$src/scripts/bench/ceiling.c" \
	"$BM_CEILING"
vd_check "targets.tsv parses" bm_targets_load "$src/scripts/bench/targets.tsv"
for t in "${BM_TARGETS[@]}"; do
	pat=${t%% *}
	known=
	for m in "${!BM_M_LABEL[@]}"; do
		# shellcheck disable=SC2053 # the metric part is a glob
		[[ $m == ${pat#*.} ]] && known=1
	done
	[ -n "$known" ] || vd_fail "targets.tsv: $pat names no metric of measure.sh"
done

# Two disks: a 2-layer chain and a single image.
cd "$BM_DIR" || exit 1
qemu-img create -q -f vmdk b.vmdk 8M && qemu-io -f vmdk -c 'write -P 0x11 0 3M' b.vmdk >/dev/null &&
	qemu-img create -q -f vmdk -b b.vmdk -F vmdk t.vmdk &&
	qemu-io -f vmdk -c 'write -P 0x22 1M 64k' -c 'write -P 0x33 7M 4k' t.vmdk >/dev/null &&
	qemu-img convert -O raw t.vmdk t.raw && qemu-img create -q -f vmdk s.vmdk 4M &&
	qemu-io -f vmdk -c 'write -P 0x44 512k 1M' s.vmdk >/dev/null &&
	qemu-img convert -O raw s.vmdk s.raw || vd_die "cannot make the images"
cd / || exit 1
bm_disk one vmdk "2-layer chain" "$BM_DIR/t.vmdk" "$BM_DIR/t.raw" "$BM_DIR/b.vmdk $BM_DIR/t.vmdk"
bm_disk two vmdk "two disks" "$BM_DIR/t.vmdk $BM_DIR/s.vmdk" "$BM_DIR/t.raw $BM_DIR/s.raw" \
	"$BM_DIR/b.vmdk $BM_DIR/t.vmdk $BM_DIR/s.vmdk"

tools=(vd ceil raw)
command -v qemu-storage-daemon >/dev/null && tools+=(qemu)
command -v vmdkmount >/dev/null && tools+=(yal)

# serves TOOL DISK: bm_up serves the raw files' bytes, bm_down undoes it all.
serves()
{
	local tool=$1 disk=$2 raws i pid ok=0
	read -r -a raws <<<"${BM_RAW[$disk]}"
	if ! bm_up "$tool" "$disk"; then
		echo "    bm_up $tool $disk: $BM_ERR" >&2
		bm_down
		return 1
	fi
	pid=$BM_PID
	[ ${#BM_FILES[@]} -eq ${#raws[@]} ] || { echo "    ${#BM_FILES[@]} files" >&2; ok=1; }
	for i in "${!raws[@]}"; do
		cmp "${BM_FILES[i]}" "${raws[i]}" >&2 || ok=1
	done
	[ "$tool" = raw ] || [ -n "$pid" ] || { echo "    no server PID" >&2; ok=1; }
	[[ $BM_UP_MS =~ ^[0-9]+\.[0-9]$ || $tool == raw ]] || { echo "    mount ms '$BM_UP_MS'" >&2; ok=1; }
	bm_down
	[ -z "$pid" ] || ! bm_alive "$pid" || { echo "    $pid still runs" >&2; ok=1; }
	[ "$tool" = raw ] || [ -n "$BM_HWM_KB" ] || { echo "    no peak RSS" >&2; ok=1; }
	! grep -qF " $VD_TMP/m-" /proc/self/mountinfo || { echo "    a mount is left" >&2; ok=1; }
	return $ok
}

for t in "${tools[@]}"; do
	vd_check "$t serves the 2-layer chain and leaves nothing behind" serves "$t" one
	[ "$t" = yal ] || vd_check "$t serves two disks at once" serves "$t" two
done

# The NBD contenders: nbdkit's file plugin (the ceiling), qemu-nbd and, when
# built without sanitizers (see vd_nbd_init), the plugin.
nbd_serves()
{
	local pid ok=0
	bm_up "$1" one || { echo "    bm_up $1 (nbd): $BM_ERR" >&2; bm_down; return 1; }
	pid=$BM_PID
	nbdcopy -- "${BM_FILES[0]}" - | cmp - "$BM_DIR/t.raw" >&2 || ok=1
	bm_down
	! bm_alive "$pid" || { echo "    $pid still runs" >&2; ok=1; }
	return $ok
}
if command -v nbdkit >/dev/null && command -v nbdcopy >/dev/null; then
	BM_TRANSPORT=nbd
	ntools=(ceil)
	command -v qemu-nbd >/dev/null && ntools+=(qemu)
	if [ -f "${VD_NBD_PLUGIN:-}" ] && ! grep -q __asan_init "$VD_NBD_PLUGIN"; then
		BM_NBD_PLUGIN=$VD_NBD_PLUGIN
		ntools+=(vd)
	fi
	for t in "${ntools[@]}"; do
		vd_check "$t serves the 2-layer chain over NBD and stops" nbd_serves "$t"
	done
	BM_TRANSPORT=fuse
fi

# A row (alternated rounds, medians, the data check) and the table.
BM_TOOLS=${tools[*]} BM_REPEAT=1 BM_SAMPLES_FILE=$VD_TMP/samples.tsv BM_SEQ_CAP=20
bm_rows one mount seq
table=$(bm_table)
echo "$table"
vd_check "the table has the mount row with vdmount's and the ceiling's times" \
	grep -qE '^  mount time, ms +- +[0-9.]+ +[0-9.]+ ' <<<"$table"
vd_check "the data check row says yes for every mounted contender" \
	grep -qE '^  data = raw \(sampled\) +- +yes +yes ' <<<"$table"
vd_check "the seq row is a FUSE row with a target" grep -qE '^  seq read .* FUSE .*vd/ceil >=0.9' \
	<<<"$table"
vd_check "every sample is kept" test "$(wc -l <"$VD_TMP/samples.tsv")" -ge $((${#tools[@]} * 2))
vd_finish
