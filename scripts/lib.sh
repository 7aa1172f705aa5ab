# Shared shell helpers for scripts/*.sh and tests/e2e/*.sh (bash only; source it).
#
# Two groups:
#  - setup: vd_say/vd_die, vd_install_deps (apt, only what is missing), vd_build;
#  - e2e (also the base of scripts/bench.sh): vd_e2e_init (skip 77 without FUSE,
#    temp dir, trap cleanup), vd_mount / vd_mount_fg / vd_spawn / vd_yal_mount /
#    vd_umount with timeouts, the daemon behind a mount (vd_fuse_pid, its peak
#    RSS and open files), sha256 snapshots of source files, and ASan log
#    collection for daemonized vdmount processes.
# Every mount made through these helpers is recorded and undone by the EXIT trap,
# and every process started in the background is ended by its PID, so a failing
# check never leaves a mount or a daemon behind.

# Packages the build and the tests need (Debian names).
# nbdkit-plugin-dev is optional for a build (without it there is no nbdkit
# plugin); CI installs it, and nbdkit + libnbd-bin to test the plugin.
VD_PKGS_BUILD="build-essential cmake pkg-config libfuse3-dev fuse3 zlib1g-dev libdeflate-dev uthash-dev libcmocka-dev libssl-dev nbdkit-plugin-dev"
VD_PKGS_TEST="qemu-utils e2fsprogs mtools fdisk util-linux bzip2 gzip coreutils libvmdk-utils libvhdi-utils nbdkit libnbd-bin jq man-db groff-base bash-completion"
# scripts/bench.sh only: fio and qemu-storage-daemon (qemu-system-common).
VD_PKGS_BENCH="fio qemu-system-common"
# The libFuzzer harnesses (scripts/fuzz.sh; llvm-14 only for its coverage report).
VD_PKGS_FUZZ="clang-14 libclang-rt-14-dev"

vd_say()
{
	printf '==> %s\n' "$*"
}

vd_die()
{
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# vd_install_deps PKG...: installs the packages that are not installed yet.
# Does nothing when all are present; needs root (or sudo) and apt otherwise.
vd_install_deps()
{
	local missing=() p st
	command -v dpkg-query >/dev/null 2>&1 || {
		vd_say "not a Debian system: not installing packages ($*)"
		return 0
	}
	for p in "$@"; do
		st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || st=
		case "$st" in
		*" installed") ;;
		*) missing+=("$p") ;;
		esac
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local sudo=
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || vd_die "missing packages (${missing[*]}) and not root"
		sudo="sudo -n"
	fi
	vd_say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -q </dev/null || return 1
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${missing[@]}" </dev/null
}

# vd_build SRC BUILDDIR [cmake args...]: configures (always, so new files are
# picked up) and builds with two jobs.
vd_build()
{
	local src=$1 dir=$2
	shift 2
	cmake -S "$src" -B "$dir" "$@" >/dev/null || return 1
	cmake --build "$dir" -j2
}

# vd_vmdk_delta OLD_RAW NEW_RAW PARENT SNAP: creates SNAP, a monolithicSparse
# delta over PARENT (same directory, relative hint) holding exactly the 64 KiB
# clusters in which NEW_RAW differs from OLD_RAW (qemu-img cannot rebase VMDK,
# and convert -B copies every cluster).
vd_vmdk_delta()
{
	local old=$1 new=$2 parent=$3 snap=$4 size start count off len
	(cd "$(dirname "$snap")" &&
		qemu-img create -q -f vmdk -b "$(basename "$parent")" -F vmdk "$(basename "$snap")") ||
		return 1
	size=$(stat -c %s "$new")
	# cmp -l prints one line per differing byte (1-based offset); merge them
	# into runs of whole clusters: "first_cluster count".
	{ cmp -l "$old" "$new" || true; } |
		awk -v c=65536 '{ k = int(($1 - 1) / c)
			if (k == last) next
			if (k == last + 1) { n++; last = k; next }
			if (n) print first, n
			first = k; last = k; n = 1 }
			BEGIN { last = -2; n = 0 }
			END { if (n) print first, n }' >"$snap.runs"
	while read -r start count; do
		off=$((start * 65536))
		len=$((count * 65536))
		[ $((off + len)) -gt "$size" ] && len=$((size - off))
		dd if="$new" of="$snap.chunk" bs=64K skip="$off" count="$len" \
			iflag=skip_bytes,count_bytes status=none || return 1
		qemu-io -f vmdk -c "write -s $snap.chunk $off $len" "$snap" >/dev/null || return 1
	done <"$snap.runs"
	rm -f "$snap.runs" "$snap.chunk"
}

# ---------------------------------------------------------------------------
# End-to-end helpers

VD_MOUNTS=()	  # mount points to undo at exit
VD_FG_PIDS=()	  # foreground FUSE servers started by vd_spawn (vd_mount_fg)
VD_NBD_PIDS=()	  # nbdkit servers started by vd_nbd_serve
VD_TMP=
VD_FAILS=0
VD_MOUNT_TIMEOUT=${VD_MOUNT_TIMEOUT:-30}

# vd_mounted DIR: DIR (an absolute path) is a mount point in
# /proc/self/mountinfo, also when its FUSE daemon died and stat() fails with
# ENOTCONN (mountpoint -q says no then).
vd_mounted()
{
	findmnt -n --mountpoint "$1" >/dev/null 2>&1
}

vd_cleanup()
{
	local m p i j
	[ -n "${VD_TEST_WATCHDOG:-}" ] && kill "$VD_TEST_WATCHDOG" 2>/dev/null
	for p in "${VD_NBD_PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	# Newest first: loop mounts of FUSE files go before the FUSE mount.
	for ((j = ${#VD_MOUNTS[@]} - 1; j >= 0; j--)); do
		m=${VD_MOUNTS[j]}
		vd_mounted "$m" || continue
		for i in 1 2 3 4 5; do
			umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || true
			vd_mounted "$m" || break
			sleep 0.5
		done
		vd_mounted "$m" && { umount -l "$m" 2>/dev/null ||
			fusermount3 -uz "$m" 2>/dev/null || true; }
	done
	for p in "${VD_FG_PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	[ -n "$VD_TMP" ] && [ -d "$VD_TMP" ] && [ -z "${VD_KEEP:-}" ] && rm -rf "$VD_TMP"
	return 0
}

# vd_e2e_init NAME: checks the environment (exit 77 when FUSE is unusable),
# makes $VD_TMP and installs the EXIT trap. Sets VD_ASAN=1 when vdmount was
# built with ASan, and then sends the daemon's sanitizer reports to files in
# $VD_TMP/asan (a daemon has no stderr) that vd_asan_check inspects.
vd_e2e_init()
{
	VD_NAME=$1
	if [ ! -c /dev/fuse ] || ! command -v fusermount3 >/dev/null 2>&1; then
		echo "SKIP $VD_NAME: /dev/fuse or fusermount3 missing"
		exit 77
	fi
	[ -n "${VDMOUNT:-}" ] && [ -x "$VDMOUNT" ] || {
		echo "FAIL $VD_NAME: VDMOUNT (path of the vdmount binary) is not set or not executable"
		exit 1
	}
	vd_e2e_tmp
	vd_test_watch
	VD_ASAN=0
	if nm -a "$VDMOUNT" 2>/dev/null | grep -q __asan_init ||
		grep -q __asan_init "$VDMOUNT" 2>/dev/null; then
		VD_ASAN=1
		mkdir -p "$VD_TMP/asan"
		export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:log_path=$VD_TMP/asan/vdmount"
		export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}:log_path=$VD_TMP/asan/vdmount"
	fi
}

# vd_e2e_tmp: makes $VD_TMP and installs the cleanup traps.
vd_e2e_tmp()
{
	VD_TMP=$(mktemp -d "${TMPDIR:-/tmp}/vd-$VD_NAME.XXXXXX")
	trap vd_cleanup EXIT
	trap 'exit 130' INT TERM
}

# vd_need TOOL...: exits 77 (skipped) when a tool the test needs is missing.
vd_need()
{
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || { echo "SKIP ${VD_NAME:-}: $t missing"; exit 77; }
	done
}

vd_pass()
{
	printf 'PASS %s\n' "$*"
}

vd_fail()
{
	printf 'FAIL %s\n' "$*"
	VD_FAILS=$((VD_FAILS + 1))
}

# vd_check DESC CMD...: runs CMD, prints PASS/FAIL DESC.
vd_check()
{
	local desc=$1
	shift
	if "$@"; then
		vd_pass "$desc"
	else
		vd_fail "$desc"
	fi
}

# vd_fds_readonly MNT: the vdmount serving MNT holds every input file it has
# open read-only (the rule "never a write to an input file", checked on the
# open descriptors: the access mode of "flags:" in /proc/PID/fdinfo/N, octal,
# & 3 must be 0). Exempt: standard streams and other descriptors inherited
# from the test, the test's own logs ($VD_TMP/*.err, ASan reports), and the
# new delta of a -w mount (<stem>-vdm-NNNNNN.<ext>, or the file --delta
# names; a --scratch delta is unlinked, so no longer a regular file). Prints
# each offender and returns 1 on any.
vd_fds_readonly()
{
	local mnt=$1 pid fd target k v flags delta= arg prev= bad=0
	local -A ours=()
	pid=$(vd_daemon_pid "$mnt") || {
		echo "    no vdmount process serves $mnt" >&2
		return 1
	}
	while IFS= read -r -d '' arg; do
		[ "$prev" = --delta ] && delta=$(readlink -f "$arg")
		case $arg in --delta=*) delta=$(readlink -f "${arg#--delta=}") ;; esac
		prev=$arg
	done 2>/dev/null <"/proc/$pid/cmdline"
	# what the test itself has open (a daemon inherits it: ctest's log, say)
	while read -r fd target; do
		ours[$fd]=$target
	done < <(find "/proc/$$/fd" -mindepth 1 -maxdepth 1 -printf '%f %l\n' 2>/dev/null)
	while read -r fd target; do
		case $fd in 0 | 1 | 2) continue ;; esac
		[ "${ours[$fd]:-}" = "$target" ] && continue
		[ -f "$target" ] || continue # pipes, sockets, /dev/fuse, /dev/null, deleted files
		case $target in "$VD_TMP"/*.err | "$VD_TMP"/asan/*) continue ;; esac
		case ${target##*/} in *-vdm-[0-9][0-9][0-9][0-9][0-9][0-9].*) continue ;; esac
		[ -n "$delta" ] && case $target in "$delta" | "$delta"/*) continue ;; esac
		flags=
		while read -r k v; do
			[ "$k" = flags: ] && flags=$v
		done 2>/dev/null <"/proc/$pid/fdinfo/$fd"
		[ -n "$flags" ] || continue
		if (((8#$flags & 3) != 0)); then
			echo "    vdmount (pid $pid) holds $target open for writing" \
				"(fd $fd, flags $flags)" >&2
			bad=1
		fi
	done < <(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 -printf '%f %l\n' 2>/dev/null)
	return $bad
}

# vd_fds_check MNT: vd_fds_readonly, counted as a failed check when it fails
# (silent when it passes). Every mount of these helpers runs it, once the
# mount is up: the chain's files are all open by then.
vd_fds_check()
{
	# only vdmount daemons (the benchmark mounts its ceiling through these helpers)
	[ "${VDMOUNT##*/}" = vdmount ] || return 0
	vd_fds_readonly "$1" || vd_fail "${VD_NAME:-vdmount}: an input is open for writing ($1)"
}

# vd_mount MNT [vdmount args...] : runs vdmount (daemonizing) with a timeout;
# returns its exit status. stderr is kept in $VD_TMP/mount.err and echoed.
# Success also requires MNT to be a mount point on return. Sets VD_UP_US: the
# microseconds the command took (vdmount returns once the mount is usable).
# Checks that the daemon holds no file open for writing (vd_fds_check).
vd_mount()
{
	local mnt=${!#} rc=0 t0
	mkdir -p "$mnt"
	vd_mount_record "$mnt"
	t0=$EPOCHREALTIME
	timeout -k 5 "$VD_MOUNT_TIMEOUT" "$VDMOUNT" "$@" 2>"$VD_TMP/mount.err" || rc=$?
	vd_up_us "$t0"
	[ -s "$VD_TMP/mount.err" ] && sed 's/^/    | /' "$VD_TMP/mount.err" >&2
	# Under ASan a leak report at the parent's exit makes the status 1 even
	# though the daemon is up; vd_asan_check judges the report itself.
	if [ $rc -ne 0 ] && [ "${VD_ASAN:-0}" = 1 ] && mountpoint -q "$mnt"; then
		echo "    (vdmount exit $rc under ASan with the mount up: leak report?)" >&2
		rc=0
	fi
	if [ $rc -eq 0 ] && ! mountpoint -q "$mnt"; then
		echo "    vdmount returned 0 but $mnt is not mounted" >&2
		rc=1
	fi
	[ $rc -eq 0 ] && vd_fds_check "$mnt"
	return $rc
}

# vd_up_us T0: sets VD_UP_US to the microseconds since T0 (an $EPOCHREALTIME).
vd_up_us()
{
	local a=${1/./} b=${EPOCHREALTIME/./}
	VD_UP_US=$((10#$b - 10#$a))
}

# vd_mount_record MNT: MNT is undone by the EXIT trap (once, however often it
# is mounted again).
vd_mount_record()
{
	local m
	for m in "${VD_MOUNTS[@]}"; do
		[ "$m" = "$1" ] && return 0
	done
	VD_MOUNTS+=("$1")
}

# vd_is_mounted PATH: PATH (absolute, no spaces) is a mount point; reads
# /proc/self/mountinfo with builtins only, so polling it costs no process.
vd_is_mounted()
{
	local mp
	while read -r _ _ _ _ mp _; do
		[ "$mp" = "$1" ] && return 0
	done </proc/self/mountinfo
	return 1
}

# vd_nap SECONDS: sleeps without starting a process (read -t on a FIFO that
# nobody writes), for polls of a few milliseconds.
vd_nap()
{
	if [ -z "${VD_NAP_FD:-}" ]; then
		mkfifo "$VD_TMP/nap" && exec {VD_NAP_FD}<>"$VD_TMP/nap" || { sleep "$1"; return 0; }
	fi
	read -r -t "$1" -u "$VD_NAP_FD" _ || true
}

# vd_spawn MNT CMD...: starts CMD, a FUSE server that stays in the foreground,
# in the background (stderr in $VD_TMP/spawn.err) and polls every millisecond
# until MNT (a directory or a file) is mounted, at most VD_MOUNT_TIMEOUT
# seconds. Sets VD_SPAWN_PID, and VD_UP_US (microseconds from the start until
# the mount was seen); CMD is ended at exit if still running.
vd_spawn()
{
	local mnt=$1 abs i t0
	shift
	vd_mount_record "$mnt"
	abs=$(realpath -m -- "$mnt")
	t0=$EPOCHREALTIME
	"$@" </dev/null 2>"$VD_TMP/spawn.err" &
	VD_SPAWN_PID=$!
	VD_FG_PIDS+=("$VD_SPAWN_PID")
	for ((i = 0; i < VD_MOUNT_TIMEOUT * 1000; i++)); do
		vd_is_mounted "$abs" && { vd_up_us "$t0"; return 0; }
		((i % 50 == 0)) && ! kill -0 "$VD_SPAWN_PID" 2>/dev/null && break
		vd_nap 0.001
	done
	sed 's/^/    | /' "$VD_TMP/spawn.err" >&2
	return 1
}

# vd_mount_fg MNT [vdmount args...]: starts vdmount -f in the background and
# polls until mounted (VD_MOUNT_TIMEOUT seconds).
vd_mount_fg()
{
	local mnt=${!#}
	mkdir -p "$mnt"
	vd_spawn "$mnt" "$VDMOUNT" -f "$@" || return 1
	vd_fds_check "$mnt"
	return 0
}

# vd_fg_wait: waits (10 s at most) for the last vd_mount_fg process to exit
# and returns its exit status (1 if it is still running).
vd_fg_wait()
{
	local pid=${VD_FG_PIDS[${#VD_FG_PIDS[@]} - 1]} i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && { echo "    vdmount -f still running after unmount" >&2; return 1; }
	local rc=0
	wait "$pid" || rc=$?
	if [ $rc -ne 0 ] && [ "${VD_ASAN:-0}" = 1 ]; then
		echo "    (vdmount -f exit $rc under ASan: leak report? see vd_asan_check)" >&2
		rc=0
	fi
	return $rc
}

# vd_umount MNT: fusermount3 -u with retries (a reader may still hold a file).
vd_umount()
{
	local mnt=$1 i
	for ((i = 0; i < 50; i++)); do
		mountpoint -q "$mnt" || return 0
		fusermount3 -u "$mnt" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "    could not unmount $mnt" >&2
	return 1
}

# vd_daemon_pid MNT: pid of the vdmount process serving MNT (empty if none,
# status 1): the one whose command line holds MNT, as given or as an
# absolute path. Reads /proc with builtins only: every mount runs it
# (vd_fds_check), and a process per candidate costs seconds on a busy
# machine. Only a process named vdmount has its cmdline read: reading the
# cmdline of another takes that process's mmap lock, and one stuck in a page
# fault (on any FUSE mount of a test running beside this one) would stop
# this read with it.
vd_daemon_pid()
{
	local mnt f arg comm
	mnt=$(realpath -m "$1")
	for f in /proc/[0-9]*/cmdline; do
		{
			IFS= read -r comm <"${f%cmdline}comm" && [ "$comm" = vdmount ] || continue
			IFS= read -r -d '' arg && [ "${arg##*/}" = vdmount ] || continue
			while IFS= read -r -d '' arg; do
				[ "$arg" = "$1" ] || [ "$arg" = "$mnt" ] || continue
				f=${f#/proc/}
				echo "${f%/cmdline}"
				return 0
			done
		} 2>/dev/null <"$f"
	done
	return 1
}

# vd_watchdog_start SECONDS WHAT DIR: after SECONDS, says that WHAT is still
# running, shows what every vdmount serving a mount below DIR is doing (each
# thread's state and kernel stack; with gdb, every thread's backtrace) and
# kills it, which fails the FUSE requests the test waits on (ENOTCONN): a
# hang becomes a FAIL line with its evidence, not a test that ctest kills
# with none. vd_watchdog_stop ends the watch and fails WHAT if it fired.
vd_watchdog_start()
{
	rm -f "$VD_TMP/watchdog.fired"
	vd_watch "$1" "$2" "$3" "$VD_TMP/watchdog.fired"
	VD_WATCHDOG=$!
	VD_WATCHDOG_WHAT=$2
}

# vd_test_watch: a watchdog on the whole test (VD_TEST_WATCH seconds, 1,080:
# a while before ctest's limit of 1,200 s would kill it without a word about
# where it hung; 0: none, for the benchmark).
vd_test_watch()
{
	[ "${VD_TEST_WATCH:-1080}" = 0 ] && return 0
	vd_watch "${VD_TEST_WATCH:-1080}" "$VD_NAME" "$VD_TMP" "$VD_TMP/test-watchdog.fired"
	VD_TEST_WATCHDOG=$!
}

# vd_watch SECONDS WHAT DIR FLAG: the watchdog process, in the background
# ($!): see vd_watchdog_start; touches FLAG when it fires.
vd_watch()
{
	local secs=$1 what=$2 dir=$3 flag=$4
	(
		trap 'kill "$s" 2>/dev/null; exit 0' TERM
		sleep "$secs" &
		s=$!
		wait "$s"
		touch "$flag"
		echo "    watchdog: $what still running after $secs s" >&2
		vd_watchdog_dump "$dir" >&2
	) &
}

vd_watchdog_stop()
{
	kill "$VD_WATCHDOG" 2>/dev/null
	wait "$VD_WATCHDOG" 2>/dev/null
	if [ -e "$VD_TMP/watchdog.fired" ]; then
		vd_fail "$VD_WATCHDOG_WHAT: hung (killed by the watchdog; its report is above)"
		rm -f "$VD_TMP/watchdog.fired"
	fi
}

# vd_watchdog_dump DIR: see vd_watchdog_start. Finds the mounts in
# /proc/mounts (a stat of a hung mount point would hang too).
vd_watchdog_dump()
{
	local dir=$1 dev mnt fs rest pid t
	ps -eo pid,ppid,stat,wchan:32,etime,args 2>/dev/null | awk '$3 ~ /D/ || /vdmount|qemu|sha256sum| dd /' | grep -v awk
	while read -r dev mnt fs rest; do
		case "$mnt" in "$dir"/*) ;; *) continue ;; esac
		case "$fs" in fuse*) ;; *) continue ;; esac
		pid=$(vd_daemon_pid "$mnt") || { echo "  $mnt: no daemon found"; continue; }
		echo "  $mnt: vdmount pid $pid, its threads:"
		for t in /proc/"$pid"/task/*; do
			echo "    thread ${t##*/} $(cat "$t/comm" 2>/dev/null) state $(awk '{print $3}' "$t/stat" 2>/dev/null) wchan $(cat "$t/wchan" 2>/dev/null)"
			sed 's/^/      /' "$t/stack" 2>/dev/null | head -12
		done
		command -v gdb >/dev/null &&
			timeout 60 gdb -p "$pid" -batch -ex "thread apply all bt" 2>&1 | grep -E '^(Thread|#)' | head -150
		kill -9 "$pid" 2>/dev/null
	done </proc/mounts
}

# vd_umount_wait MNT: unmounts MNT and waits (30 s at most) until the daemon
# that served it has exited: a writable mount finishes its delta (final flush,
# footers, clean flag) after the kernel lets go of the mount point.
vd_umount_wait()
{
	local pid i
	pid=$(vd_daemon_pid "$1")
	vd_umount "$1" || return 1
	[ -n "$pid" ] || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "    vdmount (pid $pid) still running 30 s after unmounting $1" >&2
	return 1
}

# vd_fuse_pid MNT: the PID of any FUSE server (not only vdmount, unlike
# vd_daemon_pid) whose command line ends with MNT as given (vdmount, the libyal
# tools and the benchmark's ceiling all take the mount point last); empty if
# there is none.
vd_fuse_pid()
{
	pgrep -n -f -- "[ ]$1\$"
}

# vd_proc_hwm_kb PID / vd_proc_fds PID: peak resident memory (VmHWM, KiB) and
# the number of open file descriptors of a running process.
vd_proc_hwm_kb()
{
	local k v _
	while read -r k v _; do
		[ "$k" = VmHWM: ] && { echo "$v"; return 0; }
	done <"/proc/$1/status"
	return 1
}

vd_proc_fds()
{
	local f n=0
	for f in /proc/"$1"/fd/*; do
		[ -e "$f" ] || [ -L "$f" ] && n=$((n + 1))
	done
	echo "$n"
}

# vd_yal_mount IMAGE MNT: mounts IMAGE (and its parents) with libyal's tool for
# its format (vhdimount for .vhd/.vhdx/.avhdx, vmdkmount otherwise), which
# shows every layer as DIR/<x>1..N; sets VD_YAL_FILE to the merged disk (the
# highest N) and VD_UP_US (as vd_mount). Returns non-zero, with the tool's
# message on stderr, if it fails.
vd_yal_mount()
{
	local img=$1 mnt=$2 tool=vmdkmount pfx=vmdk f n best=0 t0
	case $img in
	*.vhd | *.vhdx | *.avhdx) tool=vhdimount pfx=vhdi ;;
	esac
	mkdir -p "$mnt"
	vd_mount_record "$mnt"
	t0=$EPOCHREALTIME
	timeout -k 5 "$VD_MOUNT_TIMEOUT" "$tool" "$img" "$mnt" >"$VD_TMP/yal.err" 2>&1 || {
		sed 's/^/    | /' "$VD_TMP/yal.err" >&2
		return 1
	}
	vd_up_us "$t0"
	for f in "$mnt/$pfx"*; do
		n=${f##*/"$pfx"}
		[[ $n =~ ^[0-9]+$ ]] && ((n > best)) && best=$n
	done
	VD_YAL_FILE=$mnt/$pfx$best
	[ "$best" -gt 0 ]
}

# vd_drop_caches: writes dirty pages back and empties the page cache (root).
vd_drop_caches()
{
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# vd_sums_save OUT FILE...: records sha256 of each file; vd_sums_check OUT
# verifies them (the "no write to an input file" rule).
vd_sums_save()
{
	local out=$1
	shift
	sha256sum -- "$@" >"$out"
}

vd_sums_check()
{
	sha256sum --quiet -c -- "$1"
}

# vd_expect_erofs FILE: opening FILE for writing must fail with EROFS.
vd_expect_erofs()
{
	local err
	err=$( (exec 3>>"$1") 2>&1) && return 1
	case "$err" in
	*"Read-only file system"*) return 0 ;;
	esac
	echo "    open for write of $1: $err (expected EROFS)" >&2
	return 1
}

# vd_expect_fail DESC IMAGE NEEDLE PROBLEM-ERE [vdmount options...]: vdmount
# IMAGE must exit non-zero within 20 s, not by a signal, with exactly one line
# "vdmount: error: ..." on stderr that contains NEEDLE (the file it must name)
# and matches PROBLEM-ERE (case-insensitive), and leave nothing mounted.
vd_expect_fail()
{
	local desc=$1 img=$2 needle=$3 problem=$4 rc=0 mnt=$VD_TMP/mnt-fail why
	shift 4
	mkdir -p "$mnt"
	VD_MOUNTS+=("$mnt")
	timeout -k 5 20 "$VDMOUNT" "$@" "$img" "$mnt" >"$VD_TMP/out" 2>"$VD_TMP/err" </dev/null ||
		rc=$?
	why=$(vd_refusal_why $rc "$VD_TMP/err" 'vdmount: error: ' "$needle" "$problem")
	if mountpoint -q "$mnt"; then
		why="${why:+$why; }left a mount behind"
		vd_umount "$mnt"
	fi
	vd_refusal_report "$desc" "$why" $rc "$VD_TMP/err"
}

# vd_refusal_why RC ERRFILE PREFIX NEEDLE PROBLEM-ERE: what is wrong with a
# refusal (nothing when it is right): a program that exited RC (from
# timeout -k 5 20) must have failed by itself, without a sanitizer report,
# leaving exactly one line in ERRFILE, which starts with PREFIX, contains
# NEEDLE and matches PROBLEM-ERE (case-insensitive).
vd_refusal_why()
{
	local rc=$1 err=$2 prefix=$3 needle=$4 problem=$5 n
	n=$(wc -l <"$err")
	if [ "$rc" -eq 0 ]; then
		echo "exit 0"
	elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "hung (killed after 20 s)"
	elif [ "$rc" -ge 128 ]; then
		echo "killed by signal $((rc - 128))"
	elif grep -qE 'Sanitizer|runtime error' "$err"; then
		echo "sanitizer report"
	elif [ "$n" -ne 1 ]; then
		echo "$n lines on stderr, expected 1"
	elif ! grep -q "^$prefix" "$err"; then
		echo "stderr is not '$prefix...'"
	elif ! grep -qF -- "$needle" "$err"; then
		echo "error does not name $needle"
	elif ! grep -qiE -- "$problem" "$err"; then
		echo "error does not say what is wrong (/$problem/)"
	fi
}

# vd_refusal_report DESC WHY RC ERRFILE: PASS (with the error line) or FAIL.
vd_refusal_report()
{
	if [ -z "$2" ]; then
		vd_pass "$1: $(cat "$4")"
	else
		vd_fail "$1: $2 (exit $3)"
		sed 's/^/    | /' "$4" | head -20
	fi
}

# vd_stem FILE: the layer name vdmount uses (base name without .vmdk, .vhd,
# .vhdx, .avhd or .avhdx; chain/path.c's vd_path_stem, case-insensitive).
vd_stem()
{
	local b e
	b=$(basename "$1")
	for e in .vmdk .vhdx .avhdx .avhd .vhd; do
		case "${b,,}" in
		?*"$e")
			b=${b:0:$((${#b} - ${#e}))}
			break
			;;
		esac
	done
	echo "$b"
}

# vd_qemu_io FMT IMG CMD...: runs qemu-io -f FMT -c CMD... on IMG (dies on error).
vd_qemu_io()
{
	local fmt=$1 img=$2
	shift 2
	local args=() c
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null || vd_die "qemu-io $* on $img"
}

# vd_same FILE EXPECTED: same size and content (cmp, at most 300 s).
vd_same()
{
	local got exp
	got=$(stat -c %s "$1" 2>/dev/null) || { echo "    $1: cannot stat" >&2; return 1; }
	exp=$(stat -c %s "$2")
	if [ "$got" != "$exp" ]; then
		echo "    $1: size $got, expected $exp" >&2
		return 1
	fi
	timeout 300 cmp "$1" "$2" >&2
}

# vd_chains_init: W (source images), E (expected raws) and M (mount points)
# under $VD_TMP, and empty CHAINS and EXPECT, for the chain builders in
# tests/e2e/chains/ and vd_check_chains / vd_nbd_check_chains.
vd_chains_init()
{
	W=$VD_TMP/img
	E=$VD_TMP/exp
	M=$VD_TMP/mnt
	mkdir -p "$W" "$E" "$M"
	declare -gA EXPECT=() # layer file -> expected raw
	CHAINS=()	      # "name|layer1 layer2 ... top" (base first)
}

# vd_expect_convert: every layer of CHAINS without an EXPECT entry gets the raw
# qemu-img convert makes of it, $E/<stem>.raw (qemu follows the backing chain).
vd_expect_convert()
{
	local c l
	for c in "${CHAINS[@]}"; do
		for l in ${c#*|}; do
			[ -n "${EXPECT[$l]:-}" ] && continue
			EXPECT[$l]=$E/$(vd_stem "$l").raw
			qemu-img convert -O raw "$l" "${EXPECT[$l]}" || vd_die "qemu-img convert $l"
		done
	done
}

# vd_check_chains MODE: mounts each "name|layer ... top" entry of the global
# CHAINS array under $M (MODE single adds -s), checks it with vd_check_tree and
# unmounts it.
vd_check_chains()
{
	local mode=$1 opts=() c name layers mnt
	[ "$mode" = single ] && opts=(-s)
	for c in "${CHAINS[@]}"; do
		name=${c%%|*}
		read -r -a layers <<<"${c#*|}"
		mnt=$M/$mode-$name
		if ! vd_mount "${opts[@]}" "${layers[${#layers[@]} - 1]}" "$mnt"; then
			vd_fail "[$mode] $name: mount"
			continue
		fi
		vd_check_tree "$mnt" "[$mode] $name" "${layers[@]}"
		vd_check "[$mode] $name: stderr's warnings are in chain.json" vd_check_warnings "$mnt"
		vd_check "[$mode] $name: unmount" vd_umount "$mnt"
	done
}

# vd_check_tree DIR NAME LAYER...: DIR is a mounted chain (disk, layers/,
# chain.json) of LAYER files, base first. Checks disk and every layers/NN-<stem>
# (stem = file name without .vmdk/.vhd; NN = 1-based, any zero padding)
# against ${EXPECT[layer]} (a global associative array the caller fills),
# that chain.json is a JSON object naming every layer, EROFS on open for
# write, and that the daemon still answers.
vd_check_tree()
{
	local dir=$1 name=$2
	shift 2
	local layers=("$@") n=$# i=0 f files=() prefix
	vd_check "$name: disk" vd_same "$dir/disk" "${EXPECT[${layers[n - 1]}]}"
	# Layer views only: not their .changed lists or .pN partition files.
	mapfile -t files < <(ls "$dir/layers" 2>/dev/null | grep -vE '\.(changed|p[0-9]+)$')
	if [ ${#files[@]} -ne "$n" ]; then
		vd_fail "$name: layers/ has ${#files[@]} entries (${files[*]}), expected $n"
		return
	fi
	for f in "${files[@]}"; do
		prefix=${f%%-*}
		if [ "$f" != "$prefix-$(vd_stem "${layers[i]}")" ] || [ "$((10#$prefix))" != $((i + 1)) ]; then
			vd_fail "$name: layers/$f should be NN-$(vd_stem "${layers[i]}") with NN = $((i + 1))"
		else
			vd_check "$name: layers/$f" vd_same "$dir/layers/$f" "${EXPECT[${layers[i]}]}"
		fi
		i=$((i + 1))
	done
	local json ok=1
	json=$(cat "$dir/chain.json" 2>/dev/null)
	for f in "${layers[@]}"; do
		case "$json" in
		*"$(basename "$f")"*) ;;
		*) ok=0 ;;
		esac
	done
	case "$json" in
	"{"*"}") ;;
	*) ok=0 ;;
	esac
	if command -v jq >/dev/null && ! jq -e . >/dev/null 2>&1 <<<"$json"; then
		ok=0
	fi
	vd_check "$name: chain.json names every layer" test $ok = 1
	vd_check "$name: disk open for write -> EROFS" vd_expect_erofs "$dir/disk"
	vd_check "$name: layers/${files[0]} open for write -> EROFS" \
		vd_expect_erofs "$dir/layers/${files[0]}"
	vd_check "$name: the mount still answers (daemon alive)" \
		bash -c 'ls "$1" >/dev/null' _ "$dir/layers"
}

# vd_info_vhdimount TOP EXPECTED NAME WHY: informational only (never fails):
# says whether libvhdi's vhdimount reads TOP's merged disk as EXPECTED; WHY
# explains a known difference. Mounts under $M/vhdimount.
vd_info_vhdimount()
{
	local top=$1 exp=$2 name=$3 why=$4 vm=$M/vhdimount last
	command -v vhdimount >/dev/null || return 0
	mkdir -p "$vm"
	VD_MOUNTS+=("$vm")
	if timeout 30 vhdimount "$top" "$vm" >/dev/null 2>&1; then
		last=$(ls "$vm" | sort -V | tail -1)
		if [ -n "$last" ] && cmp -s "$vm/$last" "$exp"; then
			echo "INFO vhdimount agrees with the model on $name"
		else
			echo "INFO vhdimount differs from the model on $name ($why)"
		fi
		umount "$vm" 2>/dev/null || fusermount3 -u "$vm" 2>/dev/null || true
	else
		echo "INFO vhdimount could not mount $name"
	fi
}

# vd_check_warnings DIR: every "vdmount: warning: " line the last vd_mount
# printed is in DIR/chain.json's validation.warnings, and nothing else is.
vd_check_warnings()
{
	local got want
	want=$(sed -n 's/^vdmount: warning: //p' "$VD_TMP/mount.err" | sort)
	got=$(jq -r '.validation.warnings[]' "$1/chain.json" | sort) || return 1
	[ "$got" = "$want" ] && return 0
	echo "    stderr warnings:" >&2
	printf '      %s\n' "$want" >&2
	echo "    chain.json warnings:" >&2
	printf '      %s\n' "$got" >&2
	return 1
}

# vd_asan_check: after all unmounts, fails on any sanitizer error reported by a
# daemonized vdmount; leaks are printed but do not fail (the daemon's exit
# path is not the product's hot path).
vd_asan_check()
{
	[ "${VD_ASAN:-0}" = 1 ] || return 0
	sleep 1
	local f bad=0
	for f in "$VD_TMP"/asan/vdmount*; do
		[ -e "$f" ] || continue
		if grep -qE 'ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehavior' "$f"; then
			echo "    sanitizer error in $f:" >&2
			head -40 "$f" >&2
			bad=1
		elif grep -q 'LeakSanitizer' "$f"; then
			echo "    (leak report from vdmount at exit: $(grep -c 'Direct leak\|Indirect leak' "$f") leaks)" >&2
			head -20 "$f" >&2
		fi
	done
	return $bad
}

# vd_finish: prints the summary line and exits non-zero when a check failed.
vd_finish()
{
	if ! vd_asan_check; then
		vd_fail "$VD_NAME: sanitizer reports"
	fi
	[ -e "$VD_TMP/test-watchdog.fired" ] &&
		vd_fail "$VD_NAME: hung (the watchdog killed its daemons; its report is above)"
	if [ "$VD_FAILS" -ne 0 ]; then
		echo "$VD_NAME: $VD_FAILS check(s) FAILED"
		exit 1
	fi
	echo "$VD_NAME: all checks passed"
	exit 0
}

# ---------------------------------------------------------------------------
# nbdkit plugin helpers (tests/e2e/nbd_*.sh)


# vd_nbd_init NAME: like vd_e2e_init for nbdkit-vdmount-plugin.so
# ($VD_NBD_PLUGIN): makes $VD_TMP; exit 77 when the plugin was not built (no
# nbdkit-plugin-dev), nbdkit/nbdcopy/nbdinfo are missing, or the plugin is the
# sanitized one. The distribution's nbdkit is not sanitized, so it can only
# load that plugin with libasan in LD_PRELOAD, and then it deadlocks at exit
# whenever the plugin has called strerror (glibc's locale lock is left
# unbalanced; p11-kit's destructor waits on it forever): the ASan tree builds
# the plugin but does not run it.
vd_nbd_init()
{
	VD_NAME=$1
	local t
	if [ -z "${VD_NBD_PLUGIN:-}" ] || [ ! -f "$VD_NBD_PLUGIN" ]; then
		echo "SKIP $VD_NAME: the nbdkit plugin was not built (nbdkit-plugin-dev missing)"
		exit 77
	fi
	if grep -q __asan_init "$VD_NBD_PLUGIN"; then
		echo "SKIP $VD_NAME: sanitized plugin (an unsanitized nbdkit cannot run it reliably)"
		exit 77
	fi
	for t in nbdkit nbdcopy nbdinfo; do
		command -v $t >/dev/null || { echo "SKIP $VD_NAME: $t missing"; exit 77; }
	done
	vd_e2e_tmp
	vd_test_watch
	VD_ASAN=0
}

# vd_nbd_run CMD [plugin args...]: nbdkit -U - PLUGIN ARGS --run CMD (CMD sees
# $uri, as nbdkit sets it), at most 300 s; nbdkit's stderr goes to
# $VD_TMP/nbdkit.err. Returns nbdkit's exit status (CMD's, once it ran).
vd_nbd_run()
{
	local cmd=$1
	shift
	timeout -k 5 300 nbdkit -U - "$VD_NBD_PLUGIN" "$@" --run "$cmd" \
		2>"$VD_TMP/nbdkit.err" </dev/null
}

# vd_nbd_refused DESC NEEDLE PROBLEM-ERE [plugin args...]: nbdkit with the
# plugin and ARGS must refuse to start within 20 s with exactly one line
# "nbdkit: error: ..." naming NEEDLE (vd_refusal_why).
vd_nbd_refused()
{
	local desc=$1 needle=$2 problem=$3 rc=0 why
	shift 3
	timeout -k 5 20 nbdkit -U - "$VD_NBD_PLUGIN" "$@" --run true \
		>/dev/null 2>"$VD_TMP/nbdkit.err" </dev/null || rc=$?
	why=$(vd_refusal_why $rc "$VD_TMP/nbdkit.err" 'nbdkit: error: ' "$needle" "$problem")
	vd_refusal_report "$desc" "$why" $rc "$VD_TMP/nbdkit.err"
}

# vd_nbd_serve NAME [plugin args...]: starts nbdkit in the foreground on the
# Unix socket $VD_TMP/NAME.sock (VD_NBD_SOCK) in the background, and waits
# until it listens (its pid file appears; polled every millisecond, VD_UP_US
# says how long it took). nbdkit's stderr goes to $VD_TMP/nbdkit.err. Returns
# 1 (and shows stderr) if it does not come up.
vd_nbd_serve()
{
	local name=$1 i pid t0
	shift
	VD_NBD_SOCK=$VD_TMP/$name.sock
	rm -f "$VD_NBD_SOCK" "$VD_TMP/$name.pid"
	t0=$EPOCHREALTIME
	nbdkit -f --exit-with-parent -U "$VD_NBD_SOCK" -P "$VD_TMP/$name.pid" \
		"$VD_NBD_PLUGIN" "$@" 2>"$VD_TMP/nbdkit.err" </dev/null &
	pid=$!
	VD_NBD_PIDS+=("$pid")
	for ((i = 0; i < VD_MOUNT_TIMEOUT * 1000; i++)); do
		[ -s "$VD_TMP/$name.pid" ] && { vd_up_us "$t0"; return 0; }
		((i % 50 == 0)) && ! kill -0 "$pid" 2>/dev/null && break
		vd_nap 0.001
	done
	sed 's/^/    | /' "$VD_TMP/nbdkit.err" >&2
	return 1
}

# vd_nbd_stop: stops the last vd_nbd_serve server; fails unless it was still
# running and exits 0.
vd_nbd_stop()
{
	local pid=${VD_NBD_PIDS[${#VD_NBD_PIDS[@]} - 1]} rc=0
	kill "$pid" 2>/dev/null || { echo "    nbdkit $pid was not running" >&2; return 1; }
	wait "$pid" || rc=$?
	[ $rc -eq 0 ] || sed 's/^/    | /' "$VD_TMP/nbdkit.err" >&2
	return $rc
}

# vd_nbd_uri EXPORT: the URI of EXPORT on the last vd_nbd_serve server.
vd_nbd_uri()
{
	printf 'nbd+unix:///%s?socket=%s' "$1" "$VD_NBD_SOCK"
}

# vd_nbd_list: the export names the last vd_nbd_serve server lists, one a line.
vd_nbd_list()
{
	nbdinfo --list "$(vd_nbd_uri '')" | sed -n 's/^export="\(.*\)":$/\1/p'
}

# vd_nbd_names [PREFIX/] LAYER...: the exports the plugin must list for a
# chain of these layers (base first): disk, then layers/NN-<stem>, NN
# 1-based and zero-padded as vdmount pads it.
vd_nbd_names()
{
	local pre=
	case "$1" in */) pre=$1 && shift ;; esac
	local n=$# w=2 i=1 l
	[ ${#n} -gt 2 ] && w=${#n}
	echo "${pre}disk"
	for l in "$@"; do
		printf '%slayers/%0*d-%s\n' "$pre" "$w" $i "$(vd_stem "$l")"
		i=$((i + 1))
	done
}

# vd_same_sparse FILE EXPECTED: same size and content, compared by qemu-img
# compare, which skips the holes both files have (cmp reads gigabytes of
# zeros from the 5 GiB test disks: 45 s a file on a loaded machine).
vd_same_sparse()
{
	local got exp
	got=$(stat -c %s "$1" 2>/dev/null) || { echo "    $1: cannot stat" >&2; return 1; }
	exp=$(stat -c %s "$2")
	if [ "$got" != "$exp" ]; then
		echo "    $1: size $got, expected $exp" >&2
		return 1
	fi
	timeout 300 qemu-img compare -q -f raw -F raw "$1" "$2" >&2
}

# vd_nbd_same URI EXPECTED [nbdcopy options...]: nbdcopy of URI into a file
# equals EXPECTED.
vd_nbd_same()
{
	local uri=$1 exp=$2 r=0
	shift 2
	rm -f "$VD_TMP/nbd-out.raw"
	timeout 300 nbdcopy "$@" "$uri" "$VD_TMP/nbd-out.raw" ||
		{ echo "    nbdcopy $uri failed" >&2; return 1; }
	vd_same_sparse "$VD_TMP/nbd-out.raw" "$exp" || r=1
	rm -f "$VD_TMP/nbd-out.raw"
	return $r
}

# Allocation maps as merged runs, one a line: "start end D" (data) or
# "start end H" (a hole that reads as zeros).
vd_runs_merge()
{
	awk '{ s = $1; e = $1 + $2
		if (n && $3 == t && s == le) { le = e; next }
		if (n) printf "%.0f %.0f %s\n", ls, le, t
		ls = s; le = e; t = $3; n = 1 }
		END { if (n) printf "%.0f %.0f %s\n", ls, le, t }'
}

vd_map_qemu()
{
	local fmt=vmdk
	# qemu probes a fixed VHD (no header at offset 0) as raw
	case "$1" in *.vhd) fmt=vpc ;; esac
	qemu-img map -f $fmt --output=json "$1" |
		sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": \([a-z]*\).*/\1 \2 \3/p' |
		awk '{ print $1, $2, ($3 == "true" ? "D" : "H") }' | vd_runs_merge
}

vd_map_nbd()
{
	nbdinfo --map "$1" | awk '{ print $1, $2, ($3 % 2 ? "H" : "D") }' | vd_runs_merge
}

# vd_nbd_map_same MODE URI FILE: nbdinfo --map of URI against qemu-img map of
# FILE. MODE exact: the same data and hole runs. MODE covers: every run qemu
# calls data is data for the plugin (qemu also sees the holes of the host
# files under flat extents, which the plugin reports as data).
vd_nbd_map_same()
{
	local mode=$1 uri=$2 file=$3
	vd_map_nbd "$uri" >"$VD_TMP/map.nbd" || return 1
	vd_map_qemu "$file" >"$VD_TMP/map.qemu" || return 1
	[ -s "$VD_TMP/map.nbd" ] || { echo "    empty map from nbdinfo" >&2; return 1; }
	if [ "$mode" = exact ]; then
		diff "$VD_TMP/map.qemu" "$VD_TMP/map.nbd" >&2
		return
	fi
	awk 'BEGIN { n = 0 }
		NR == FNR { if ($3 == "D") { s[n] = $1; e[n] = $2; n++ } next }
		$3 == "D" { p = $1
			for (i = 0; i < n && p < $2; i++)
				if (s[i] <= p && p < e[i]) p = e[i]
			if (p < $2) { printf "    qemu data %s-%s is a hole at %.0f\n", $1, $2, p >"/dev/stderr"; bad = 1 } }
		END { exit bad }' "$VD_TMP/map.nbd" "$VD_TMP/map.qemu"
}

# vd_nbd_check_chains: serves each CHAINS entry with the plugin and checks it:
# nbdkit --run 'nbdcopy "$uri" out' (the default export) equals the top's
# ${EXPECT[...]}; nbdinfo --list shows exactly disk and every layers/NN-<stem>;
# nbdcopy of each equals its EXPECT; where ${NBD_MAP[name]} (a global
# associative array the caller fills) is exact or covers, nbdinfo --map of
# each export agrees with qemu-img map of that layer (vd_nbd_map_same); and
# nbdkit logs no error.
vd_nbd_check_chains()
{
	local c name layers n top exports e i file mode
	for c in "${CHAINS[@]}"; do
		name=${c%%|*}
		read -r -a layers <<<"${c#*|}"
		n=${#layers[@]}
		top=${layers[n - 1]}
		mode=${NBD_MAP[$name]:-}
		rm -f "$VD_TMP/nbd-out.raw"
		if vd_nbd_run "nbdcopy \"\$uri\" '$VD_TMP/nbd-out.raw'" file="$top"; then
			vd_check "$name: nbdkit --run nbdcopy (default export)" \
				vd_same_sparse "$VD_TMP/nbd-out.raw" "${EXPECT[$top]}"
		else
			vd_fail "$name: nbdkit --run nbdcopy (default export)"
			sed 's/^/    | /' "$VD_TMP/nbdkit.err"
		fi
		rm -f "$VD_TMP/nbd-out.raw"
		if ! vd_nbd_serve "$name" file="$top"; then
			vd_fail "$name: nbdkit serves the chain"
			continue
		fi
		mapfile -t exports < <(vd_nbd_names "${layers[@]}")
		vd_check "$name: nbdinfo --list shows disk and the $n layers" \
			diff <(printf '%s\n' "${exports[@]}") <(vd_nbd_list)
		for ((i = 0; i <= n; i++)); do
			e=${exports[i]}
			file=$top
			[ $i -gt 0 ] && file=${layers[i - 1]}
			vd_check "$name: $e" vd_nbd_same "$(vd_nbd_uri "$e")" "${EXPECT[$file]}"
			[ -n "$mode" ] && vd_check "$name: $e: nbdinfo --map ~ qemu-img map ($mode)" \
				vd_nbd_map_same "$mode" "$(vd_nbd_uri "$e")" "$file"
		done
		vd_check "$name: nbdkit stops cleanly" vd_nbd_stop
		vd_check "$name: nbdkit logged no error" bash -c '! grep -i error "$1" >&2' _ \
			"$VD_TMP/nbdkit.err"
	done
}
