#!/usr/bin/env bash
# Signals and relative mount points (issue 7 class 6): vdmount given a
# relative mount point, in the foreground (-f) and daemonized, gets SIGTERM,
# SIGINT or SIGHUP; it must unmount and exit, leaving neither a mount nor a
# stale one ("Transport endpoint is not connected") behind. Also once with -s.
#
# Env: VDMOUNT (ctest sets it). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init signals
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img missing"; exit 77; }

cd "$VD_TMP" || exit 1
qemu-img create -q -f vmdk img.vmdk 4M || vd_die "qemu-img create"

# pid_of ARGS...: the pid of the vdmount process whose command line is exactly
# "$VDMOUNT ARGS..." (the daemon keeps its argv).
pid_of()
{
	local want p
	want=$(printf '%s\0' "$VDMOUNT" "$@" | tr '\0' '\n')
	for p in /proc/[0-9]*; do
		[ "$(tr '\0' '\n' 2>/dev/null <"$p/cmdline")" = "$want" ] && { echo "${p#/proc/}"; return 0; }
	done
	return 1
}

# gone PID: waits up to 10 s for PID to exit.
gone()
{
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# clean REL: neither mounted nor stale (stat works, no mountinfo entry).
clean()
{
	local abs=$VD_TMP/$1 err
	if ! err=$(stat "$1" 2>&1 >/dev/null); then
		echo "    $1: $err" >&2
		return 1
	fi
	if vd_mounted "$abs"; then
		echo "    $abs is still in /proc/self/mountinfo" >&2
		return 1
	fi
	return 0
}

for mode in fg bg single; do
	for sig in TERM INT HUP; do
		rel=rel-$mode-$sig
		mkdir -p "$rel"
		VD_MOUNTS+=("$VD_TMP/$rel")
		args=(img.vmdk "$rel")
		case $mode in
		fg) args=(-f "${args[@]}") ;;
		single) args=(-f -s "${args[@]}") ;;
		esac
		if [ $mode = bg ]; then
			"$VDMOUNT" "${args[@]}" 2>"$VD_TMP/err" || { vd_fail "[$mode] $sig: mount"; continue; }
		else
			# A non-interactive shell starts & jobs with SIGINT ignored, and
			# libfuse keeps an ignored signal ignored: restore the default.
			env --default-signal=INT "$VDMOUNT" "${args[@]}" 2>"$VD_TMP/err" &
		fi
		pid=
		for ((i = 0; i < 100; i++)); do
			mountpoint -q "$rel" && pid=$(pid_of "${args[@]}") && break
			sleep 0.1
		done
		if [ -z "$pid" ]; then
			vd_fail "[$mode] $sig: mount did not come up"
			sed 's/^/    | /' "$VD_TMP/err"
			continue
		fi
		kill -s "$sig" "$pid"
		vd_check "[$mode] SIG$sig: the daemon exits" gone "$pid"
		vd_check "[$mode] SIG$sig: $rel is unmounted, not stale" clean "$rel"
	done
done

vd_finish
