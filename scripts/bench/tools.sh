# shellcheck shell=bash
# The contenders scripts/bench.sh compares, on scripts/lib.sh's mount helpers
# (bash; sourced).
#
# A disk (bm_disk) is one or more images read as one unit, with the raw file
# of each image's merged content. A contender serves a disk:
#   vd    vdmount
#   ceil  the ceiling: scripts/bench/ceiling.c, a minimal libfuse file system
#         that preads the raw file (FUSE's own limit for the same bytes)
#   qemu  qemu-storage-daemon --export type=fuse (qemu-nbd in NBD rows)
#   yal   libyal's vmdkmount or vhdimount (one image per mount)
#   raw   the raw file read directly (no FUSE)
# in one of two transports, chosen by BM_TRANSPORT: "fuse" (a file to read)
# or "nbd" (an NBD URI, for the nbdkit plugin rows). With BM_WRITABLE=1, vd
# and qemu give a writable disk whose writes land in a new file removed at
# bm_down (the copy-on-write rows). A contender that cannot serve a kind of
# disk fails with BM_ERR saying why, and its cells read n/a.
#
# bm_up TOOL DISK starts a fresh instance and sets BM_FILES (one file or URI
# per image), BM_PID (the server, empty for raw) and BM_UP_MS (lib.sh's
# VD_UP_US: from the start of the command until it returned with the mount
# usable, or, for a server that stays in the foreground, until the mount or
# socket appeared);
# bm_down records the server's peak RSS and open files (BM_HWM_KB, BM_FDS),
# stops it and waits until it is gone, so no two measurements overlap.
# shellcheck disable=SC2034 # the BM_* results are read by the sourcing script

BM_TOOLS_ALL=(vd ceil qemu yal raw)
declare -A BM_FMT BM_TOP BM_RAW BM_IMG BM_DESC BM_NOFILE
BM_TRANSPORT=fuse
BM_WRITABLE=0

# bm_disk ID FMT DESC "TOP..." "RAW..." "IMG..." [NOFILE]: declares disk ID of
# format FMT (vmdk, vhd, vhdx): TOP the images given to the tools, RAW their
# merged raw files (same order), IMG every file of the chain (what warming
# reads), NOFILE a soft RLIMIT_NOFILE to run its rows under. Paths are words
# (the work directory has no spaces). DIR/ID.at, if present, lists "OFFSET
# LEN" regions that the data check compares besides its samples.
bm_disk()
{
	BM_FMT[$1]=$2 BM_DESC[$1]=$3 BM_TOP[$1]=$4 BM_RAW[$1]=$5 BM_IMG[$1]=$6
	BM_NOFILE[$1]=${7:-}
}

# bm_ms_since T0: milliseconds since T0 (an $EPOCHREALTIME), one decimal.
bm_ms_since()
{
	vd_up_us "$1"
	bm_ms "$VD_UP_US"
}

# bm_ms US: microseconds as milliseconds with one decimal.
bm_ms()
{
	echo "$(($1 / 1000)).$(($1 % 1000 / 100))"
}

# bm_build_ceiling SRC OUT: compiles the ceiling (warnings are errors).
bm_build_ceiling()
{
	# shellcheck disable=SC2046 # pkg-config prints a list of flags
	cc -std=c11 -O2 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wextra -Wshadow -Werror \
		-o "$2" "$1" $(pkg-config --cflags --libs fuse3)
}

# bm_readahead MNT [KB]: prints (or sets) read_ahead_kb of the FUSE mount MNT.
bm_readahead()
{
	local dev mp bdi
	while read -r _ _ dev _ mp _; do
		[ "$mp" = "$1" ] && bdi=/sys/class/bdi/$dev/read_ahead_kb
	done </proc/self/mountinfo
	[ -n "${bdi:-}" ] && [ -e "$bdi" ] || return 1
	if [ $# -gt 1 ]; then
		echo "$2" >"$bdi"
	else
		cat "$bdi"
	fi
}

# bm_err_from FILE: the line of a tool's stderr that says what went wrong
# (the first that mentions an error, else one that says it failed, else the
# last), shortened.
bm_err_from()
{
	local l
	l=$(sed -e 's/^    | //' -e 's/--blockdev {.*}: //' -e '/^[[:space:]]*$/d' "$1" 2>/dev/null |
		awk '{ l = tolower($0) }
			l ~ /error/ && e == "" { e = $0 }
			l ~ /unable|cannot|could not|fail|invalid|unknown|unrecognized/ && u == "" { u = $0 }
			{ last = $0 }
			END { print e != "" ? e : u != "" ? u : last }' | cut -c1-200)
	echo "${l:-failed without a message}"
}

# bm_with BINARY FUNCTION ARGS...: runs a lib.sh helper made for vdmount
# (vd_mount: daemonizes, last argument the mount point) with another binary.
bm_with()
{
	local VDMOUNT=$1
	shift
	"$@"
}

bm_up_fuse_vd()
{
	local disk=$1 mnt=$2 tops t w=()
	read -r -a tops <<<"${BM_TOP[$disk]}"
	if [ "$BM_WRITABLE" = 1 ]; then
		BM_SCRATCH=$BM_DIR/.bench-delta.${BM_FMT[$disk]}
		w=(-w --delta "$BM_SCRATCH")
	fi
	if ! vd_mount "${w[@]}" "${tops[@]}" "$mnt" 2>/dev/null; then
		BM_ERR=$(bm_err_from "$VD_TMP/mount.err")
		return 1
	fi
	BM_MNTS=("$mnt")
	BM_PID=$(vd_fuse_pid "$mnt")
	BM_VD_RA_KB=$(bm_readahead "$mnt")
	if [ ${#tops[@]} -eq 1 ]; then
		BM_FILES=("$mnt/disk")
	else
		for t in "${tops[@]}"; do
			BM_FILES+=("$mnt/$(vd_stem "$t")/disk")
		done
	fi
}

# The ceiling gets vdmount's FUSE settings: 16 idle threads, and the
# read_ahead_kb that vdmount's own mount had (fs/main.c raises it).
bm_up_fuse_ceil()
{
	local disk=$1 mnt=$2 raws r
	[ "$BM_WRITABLE" = 1 ] && { BM_ERR="ceiling: read-only"; return 1; }
	read -r -a raws <<<"${BM_RAW[$disk]}"
	if ! bm_with "$BM_CEILING" vd_mount -o ro,default_permissions,fsname=ceiling,subtype=ceiling \
		-o max_idle_threads=16 "${raws[@]}" "$mnt" 2>/dev/null; then
		BM_ERR="ceiling: $(bm_err_from "$VD_TMP/mount.err")"
		return 1
	fi
	BM_MNTS=("$mnt")
	BM_PID=$(vd_fuse_pid "$mnt")
	[ -n "${BM_VD_RA_KB:-}" ] && bm_readahead "$mnt" "$BM_VD_RA_KB"
	for r in "${raws[@]}"; do
		BM_FILES+=("$mnt/${r##*/}")
	done
}

# One qemu-storage-daemon for all images of the disk, one export file each.
# Writable: over a copy of the top image, next to it (so that its relative
# parent hint still resolves), removed at bm_down.
bm_up_fuse_qemu()
{
	local disk=$1 mnt=$2 tops i drv=${BM_FMT[$1]} args=() ro=true wr=off top
	read -r -a tops <<<"${BM_TOP[$disk]}"
	[ "$drv" = vhd ] && drv=vpc
	if [ "$BM_WRITABLE" = 1 ]; then
		BM_SCRATCH=${tops[0]%/*}/.bench-copy.${tops[0]##*/}
		cp --sparse=always "${tops[0]}" "$BM_SCRATCH" || return 1
		tops[0]=$BM_SCRATCH ro=false wr=on
	fi
	for i in "${!tops[@]}"; do
		top=${tops[i]}
		: >"$mnt.$i"
		args+=(--blockdev "{\"driver\":\"$drv\",\"node-name\":\"n$i\",\"read-only\":$ro,\"file\":{\"driver\":\"file\",\"filename\":\"$top\",\"read-only\":$ro}}"
			--export "type=fuse,id=e$i,node-name=n$i,mountpoint=$mnt.$i,writable=$wr")
		BM_MNTS+=("$mnt.$i")
		BM_FILES+=("$mnt.$i")
	done
	if ! vd_spawn "$mnt.$i" qemu-storage-daemon "${args[@]}" 2>/dev/null; then
		BM_PID=$VD_SPAWN_PID
		BM_ERR=$(bm_err_from "$VD_TMP/spawn.err")
		return 1
	fi
	BM_PID=$VD_SPAWN_PID
}

bm_up_fuse_yal()
{
	local disk=$1 mnt=$2 tops
	read -r -a tops <<<"${BM_TOP[$disk]}"
	[ ${#tops[@]} -eq 1 ] || { BM_ERR="libyal: one image per mount"; return 1; }
	[ "$BM_WRITABLE" = 1 ] && { BM_ERR="libyal: read-only"; return 1; }
	if ! vd_yal_mount "${tops[0]}" "$mnt" 2>/dev/null; then
		BM_ERR="libyal: $(bm_err_from "$VD_TMP/yal.err")"
		return 1
	fi
	BM_MNTS=("$mnt")
	BM_PID=$(vd_fuse_pid "$mnt")
	BM_FILES=("$VD_YAL_FILE")
}

bm_up_fuse_raw()
{
	[ "$BM_WRITABLE" = 1 ] && { BM_ERR="raw: read-only"; return 1; }
	read -r -a BM_FILES <<<"${BM_RAW[$1]}"
}

# NBD servers listen on a Unix socket; BM_FILES holds the URI. The plugin
# of issue 13 and nbdkit's file plugin (the ceiling of NBD rows) through
# lib.sh's vd_nbd_serve; qemu-nbd -r with room for 8 connections, persistent
# (it would end when the first client leaves).
bm_up_nbd_vd()
{
	[ -f "${BM_NBD_PLUGIN:-}" ] || { BM_ERR="nbdkit-vdmount-plugin.so not built"; return 1; }
	bm_nbd_serve "$BM_NBD_PLUGIN" "file=${BM_TOP[$1]%% *}"
}

bm_up_nbd_ceil()
{
	bm_nbd_serve file "${BM_RAW[$1]%% *}"
}

# bm_nbd_serve PLUGIN ARGS...: vd_nbd_serve with another plugin.
bm_nbd_serve()
{
	local VD_NBD_PLUGIN=$1
	shift
	if ! vd_nbd_serve "m-$BM_TOOL" "$@" 2>/dev/null; then
		BM_PID=${VD_NBD_PIDS[${#VD_NBD_PIDS[@]} - 1]}
		BM_ERR=$(bm_err_from "$VD_TMP/nbdkit.err")
		return 1
	fi
	BM_PID=${VD_NBD_PIDS[${#VD_NBD_PIDS[@]} - 1]}
	BM_FILES=("$(vd_nbd_uri '')")
}

bm_up_nbd_qemu()
{
	local drv=${BM_FMT[$1]} sock=$2.sock i t0
	[ "$drv" = vhd ] && drv=vpc
	rm -f "$sock"
	t0=$EPOCHREALTIME
	qemu-nbd -r -t -k "$sock" --shared=8 -f "$drv" "${BM_TOP[$1]%% *}" \
		</dev/null >/dev/null 2>"$VD_TMP/qemu-nbd.err" &
	BM_PID=$!
	VD_FG_PIDS+=("$BM_PID")
	for ((i = 0; i < VD_MOUNT_TIMEOUT * 1000; i++)); do
		if [ -S "$sock" ]; then
			vd_up_us "$t0"
			BM_FILES=("nbd+unix:///?socket=$sock")
			return 0
		fi
		((i % 50 == 0)) && ! kill -0 "$BM_PID" 2>/dev/null && break
		vd_nap 0.001
	done
	BM_ERR=$(bm_err_from "$VD_TMP/qemu-nbd.err")
	return 1
}

bm_up_nbd_yal()
{
	BM_ERR="libyal: no NBD server"
	return 1
}

bm_up_nbd_raw()
{
	BM_ERR="raw: not over NBD"
	return 1
}

# bm_up TOOL DISK: see the top of this file. Returns non-zero with BM_ERR.
bm_up()
{
	local tool=$1 disk=$2 f
	BM_TOOL=$tool BM_FILES=() BM_MNTS=() BM_PID='' BM_ERR='' BM_UP_MS='' BM_SCRATCH=''
	BM_HWM_KB='' BM_FDS='' VD_UP_US=''
	"bm_up_${BM_TRANSPORT}_$tool" "$disk" "$VD_TMP/m-$tool" || {
		BM_ERR=${BM_ERR:-$tool failed}
		return 1
	}
	if [ "$BM_TRANSPORT" = fuse ]; then
		for f in "${BM_FILES[@]}"; do
			[ -s "$f" ] || { BM_ERR="$tool: $f is empty or missing"; return 1; }
		done
	fi
	[ -n "$VD_UP_US" ] && BM_UP_MS=$(bm_ms "$VD_UP_US")
	return 0
}

# bm_alive PID: the process exists and has not exited (a daemonized server
# is reparented, and its zombie may wait a while to be reaped).
bm_alive()
{
	local st=
	[ -r "/proc/$1/stat" ] || return 1
	read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 1
	[ "$st" != Z ]
}

# bm_down: undoes the last bm_up (also a failed one).
bm_down()
{
	local m i child=
	if [ -n "$BM_PID" ] && bm_alive "$BM_PID"; then
		BM_HWM_KB=$(vd_proc_hwm_kb "$BM_PID")
		BM_FDS=$(vd_proc_fds "$BM_PID")
	fi
	# qemu-storage-daemon and the NBD servers (our children) end on SIGTERM,
	# unmounting their exports; the daemonized FUSE servers end when
	# unmounted. qemu-nbd loses a SIGTERM that comes right after its socket
	# appeared: SIGKILL after 2 s.
	[ -n "$BM_PID" ] && { [ "$BM_TOOL" = qemu ] || [ "$BM_TRANSPORT" = nbd ]; } && child=1
	[ -n "$child" ] && kill "$BM_PID" 2>/dev/null
	for m in "${BM_MNTS[@]}"; do
		vd_umount "$m" || echo "bench: could not unmount $m" >&2
	done
	for ((i = 0; i < 2000 && ${#BM_PID} > 0; i++)); do
		bm_alive "$BM_PID" || break
		((i == 400)) && [ -n "$child" ] && kill -9 "$BM_PID" 2>/dev/null
		vd_nap 0.005
	done
	[ -n "$child" ] && wait "$BM_PID" 2>/dev/null
	[ -n "$BM_PID" ] && bm_alive "$BM_PID" &&
		echo "bench: $BM_TOOL server $BM_PID still running after unmount" >&2
	[ -n "$BM_SCRATCH" ] && rm -f "$BM_SCRATCH"
	BM_PID=''
}
