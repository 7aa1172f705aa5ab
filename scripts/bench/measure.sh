# Measurements and the results table for scripts/bench.sh (bash; sourced).
#
# Primitives: page-cache control (bm_warm / bm_cold), sequential read MB/s with
# dd (time-capped with SIGINT so a slow peer cannot stall the run; dd prints
# its byte count and time when interrupted), random 4 KiB read IOPS with fio
# (JSON output parsed with awk), and a sampled data check against the raw.
# bm_case runs one metric for one target on a FRESH mount and stores the
# value; bm_table prints every row with the vdmount/qsd and vdmount/raw
# ratios and the issue's targets. Values are kept as plain numbers in
# BM_VAL["row|tool"]; "n/a" means the tool failed (the reason is in the notes).

declare -A BM_VAL BM_LABEL BM_KIND BM_TARGET BM_HWM BM_DESC
BM_ROWS=()
BM_NOTES=()
BM_TOOLS_ALL=(raw vd qsd yal)

bm_note()
{
	local n
	for n in "${BM_NOTES[@]}"; do
		[ "$n" = "$*" ] && return 0
	done
	BM_NOTES+=("$*")
	echo "    note: $*"
}

# bm_row ID KIND TARGET LABEL: declares a table row, in print order.
#   KIND   hi (higher is better), lo (lower is better), rr (the values are
#          ratios already), txt
#   TARGET qsd>=N (vdmount/qsd >= N), <N or >=N (vdmount's own value), or -
bm_row()
{
	BM_ROWS+=("$1")
	BM_KIND[$1]=$2
	BM_TARGET[$1]=$3
	BM_LABEL[$1]=$4
}

bm_put()
{
	BM_VAL["$1|$2"]=$3
}

bm_warm()
{
	cat -- "$@" >/dev/null 2>&1
}

bm_cold()
{
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# bm_seq FILE CAP_S: prints "MBPS" or "MBPS capped" (dd interrupted after
# CAP_S seconds: the rate over what was read) or "ERR <message>".
bm_seq()
{
	local f=$1 cap=$2 out rc=0 size
	size=$(stat -L -c %s -- "$f")
	out=$(LC_ALL=C timeout -s INT -k 10 "$cap" dd if="$f" of=/dev/null bs=1M 2>&1) || rc=$?
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

# bm_rand FILE JOBS RUNTIME_S [DIRECT]: prints the read IOPS of 4 KiB random
# reads (psync, JOBS jobs, group reporting) or "ERR <message>". The page
# cache is not dropped (invalidate=0: the raw limit stays in memory) and,
# unless DIRECT is 1, not bypassed; freshness comes from a fresh mount per
# run. With DIRECT=1 every read reaches the daemon: its per-request cost.
bm_rand()
{
	local f=$1 jobs=$2 rt=$3 direct=${4:-0} out map=()
	# fio's random map makes the first pass over the file free of repeats
	# (every read a miss); it would need 32 MiB per TiB, so not for 2 TiB.
	(($(stat -L -c %s -- "$f") > (64 << 30))) && map=(--norandommap)
	# shellcheck disable=SC2086 # VD_BENCH_FIO_EXTRA is a list of options
	out=$(LC_ALL=C timeout -k 10 $((rt + 120)) fio --name=bench --filename="${f//:/\\:}" \
		--readonly --rw=randread --bs=4k --ioengine=psync --numjobs="$jobs" \
		--time_based --runtime="$rt" --group_reporting --direct="$direct" --invalidate=0 \
		"${map[@]}" ${VD_BENCH_FIO_EXTRA:-} --output-format=json 2>&1)
	awk '
		/"error" : / { e = $3; gsub(/[^0-9]/, "", e); if (e + 0 != 0) err = e }
		/"read" : \{/ { inread = 1 }
		inread && /"iops" : / && iops == "" { iops = $3; gsub(/[^0-9.]/, "", iops) }
		END {
			if (err != "") print "ERR fio job error " err
			else if (iops == "") print "ERR fio printed no read IOPS"
			else printf "%.0f\n", iops
		}' <<<"$out"
}

# bm_verify FILE RAW: compares 16 samples of 1 MiB spread over the disk (and
# the last MiB) with the raw merged file; prints the first differing offset.
bm_verify()
{
	local f=$1 raw=$2 size rsize i off
	size=$(stat -L -c %s -- "$f") rsize=$(stat -L -c %s -- "$raw")
	[ "$size" = "$rsize" ] || { echo "size $size, raw has $rsize"; return 1; }
	for ((i = 0; i <= 16; i++)); do
		off=$(((size - 1048576) * i / 16 / 4096 * 4096))
		((i == 16)) && off=$((size - 1048576))
		cmp -s -i "$off:$off" -n 1048576 -- "$f" "$raw" || {
			echo "data differs from the raw in the MiB at $off"
			return 1
		}
	done
}

# bm_verify_at FILE ATFILE: ATFILE lists "OFFSET CHUNKFILE" pairs of what was
# written where (the sparse 2 TiB image).
bm_verify_at()
{
	local f=$1 off chunk
	while read -r off chunk; do
		cmp -s -i "$off:0" -n "$(stat -c %s -- "$chunk")" -- "$f" "$chunk" || {
			echo "data differs at $off"
			return 1
		}
	done <"$2"
}

# bm_hwm_keep KEY TOOL KB: remembers the largest VmHWM seen per KEY and tool.
bm_hwm_keep()
{
	local key="$1|$2" kb=$3
	[ -n "$kb" ] || return 0
	if [ -z "${BM_HWM[$key]:-}" ] || ((kb > BM_HWM[$key])); then
		BM_HWM[$key]=$kb
	fi
}

# bm_put_rss ROW KEY: the row gets each tool's largest VmHWM (MiB) kept
# under KEY by bm_hwm_keep.
bm_put_rss()
{
	local t
	for t in vd qsd yal; do
		[ -n "${BM_HWM[$2|$t]:-}" ] &&
			bm_put "$1" "$t" "$(awk -v k="${BM_HWM[$2|$t]}" 'BEGIN { printf "%.1f", k / 1024 }')"
	done
}

# bm_rows PFX DESC KIND...: declares the standard rows PFX.KIND of one chain
# (DESC names it in labels and notes): seqw, seqc (sequential, warm / cold;
# target 2x qsd), r1, r2 (random 4K, 1 / 2 jobs; target 3x qsd), r1d (1 job,
# O_DIRECT: the daemon's per-request cost, no target), mount (and
# PFX.mount.ok, the sampled data check), mrss (peak RSS right after mounting),
# rss (peak RSS over every run on the chain).
bm_rows()
{
	local p=$1 d=$2 k
	shift 2
	BM_DESC[$p]=$d
	for k in "$@"; do
		case $k in
		seqw) bm_row "$p.$k" hi "qsd>=2" "seq MB/s warm, $d" ;;
		seqc) bm_row "$p.$k" hi "qsd>=2" "seq MB/s cold, $d" ;;
		r1) bm_row "$p.$k" hi "qsd>=3" "rand 4K IOPS 1 job, $d" ;;
		r2) bm_row "$p.$k" hi "qsd>=3" "rand 4K IOPS 2 jobs, $d" ;;
		r1d) bm_row "$p.$k" hi - "rand 4K IOPS O_DIRECT, $d" ;;
		mount)
			bm_row "$p.$k" lo - "mount ms, $d"
			bm_row "$p.$k.ok" txt - "  data = raw (sampled)" ;;
		mrss) bm_row "$p.$k" lo - "RSS MiB after mount, $d" ;;
		rss) bm_row "$p.$k" lo - "peak RSS MiB, $d" ;;
		esac
	done
}

# bm_check_data ROW TOOL RAW TOP: row ROW.ok gets yes/NO from comparing
# samples of the mounted disk (BM_FILE) with RAW, or with the regions listed
# in TOP's .at file when there is no RAW.
bm_check_data()
{
	local why
	if [ -n "$3" ]; then
		why=$(bm_verify "$BM_FILE" "$3")
	else
		why=$(bm_verify_at "$BM_FILE" "${4%.*}.at")
	fi
	if [ -z "$why" ]; then
		bm_put "$1.ok" "$2" yes
	else
		bm_put "$1.ok" "$2" NO
		bm_note "${BM_DESC[${1%.*}]}: $2: $why"
	fi
}

# bm_case PFX KIND TOOL FMT TOP RAW WARM_FILES...: row PFX.KIND for TOOL,
# each run on a fresh mount. KIND is seqw (image files in the page cache
# first), seqc (caches dropped before mounting), r1/r2/r1d (fio, 1 or 2
# jobs, r1d with O_DIRECT; warm) or mount (3 warm mounts; the first also
# checks the data). The value is the median of the runs (BM_SEQ_REPEAT of
# them for seq*, BM_REPEAT for r*, 3 for mount). For the raw tool, the warm
# file is RAW itself; it has no mount and no O_DIRECT value (that would
# measure the disk, not the limit of the page-cache path).
bm_case()
{
	local p=$1 kind=$2 tool=$3 fmt=$4 top=$5 raw=$6 v i n=$BM_REPEAT vals=() capped=
	local row=$1.$2 desc=${BM_DESC[$1]}
	shift 6
	[[ " $BM_TOOLS " == *" $tool "* ]] || return 0
	case $kind in
	mount) n=3 ;;
	seq?) n=$BM_SEQ_REPEAT ;;
	esac
	[ "$tool" = raw ] && [[ $kind == mount || $kind == r1d ]] && return 0
	for ((i = 0; i < n; i++)); do
		case $kind in
		seqc) bm_cold ;;
		*) if [ "$tool" = raw ]; then bm_warm "$raw"; else bm_warm "$@"; fi ;;
		esac
		if ! bm_up "$tool" "$fmt" "$top" "$raw"; then
			bm_down
			bm_put "$row" "$tool" n/a
			bm_note "$desc: $BM_ERR"
			return 0
		fi
		case $kind in
		seq?) v=$(bm_seq "$BM_FILE" "$BM_SEQ_CAP") ;;
		r1) v=$(bm_rand "$BM_FILE" 1 "$BM_RUNTIME") ;;
		r2) v=$(bm_rand "$BM_FILE" 2 "$BM_RUNTIME") ;;
		r1d) v=$(bm_rand "$BM_FILE" 1 "$BM_RUNTIME" 1) ;;
		mount)
			v=$BM_MOUNT_MS
			[ -n "$BM_PID" ] && bm_hwm_keep "$p.mount" "$tool" "$(bm_hwm_kb "$BM_PID")"
			((i == 0)) && bm_check_data "$row" "$tool" "$raw" "$top" ;;
		esac
		bm_down
		bm_hwm_keep "$p" "$tool" "$BM_HWM_KB"
		case $v in
		ERR*) break ;;
		*" capped") capped=1 ;;
		esac
		vals+=("${v% capped}")
	done
	case $v in
	ERR*)
		bm_put "$row" "$tool" n/a
		bm_note "$desc: $tool: ${BM_LABEL[$row]}: ${v#ERR }" ;;
	*)
		bm_put "$row" "$tool" "$(printf '%s\n' "${vals[@]}" | sort -g |
			sed -n "$(((${#vals[@]} + 1) / 2))p")" ;;
	esac
	[ -n "$capped" ] && bm_note "$desc: $tool: ${BM_LABEL[$row]}: read stopped after" \
		"${BM_SEQ_CAP} s (rate over the part read)"
	printf '    %-38s %-4s %s\n' "${BM_LABEL[$row]}" "$tool" "${BM_VAL[$row|$tool]}"
}

# bm_chain PFX FMT TOP RAW "KIND..." "TOOL..." WARM_FILES...: every KIND for
# every tool, all tools within one kind before the next so that they see
# the same conditions; then the RSS rows.
bm_chain()
{
	local p=$1 fmt=$2 top=$3 raw=$4 kinds=$5 tools=$6 k t
	shift 6
	for k in $kinds; do
		for t in $tools; do
			bm_case "$p" "$k" "$t" "$fmt" "$top" "$raw" "$@"
		done
	done
	bm_put_rss "$p.rss" "$p"
	bm_put_rss "$p.mrss" "$p.mount"
}

# bm_put_ratio ROW NUM_ROW DEN_ROW: for each tool, NUM/DEN (depth 32 / depth 1).
bm_put_ratio()
{
	local t a b
	for t in "${BM_TOOLS_ALL[@]}"; do
		a=${BM_VAL[$2|$t]:-} b=${BM_VAL[$3|$t]:-}
		[ -n "$a" ] && [ -n "$b" ] && bm_put "$1" "$t" "$(bm_ratio "$a" "$b")"
	done
}

# bm_fmt KIND VALUE: numbers to a readable precision; other text unchanged.
bm_fmt()
{
	awk -v k="$1" -v v="$2" 'BEGIN {
		if (v !~ /^[0-9.]+$/) { print (v == "" ? "-" : v); exit }
		if (k == "rr") printf "%.2f\n", v
		else if (v + 0 >= 100) printf "%.0f\n", v
		else printf "%.1f\n", v
	}'
}

# bm_ratio A B: A/B with two decimals, or "-".
bm_ratio()
{
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f\n", a / b
		else print "-"
	}'
}

# bm_verdict TARGET VD VD_QSD: "ok", "MISS" or "-" against the row's target.
bm_verdict()
{
	awk -v t="$1" -v vd="$2" -v r="$3" 'BEGIN {
		if (t == "-") { print ""; exit }
		if (t ~ /^qsd>=/) { x = r; lim = substr(t, 6); op = ">=" }
		else if (t ~ /^>=/) { x = vd; lim = substr(t, 3); op = ">=" }
		else { x = vd; lim = substr(t, 2); op = "<" }
		if (x !~ /^[0-9.]+$/) { print t "  -"; exit }
		ok = op == ">=" ? x + 0 >= lim + 0 : x + 0 < lim + 0
		print t "  " (ok ? "ok" : "MISS")
	}'
}

bm_table_line()
{
	printf '%-38s %9s %9s %9s %9s %7s %7s  %s\n' "$@"
}

# bm_table: the results, one row per metric (rows without any value are
# left out).
bm_table()
{
	local r k c t vd cells any
	bm_table_line metric raw vdmount qsd vmdkmount vd/qsd vd/raw target
	printf '%s\n' "$(printf '%.0s-' {1..104})"
	for r in "${BM_ROWS[@]}"; do
		k=${BM_KIND[$r]}
		cells=() any=
		for t in raw vd qsd yal; do
			c=${BM_VAL[$r|$t]:-}
			[ -n "$c" ] && any=1
			cells+=("$(bm_fmt "$k" "$c")")
		done
		[ -n "$any" ] || continue
		vd=${BM_VAL[$r|vd]:-}
		if [ "$k" = rr ] || [ "$k" = txt ]; then
			c=-
			t=-
		else
			c=$(bm_ratio "$vd" "${BM_VAL[$r|qsd]:-}")
			t=$(bm_ratio "$vd" "${BM_VAL[$r|raw]:-}")
		fi
		bm_table_line "${BM_LABEL[$r]}" "${cells[@]}" "$c" "$t" \
			"$(bm_verdict "${BM_TARGET[$r]}" "$vd" "$c")"
	done
}
