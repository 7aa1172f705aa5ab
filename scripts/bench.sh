#!/usr/bin/env bash
# bench.sh: vdmount's read speed, mount time and memory, side by side in one
# run with qemu-storage-daemon's FUSE export (qsd), libyal's vmdkmount /
# vhdimount and the raw merged file read directly (the limit), as a table of
# values and vdmount/qsd, vdmount/raw ratios next to the issue's targets:
# sequential >= 2x qsd, random 4K >= 3x qsd, depth 32 >= 0.9x depth 1,
# a 2 TiB image mounts in < 100 ms with < 32 MiB peak RSS.
#
# Chains (scripts/bench/gen.sh): a SIZE monolithicSparse base ~90% full of
# random data plus 3 deltas; the same base under 31 deltas (32 layers); a
# 2 TiB sparse image with a few MiB written; a streamOptimized copy of the
# base; a VHD dynamic copy and a 3-layer VHD differencing chain (tests/mkvhd).
# Every measurement uses a fresh mount; "warm" means the image files were read
# into the page cache first, "cold" that caches were dropped before mounting.
# A section whose image vdmount cannot mount yet is skipped with a message;
# a peer that fails shows "n/a" with the reason under the table.
#
# Must run as root (drop_caches, FUSE). Knobs (environment):
#   VD_BENCH_SIZE_MB   base size in MiB (1024; 64 with VD_BENCH_QUICK=1)
#   VD_BENCH_QUICK=1   small and short: a smoke run of the script itself
#   VD_BENCH_RUNTIME   seconds per fio run (5; 2 quick)
#   VD_BENCH_SEQ_CAP   seconds at most per sequential read (30; 10 quick)
#   VD_BENCH_DIR       work directory; kept, and its images reused by the
#                      next run with the same size (default: a temp dir)
#   VD_BENCH_KEEP=1    keep the default temp dir
#   VD_BENCH_OUT       results file (default DIR/bench-results.txt)
#   VD_BENCH_TOOLS     subset of "raw vd qsd yal"
#   VD_BENCH_SECTIONS  subset of "chain4 deep big stream vhd"
#   VD_BENCH_FORCE_PEERS=1  measure the peers even where vdmount fails
#   VDMOUNT            vdmount binary (default: Release build in build-bench)
set -uo pipefail
export LC_ALL=C

BM_ARGV="$0 $*"
bench_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$bench_dir/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$bench_dir/lib.sh"
# shellcheck source=scripts/bench/targets.sh
. "$bench_dir/bench/targets.sh"
# shellcheck source=scripts/bench/measure.sh
. "$bench_dir/bench/measure.sh"
# shellcheck source=scripts/bench/gen.sh
. "$bench_dir/bench/gen.sh"

if [ "${VD_BENCH_QUICK:-0}" = 1 ]; then
	size_mb=${VD_BENCH_SIZE_MB:-64}
	BM_RUNTIME=${VD_BENCH_RUNTIME:-2}
	BM_SEQ_CAP=${VD_BENCH_SEQ_CAP:-10}
else
	size_mb=${VD_BENCH_SIZE_MB:-1024}
	BM_RUNTIME=${VD_BENCH_RUNTIME:-5}
	BM_SEQ_CAP=${VD_BENCH_SEQ_CAP:-30}
fi
BM_TOOLS=${VD_BENCH_TOOLS:-raw vd qsd yal}
sections=${VD_BENCH_SECTIONS:-chain4 deep big stream vhd}
if ! [[ $size_mb =~ ^[0-9]+$ ]] || ((size_mb < 16)); then
	vd_die "VD_BENCH_SIZE_MB must be a number >= 16"
fi

[ "$(id -u)" -eq 0 ] || vd_die "bench.sh must run as root (drop_caches, FUSE mounts)"
[ -c /dev/fuse ] || vd_die "/dev/fuse missing"
for t in qemu-img qemu-io fusermount3 dd cmp awk pgrep fallocate; do
	command -v "$t" >/dev/null || vd_die "$t not installed"
done
command -v fio >/dev/null || echo "fio not installed: random-read rows will be n/a"
for t in qemu-storage-daemon:qsd vmdkmount:yal; do
	command -v "${t%:*}" >/dev/null && continue
	echo "${t%:*} not installed: its column will be empty"
	BM_TOOLS=" $BM_TOOLS "
	BM_TOOLS=${BM_TOOLS/ ${t#*:} / }
done

# Work directory, mount points, cleanup.
if [ -n "${VD_BENCH_DIR:-}" ]; then
	mkdir -p "$VD_BENCH_DIR" || exit 1
	D=$(cd "$VD_BENCH_DIR" && pwd)
else
	D=$(mktemp -d "${TMPDIR:-/var/tmp}/vd-bench.XXXXXX") || exit 1
	BM_TMP_OWNED=$D
fi
trap bm_cleanup EXIT
trap 'exit 130' INT TERM
BM_MNT_DIR=$(mktemp -d "$D/mnt.XXXXXX") || exit 1
OUT=${VD_BENCH_OUT:-$D/bench-results.txt}

# vdmount (and mkvhd for the VHD chain): a Release build unless VDMOUNT is given.
if [ -n "${VDMOUNT:-}" ]; then
	MKVHD=${VD_BENCH_MKVHD:-$(dirname "$VDMOUNT")/tests/mkvhd}
else
	bdir=$root/build-bench
	VDMOUNT=$bdir/vdmount
	MKVHD=$bdir/tests/mkvhd
	vd_say "building vdmount (Release) in $bdir"
	if ! { cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release >"$D/build.log" 2>&1 &&
		cmake --build "$bdir" -j2 --target vdmount >>"$D/build.log" 2>&1; }; then
		tail -20 "$D/build.log"
		[ -x "$VDMOUNT" ] || vd_die "cannot build vdmount (log: $D/build.log)"
		echo "build failed: using the existing $VDMOUNT"
	fi
	cmake --build "$bdir" -j2 --target mkvhd >>"$D/build.log" 2>&1 || true
fi
[ -x "$VDMOUNT" ] || vd_die "$VDMOUNT is not executable"

bm_version()
{
	"$@" 2>&1 | grep -m1 -v '^[[:space:]]*$' | cut -c1-70
}

header()
{
	local fs
	fs=$(stat -f -c %T "$D")
	echo "vdmount benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "command:   $BM_ARGV"
	echo "knobs:     size=${size_mb} MiB fio runtime=${BM_RUNTIME}s seq cap=${BM_SEQ_CAP}s" \
		"tools=[$(xargs <<<"$BM_TOOLS")] sections=[$sections]"
	echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
		"$(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "kernel:    $(uname -srm)"
	echo "work dir:  $D ($fs)"
	[ "$fs" = tmpfs ] && echo "WARNING:   the work dir is on tmpfs: cold numbers are meaningless"
	echo "vdmount:   $(bm_version "$VDMOUNT" -V), git $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')"
	echo "qemu:      $(bm_version qemu-storage-daemon --version)"
	echo "libyal:    $(bm_version vmdkmount -V), $(bm_version vhdimount -V)"
	echo "fio:       $(bm_version fio --version), $(bm_version fusermount3 -V)"
}

header | tee "$D/header.txt"
vd_say "generating images in $D (size $size_mb MiB)"
bm_gen "$D" $((size_mb << 20)) "$MKVHD" || vd_die "image generation failed"

# section_ok NAME FMT TOP RAW: the image exists and vdmount mounts it (else
# the section is skipped, unless VD_BENCH_FORCE_PEERS=1).
section_ok()
{
	local name=$1
	[[ " $sections " == *" $name "* ]] || return 1
	vd_say "section $name: $3"
	if [ ! -s "$3" ]; then
		bm_note "SKIP $name: ${3##*/} was not generated"
		return 1
	fi
	if ! bm_up vd "$2" "$3" "$4"; then
		bm_down
		bm_note "SKIP $name: vdmount cannot mount ${3##*/} yet ($BM_ERR)"
		[ "${VD_BENCH_FORCE_PEERS:-0}" = 1 ] || return 1
		return 0
	fi
	bm_down
}

# run_rows CHAIN FMT TOP RAW "ROW:KIND ..." TOOLS FILES...: every row for
# every tool, tool by tool within a row so all tools see the same conditions.
run_rows()
{
	local chain=$1 fmt=$2 top=$3 raw=$4 rk tool
	local rows=$5 tools=$6
	shift 6
	for rk in $rows; do
		for tool in $tools; do
			bm_case "${rk%:*}" "${rk#*:}" "$chain" "$tool" "$fmt" "$top" "$raw" "$@"
		done
	done
}

sec_chain4()
{
	local t0=$SECONDS
	bm_row c4.seqw hi "qsd>=2" "seq MB/s warm, 4 layers"
	bm_row c4.seqc hi "qsd>=2" "seq MB/s cold, 4 layers"
	bm_row c4.r1 hi "qsd>=3" "rand 4K IOPS 1 job, 4 layers"
	bm_row c4.r2 hi "qsd>=3" "rand 4K IOPS 2 jobs, 4 layers"
	bm_row c4.mount lo - "mount ms, 4 layers"
	bm_row c4.mount.ok txt - "  data = raw (sampled)"
	bm_row c4.rss lo - "peak RSS MiB, 4 layers"
	section_ok chain4 vmdk "$D/a3.vmdk" "$D/a3.raw" || return 0
	run_rows 4-layer vmdk "$D/a3.vmdk" "$D/a3.raw" \
		"c4.mount:mount c4.seqw:seqwarm c4.seqc:seqcold c4.r1:rand1 c4.r2:rand2" \
		"raw vd qsd yal" "$D"/base.vmdk "$D"/a[123].vmdk
	bm_put_rss c4.rss 4-layer
	vd_say "section chain4 took $((SECONDS - t0)) s"
}

sec_deep()
{
	local t0=$SECONDS rows
	bm_row d1.seqw hi "qsd>=2" "seq MB/s warm, depth 1"
	bm_row d32.seqw hi "qsd>=2" "seq MB/s warm, depth 32"
	bm_row d1.r1 hi "qsd>=3" "rand 4K IOPS 1 job, depth 1"
	bm_row d32.r1 hi "qsd>=3" "rand 4K IOPS 1 job, depth 32"
	bm_row d1.r2 hi "qsd>=3" "rand 4K IOPS 2 jobs, depth 1"
	bm_row d32.r2 hi "qsd>=3" "rand 4K IOPS 2 jobs, depth 32"
	bm_row dr.seq rr ">=0.9" "depth 32/1 ratio, seq"
	bm_row dr.r1 rr ">=0.9" "depth 32/1 ratio, rand 1 job"
	bm_row dr.r2 rr ">=0.9" "depth 32/1 ratio, rand 2 jobs"
	bm_row d32.mount lo - "mount ms, depth 32"
	bm_row d32.mount.ok txt - "  data = raw (sampled)"
	bm_row d32.rss lo - "peak RSS MiB, depth 32"
	section_ok deep vmdk "$D/d31.vmdk" "$D/d31.raw" || return 0
	rows="d1.seqw:seqwarm d1.r1:rand1 d1.r2:rand2"
	run_rows depth-1 vmdk "$D/base.vmdk" "$D/base.raw" "$rows" "raw vd qsd yal" \
		"$D/base.vmdk"
	rows="d32.mount:mount d32.seqw:seqwarm d32.r1:rand1 d32.r2:rand2"
	run_rows depth-32 vmdk "$D/d31.vmdk" "$D/d31.raw" "$rows" "raw vd qsd yal" \
		"$D"/base.vmdk "$D"/d[0-9][0-9].vmdk
	bm_put_ratio dr.seq d32.seqw d1.seqw
	bm_put_ratio dr.r1 d32.r1 d1.r1
	bm_put_ratio dr.r2 d32.r2 d1.r2
	bm_put_rss d32.rss depth-32
	vd_say "section deep took $((SECONDS - t0)) s"
}

sec_big()
{
	local t0=$SECONDS
	bm_row big.mount lo "<100" "mount ms, 2 TiB sparse"
	bm_row big.mount.ok txt - "  data = written (sampled)"
	bm_row big.r1 hi "qsd>=3" "rand 4K IOPS 1 job, 2 TiB sparse"
	bm_row big.rss lo "<32" "peak RSS MiB, 2 TiB sparse"
	section_ok big vmdk "$D/big.vmdk" "" || return 0
	run_rows 2TiB vmdk "$D/big.vmdk" "" "big.mount:mount big.r1:rand1" "vd qsd yal" \
		"$D/big.vmdk"
	bm_put_rss big.rss 2TiB
	vd_say "section big took $((SECONDS - t0)) s"
}

sec_stream()
{
	local t0=$SECONDS
	bm_row st.seqw hi "qsd>=2" "seq MB/s warm, streamOptimized"
	bm_row st.seqc hi "qsd>=2" "seq MB/s cold, streamOptimized"
	bm_row st.mount lo - "mount ms, streamOptimized"
	bm_row st.mount.ok txt - "  data = raw (sampled)"
	section_ok stream vmdk "$D/stream.vmdk" "$D/base.raw" || return 0
	run_rows stream vmdk "$D/stream.vmdk" "$D/base.raw" \
		"st.mount:mount st.seqw:seqwarm st.seqc:seqcold" "raw vd qsd yal" "$D/stream.vmdk"
	vd_say "section stream took $((SECONDS - t0)) s"
}

# VHD: qsd reads dynamic VHDs (driver vpc) but not differencing ones; the
# libyal column is vhdimount here.
sec_vhd()
{
	local t0=$SECONDS
	bm_row vh.seqw hi "qsd>=2" "seq MB/s warm, VHD dynamic"
	bm_row vh.r1 hi "qsd>=3" "rand 4K IOPS 1 job, VHD dynamic"
	bm_row vh.mount lo - "mount ms, VHD dynamic"
	bm_row vh.mount.ok txt - "  data = raw (sampled)"
	bm_row vc.seqw hi - "seq MB/s warm, VHD 3-layer diff"
	bm_row vc.r1 hi - "rand 4K IOPS 1 job, VHD 3-layer diff"
	bm_row vc.mount lo - "mount ms, VHD 3-layer diff"
	bm_row vc.mount.ok txt - "  data = raw (sampled)"
	if section_ok vhd vhd "$D/base.vhd" "$D/base.raw"; then
		run_rows vhd-dynamic vhd "$D/base.vhd" "$D/base.raw" \
			"vh.mount:mount vh.seqw:seqwarm vh.r1:rand1" "raw vd qsd yal" "$D/base.vhd"
	fi
	if section_ok vhd vhd "$D/v2.vhd" "$D/v2.raw"; then
		run_rows vhd-diff vhd "$D/v2.vhd" "$D/v2.raw" \
			"vc.mount:mount vc.seqw:seqwarm vc.r1:rand1" "raw vd yal" "$D"/base.vhd \
			"$D"/v[12].vhd
	fi
	vd_say "section vhd took $((SECONDS - t0)) s"
}

t_start=$SECONDS
for s in chain4 deep big stream vhd; do
	"sec_$s"
done

{
	cat "$D/header.txt"
	echo
	bm_table
	echo
	echo "raw = the merged raw file read directly (page cache warm except in cold rows);"
	echo "vmdkmount column = vhdimount in VHD rows; ms and MiB rows: lower is better;"
	echo "ratio rows hold each tool's own depth-32/depth-1 ratio. Fresh mount per value."
	if [ ${#BM_NOTES[@]} -gt 0 ]; then
		echo "notes:"
		printf '  %s\n' "${BM_NOTES[@]}"
	fi
	echo "total time: $((SECONDS - t_start)) s (plus image generation)"
} >"$OUT.tmp"
echo
cat "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "results written to $OUT"
