#!/usr/bin/env bash
# Inspection without mounting: vdmount --info, --json, --check and --hash.
#
# Generated chains (a qemu-made VMDK chain with a split-sparse base, and an
# mkvhd VHD chain): --info reports every layer and validates; --json is the
# mounted chain.json byte for byte; --check is clean; --hash lines verify
# with sha256sum -c / sha1sum -c / md5sum -c inside a mount of the same
# chain, with machine-readable progress lines on a pipe and a progress bar
# on a terminal. Exit codes: --check 1 for a chain whose metadata does not
# open, 2 for a missing file; --info 1 for a missing parent.
# The corpus ($VD_SHARED/corpus, when present): for every image expected to
# open, --info and --json succeed (JSON valid), --check answers 0 or 1, and
# --hash of disk equals expected.tsv's sha256 (images up to 4 GiB, 600 MiB
# under ASan); for every
# image expected to fail, --info fails with one error line naming it.
#
# Env: VDMOUNT, VD_BUILD, VD_SHARED (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init inspect
MKVHD=${VD_BUILD:-}/tests/mkvhd
for t in qemu-img qemu-io sha256sum sha1sum md5sum; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -x "$MKVHD" ] || { echo "SKIP: $MKVHD not built"; exit 77; }

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"

# json_ok: stdin is one valid JSON document (python3 or jq when present,
# else the outer braces).
json_ok()
{
	local doc
	doc=$(cat)
	if command -v python3 >/dev/null; then
		python3 -c 'import json, sys; json.load(sys.stdin)' <<<"$doc"
	elif command -v jq >/dev/null; then
		jq -e . >/dev/null <<<"$doc"
	else
		case "$doc" in "{"*"}" | "["*"]") return 0 ;; esac
		return 1
	fi
}

# --- generated chains ------------------------------------------------------
vd_say "generated chains"
(cd "$W" && qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse base.vmdk 40M) ||
	vd_die "qemu-img create"
vd_qemu_io vmdk "$W/base.vmdk" "write -P 0x11 0 2M" "write -P 0x12 30M 100k"
(cd "$W" && qemu-img create -q -f vmdk -b base.vmdk -F vmdk snap.vmdk) || vd_die "qemu-img create"
vd_qemu_io vmdk "$W/snap.vmdk" "write -P 0x21 1M 64k" "write -P 0x22 39M 1M"
"$MKVHD" dynamic "$W/hbase.vhd" $((8 * 1048576)) || vd_die "mkvhd"
"$MKVHD" write "$W/hbase.vhd" --seed 7 --count 10 || vd_die "mkvhd"
"$MKVHD" child "$W/hbase.vhd" "$W/hchild.vhd" || vd_die "mkvhd"
"$MKVHD" write "$W/hchild.vhd" --seed 8 --count 10 || vd_die "mkvhd"
vd_sums_save "$VD_TMP/sources.sha256" "$W"/*

# --hash --inputs names every file a chain reads, extents included: a split
# base (twoGbMaxExtentSparse, 3 extent files) under a delta.
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$W/split.vmdk" 5G &&
	(cd "$W" && qemu-img create -q -f vmdk -b split.vmdk -F vmdk split-snap.vmdk) ||
	vd_die "qemu-img create split"
"$VDMOUNT" --hash --inputs "$W/split-snap.vmdk" >"$VD_TMP/inputs" 2>"$VD_TMP/err"
vd_check "split: --hash --inputs exit 0" test $? = 0
vd_check "split: --hash --inputs lists the 5 files with their sha256" \
	diff <(cd "$W" && sha256sum "$PWD"/split.vmdk "$PWD"/split-s00[123].vmdk \
		"$PWD"/split-snap.vmdk) "$VD_TMP/inputs"
vd_expect_fail_inputs()
{
	"$VDMOUNT" --info --inputs "$W/split.vmdk" >/dev/null 2>"$VD_TMP/err"
	test $? = 2 && grep -q -- "--inputs goes with --hash" "$VD_TMP/err"
}
vd_check "--inputs without --hash: a usage error" vd_expect_fail_inputs

for top in "$W/snap.vmdk" "$W/hchild.vhd"; do
	name=$(basename "$top")
	out=$("$VDMOUNT" --info "$top" 2>&1)
	rc=$?
	vd_check "$name: --info exit 0" test $rc = 0
	vd_check "$name: --info shows both layers and validation ok" \
		bash -c 'grep -q "^layer 01-" <<<"$1" && grep -q "^layer 02-" <<<"$1" &&
			grep -q "^validation: ok" <<<"$1" && grep -q "parent hint:.* -> " <<<"$1"' _ "$out"
	"$VDMOUNT" --json "$top" >"$VD_TMP/info.json" 2>"$VD_TMP/err"
	vd_check "$name: --json exit 0, valid JSON" json_ok <"$VD_TMP/info.json"
	out=$("$VDMOUNT" --check "$top" 2>&1)
	rc=$?
	vd_check "$name: --check clean (exit $rc: $(tail -1 <<<"$out"))" test $rc = 0
	"$VDMOUNT" --hash "$top" >"$VD_TMP/sha256" 2>"$VD_TMP/progress"
	vd_check "$name: --hash exit 0" test $? = 0
	vd_check "$name: --hash prints machine-readable progress off a terminal" \
		grep -qE '^progress layers/01-[^ ]+ [0-9]+ [0-9]+$' "$VD_TMP/progress"
	"$VDMOUNT" --hash --inputs "$top" >"$VD_TMP/inputs" 2>/dev/null
	vd_check "$name: --hash --inputs: sha256sum -c verifies every line" \
		bash -c 'cd / && sha256sum --quiet --strict -c "$1"' _ "$VD_TMP/inputs"
	want=2 # hchild.vhd and its parent; snap.vmdk's base has one extent file too
	[ "$name" = snap.vmdk ] && want=3
	vd_check "$name: --hash --inputs: one line per file of the chain" \
		test "$(wc -l <"$VD_TMP/inputs")" = $want
	"$VDMOUNT" --hash --algo md5 "$top" >"$VD_TMP/md5" 2>/dev/null
	"$VDMOUNT" --hash --algo sha1 "$top" >"$VD_TMP/sha1" 2>/dev/null
	if vd_mount "$top" "$M/g"; then
		# the same document but for mount_time (null without a mount)
		vd_check "$name: --json has no mount time" \
			bash -c 'jq -e ".mount_time == null" "$1" >/dev/null' _ "$VD_TMP/info.json"
		vd_check "$name: --json is the mounted chain.json (but for mount_time)" \
			cmp "$VD_TMP/info.json" \
			<(sed -E 's/"mount_time": *"[^"]*"/"mount_time": null/' "$M/g/chain.json")
		vd_check "$name: --hash = sha256sum of the mounted files" \
			bash -c 'cd "$1" && sha256sum --quiet -c "$2"' _ "$M/g" "$VD_TMP/sha256"
		vd_check "$name: --hash --algo md5 = md5sum" \
			bash -c 'cd "$1" && md5sum --quiet -c "$2"' _ "$M/g" "$VD_TMP/md5"
		vd_check "$name: --hash --algo sha1 = sha1sum" \
			bash -c 'cd "$1" && sha1sum --quiet -c "$2"' _ "$M/g" "$VD_TMP/sha1"
		vd_check "$name: --hash covers disk and every layer" \
			test "$(wc -l <"$VD_TMP/sha256")" = $(($(ls "$M/g/layers" | grep -vc '\.') + 1))
		vd_umount "$M/g" || vd_fail "$name: unmount"
	else
		vd_fail "$name: mount"
	fi
done

if command -v script >/dev/null; then
	script -qec "$VDMOUNT --hash $W/snap.vmdk >/dev/null" /dev/null >"$VD_TMP/tty" 2>&1
	vd_check "--hash draws a progress bar (bytes, rate, ETA) on a terminal" \
		grep -qE '\[#+\] 100% .*/s ETA' "$VD_TMP/tty"
fi
vd_check "--hash --algo sha512 is refused (exit 2)" \
	bash -c '"$1" --hash --algo sha512 "$2" >/dev/null 2>&1; test $? = 2' _ "$VDMOUNT" "$W/snap.vmdk"

# Exit codes on bad inputs.
rc=0
"$VDMOUNT" --check "$W/nonexistent.vmdk" >/dev/null 2>&1 || rc=$?
vd_check "--check of a missing file: exit 2 (got $rc)" test $rc = 2
cp "$W/hchild.vhd" "$W/bad.vhd"
printf '\x00\x00\x00\x01' | dd of="$W/bad.vhd" bs=1 seek=$((1536 + 8)) conv=notrunc status=none
cp "$W/hbase.vhd" "$W/hbase-copy.vhd"
rc=0
out=$("$VDMOUNT" --check "$W/bad.vhd" 2>&1) || rc=$?
vd_check "--check of a chain whose BAT points into the metadata: exit 1 (got $rc)" test $rc = 1
vd_check "  and the reason is printed" grep -q "BAT entry 2" <<<"$out"
mkdir -p "$W/lonely"
cp "$W/snap.vmdk" "$W/lonely/"
rc=0
"$VDMOUNT" --info "$W/lonely/snap.vmdk" >/dev/null 2>"$VD_TMP/err" || rc=$?
vd_check "--info with a missing parent: exit 1, one error line" \
	test $rc = 1 -a "$(wc -l <"$VD_TMP/err")" = 1
rm -f "$W/bad.vhd" "$W/hbase-copy.vhd"
rm -rf "$W/lonely"
vd_check "generated inputs unchanged" vd_sums_check "$VD_TMP/sources.sha256"

# --- corpus -------------------------------------------------------------------
C=${VD_SHARED:-}/corpus
if [ -z "${VD_SHARED:-}" ] || [ ! -f "$C/expected.tsv" ] || [ ! -f "$C/unpack.sh" ]; then
	echo "SKIP corpus part: \$VD_SHARED/corpus is absent"
	vd_finish
fi
vd_say "corpus"
U=$VD_TMP/corpus
mkdir -p "$U"
sh "$C/unpack.sh" "$U" >/dev/null || vd_die "unpacking the corpus"
mapfile -t SOURCES < <(find "$U" -type f | sort)
vd_sums_save "$VD_TMP/corpus.sha256" "${SOURCES[@]}"
# --hash reads the whole disk: up to 4 GiB, or 600 MiB under the sanitizers
# (the mounted corpus test hashes the rest).
BIG=$((4 * 1024 * 1024 * 1024))
[ "${VD_ASAN:-0}" = 1 ] && BIG=$((600 * 1024 * 1024))
while IFS=$'\t' read -r image expect size sum; do
	case "$image" in "#"* | "" | *.vhdx | *.avhdx) continue ;; esac
	img=$U/$image
	if [ "$expect" != ok ]; then
		rc=0
		timeout 60 "$VDMOUNT" --info "$img" >/dev/null 2>"$VD_TMP/err" || rc=$?
		if [ $rc -ge 1 ] && [ $rc -lt 124 ] && [ "$(wc -l <"$VD_TMP/err")" -ge 1 ] &&
			grep -qF "$(basename "$image" .vmdk)" "$VD_TMP/err"; then
			vd_pass "$image: --info refuses it (exit $rc): $(head -1 "$VD_TMP/err")"
		elif [ $rc = 0 ] && grep -qi warn "$VD_TMP/err"; then
			vd_pass "$image: --info opens it with a warning: $(head -1 "$VD_TMP/err")"
		else
			vd_fail "$image: --info exit $rc"
			sed 's/^/    | /' "$VD_TMP/err" | head -5
		fi
		continue
	fi
	rc=0
	timeout 300 "$VDMOUNT" --info "$img" >/dev/null 2>"$VD_TMP/err" || rc=$?
	vd_check "$image: --info exit 0 (got $rc)" test $rc = 0
	timeout 300 "$VDMOUNT" --json "$img" 2>/dev/null >"$VD_TMP/c.json"
	vd_check "$image: --json valid" json_ok <"$VD_TMP/c.json"
	rc=0
	timeout 300 "$VDMOUNT" --check "$img" >"$VD_TMP/check" 2>&1 || rc=$?
	if [ $rc = 0 ] || [ $rc = 1 ]; then
		vd_pass "$image: --check answers (exit $rc: $(tail -1 "$VD_TMP/check"))"
	else
		vd_fail "$image: --check exit $rc"
		sed 's/^/    | /' "$VD_TMP/check" | head -5
	fi
	if [ "$size" -le $BIG ]; then
		got=$(timeout 600 "$VDMOUNT" --hash "$img" 2>/dev/null | awk '$2 == "disk" { print $1 }')
		vd_check "$image: --hash of disk = expected sha256" test "$got" = "$sum"
	fi
done <"$C/expected.tsv"
vd_check "corpus files unchanged (sha256)" vd_sums_check "$VD_TMP/corpus.sha256"
vd_finish
