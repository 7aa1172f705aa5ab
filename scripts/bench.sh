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
#   VD_BENCH_SEQ_REPEAT  runs per sequential value, the median is shown (3)
#   VD_BENCH_REPEAT    runs per random value, the median is shown (1)
#   VD_BENCH_DIR       work directory; kept, and its images reused by the
#                      next run with the same size (default: a temp dir)
#   VD_BENCH_KEEP=1    keep the default temp dir
#   VD_BENCH_OUT       results file (default DIR/bench-results.txt)
#   VD_BENCH_TOOLS     subset of "raw vd qsd yal"
#   VD_BENCH_SECTIONS  subset of "chain4 deep big stream vhd"
#   VD_BENCH_FORCE_PEERS=1  measure the peers even where vdmount fails
#   VD_BENCH_FIO_EXTRA more fio options for the random runs (e.g. --direct=1
#                      to measure the daemons without the FUSE page cache)
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
BM_REPEAT=${VD_BENCH_REPEAT:-1}
BM_SEQ_REPEAT=${VD_BENCH_SEQ_REPEAT:-3}
BM_TOOLS=${VD_BENCH_TOOLS:-raw vd qsd yal}
sections=${VD_BENCH_SECTIONS:-chain4 deep big stream vhd}
if ! [[ $size_mb =~ ^[0-9]+$ ]] || ((size_mb < 16)); then
	vd_die "VD_BENCH_SIZE_MB must be a number >= 16"
fi
[[ "$BM_REPEAT $BM_SEQ_REPEAT" =~ ^[1-9][0-9]*\ [1-9][0-9]*$ ]] ||
	vd_die "VD_BENCH_REPEAT and VD_BENCH_SEQ_REPEAT must be numbers >= 1"

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
		"repeat: seq=$BM_SEQ_REPEAT rand=$BM_REPEAT" \
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

sec_chain4()
{
	bm_rows c4 "4 layers" mount seqw seqc r1 r2 r1d rss
	section_ok chain4 vmdk "$D/a3.vmdk" "$D/a3.raw" || return 0
	bm_chain c4 vmdk "$D/a3.vmdk" "$D/a3.raw" "mount seqw seqc r1 r2 r1d" "raw vd qsd yal" \
		"$D"/base.vmdk "$D"/a[123].vmdk
}

# Depth 1 is the base alone; nearly every read of the depth-32 chain falls
# through 31 deltas to it.
sec_deep()
{
	local k
	for k in seqw r1 r2 r1d; do
		bm_rows d1 "depth 1" $k
		bm_rows d32 "depth 32" $k
	done
	bm_row dr.seqw rr ">=0.9" "depth 32/1 ratio, seq"
	bm_row dr.r1 rr ">=0.9" "depth 32/1 ratio, rand 1 job"
	bm_row dr.r2 rr ">=0.9" "depth 32/1 ratio, rand 2 jobs"
	bm_row dr.r1d rr ">=0.9" "depth 32/1 ratio, rand O_DIRECT"
	bm_rows d32 "depth 32" mount rss
	section_ok deep vmdk "$D/d31.vmdk" "$D/d31.raw" || return 0
	bm_chain d1 vmdk "$D/base.vmdk" "$D/base.raw" "seqw r1 r2 r1d" "raw vd qsd yal" \
		"$D/base.vmdk"
	bm_chain d32 vmdk "$D/d31.vmdk" "$D/d31.raw" "mount seqw r1 r2 r1d" "raw vd qsd yal" \
		"$D"/base.vmdk "$D"/d[0-9][0-9].vmdk
	for k in seqw r1 r2 r1d; do
		bm_put_ratio "dr.$k" "d32.$k" "d1.$k"
	done
}

# No raw for 2 TiB: the data check compares the regions listed in big.at.
sec_big()
{
	bm_rows big "2 TiB sparse" mount mrss r1 rss
	BM_TARGET[big.mount]="<100"
	BM_TARGET[big.rss]="<32"
	BM_LABEL[big.mount.ok]="  data = written (sampled)"
	section_ok big vmdk "$D/big.vmdk" "" || return 0
	bm_chain big vmdk "$D/big.vmdk" "" "mount r1" "vd qsd yal" "$D/big.vmdk"
}

sec_stream()
{
	bm_rows st streamOptimized mount seqw seqc
	section_ok stream vmdk "$D/stream.vmdk" "$D/base.raw" || return 0
	bm_chain st vmdk "$D/stream.vmdk" "$D/base.raw" "mount seqw seqc" "raw vd qsd yal" \
		"$D/stream.vmdk"
}

# VHD: qsd reads dynamic VHDs (driver vpc) but not differencing ones; the
# libyal column is vhdimount here.
sec_vhd()
{
	bm_rows vh "VHD dynamic" mount seqw r1
	bm_rows vc "VHD 3-layer diff" mount seqw r1
	BM_TARGET[vc.seqw]=- BM_TARGET[vc.r1]=-
	if section_ok vhd vhd "$D/base.vhd" "$D/base.raw"; then
		bm_chain vh vhd "$D/base.vhd" "$D/base.raw" "mount seqw r1" "raw vd qsd yal" \
			"$D/base.vhd"
	fi
	if section_ok vhd vhd "$D/v2.vhd" "$D/v2.raw"; then
		bm_chain vc vhd "$D/v2.vhd" "$D/v2.raw" "mount seqw r1" "raw vd yal" \
			"$D"/base.vhd "$D"/v[12].vhd
	fi
}

t_start=$SECONDS
for s in chain4 deep big stream vhd; do
	t0=$SECONDS
	"sec_$s"
	vd_say "section $s done in $((SECONDS - t0)) s"
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
