# Mounting and unmounting the targets scripts/bench.sh compares (bash; sourced).
#
# A target is a tool reading one chain:
#   raw  the raw merged file read directly (the limit; nothing is mounted)
#   vd   vdmount (daemonizes once the mount is usable)
#   qsd  qemu-storage-daemon --export type=fuse onto a regular file
#   yal  libyal: vmdkmount for VMDK, vhdimount for VHD (DIR/<x>1..N, last = merged)
# bm_up mounts a fresh instance and sets BM_FILE (the merged disk), BM_PID (the
# daemon, empty for raw), BM_MOUNT_MS (from the start of the mount command
# until BM_FILE has a non-zero size, i.e. is usable) or BM_ERR (one line) on
# failure. bm_down stores the daemon's VmHWM in BM_HWM_KB, unmounts and waits
# until the daemon is gone, so one measurement never overlaps the next.
# Every mount point is recorded for bm_cleanup (the EXIT trap); the only
# processes ever signalled are the qsd daemons started here, by PID.
# shellcheck disable=SC2034 # the BM_* results are read by the sourcing script

BM_MOUNTS=()	# mount points (directories or, for qsd, files)
BM_QSD_PIDS=()	# qemu-storage-daemon processes started here
BM_SEQ=0	# makes mount point names unique
BM_MOUNT_TIMEOUT=${VD_BENCH_MOUNT_TIMEOUT:-60}

bm_now_ns()
{
	date +%s%N
}

# bm_ms_since T0_NS: milliseconds since T0, one decimal.
bm_ms_since()
{
	local t1
	t1=$(bm_now_ns)
	awk -v a="$1" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'
}

bm_is_mounted()
{
	awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# bm_alive PID: the process exists and is not a zombie.
bm_alive()
{
	local st=
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
	read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 1
	[ "$st" != Z ]
}

bm_hwm_kb()
{
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# bm_unmount PATH: fusermount3 -u with retries (a reader may still be closing),
# then a lazy unmount as the last resort.
bm_unmount()
{
	local m=$1 i
	for ((i = 0; i < 25; i++)); do
		bm_is_mounted "$m" || return 0
		fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
		bm_is_mounted "$m" || return 0
		sleep 0.2
	done
	fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	! bm_is_mounted "$m"
}

bm_cleanup()
{
	local m p
	for m in "${BM_MOUNTS[@]}"; do
		bm_unmount "$m" || echo "bench: could not unmount $m" >&2
	done
	for p in "${BM_QSD_PIDS[@]}"; do
		bm_alive "$p" && kill "$p" 2>/dev/null
	done
	if [ -n "${BM_MNT_DIR:-}" ] && ! grep -qF " $BM_MNT_DIR/" /proc/self/mountinfo; then
		rm -rf "$BM_MNT_DIR"
	fi
	# A temp dir of our own loses everything but the results (and never
	# while something is still mounted under it).
	if [ -n "${BM_TMP_OWNED:-}" ] && [ -z "${VD_BENCH_KEEP:-}" ] &&
		! grep -qF " $BM_TMP_OWNED/" /proc/self/mountinfo; then
		find "$BM_TMP_OWNED" -mindepth 1 -maxdepth 1 ! -name 'bench-results.txt' \
			-exec rm -rf {} +
	fi
	return 0
}

# bm_wait_file FILE PID: polls (builtin tests only, so the poll itself costs
# next to nothing) until FILE has a non-zero size; fails early when PID (if
# given) died.
bm_wait_file()
{
	local f=$1 pid=$2 t0=$SECONDS
	while [ ! -s "$f" ]; do
		if [ -n "$pid" ] && ! bm_alive "$pid"; then
			return 1
		fi
		((SECONDS - t0 > BM_MOUNT_TIMEOUT)) && return 1
		sleep 0.002
	done
}

# bm_err_from FILE: the first non-empty line of a tool's stderr.
bm_err_from()
{
	local l
	l=$(grep -m1 -v '^[[:space:]]*$' "$1" 2>/dev/null | cut -c1-160)
	echo "${l:-failed without a message}"
}

bm_up_vd()
{
	local top=$1 mnt=$2 t0 rc=0
	mkdir -p "$mnt"
	BM_MOUNTS+=("$mnt")
	t0=$(bm_now_ns)
	timeout -k 5 "$BM_MOUNT_TIMEOUT" "$VDMOUNT" "$top" "$mnt" 2>"$mnt.err" || rc=$?
	if [ $rc -ne 0 ] || ! bm_wait_file "$mnt/disk" ""; then
		BM_ERR="vdmount: $(bm_err_from "$mnt.err")"
		return 1
	fi
	BM_MOUNT_MS=$(bm_ms_since "$t0")
	BM_FILE=$mnt/disk
	BM_PID=$(pgrep -n -f -- "vdmount .*[ ]$mnt\$")
}

bm_up_qsd()
{
	local top=$1 fmt=$2 mnt=$3 t0 drv=vmdk
	[ "$fmt" = vhd ] && drv=vpc
	: >"$mnt"
	BM_MOUNTS+=("$mnt")
	t0=$(bm_now_ns)
	qemu-storage-daemon \
		--blockdev "{\"driver\":\"$drv\",\"node-name\":\"d\",\"read-only\":true,\"file\":{\"driver\":\"file\",\"filename\":\"$top\",\"read-only\":true}}" \
		--export "type=fuse,id=e,node-name=d,mountpoint=$mnt,writable=off" \
		</dev/null >"$mnt.err" 2>&1 &
	BM_PID=$!
	BM_QSD_PIDS+=("$BM_PID")
	if ! bm_wait_file "$mnt" "$BM_PID"; then
		BM_ERR="qsd: $(bm_err_from "$mnt.err")"
		return 1
	fi
	BM_MOUNT_MS=$(bm_ms_since "$t0")
	BM_FILE=$mnt
}

bm_up_yal()
{
	local top=$1 fmt=$2 mnt=$3 t0 tool=vmdkmount pfx=vmdk f n best=0 rc=0
	[ "$fmt" = vhd ] && tool=vhdimount pfx=vhdi
	mkdir -p "$mnt"
	BM_MOUNTS+=("$mnt")
	t0=$(bm_now_ns)
	timeout -k 5 "$BM_MOUNT_TIMEOUT" "$tool" "$top" "$mnt" >"$mnt.err" 2>&1 || rc=$?
	if [ $rc -ne 0 ] || ! bm_wait_file "$mnt/${pfx}1" ""; then
		BM_ERR="$tool: $(bm_err_from "$mnt.err")"
		return 1
	fi
	BM_MOUNT_MS=$(bm_ms_since "$t0")
	for f in "$mnt/$pfx"*; do
		n=${f##*/"$pfx"}
		[[ $n =~ ^[0-9]+$ ]] && ((n > best)) && best=$n
	done
	BM_FILE=$mnt/$pfx$best
	BM_PID=$(pgrep -n -f -- "$tool .*[ ]$mnt\$")
}

# bm_up TOOL FMT TOP RAW: mounts TOP (format vmdk or vhd) with TOOL; for raw,
# BM_FILE is RAW. Returns non-zero with BM_ERR set when the tool fails.
bm_up()
{
	local tool=$1 fmt=$2 top=$3 raw=$4 mnt
	BM_FILE='' BM_PID='' BM_MOUNT_MS='' BM_ERR='' BM_HWM_KB='' BM_TOOL=$tool
	BM_SEQ=$((BM_SEQ + 1))
	mnt=$BM_MNT_DIR/$tool.$BM_SEQ
	BM_MNT=$mnt
	case $tool in
	raw)
		BM_FILE=$raw
		[ -s "$raw" ] || { BM_ERR="raw: $raw missing"; return 1; } ;;
	vd) bm_up_vd "$top" "$mnt" ;;
	qsd) bm_up_qsd "$top" "$fmt" "$mnt" ;;
	yal) bm_up_yal "$top" "$fmt" "$mnt" ;;
	esac
}

# bm_down: records BM_HWM_KB, unmounts the last bm_up and waits (10 s at most)
# for its daemon to exit. Also right after a failed bm_up (undoes what it did).
bm_down()
{
	local i
	[ "$BM_TOOL" = raw ] && return 0
	[ -n "$BM_PID" ] && BM_HWM_KB=$(bm_hwm_kb "$BM_PID")
	if [ "$BM_TOOL" = qsd ] && bm_alive "$BM_PID"; then
		kill "$BM_PID" 2>/dev/null
		wait "$BM_PID" 2>/dev/null
	fi
	bm_unmount "$BM_MNT"
	for ((i = 0; i < 100; i++)); do
		bm_alive "$BM_PID" || return 0
		sleep 0.1
	done
	echo "bench: $BM_TOOL daemon $BM_PID still running after unmount" >&2
}
