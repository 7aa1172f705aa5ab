#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz (see tests/fuzz/README.md) for
# SECONDS each (default 60), one after the other, and reports per harness the
# executions, edges ("cov") and features ("ft") reached and the crashes found
# (minimised and saved), then the line coverage of disk/ and chain/ that the
# grown corpora give (a clang source-coverage build replaying them).
#
# Usage: scripts/fuzz.sh [--only NAME[,NAME...]] [--smoke] [--no-coverage] [SECONDS]
#   --only      these harnesses (the part after fuzz_: chain, vhd, vmdk_desc, ...)
#   --smoke     CI: fresh corpora from the committed seeds and regression
#               inputs (every one of them runs first), no coverage, exit 1 on
#               any crash, timeout or memory blow-up
#   --no-coverage   skip the coverage build and report
# Env: VD_FUZZ_DIR (default build-fuzz/): the fuzz tree; corpora grow in
#   $VD_FUZZ_DIR/corpus/NAME and persist between runs, crashes are saved in
#   $VD_FUZZ_DIR/crashes/NAME. VD_SHARED: the real-image corpus; its images
#   that fit a harness's max_len join that harness's seeds (not committed:
#   their licences vary). FUZZ_ARGS: more libFuzzer flags, e.g. "-jobs=2".
#   VD_FUZZ_NICE (default 10): nice level of the fuzzers.
# Exit status: 0 when no harness crashed, 1 otherwise, 2 on a build failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

only=
smoke=0
coverage=1
secs=
while [ $# -gt 0 ]; do
	case $1 in
	--only) only=$2; shift ;;
	--smoke) smoke=1; coverage=0 ;;
	--no-coverage) coverage=0 ;;
	-h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	[0-9]*) secs=$1 ;;
	*) vd_die "unknown argument $1 (see --help)" ;;
	esac
	shift
done
secs=${secs:-$([ $smoke = 1 ] && echo 10 || echo 60)}
fdir=${VD_FUZZ_DIR:-$root/build-fuzz}
src=$root/tests/fuzz
cc=$(command -v clang-14 || command -v clang) || vd_die "clang is not installed ($VD_PKGS_FUZZ)"

vd_say "building the fuzz tree in $fdir ($cc)"
CC=$cc vd_build "$root" "$fdir" -DVD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVD_WERROR=ON ||
	exit 2

mapfile -t all < <(cd "$src" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
names=("${all[@]}")
[ -n "$only" ] && IFS=, read -r -a names <<<"$only"

# libFuzzer flags of a harness: tests/fuzz/NAME.options (one flag a line, #
# comments) and NAME.dict if there is one.
harness_flags()
{
	local n=$1
	[ -f "$src/$n.options" ] && grep -v '^\s*\(#\|$\)' "$src/$n.options"
	[ -f "$src/$n.dict" ] && echo "-dict=$src/$n.dict"
	return 0
}

# The value of -max_len for harness $1 (default 131072).
max_len()
{
	local v
	v=$(harness_flags "$1" | sed -n 's/^-max_len=//p' | tail -n 1)
	echo "${v:-131072}"
}

# Seeds from the shared real-image corpus for harness $1, into dir $2: the
# images of its format that fit its max_len (the chain harness gets each as a
# one-member archive).
shared_seeds()
{
	local n=$1 out=$2 lim f b sig
	[ -n "${VD_SHARED:-}" ] && [ -x "$VD_SHARED/corpus/unpack.sh" ] || return 0
	[ -d "$fdir/shared" ] || "$VD_SHARED/corpus/unpack.sh" "$fdir/shared" >/dev/null || return 0
	lim=$(max_len "$n")
	mkdir -p "$out"
	find "$fdir/shared" -type f -size -"$((lim / 1024 + 1))"k | sort | while read -r f; do
		[ "$(stat -c %s "$f")" -le "$lim" ] || continue
		b=$(basename "$(dirname "$f")")-$(basename "$f")
		sig=$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')
		case $n:$sig in
		chain:*) { basename "$f"; cat "$f"; } >"$out/$b" ;;
		vhd:*) [ "$(tail -c 512 "$f" | head -c 8)" = conectix ] && cp "$f" "$out/$b" ;;
		vmdk_sparse:4b444d56* | vmdk_stream:4b444d56*) cp "$f" "$out/$b" ;;
		vmdk_cowd:434f5744*) cp "$f" "$out/$b" ;;
		vmdk_sesparse:bebafeca00000000) cp "$f" "$out/$b" ;;
		vmdk_desc:*) grep -qa createType "$f" && cp "$f" "$out/$b" ;;
		esac
	done
	return 0
}

failed=0
report=()
for n in "${names[@]}"; do
	bin=$fdir/tests/fuzz/fuzz_$n
	[ -x "$bin" ] || vd_die "no harness fuzz_$n (have: ${all[*]})"
	if [ $smoke = 1 ]; then
		work=$(mktemp -d "${TMPDIR:-/tmp}/vd-fuzz-$n.XXXXXX")
	else
		work=$fdir/corpus/$n
		mkdir -p "$work"
	fi
	crashes=$fdir/crashes/$n
	mkdir -p "$crashes" "$fdir/logs"
	seeds=("$src/corpus/$n")
	[ -d "$src/regress/$n" ] && seeds+=("$src/regress/$n")
	if [ $smoke = 0 ]; then
		shared_seeds "$n" "$fdir/shared-seeds/$n"
		[ -d "$fdir/shared-seeds/$n" ] && seeds+=("$fdir/shared-seeds/$n")
	fi
	mapfile -t flags < <(harness_flags "$n")
	log=$fdir/logs/$n.log
	vd_say "fuzz_$n: ${secs}s"
	# shellcheck disable=SC2086
	nice -n "${VD_FUZZ_NICE:-10}" "$bin" "$work" "${seeds[@]}" "${flags[@]}" \
		-max_total_time="$secs" -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$crashes/" ${FUZZ_ARGS:-} >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	line=$(grep -E '^#[0-9]+.*(DONE|INITED|pulse|NEW|REDUCE)' "$log" | tail -n 1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
	corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$line")
	status=ok
	if [ $rc -ne 0 ]; then
		status="FAIL (exit $rc)"
		failed=1
		grep -E 'ERROR: |ORACLE|runtime error|SUMMARY' "$log" | head -5 | sed 's/^/    | /'
		art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
		if [ -n "$art" ] && [ -f "$art" ]; then
			status="$status: $(basename "$art")"
			"$bin" -minimize_crash=1 -runs=20000 -timeout=10 \
				-exact_artifact_path="$art.min" "$art" >"$log.min" 2>&1
			[ -s "$art.min" ] && status="$status (minimised: $(basename "$art").min)"
		fi
	fi
	report+=("$(printf '%-14s %10s execs %7s/s  cov %5s  ft %6s  corpus %5s  %s' \
		"$n" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$status")")
	[ $smoke = 1 ] && rm -rf "$work"
done

echo
echo "---- fuzz summary (${secs}s per harness; log: $fdir/logs) ----"
printf '%s\n' "${report[@]}"
[ $failed = 1 ] && echo "crashes are in $fdir/crashes/; reproduce with: $fdir/tests/fuzz/fuzz_NAME FILE"

if [ $coverage = 1 ]; then
	cdir=$fdir-cov
	profdata=$(command -v llvm-profdata-14 || command -v llvm-profdata)
	llvmcov=$(command -v llvm-cov-14 || command -v llvm-cov)
	if [ -z "$profdata" ] || [ -z "$llvmcov" ]; then
		echo "coverage: llvm-profdata/llvm-cov missing (package llvm-14): skipped"
		exit $failed
	fi
	vd_say "coverage build in $cdir"
	CC=$cc vd_build "$root" "$cdir" -DVD_COVERAGE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null || exit 2
	rm -rf "$cdir/prof"
	mkdir -p "$cdir/prof"
	objs=()
	for n in "${names[@]}"; do
		dirs=("$src/corpus/$n" "$fdir/corpus/$n")
		[ -d "$src/regress/$n" ] && dirs+=("$src/regress/$n")
		LLVM_PROFILE_FILE=$cdir/prof/$n.profraw "$cdir/tests/fuzz/fuzz_$n" -q "${dirs[@]}" \
			>/dev/null 2>&1
		"$profdata" merge -sparse "$cdir/prof/$n.profraw" -o "$cdir/prof/$n.profdata"
		objs+=(-object "$cdir/tests/fuzz/fuzz_$n")
	done
	"$profdata" merge -sparse "$cdir"/prof/*.profraw -o "$cdir/prof/all.profdata"
	echo
	echo "---- line coverage of disk/ and chain/ by the corpora of all harnesses ----"
	echo "(the VHD writer, vhd_write.c, is not reachable from a read-only open: left out)"
	printf '%-24s %7s %7s %8s\n' file lines missed covered
	"$llvmcov" report "${objs[@]:1}" -instr-profile="$cdir/prof/all.profdata" \
		-ignore-filename-regex='tests/|endian.h|vhd_write.c' "$root/disk" "$root/chain" |
		awk '/\.c / || /^TOTAL/ { printf "%-24s %7s %7s %8s\n", $1, $8, $9, $10 }' |
		sed "s|$root/||"
	echo "per line: $llvmcov show ${objs[*]:1} -instr-profile=$cdir/prof/all.profdata $root/disk"
fi
exit $failed
