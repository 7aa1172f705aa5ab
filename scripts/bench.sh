#!/usr/bin/env bash
# bench.sh: vdmount's read speed, mount time, memory and open files next to
# FUSE's own limit and to its peers, in one run, as a table of medians and
# ratios. Columns (scripts/bench/tools.sh):
#   vdmount; ceiling = a minimal libfuse file system that preads the raw
#   merged file (scripts/bench/ceiling.c, built here): vd/ceil says how much
#   of FUSE's best vdmount reaches; qemu = qemu-storage-daemon --export
#   type=fuse; libyal = vmdkmount / vhdimount; raw = the raw merged file read
#   directly (cold rows: vd/raw is vdmount / the raw file read cold).
# Rows (scripts/bench/measure.sh): one metric on one disk, the contenders
# alternated in BM_REPEAT rounds (the first one rotating), each sample on a
# fresh mount; every row says whether it measures FUSE requests, FUSE plus
# the disk (page cache dropped) or the page cache. Targets: the first
# matching line of scripts/bench/targets.tsv. Disks (scripts/bench/gen.sh):
#   sparse  4-layer monolithicSparse chain (SIZE, ~90% data + 3 deltas)
#   stream  streamOptimized copy of the base
#   vhd     VHD dynamic copy of the base; 3-layer VHD differencing chain
#   deep    255-layer chain (the base under 254 deltas)
#   split   twoGbMaxExtentSparse 2 TiB, 2 layers of 1,024 extent files, at
#           the default soft RLIMIT_NOFILE (1024) and at soft = hard
#   multi   64 disks in one mount (the 64 slices of the base)
#   full    1 TiB monolithicSparse with every grain allocated: 64 MiB of grain
#           tables, more than the 16 MiB metadata cache budget
#   nbd     the 4-layer chain over NBD: nbdkit-vdmount-plugin.so vs qemu-nbd
#           -r (ceiling: nbdkit's file plugin over the raw file), nbdcopy
#   write   writes (O_DIRECT sequential and random, fsync every 32, mkfs.ext4
#           + untar of a third of the disk through a loop device) and reads
#           of the writable mount:
#           vdmount -w (a new delta over VHD dynamic, over the 4-layer VMDK
#           chain) vs qemu-storage-daemon writable=on over a copy of the top
#   vhdx    VHDX dynamic (vs qemu, libvhdi), a 3-layer and a 32-layer .avhdx
#           chain over it (tests/mkvhdx; vs libvhdi: qemu reads no
#           differencing VHDX)
#
# Must run as root (drop_caches, FUSE). Installs what is missing (fio,
# qemu-storage-daemon, ...). Knobs (environment):
#   VD_BENCH_QUICK=1     small and short: a smoke run of the script itself
#   VD_BENCH_SIZE_MB     base size in MiB (1024; 64 quick)
#   VD_BENCH_REPEAT      rounds per row, the median is shown (3; 1 quick;
#                        mount rows at least 5)
#   VD_BENCH_RUNTIME     seconds per fio run (4; 1 quick)
#   VD_BENCH_SEQ_CAP     seconds at most per sequential read (30; 10 quick)
#   VD_BENCH_SECTIONS    subset of "sparse stream vhd deep split multi full
#                        vhdx write nbd" (all)
#   VD_BENCH_TOOLS       subset of "vd ceil qemu yal raw" (all installed)
#   VD_BENCH_METRICS     only these rows of each section, e.g. "seqd r1d r2d"
#                        (the metric ids of scripts/bench/measure.sh)
#   VD_BENCH_DEEP_LAYERS (255; 32 quick), VD_BENCH_SPLIT_LAYERS (2; 1 quick),
#   VD_BENCH_MULTI (64), VD_BENCH_FULL_GIB (1024): scale of those disks
#   VD_BENCH_DIR         work directory; kept, and its images reused by the
#                        next run with the same parameters (default: a temp
#                        dir under /var/tmp, removed but for the results)
#   VD_BENCH_FORCE_PEERS=1  run the vhdx and write sections without vdmount
#   VDMOUNT              vdmount binary (default: a Release build in
#                        build-bench/, with tests/mkvhd, tests/mkfullsparse
#                        and nbdkit-vdmount-plugin.so; VD_NBD_PLUGIN for
#                        another plugin)
# Results: DIR/bench-results.txt (table, notes), DIR/bench-results.md (the
# table in Markdown), DIR/bench-samples.tsv (every sample).
set -uo pipefail
export LC_ALL=C

BM_ARGV="$0 $*"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
# shellcheck source=scripts/bench/tools.sh
. "$here/bench/tools.sh"
# shellcheck source=scripts/bench/measure.sh
. "$here/bench/measure.sh"
# shellcheck source=scripts/bench/gen.sh
. "$here/bench/gen.sh"

quick=${VD_BENCH_QUICK:-0}
q()
{
	[ "$quick" = 1 ] && echo "$2" || echo "$1"
}
BM_SIZE=$((${VD_BENCH_SIZE_MB:-$(q 1024 64)} << 20))
BM_REPEAT=${VD_BENCH_REPEAT:-$(q 3 1)}
BM_RUNTIME=${VD_BENCH_RUNTIME:-$(q 4 1)}
BM_SEQ_CAP=${VD_BENCH_SEQ_CAP:-$(q 30 10)}
BM_DEEP_LAYERS=${VD_BENCH_DEEP_LAYERS:-$(q 255 32)}
BM_SPLIT_LAYERS=${VD_BENCH_SPLIT_LAYERS:-$(q 2 1)}
BM_MULTI=${VD_BENCH_MULTI:-64}
BM_FULL_GIB=${VD_BENCH_FULL_GIB:-1024}
BM_TOOLS=${VD_BENCH_TOOLS:-${BM_TOOLS_ALL[*]}}
BM_TREE_FILES=$((BM_SIZE / 3 / 131072)) # the write section's tree: 128 KiB a file on average
((BM_TREE_FILES > 2400)) && BM_TREE_FILES=2400
sections=${VD_BENCH_SECTIONS:-sparse stream vhd deep split multi full vhdx write nbd}
for v in BM_REPEAT BM_RUNTIME BM_SEQ_CAP BM_DEEP_LAYERS BM_SPLIT_LAYERS BM_MULTI BM_FULL_GIB; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || vd_die "$v must be a number >= 1 (got '${!v}')"
done
((BM_SIZE >= 16 << 20 && BM_SIZE % (BM_MULTI << 20) == 0)) ||
	vd_die "VD_BENCH_SIZE_MB must be >= 16 and a multiple of VD_BENCH_MULTI"
((BM_DEEP_LAYERS <= 255 && BM_SPLIT_LAYERS <= 8)) || vd_die "at most 255 deep layers, 8 split layers"

[ "$(id -u)" -eq 0 ] || vd_die "bench.sh must run as root (drop_caches, FUSE mounts)"
# shellcheck disable=SC2086 # package lists
vd_install_deps $VD_PKGS_BUILD $VD_PKGS_TEST $VD_PKGS_BENCH || vd_die "cannot install packages"
for t in fio qemu-img qemu-io; do
	command -v "$t" >/dev/null || vd_die "$t is not installed"
done
for t in qemu-storage-daemon:qemu vmdkmount:yal; do
	command -v "${t%:*}" >/dev/null && continue
	echo "${t%:*} not installed: its column stays empty"
	BM_TOOLS=" $BM_TOOLS "
	BM_TOOLS=${BM_TOOLS/ ${t#*:} / }
done

# Work directory (images and results).
if [ -n "${VD_BENCH_DIR:-}" ]; then
	mkdir -p "$VD_BENCH_DIR" || exit 1
	BM_DIR=$(cd "$VD_BENCH_DIR" && pwd)
	own_dir=
else
	BM_DIR=$(mktemp -d /var/tmp/vd-bench.XXXXXX) || exit 1
	own_dir=$BM_DIR
fi
[[ $BM_DIR =~ ^[A-Za-z0-9/._-]+$ ]] || vd_die "the work directory path must not hold spaces or odd characters"
OUT=$BM_DIR/bench-results

# vdmount, the generators and the ceiling: a Release build unless VDMOUNT is set.
bdir=$root/build-bench
if [ -z "${VDMOUNT:-}" ]; then
	VDMOUNT=$bdir/vdmount
	vd_say "building vdmount (Release) in $bdir"
	vd_build "$root" "$bdir" -DCMAKE_BUILD_TYPE=Release >"$BM_DIR/build.log" 2>&1 ||
		{ tail -20 "$BM_DIR/build.log"; vd_die "cannot build (log: $BM_DIR/build.log)"; }
else
	bdir=$(dirname "$VDMOUNT")
fi
BM_MKVHD=${VD_BENCH_MKVHD:-$bdir/tests/mkvhd}
BM_MKVHDX=${VD_BENCH_MKVHDX:-$bdir/tests/mkvhdx}
BM_MKFULL=${VD_BENCH_MKFULL:-$bdir/tests/mkfullsparse}
export VDMOUNT
VD_TEST_WATCH=0 # runs for an hour: no test watchdog
vd_e2e_init bench
trap 'vd_cleanup; [ -n "$own_dir" ] && [ -z "${VD_BENCH_KEEP:-}" ] &&
	find "$own_dir" -mindepth 1 -maxdepth 1 ! -name "bench-results*" ! -name "bench-samples*" \
		-exec rm -rf {} +' EXIT
BM_CEILING=$VD_TMP/ceiling
bm_build_ceiling "$here/bench/ceiling.c" "$BM_CEILING" || vd_die "cannot build the ceiling"
bm_targets_load "$here/bench/targets.tsv" || vd_die "bad scripts/bench/targets.tsv"
BM_SAMPLES_FILE=$OUT.tmp-samples
printf 'row\ttool\tround\tvalue\n' >"$BM_SAMPLES_FILE"

bm_version()
{
	"$@" 2>&1 | grep -m1 -v '^[[:space:]]*$' | cut -c1-70
}

header()
{
	local fs
	fs=$(stat -f -c %T "$BM_DIR")
	echo "vdmount benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "command:   $BM_ARGV"
	echo "knobs:     size=$((BM_SIZE >> 20)) MiB rounds=$BM_REPEAT fio=${BM_RUNTIME}s" \
		"seq cap=${BM_SEQ_CAP}s deep=$BM_DEEP_LAYERS split=$BM_SPLIT_LAYERS" \
		"multi=$BM_MULTI full=${BM_FULL_GIB}GiB tools=[$(xargs <<<"$BM_TOOLS")]"
	echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
		"$(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "kernel:    $(uname -srm); load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "work dir:  $BM_DIR ($fs); RLIMIT_NOFILE soft $(ulimit -Sn), hard $(ulimit -Hn)"
	[ "$fs" = tmpfs ] && echo "WARNING:   the work dir is on tmpfs: cold rows mean nothing"
	echo "vdmount:   $(bm_version "$VDMOUNT" -V), git $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')"
	echo "qemu:      $(bm_version qemu-storage-daemon --version)"
	echo "libyal:    $(bm_version vmdkmount -V), $(bm_version vhdimount -V)"
	echo "fio:       $(bm_version fio --version), $(bm_version fusermount3 -V)"
}

# bm_vd_serves DISK WHAT: vdmount serves DISK (else the section is skipped
# with a note, unless VD_BENCH_FORCE_PEERS=1).
bm_vd_serves()
{
	local ok=0
	bm_up vd "$1" && ok=1
	bm_down
	[ $ok = 1 ] && return 0
	bm_note "SKIP ${BM_DESC[$1]}: vdmount cannot serve it yet ($BM_ERR)"
	[ "${VD_BENCH_FORCE_PEERS:-0}" = 1 ]
}

D=$BM_DIR
mib=$((BM_SIZE >> 20))

sec_sparse()
{
	bm_gen chain4 || return 0
	bm_disk c4 vmdk "4-layer VMDK sparse chain, $mib MiB" "$D/a3.vmdk" "$D/a3.raw" \
		"$D/base.vmdk $D/a1.vmdk $D/a2.vmdk $D/a3.vmdk"
	bm_rows c4 mount seq seqd cold pc r1d r2d r1 r2 rpc
}

sec_stream()
{
	bm_gen stream || return 0
	bm_disk st vmdk "VMDK streamOptimized, $mib MiB" "$D/stream.vmdk" "$D/base.raw" \
		"$D/stream.vmdk"
	bm_rows st mount seq seqd cold r1d
}

# qemu reads VHD dynamic (driver vpc) but not differencing disks.
sec_vhd()
{
	bm_gen vhd || return 0
	bm_disk vh vhd "VHD dynamic, $mib MiB" "$D/base.vhd" "$D/base.raw" "$D/base.vhd"
	bm_rows vh mount seq cold r1d
	bm_disk vc vhd "3-layer VHD differencing chain, $mib MiB" "$D/v2.vhd" "$D/v2.raw" \
		"$D/base.vhd $D/v1.vhd $D/v2.vhd"
	bm_rows vc mount seq cold r1d
}

sec_deep()
{
	bm_gen deep || return 0
	bm_disk deep vmdk "$BM_DEEP_LAYERS-layer VMDK chain, $mib MiB" \
		"$(printf '%s\n' "$D"/e[0-9][0-9][0-9].vmdk | tail -1)" "$D/deep.raw" \
		"$D/base.vmdk $(echo "$D"/e[0-9][0-9][0-9].vmdk)"
	bm_rows deep mount seq r1d
}

# The same chain at the soft open-file limit most sessions have (1024) and
# at soft = hard: 1,024 extent files per layer.
sec_split()
{
	local top imgs hard
	bm_gen split || return 0
	top=$D/sp$BM_SPLIT_LAYERS.vmdk
	imgs=$(echo "$D"/sp[0-9]*.vmdk)
	hard=$(ulimit -Hn)
	bm_disk sp vmdk "2 TiB twoGbMaxExtentSparse, $BM_SPLIT_LAYERS layer(s) x 1,024 extents, soft NOFILE 1024" \
		"$top" "$D/sp.raw" "$imgs" 1024
	bm_rows sp mount r1d
	bm_disk spx vmdk "the same, soft NOFILE = hard ($hard)" "$top" "$D/sp.raw" "$imgs" "$hard"
	[ -s "$D/sp.at" ] && cp "$D/sp.at" "$D/spx.at"
	bm_rows spx mount r1d
}

sec_multi()
{
	local tops raws
	bm_gen multi || return 0
	tops=$(echo "$D"/m[0-9][0-9].vmdk)
	raws=$(echo "$D"/m[0-9][0-9].raw)
	bm_disk m64 vmdk "$BM_MULTI VMDK disks in one mount, $((mib / BM_MULTI)) MiB each" \
		"$tops" "$raws" "$tops"
	bm_rows m64 mount r1d
}

sec_full()
{
	bm_gen full || return 0
	bm_disk fa vmdk "$BM_FULL_GIB GiB VMDK, every grain allocated (tables > cache budget)" \
		"$D/fa.vmdk" "$D/fa.raw" "$D/fa.vmdk"
	bm_rows fa mount r1d
}

# VHDX (issue 11): a dynamic VHDX (qemu and libvhdi read it too) and a
# 3-layer .avhdx chain over it (tests/mkvhdx; qemu has no differencing VHDX,
# libvhdi's vhdimount reads it).
sec_vhdx()
{
	bm_gen vhdx || return 0
	bm_disk vx vhdx "VHDX dynamic, $mib MiB" "$D/base.vhdx" "$D/base.raw" "$D/base.vhdx"
	bm_vd_serves vx || return 0
	bm_rows vx mount seq cold r1d
	bm_disk vxc vhdx "3-layer .avhdx chain over it, $mib MiB" "$D/x2.avhdx" "$D/x2.raw" \
		"$D/base.vhdx $D/x1.avhdx $D/x2.avhdx"
	bm_rows vxc mount seq r1d
	bm_gen vhdx32 || return 0
	bm_disk vxd vhdx "32-layer .avhdx chain over it, $mib MiB" "$D/y31.avhdx" "$D/y32.raw" \
		"$D/base.vhdx $(echo "$D"/y[0-9][0-9].avhdx)"
	bm_rows vxd mount seq r1d
}

# Copy-on-write (issue 9): vdmount -w --delta NEW vs qemu-storage-daemon
# writable=on over a copy of the top image; each sample writes a new file.
# VHD dynamic and the 4-layer VMDK chain (its top a qemu-made delta). The
# read rows of the writable mounts compare with the read-only rows of the
# same disks (vh, c4).
sec_write()
{
	bm_gen tree || return 0
	BM_WRITABLE=1
	if bm_gen vhd; then
		bm_disk w vhd "writes over VHD dynamic (vdmount: into a new delta), $mib MiB" \
			"$D/base.vhd" "$D/base.raw" "$D/base.vhd"
		bm_vd_serves w && bm_rows w wseq wr1d wr2d wr1f wtar seqd r1d
	fi
	if bm_gen chain4; then
		bm_disk wk vmdk "writes over the 4-layer VMDK chain (vdmount: into a new delta), $mib MiB" \
			"$D/a3.vmdk" "$D/a3.raw" "$D/base.vmdk $D/a1.vmdk $D/a2.vmdk $D/a3.vmdk"
		bm_vd_serves wk && bm_rows wk wseq wr1d wr2d wr1f wtar seqd r1d
	fi
	BM_WRITABLE=0
}

# The nbdkit plugin (issue 13) vs qemu-nbd -r; the ceiling column is
# nbdkit's file plugin over the raw file.
sec_nbd()
{
	local BM_TOOLS=" $BM_TOOLS "
	BM_TOOLS=${BM_TOOLS/ yal / }
	BM_TOOLS=${BM_TOOLS/ raw / }
	bm_gen chain4 || return 0
	BM_NBD_PLUGIN=${VD_NBD_PLUGIN:-$bdir/nbdkit-vdmount-plugin.so}
	bm_disk nb vmdk "NBD, 4-layer VMDK sparse chain, $mib MiB" "$D/a3.vmdk" "$D/a3.raw" \
		"$D/base.vmdk $D/a1.vmdk $D/a2.vmdk $D/a3.vmdk"
	BM_TRANSPORT=nbd
	bm_vd_serves nb && bm_rows nb mount nbd1 nbd4
	# the 2 TiB split disk: nbdcopy asks for extents and skips the holes
	if bm_gen split; then
		bm_disk nbs vmdk "NBD, 2 TiB twoGbMaxExtentSparse, $BM_SPLIT_LAYERS layer(s)" \
			"$D/sp$BM_SPLIT_LAYERS.vmdk" "$D/sp.raw" "$(echo "$D"/sp[0-9]*.vmdk)" \
			"$(ulimit -Hn)"
		bm_rows nbs nbdt
	fi
	BM_TRANSPORT=fuse
}

header | tee "$OUT.tmp-header"
t_start=$SECONDS
for s in $sections; do
	declare -F "sec_$s" >/dev/null || vd_die "unknown section $s"
	t0=$SECONDS
	vd_say "section $s"
	"sec_$s"
	vd_say "section $s done in $((SECONDS - t0)) s"
done

{
	cat "$OUT.tmp-header"
	echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	bm_table
	echo
	echo "Medians of $BM_REPEAT alternated round(s) (mount: at least 5), a fresh mount per sample."
	echo "reads: FUSE = every read is a FUSE request (O_DIRECT, or first touch on a fresh mount;"
	echo "image files in the page cache); FUSE+disk = the same, page cache dropped first;"
	echo "page cache = a re-read the kernel serves without the daemon."
	echo "vd/X = vdmount / X; for ms, MiB and files lower is better. ceiling = minimal libfuse"
	echo "pread of the raw file; qemu = qemu-storage-daemon FUSE export; libyal = vmdkmount or"
	echo "vhdimount; raw = the raw merged file read directly (in FUSE+disk rows: read cold)."
	if [ ${#BM_NOTES[@]} -gt 0 ]; then
		echo "notes:"
		printf '  %s\n' "${BM_NOTES[@]}"
	fi
	echo "total time: $((SECONDS - t_start)) s (plus image generation)"
} >"$OUT.txt"
bm_table md >"$OUT.md"
mv "$BM_SAMPLES_FILE" "$BM_DIR/bench-samples.tsv"
rm -f "$OUT.tmp-header"
echo
cat "$OUT.txt"
echo "results: $OUT.txt, $OUT.md, $BM_DIR/bench-samples.tsv"
