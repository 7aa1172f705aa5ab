#!/usr/bin/env bash
# The project's test command (README, CI): installs what is missing, builds a
# release tree (build/) and an ASan+UBSan tree (build-asan/), runs every ctest
# (unit + e2e + docs) in build/, builds, installs and runs the Debian package
# (scripts/package.sh), then the unit and e2e tests under the sanitizers.
# Exits non-zero on any failure and ends with one summary line.
#
# Last, the libFuzzer tree (clang, ASan+UBSan): every committed seed and
# regression input, then a short fuzzing smoke of every harness.
#
# Env: VD_SKIP_ASAN=1 skips the sanitizer tree, VD_SKIP_FUZZ=1 the fuzz tree;
# VD_FUZZ_SMOKE (seconds per harness, default 10: 13 harnesses); VD_JOBS (default 2);
# VD_BUILD_DIR (default build/; the sanitizer tree is VD_BUILD_DIR-asan, the
# fuzz tree VD_BUILD_DIR-fuzz).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

jobs=${VD_JOBS:-2}
bdir=${VD_BUILD_DIR:-$root/build}
adir=$bdir-asan
start=$(date +%s)
results=()
failed=0

n_pass=0
n_fail=0
ctest_log=$(mktemp)
trap 'rm -f "$ctest_log"' EXIT

# Runs ctest and adds its counts to n_pass/n_fail.
counted_ctest()
{
	local rc line total failed
	ctest "$@" 2>&1 | tee "$ctest_log"
	rc=${PIPESTATUS[0]}
	line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$ctest_log" | tail -n 1)
	if [ -n "$line" ]; then
		failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
		total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
		n_pass=$((n_pass + total - failed))
		n_fail=$((n_fail + failed))
	elif [ "$rc" -ne 0 ]; then
		n_fail=$((n_fail + 1))
	fi
	return "$rc"
}

step()
{
	local name=$1 t0 rc
	shift
	vd_say "$name"
	t0=$(date +%s)
	"$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		results+=("ok   $name ($(($(date +%s) - t0))s)")
	else
		results+=("FAIL $name (exit $rc)")
		failed=1
	fi
	return $rc
}

summary()
{
	local r
	echo
	echo "---- summary ----"
	for r in "${results[@]}"; do
		echo "$r"
	done
	if [ $failed -eq 0 ]; then
		echo "TEST SUMMARY: PASS (${#results[@]} steps, $(($(date +%s) - start))s)"
	else
		echo "TEST SUMMARY: FAIL (see above; $(($(date +%s) - start))s)"
		[ $n_fail -gt 0 ] || n_fail=1 # a build or install step failed
	fi
	echo "$n_pass passed, $n_fail failed"
}

step "install dependencies" vd_install_deps $VD_PKGS_BUILD $VD_PKGS_TEST $VD_PKGS_FUZZ ||
	{ summary; exit 1; }

if step "build (RelWithDebInfo, -Werror)" vd_build "$root" "$bdir" \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo -DVD_WERROR=ON; then
	step "ctest $(basename "$bdir")/ (unit + e2e + docs)" \
		counted_ctest --test-dir "$bdir" --output-on-failure -j"$jobs"
	# The Debian package as a user gets it: built, installed with apt, run.
	step "package (cpack -G DEB, apt-get install, vdmount --version)" \
		bash "$here/package.sh" "$bdir"
fi

if [ "${VD_SKIP_ASAN:-0}" != 1 ]; then
	if step "build-asan (ASan+UBSan, -Werror)" vd_build "$root" "$adir" \
		-DCMAKE_BUILD_TYPE=Debug -DVD_SANITIZE=ON -DVD_WERROR=ON; then
		export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
		export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
		step "ctest $(basename "$adir")/ (unit)" \
			counted_ctest --test-dir "$adir" -L unit --output-on-failure -j"$jobs"
		# Every mount test under the sanitizers too; the daemon's sanitizer
		# reports are collected by scripts/lib.sh (vd_asan_check).
		step "ctest $(basename "$adir")/ (e2e)" \
			counted_ctest --test-dir "$adir" -L e2e --output-on-failure -j"$jobs"
	fi
fi

if [ "${VD_SKIP_FUZZ:-0}" != 1 ]; then
	step "fuzz (clang, ASan+UBSan): seeds, regressions, ${VD_FUZZ_SMOKE:-10}s per harness" \
		env VD_FUZZ_DIR="$bdir-fuzz" "$here/fuzz.sh" --smoke "${VD_FUZZ_SMOKE:-10}"
fi

summary
exit $failed
