#!/usr/bin/env bash
# Builds the Debian package from a build tree (cpack -G DEB), checks its
# Depends and contents, installs it with apt as a user would
# (apt-get install ./vdmount_*.deb), runs the installed vdmount --version and
# finds its manual page, then removes it again unless vdmount was installed
# before. Needs root (or sudo) for apt; the package is left in BUILD_DIR/pkg.
#
# Usage: scripts/package.sh [BUILD_DIR]   (default: build/)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
bdir=$(cd "${1:-$here/../build}" && pwd) || vd_die "no build tree"
[ -f "$bdir/CPackConfig.cmake" ] || vd_die "$bdir is not a configured build tree"
sudo=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || vd_die "installing the package needs root or sudo"
	sudo="sudo -n"
fi
fails=0
check()
{
	local desc=$1
	shift
	if "$@"; then
		echo "PASS $desc"
	else
		echo "FAIL $desc"
		fails=$((fails + 1))
	fi
}

rm -rf "$bdir/pkg"
(cd "$bdir" && cpack -G DEB -B "$bdir/pkg" >"$bdir/pkg.log" 2>&1) ||
	{ cat "$bdir/pkg.log"; vd_die "cpack failed"; }
deb=$(ls "$bdir"/pkg/vdmount_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || vd_die "cpack made no vdmount_*.deb (see $bdir/pkg.log)"
vd_say "package: $deb"
deps=$(dpkg-deb -f "$deb" Depends)
echo "    Depends: $deps"
for p in fuse3 libfuse3-3 zlib1g libdeflate0 libc6; do
	check "Depends names $p" grep -qE "(^|, )$p( |,|$)" <<<"$deps"
done
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/vdmount ./usr/share/man/man1/vdmount.1 \
	./usr/share/bash-completion/completions/vdmount ./usr/share/doc/vdmount/chain.json.md; do
	check "the package holds $f" grep -qF " $f" <<<"$contents"
done

before=$(dpkg-query -W -f='${Status}' vdmount 2>/dev/null || true)
if $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	-o DPkg::Lock::Timeout=300 "$deb" </dev/null >"$bdir/pkg-install.log" 2>&1; then
	echo "PASS apt-get install ./$(basename "$deb")"
	want=$(dpkg-deb -f "$deb" Version)
	check "the installed vdmount --version is $want" \
		bash -c '/usr/bin/vdmount --version | grep -qx "vdmount $1, libfuse .*"' _ "$want"
	check "man finds vdmount(1)" bash -c 'man -w vdmount | grep -q "^/usr/share/man/man1/vdmount.1"'
	check "dpkg owns /usr/bin/vdmount" bash -c 'dpkg -S /usr/bin/vdmount | grep -q "^vdmount:"'
	case "$before" in
	*" installed") echo "    (vdmount was installed before: left installed)" ;;
	*) $sudo env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -o DPkg::Lock::Timeout=300 \
		vdmount </dev/null >>"$bdir/pkg-install.log" 2>&1 ||
		echo "    (could not remove the package again)" ;;
	esac
else
	cat "$bdir/pkg-install.log"
	echo "FAIL apt-get install ./$(basename "$deb")"
	fails=$((fails + 1))
fi
[ $fails -eq 0 ] || { echo "package: $fails check(s) FAILED"; exit 1; }
echo "package: all checks passed"
