#!/usr/bin/env bash
# The command line as FUSE tools' users expect it (issue 12): options after
# the positional arguments, generic mount options as mount.fuse3 passes them,
# -o fsname= and the default source (findmnt), -V and usage errors, and the
# states a mount point can be in (missing, not a directory, not empty, a live
# mount, a stale one): each refused with one line that says what to do.
#
# Env: VDMOUNT (ctest sets it). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
vd_e2e_init cli
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img missing"; exit 77; }
command -v findmnt >/dev/null || { echo "SKIP: findmnt missing"; exit 77; }

W=$VD_TMP/img
M=$VD_TMP/mnt
mkdir -p "$W" "$M"
cd "$VD_TMP" || exit 1
qemu-img create -q -f vmdk "$W/disk.vmdk" 4M || vd_die "qemu-img create"
vd_qemu_io vmdk "$W/disk.vmdk" "write -P 0x5a 0 64k"
qemu-img convert -O raw "$W/disk.vmdk" "$VD_TMP/disk.raw" || vd_die "qemu-img convert"
mkdir -p "$W/odd,dir name"
cp "$W/disk.vmdk" "$W/odd,dir name/a,b c.vmdk"

# findmnt_of MNT COLUMN: one column of the mount at MNT.
findmnt_of()
{
	findmnt -n -o "$2" --mountpoint "$1"
}

# expect_refused DESC ERE VDMOUNT-ARGS...: vdmount exits 1 within 20 s with
# one "vdmount: error:" line matching ERE, and the mount point (the last
# argument) has no new mount on it.
expect_refused()
{
	local desc=$1 ere=$2 rc=0 mnt=${!#} before after
	shift 2
	before=$(findmnt -n --mountpoint "$mnt" | wc -l)
	timeout -k 5 20 "$VDMOUNT" "$@" >/dev/null 2>"$VD_TMP/err" || rc=$?
	after=$(findmnt -n --mountpoint "$mnt" | wc -l)
	if [ $rc -eq 1 ] && [ "$(wc -l <"$VD_TMP/err")" -eq 1 ] &&
		grep -qE -- "^vdmount: error: .*($ere)" "$VD_TMP/err" && [ "$after" -le "$before" ]; then
		vd_pass "$desc: $(cat "$VD_TMP/err")"
	else
		vd_fail "$desc (exit $rc, mounts on $mnt: $before -> $after)"
		sed 's/^/    | /' "$VD_TMP/err"
	fi
}

# -V: "vdmount X.Y.Z, libfuse A.B.C"
ver=$("$VDMOUNT" -V)
vd_check "-V prints 'vdmount VERSION, libfuse VERSION' ($ver)" \
	grep -qxE "vdmount [0-9]+\.[0-9]+\.[0-9]+, libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '[0-9.]+')" <<<"$ver"
vd_check "--version = -V" test "$("$VDMOUNT" --version)" = "$ver"
vd_check "--help exits 0 and names the unmount command" \
	bash -c '"$1" --help | grep -q "fusermount3 -u"' _ "$VDMOUNT"
rc=0
"$VDMOUNT" --no-such-option "$W/disk.vmdk" "$M" 2>/dev/null || rc=$?
vd_check "an unknown option exits 2" test $rc = 2
rc=0
"$VDMOUNT" "$W/disk.vmdk" 2>/dev/null || rc=$?
vd_check "a missing mount point argument exits 2" test $rc = 2

# Options after the positional arguments, generic ones as mount.fuse3 passes
# them (rw from fstab's defaults, dev, suid, relatime, nofail, x-systemd.*).
mnt=$M/after
mkdir -p "$mnt"
VD_MOUNTS+=("$mnt")
if "$VDMOUNT" "$W/disk.vmdk" "$mnt" -o allow_other \
	-o rw,dev,suid,relatime,nofail,x-systemd.automount,_netdev,comment=x && mountpoint -q "$mnt"; then
	vd_check "options after IMAGE MOUNTPOINT: allow_other reaches the kernel" \
		grep -q allow_other <<<"$(findmnt_of "$mnt" OPTIONS)"
	vd_check "rw from fstab defaults still mounts read-only" \
		grep -qE '(^|,)ro(,|$)' <<<"$(findmnt_of "$mnt" OPTIONS)"
	vd_check "findmnt: the source is the image's absolute path" \
		test "$(findmnt_of "$mnt" SOURCE)" = "$W/disk.vmdk"
	vd_check "findmnt: the type is fuse.vdmount" test "$(findmnt_of "$mnt" FSTYPE)" = fuse.vdmount
	vd_check "the disk reads right" cmp "$mnt/disk" "$VD_TMP/disk.raw"
	# already a mount point (a live vdmount)
	expect_refused "a live mount point" "already a mount point.*fusermount3 -u" "$W/disk.vmdk" "$mnt"
	vd_umount "$mnt"
else
	vd_fail "options after IMAGE MOUNTPOINT: mount"
fi

mnt=$M/fsname
if vd_mount -o fsname=evidence-17 "$W/disk.vmdk" "$mnt"; then
	vd_check "-o fsname= is the source findmnt shows" test "$(findmnt_of "$mnt" SOURCE)" = evidence-17
	vd_umount "$mnt"
else
	vd_fail "-o fsname=: mount"
fi
# a relative image path with a comma and a space: shown whole and absolute
mnt=$M/odd
if (cd "$W/odd,dir name" && vd_mount "a,b c.vmdk" "$mnt"); then
	vd_check "a path with ',' and ' ' is the whole source" \
		test "$(findmnt_of "$mnt" SOURCE)" = "$W/odd,dir name/a,b c.vmdk"
	vd_umount "$mnt"
else
	vd_fail "relative image path with a comma: mount"
fi

# Notes (not errors): the same image twice, an image another vdmount shows,
# a snapshot given whose child lies beside it.
(cd "$W" && qemu-img create -q -f vmdk -b disk.vmdk -F vmdk disk-1.vmdk &&
	qemu-img create -q -f vmdk -b disk-1.vmdk -F vmdk disk-2.vmdk) || vd_die "qemu-img snapshots"
note_count()
{
	grep -c '^vdmount: note: ' "$VD_TMP/mount.err"
}
if vd_mount "$W/disk-2.vmdk" "$M/n1"; then
	vd_check "the newest snapshot: no note" test "$(note_count)" = 0
	if vd_mount "$W/disk-2.vmdk" "$W/disk-2.vmdk" "$M/n2"; then
		vd_check "the same image twice: one note" \
			grep -q "note: .*disk-2.vmdk is the same file as .*disk-2.vmdk: it is mounted twice" \
			"$VD_TMP/mount.err"
		vd_check "an image another vdmount shows: one note naming its mount" \
			grep -q "note: $W/disk-2.vmdk is already mounted at $M/n1" "$VD_TMP/mount.err"
		vd_check "... and two notes in all" test "$(note_count)" = 2
		vd_check "... both mounted (disk-2, disk-2-2)" test -f "$M/n2/disk-2/disk" -a -f "$M/n2/disk-2-2/disk"
		vd_umount "$M/n2"
	else
		vd_fail "the same image twice: mount"
	fi
	vd_umount "$M/n1"
else
	vd_fail "notes: first mount"
fi
if vd_mount "$W/disk-1.vmdk" "$M/n3"; then
	vd_check "a middle snapshot: a note names its child beside it" \
		grep -q "note: $W/disk-1.vmdk has a child beside it, $W/disk-2.vmdk" "$VD_TMP/mount.err"
	vd_check "... one line" test "$(wc -l <"$VD_TMP/mount.err")" = 1
	vd_umount "$M/n3"
else
	vd_fail "a middle snapshot: mount"
fi

# chain.json (docs/chain.json.md): schema and vdmount versions, the mount
# time, each file's canonical path, the path as given, size and mtime, the
# whole DDB. The image is given through a symlink.
ln -s disk-2.vmdk "$W/link.vmdk"
# jq_is DESC FILTER EXPECTED: FILTER on chain.json gives EXPECTED.
jq_is()
{
	local got
	got=$(jq -r "$2" "$J") || { vd_fail "$1: jq $2"; return; }
	if [ "$got" = "$3" ]; then
		vd_pass "$1"
	else
		vd_fail "$1: $2 is '$got', expected '$3'"
	fi
}
# epoch ISO-TIME: seconds.nanoseconds
epoch()
{
	date -u -d "$1" +%s.%N
}
if vd_mount "$W/link.vmdk" "$M/json"; then
	J=$M/json/chain.json
	jq_is "chain.json: schema" .schema vdmount-chain
	jq_is "chain.json: schema_version" .schema_version 1
	jq_is "chain.json: vdmount_version is -V's" .vdmount_version "$(sed -E 's/^vdmount ([^,]*),.*/\1/' <<<"$ver")"
	jq_is "chain.json: mount_time is the files' mtime (the mount)" \
		"(.mount_time | sub(\"\\\\.[0-9]+Z$\"; \"Z\") | fromdate)" "$(stat -c %Y "$J")"
	jq_is "chain.json: top layer path is canonical" '.layers[2].path' "$W/disk-2.vmdk"
	jq_is "chain.json: top layer path_given is the symlink" '.layers[2].path_given' "$W/link.vmdk"
	i=0
	for f in disk.vmdk disk-1.vmdk disk-2.vmdk; do
		jq_is "chain.json: layer $((i + 1)) path" ".layers[$i].path" "$W/$f"
		jq_is "chain.json: layer $((i + 1)) file_size" ".layers[$i].file_size" "$(stat -c %s "$W/$f")"
		jq_is "chain.json: layer $((i + 1)) mtime" "(.layers[$i].mtime)" \
			"$(date -u -d "@$(stat -c %.9Y "$W/$f")" +%Y-%m-%dT%H:%M:%S.%NZ)"
		jq_is "chain.json: layer $((i + 1)) extent path" ".layers[$i].extents[0].path" "$W/$f"
		i=$((i + 1))
	done
	jq_is "chain.json: the whole DDB (toolsVersion, formerly dropped)" \
		'.layers[0].ddb.toolsVersion != null' true
	vd_umount "$M/json"
else
	vd_fail "chain.json: mount"
fi

# Mount point states.
expect_refused "a missing mount point" "does not exist \(No such file or directory\)" \
	"$W/disk.vmdk" "$M/missing"
expect_refused "a file as mount point" "not a directory" "$W/disk.vmdk" "$W/disk.vmdk"
mkdir -p "$M/full" && touch "$M/full/keep.txt"
expect_refused "a non-empty mount point" "not empty.*keep.txt.*-o nonempty" "$W/disk.vmdk" "$M/full"
if vd_mount -o nonempty "$W/disk.vmdk" "$M/full"; then
	vd_pass "-o nonempty mounts over a non-empty directory"
	vd_umount "$M/full"
else
	vd_fail "-o nonempty mounts over a non-empty directory"
fi
vd_check "the hidden file is back after the unmount" test -e "$M/full/keep.txt"

# A stale mount: the daemon killed (SIGKILL cannot be caught).
mnt=$M/stale
if vd_mount_fg "$W/disk.vmdk" "$mnt"; then
	pid=${VD_FG_PIDS[${#VD_FG_PIDS[@]} - 1]}
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	expect_refused "a stale mount point (daemon killed)" \
		"stale mount.*fusermount3 -u $mnt" "$W/disk.vmdk" "$mnt"
	vd_check "the fix the message gives works" fusermount3 -u "$mnt"
	vd_check "and the directory mounts again" vd_mount "$W/disk.vmdk" "$mnt"
	vd_umount "$mnt"
else
	vd_fail "stale mount: the first mount"
fi

vd_finish
