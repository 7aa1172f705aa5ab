# shellcheck shell=bash
# Rows, measurements and the results table of scripts/bench.sh (bash; sourced).
#
# A row is one metric on one disk (bm_row DISK METRIC), measured for every
# contender of scripts/bench/tools.sh in BM_REPEAT rounds: each round runs
# every contender once, on a fresh instance, and the round's first contender
# rotates from round to round, so that a drift of the (shared, noisy) machine
# spreads over all of them. The table shows the median per contender and
# vdmount's ratio to each other column; every sample is kept in
# bench-samples.tsv. Each metric says what it measures ("reads" column):
#   FUSE        every byte read is a FUSE request to the daemon (O_DIRECT, or
#               the first read of each page on a fresh mount, page cache of
#               the mounted file empty); the image files are in the host's
#               page cache (read once before the row)
#   FUSE+disk   the same with the page cache dropped before each sample: the
#               image files come from the disk (raw: the raw file from disk)
#   page cache  reads of a file read once before: served by the kernel from
#               the mounted file's page cache; the daemon is not asked
#   NBD         an NBD client copying the disk (transport rows)
# Targets come from scripts/bench/targets.tsv (bm_targets_load).

BM_FIO_OPTS=() # more fio options for one bm_fio call
declare -A BM_M_UNIT BM_M_PREP BM_M_READS BM_M_LABEL BM_M_SKIP
declare -A BM_VAL BM_SAMPLES BM_BROKEN BM_ROW_DISK BM_ROW_METRIC BM_HWM BM_FDMAX
BM_ROWS=()
BM_NOTES=()
BM_TARGETS=()

declare -A BM_NOTED BM_SETTLED
bm_note()
{
	[ -n "${BM_NOTED[$*]:-}" ] && return 0
	BM_NOTED[$*]=1
	BM_NOTES+=("$*")
	echo "    note: $*"
}

# bm_metric ID UNIT PREP READS LABEL [SKIP...]: declares a metric. PREP warm (image files read into the page cache before the
# row) or cold (page cache dropped before each sample); SKIP: contenders for
# which the metric means nothing (raw under O_DIRECT would read the host's
# disk, not a limit of the page-cache path).
bm_metric()
{
	BM_M_UNIT[$1]=$2 BM_M_PREP[$1]=$3 BM_M_READS[$1]=$4 BM_M_LABEL[$1]=$5
	BM_M_SKIP[$1]=" ${*:6} "
}

bm_metric mount ms warm - "mount time" raw
bm_metric seq MB/s warm FUSE "seq read 1 MiB, fresh mount"
bm_metric seqd MB/s warm FUSE "seq read 1 MiB O_DIRECT" raw
bm_metric cold MB/s cold FUSE+disk "seq read 1 MiB, cache dropped"
bm_metric pc MB/s warm "page cache" "seq re-read 1 MiB"
bm_metric r1d IOPS warm FUSE "rand 4K O_DIRECT, 1 job" raw
bm_metric r2d IOPS warm FUSE "rand 4K O_DIRECT, 2 jobs" raw
bm_metric r1 IOPS warm FUSE "rand 4K first touch, 1 job"
bm_metric r2 IOPS warm FUSE "rand 4K first touch, 2 jobs"
bm_metric rpc IOPS warm "page cache" "rand 4K re-read, 1 job"
bm_metric nbd1 MB/s warm NBD "nbdcopy, 1 connection" yal raw
bm_metric nbd4 MB/s warm NBD "nbdcopy, 4 connections" yal raw
bm_metric nbdt ms warm NBD "nbdcopy of the whole disk, 4 connections" yal raw
bm_metric wseq MB/s warm "FUSE write" "seq write 1 MiB O_DIRECT" ceil yal raw
bm_metric wr1d IOPS warm "FUSE write" "rand 4K write O_DIRECT" ceil yal raw
bm_metric wr2d IOPS warm "FUSE write" "rand 4K write O_DIRECT, 2 jobs" ceil yal raw
bm_metric wr1f IOPS warm "FUSE write" "rand 4K write buffered, fsync every 32" ceil yal raw
bm_metric wtar ms warm "FUSE write" "mkfs.ext4, untar 1/3 of disk, sync" ceil yal raw
# Per disk, from every sample of its rows: not measured on their own.
bm_metric rss MiB - - "peak RSS"
bm_metric fds - - - "open files (most)"
bm_metric ok - - - "data = raw (sampled)"

# bm_seq FILE [DIRECT]: sequential read of FILE with dd in 1 MiB blocks,
# stopped (SIGINT: dd then reports what it read) after BM_SEQ_CAP seconds;
# prints MB/s ("N capped" when stopped) or "ERR message".
bm_seq()
{
	local f=$1 flag=() out rc=0 size
	[ "${2:-0}" = 1 ] && flag=(iflag=direct)
	size=$(stat -L -c %s -- "$f")
	out=$(timeout -s INT -k 10 "$BM_SEQ_CAP" dd if="$f" of=/dev/null bs=1M "${flag[@]}" 2>&1) ||
		rc=$?
	if [ $rc -ne 0 ] && [ $rc -ne 124 ]; then
		echo "ERR $(grep -m1 -i 'error\|dd:' <<<"$out")"
		return
	fi
	awk -v rc=$rc -v size="$size" '
		/ copied, / {
			b = $1
			for (i = 1; i <= NF; i++)
				if ($i == "s,")
					s = $(i - 1)
		}
		END {
			if (!(b > 0 && s > 0)) { print "ERR no dd statistics"; exit }
			if (rc == 0 && b != size) { printf "ERR short read: %d of %d bytes\n", b, size; exit }
			printf "%.1f%s\n", b / s / 1e6, rc == 124 ? " capped" : ""
		}' <<<"$out"
}

# bm_fio RW JOBS DIRECT MODE BS FILE...: a fio job (psync) over the files
# (several: one picked at random per I/O); prints IOPS, or MB/s for a 1 MiB
# block size, or "ERR message". MODE "loop" runs BM_RUNTIME seconds; "once"
# reads each block at most once (fio's random map; with 2 jobs each gets its
# own half of the file), stopping after BM_RUNTIME seconds at the latest, so
# that a buffered run never re-reads a page it brought into the cache.
# --invalidate=0: fio must not drop the page cache of the file (the raw
# contender and the page-cache rows rely on it).
bm_fio()
{
	local rw=$1 jobs=$2 direct=$3 mode=$4 bs=$5 fn size part opts=("${BM_FIO_OPTS[@]}")
	shift 5
	fn=$(printf '%s:' "${@//:/\\:}")
	size=$(stat -L -c %s -- "$1")
	if [ "$mode" = once ]; then
		part=$((size / jobs / 4096 * 4096))
		opts=(--size="$part" --offset_increment="$part")
	else
		opts=(--time_based --norandommap)
	fi
	[[ $rw == *write ]] || opts+=(--readonly)
	[ $# -gt 1 ] && opts+=(--file_service_type=random)
	timeout -k 10 $((BM_RUNTIME + 120)) fio --name=bench --filename="${fn%:}" --rw="$rw" \
		--bs="$bs" --ioengine=psync --numjobs="$jobs" --runtime="$BM_RUNTIME" \
		--group_reporting --direct="$direct" --invalidate=0 "${opts[@]}" \
		--output-format=json 2>&1 |
		awk -v sect="${rw#rand}" -v mbs="$([ "$bs" = 1m ] && echo 1)" '
		/"error" : / { e = $3; gsub(/[^0-9]/, "", e); if (e + 0 != 0) err = e }
		$0 ~ "\"" sect "\" : \\{" { in_s = 1 }
		in_s && /"bw_bytes" : / && bw == "" { bw = $3; gsub(/[^0-9.]/, "", bw) }
		in_s && /"iops" : / && iops == "" { iops = $3; gsub(/[^0-9.]/, "", iops) }
		END {
			if (err != "") print "ERR fio job error " err
			else if (iops == "") print "ERR fio printed no " sect " figures"
			else if (mbs) printf "%.1f\n", bw / 1e6
			else printf "%.0f\n", iops
		}'
}

# bm_guest_tar FILE: mkfs.ext4 on FILE through a loop device, mounts it,
# untars DIR/tree.tar, unmounts, detaches and fsyncs FILE (the data is then
# in the contender's image, as a guest's sync would leave it); prints ms.
bm_guest_tar()
{
	local f=$1 dev g=$VD_TMP/guest t0 rc=0
	t0=$EPOCHREALTIME
	dev=$(losetup -f --show -- "$f" 2>/dev/null) || { echo "ERR losetup failed"; return; }
	mkdir -p "$g"
	{ mkfs.ext4 -q -F -E nodiscard "$dev" && mount -t ext4 "$dev" "$g" && tar -xf "$BM_DIR/tree.tar" -C "$g" &&
		umount "$g"; } >/dev/null 2>&1 || rc=1
	mountpoint -q "$g" && umount "$g"
	losetup -d "$dev"
	sync -- "$f" || rc=1
	[ $rc -eq 0 ] || { echo "ERR mkfs, mount, tar or sync failed"; return; }
	bm_ms_since "$t0"
}

# bm_nbdcopy CONNECTIONS URI [ms]: copies the NBD export to null:, prints
# MB/s (or the milliseconds it took).
bm_nbdcopy()
{
	local size t0 ms
	size=$(nbdinfo --size "$2" 2>/dev/null) || { echo "ERR nbdinfo failed"; return; }
	t0=$EPOCHREALTIME
	timeout -k 10 "$BM_SEQ_CAP" nbdcopy --connections="$1" "$2" null: 2>/dev/null ||
		{ echo "ERR nbdcopy failed or took over $BM_SEQ_CAP s"; return; }
	ms=$(bm_ms_since "$t0")
	[ "${3:-}" = ms ] && { echo "$ms"; return; }
	awk -v b="$size" -v ms="$ms" 'BEGIN { printf "%.1f\n", b / (ms / 1000) / 1e6 }'
}

# bm_measure METRIC: one sample on the contender that bm_up just started.
bm_measure()
{
	local f=${BM_FILES[0]}
	case $1 in
	mount) echo "$BM_UP_MS" ;;
	seq | cold) bm_seq "$f" ;;
	seqd) bm_seq "$f" 1 ;;
	pc) cat -- "$f" >/dev/null && bm_seq "$f" ;;
	r1d) bm_fio randread 1 1 loop 4k "${BM_FILES[@]}" ;;
	r2d) bm_fio randread 2 1 loop 4k "${BM_FILES[@]}" ;;
	r1) bm_fio randread 1 0 once 4k "$f" ;;
	r2) bm_fio randread 2 0 once 4k "$f" ;;
	rpc) cat -- "$f" >/dev/null && bm_fio randread 1 0 loop 4k "$f" ;;
	nbd1) bm_nbdcopy 1 "$f" ;;
	nbd4) bm_nbdcopy 4 "$f" ;;
	nbdt) bm_nbdcopy 4 "$f" ms ;;
	wseq) bm_fio write 1 1 loop 1m "$f" ;;
	wr1d) bm_fio randwrite 1 1 loop 4k "$f" ;;
	wr2d) bm_fio randwrite 2 1 loop 4k "$f" ;;
	wr1f) BM_FIO_OPTS=(--fsync=32) bm_fio randwrite 1 0 loop 4k "$f" ;;
	wtar) bm_guest_tar "$f" ;;
	*) echo "ERR unknown metric $1" ;;
	esac
}

# bm_warm DISK: reads the disk's image and raw files into the page cache. A
# sparse file (less than half of it allocated: the generated 1 and 2 TiB
# disks) is read only as far as it has blocks, which covers its metadata.
# The first time in a run, the files' cached pages are dropped first, so
# that every contender finds its inputs cached alike, by the kernel's
# readahead (large folios), not as the tool that wrote them left them: a
# file qemu-img just wrote sits in small pages that cost twice as much to
# copy out (measured: 1 MiB preads of base.vmdk 138 us before, 40 us after,
# against 55 us for base.raw), which would be charged to vdmount.
bm_warm()
{
	local f blocks bsize size dense=()
	if [ -z "${BM_SETTLED[$1]:-}" ]; then
		# shellcheck disable=SC2086 # the lists are words
		for f in ${BM_IMG[$1]} ${BM_RAW[$1]}; do
			dd if="$f" iflag=nocache count=0 status=none
		done
		BM_SETTLED[$1]=1
	fi
	# shellcheck disable=SC2086 # the lists are words
	while read -r blocks bsize size f; do
		if ((blocks * bsize * 2 >= size)); then
			dense+=("$f")
		else
			head -c $((blocks * bsize)) -- "$f" >/dev/null
		fi
	done < <(stat -L -c '%b %B %s %n' -- ${BM_IMG[$1]} ${BM_RAW[$1]})
	[ ${#dense[@]} -eq 0 ] || cat -- "${dense[@]}" >/dev/null
}

# bm_keep ARRAY KEY VALUE: ARRAY[KEY] becomes the largest VALUE (integers)
# given to it.
bm_keep()
{
	local -n a=$1
	[ -n "$3" ] || return 0
	if [ -z "${a[$2]:-}" ] || (($3 > a[$2])); then
		a[$2]=$3
	fi
}

# bm_verify DISK: compares the served files (BM_FILES) with the disk's raw
# files: 1 MiB samples (17 over a single file, 3 per file of several) and the
# regions listed in DIR/DISK.at (an NBD export: all of it). Prints where they
# differ first.
bm_verify()
{
	local raws i j n=16 size off len f
	read -r -a raws <<<"${BM_RAW[$1]}"
	if [ "$BM_TRANSPORT" = nbd ]; then
		nbdcopy -- "${BM_FILES[0]}" - | cmp -s - "${raws[0]}" || echo "the NBD export differs"
		return
	fi
	[ ${#raws[@]} -gt 1 ] && n=2
	for j in "${!raws[@]}"; do
		f=${BM_FILES[j]}
		size=$(stat -L -c %s -- "${raws[j]}")
		[ "$(stat -L -c %s -- "$f")" = "$size" ] || { echo "size differs from ${raws[j]##*/}"; return; }
		for ((i = 0; i <= n; i++)); do
			off=$(((size - 1048576) * i / n / 4096 * 4096))
			cmp -s -i "$off:$off" -n 1048576 -- "$f" "${raws[j]}" ||
				{ echo "${raws[j]##*/}: the MiB at $off differs"; return; }
		done
	done
	[ -s "$BM_DIR/$1.at" ] || return 0
	while read -r off len; do
		cmp -s -i "$off:$off" -n "$len" -- "${BM_FILES[0]}" "${raws[0]}" ||
			{ echo "${raws[0]##*/}: $len bytes at $off differ"; return; }
	done <"$BM_DIR/$1.at"
}

# bm_sample ROW DISK METRIC TOOL REP: one fresh instance, one value.
bm_sample()
{
	local row=$1 disk=$2 m=$3 t=$4 v why
	[ "${BM_M_PREP[$m]}" = cold ] && vd_drop_caches
	if ! bm_up "$t" "$disk"; then
		bm_down
		BM_BROKEN[$disk|$t]=$BM_ERR
		bm_note "${BM_DESC[$disk]}: $BM_ERR"
		return
	fi
	v=$(bm_measure "$m")
	if [ "$m" = mount ] && [ -z "${BM_VAL[$disk.ok|$t]:-}" ] && [ "$t" != raw ]; then
		why=$(bm_verify "$disk")
		BM_VAL[$disk.ok|$t]=yes
		if [ -n "$why" ]; then
			# Timing a contender that serves other bytes compares nothing.
			BM_VAL[$disk.ok|$t]=NO
			BM_BROKEN[$disk|$t]=1
			bm_note "${BM_DESC[$disk]}: $t: data check: $why (not timed further)"
		fi
	fi
	bm_down
	bm_keep BM_HWM "$disk|$t" "$BM_HWM_KB"
	bm_keep BM_FDMAX "$disk|$t" "$BM_FDS"
	printf '%s\t%s\t%s\t%s\n' "$row" "$t" "$5" "$v" >>"$BM_SAMPLES_FILE"
	case $v in
	ERR*)
		BM_VAL[$row|$t]=n/a
		bm_note "${BM_DESC[$disk]}: $t: ${BM_M_LABEL[$m]}: ${v#ERR }" ;;
	*" capped")
		bm_note "${BM_DESC[$disk]}: $t: ${BM_M_LABEL[$m]}: stopped after $BM_SEQ_CAP s" \
			"(rate over the part read)"
		BM_SAMPLES[$row|$t]+=" ${v% capped}" ;;
	*) BM_SAMPLES[$row|$t]+=" $v" ;;
	esac
}

bm_median()
{
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bm_row DISK METRIC [TOOL...]: measures the row for the contenders that are
# installed, wanted (VD_BENCH_TOOLS) and not broken on this disk (a contender
# that failed to serve it once is n/a in its later rows).
bm_row()
{
	local disk=$1 m=$2 row=$1.$2 tools=() t rep k n reps=$BM_REPEAT old_nofile
	shift 2
	for t in "${@:-${BM_TOOLS_ALL[@]}}"; do
		[[ " $BM_TOOLS " == *" $t "* ]] || continue
		[[ ${BM_M_SKIP[$m]} == *" $t "* ]] && continue
		[ -n "${BM_BROKEN[$disk|$t]:-}" ] && { BM_VAL[$row|$t]=n/a; continue; }
		tools+=("$t")
	done
	BM_ROWS+=("$row")
	BM_ROW_DISK[$row]=$disk BM_ROW_METRIC[$row]=$m
	n=${#tools[@]}
	((n > 0)) || return 0
	[ "$m" = mount ] && ((reps < 5)) && reps=5
	[ "${BM_M_PREP[$m]}" = warm ] && bm_warm "$disk"
	old_nofile=$(ulimit -Sn)
	[ -n "${BM_NOFILE[$disk]}" ] && ulimit -Sn "${BM_NOFILE[$disk]}"
	for ((rep = 0; rep < reps; rep++)); do
		for ((k = 0; k < n; k++)); do
			t=${tools[(k + rep) % n]}
			[ -n "${BM_BROKEN[$disk|$t]:-}" ] && continue
			bm_sample "$row" "$disk" "$m" "$t" "$rep"
		done
	done
	ulimit -Sn "$old_nofile"
	for t in "${tools[@]}"; do
		if [ -n "${BM_BROKEN[$disk|$t]:-}" ] || [ "${BM_VAL[$row|$t]:-}" = n/a ]; then
			BM_VAL[$row|$t]=n/a
			continue
		fi
		# shellcheck disable=SC2086 # a list of numbers
		BM_VAL[$row|$t]=$(bm_median ${BM_SAMPLES[$row|$t]})
	done
	printf '    %-42s' "${BM_M_LABEL[$m]}"
	for t in "${tools[@]}"; do
		printf ' %s=%s' "$t" "${BM_VAL[$row|$t]}"
	done
	echo
}

# bm_rows DISK METRIC...: bm_row for each metric, then the disk's RSS, open
# files and data check rows.
bm_rows()
{
	local disk=$1 m
	shift
	for m in "$@"; do
		[ -z "${VD_BENCH_METRICS:-}" ] || [[ " $VD_BENCH_METRICS " == *" $m "* ]] || continue
		bm_row "$disk" "$m"
	done
	for m in "${BM_TOOLS_ALL[@]}"; do
		[ -n "${BM_HWM[$disk|$m]:-}" ] &&
			BM_VAL[$disk.rss|$m]=$(awk -v k="${BM_HWM[$disk|$m]}" 'BEGIN { printf "%.1f", k / 1024 }')
		[ -n "${BM_FDMAX[$disk|$m]:-}" ] && BM_VAL[$disk.fds|$m]=${BM_FDMAX[$disk|$m]}
	done
	for m in rss fds ok; do
		BM_ROWS+=("$disk.$m")
		BM_ROW_DISK[$disk.$m]=$disk BM_ROW_METRIC[$disk.$m]=$m
	done
}

# bm_targets_load FILE: lines "PATTERN AGAINST OP LIMIT WHY..." (tabs or
# spaces; # comments). PATTERN is a glob over row ids (DISK.METRIC); AGAINST
# is a contender (the target is on vdmount / it) or vd (on vdmount's own
# value); OP one of >= <= > <. The first line whose pattern matches a row is
# its target.
bm_targets_load()
{
	local pat against op limit why
	BM_TARGETS=()
	while read -r pat against op limit why; do
		[[ -z $pat || $pat == \#* ]] && continue
		[[ " vd ${BM_TOOLS_ALL[*]} " == *" $against "* && $op =~ ^(>=|<=|>|<)$ &&
			$limit =~ ^[0-9.]+$ ]] || { echo "bad target line: $pat $against $op $limit" >&2; return 1; }
		BM_TARGETS+=("$pat $against $op $limit")
	done <"$1"
}

bm_target_of()
{
	local t
	for t in "${BM_TARGETS[@]}"; do
		# shellcheck disable=SC2053 # the pattern is a glob on purpose
		[[ $1 == ${t%% *} ]] && { echo "${t#* }"; return 0; }
	done
}

# bm_ratio A B: A/B with two decimals, or "-".
bm_ratio()
{
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f\n", a / b
		else print "-"
	}'
}

# bm_verdict ROW: "TARGET ok|MISS|-" for the row, or nothing.
bm_verdict()
{
	local tg against op limit x
	tg=$(bm_target_of "$1")
	[ -n "$tg" ] || return 0
	read -r against op limit <<<"$tg"
	if [ "$against" = vd ]; then
		x=${BM_VAL[$1|vd]:-}
	else
		x=$(bm_ratio "${BM_VAL[$1|vd]:-}" "${BM_VAL[$1|$against]:-}")
	fi
	awk -v x="$x" -v op="$op" -v l="$limit" -v a="$against" 'BEGIN {
		t = (a == "vd" ? "" : "vd/" a " ") op l
		if (x !~ /^[0-9.]+$/) { print t " -"; exit }
		ok = op == ">=" ? x + 0 >= l + 0 : op == "<=" ? x + 0 <= l + 0 : op == ">" ? x + 0 > l + 0 : x + 0 < l + 0
		print t " " (ok ? "ok" : "MISS")
	}'
}

bm_fmt()
{
	awk -v v="$1" 'BEGIN {
		if (v !~ /^[0-9.]+$/) { print (v == "" ? "-" : v); exit }
		if (v ~ /^[0-9]+$/) { print v; exit }
		printf (v + 0 >= 100 ? "%.0f\n" : "%.1f\n"), v
	}'
}

# bm_table [md]: every row with a value: the text table, or Markdown.
bm_table()
{
	local md=${1:-} r m disk last='' cells t fmt any label
	if [ -n "$md" ]; then
		echo "| row | reads | vdmount | ceiling | qemu | libyal | raw | vd/ceil | vd/qemu | vd/yal | vd/raw | target |"
		echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
		fmt='| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n'
	else
		fmt='%-40s %-10s %8s %8s %8s %8s %8s %7s %7s %7s %7s  %s\n'
		# shellcheck disable=SC2059 # the format is ours
		printf "$fmt" row reads vdmount ceiling qemu libyal raw vd/ceil vd/qemu vd/yal vd/raw target
	fi
	for r in "${BM_ROWS[@]}"; do
		disk=${BM_ROW_DISK[$r]} m=${BM_ROW_METRIC[$r]}
		cells=() any=
		for t in "${BM_TOOLS_ALL[@]}"; do
			[ -n "${BM_VAL[$r|$t]:-}" ] && any=1
			cells+=("$(bm_fmt "${BM_VAL[$r|$t]:-}")")
		done
		[ -n "$any" ] || continue
		for t in ceil qemu yal raw; do
			if [ "$m" = ok ]; then
				cells+=(-)
			else
				cells+=("$(bm_ratio "${BM_VAL[$r|vd]:-}" "${BM_VAL[$r|$t]:-}")")
			fi
		done
		label="${BM_M_LABEL[$m]}${BM_M_UNIT[$m]:+, ${BM_M_UNIT[$m]}}"
		label=${label%, -}
		if [ "$disk" != "$last" ]; then
			if [ -n "$md" ]; then
				printf '| **%s** |||||||||||\n' "${BM_DESC[$disk]}"
			else
				echo "${BM_DESC[$disk]}"
			fi
			last=$disk
		fi
		# shellcheck disable=SC2059
		printf "$fmt" "  $label" "${BM_M_READS[$m]}" "${cells[@]}" "$(bm_verdict "$r")"
	done
}
