#!/usr/bin/env bash
# The manual page, the bash completion and the install layout (issue 12):
#  - docs/vdmount.1 renders with man -l and groff warns about nothing;
#  - every option "vdmount --help" lists appears in the rendered page, and
#    the page's version is vdmount -V's;
#  - the completion loads in bash (with bash-completion) without a message,
#    completes every long option --help lists, -o items after a comma, and
#    offers disk images but not other files;
#  - cmake --install puts the binary, the page, the completion and the docs
#    where man and bash-completion look for them.
#
# Env: VDMOUNT, VD_BUILD, VD_SRC (ctest sets them). Exit 77 = skipped.
set -uo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
for t in man groff; do
	command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
BC=/usr/share/bash-completion/bash_completion
[ -r $BC ] || { echo "SKIP: bash-completion missing"; exit 77; }
VD_NAME=docs
VD_FAILS=0
T=$(mktemp -d "${TMPDIR:-/tmp}/vd-docs.XXXXXX")
trap 'rm -rf "$T"' EXIT
PAGE=$VD_SRC/docs/vdmount.1
COMP=$VD_SRC/docs/vdmount.bash-completion

# The page as plain ASCII text on one long line per paragraph (no hyphenation).
render()
{
	LC_ALL=C MANWIDTH=2000 man -l "$1" 2>"$T/man.err"
}

vd_check "man -l renders vdmount(1)" bash -c 'LC_ALL=C man -l "$1" | grep -q "^NAME"' _ "$PAGE"
groff -ww -z -man "$PAGE" 2>"$T/groff.err"
vd_check "groff -ww: no warnings" test ! -s "$T/groff.err"
render "$PAGE" >"$T/page.txt"
vd_check "man: nothing on stderr" test ! -s "$T/man.err"

# Options in --help's "options" section: -x, --long, -o name.
"$VDMOUNT" --help | sed -n '/^options/,/^$/p' |
	grep -oE -- '(^|[ ,])(--?[a-zA-Z][a-zA-Z-]*|-o [a-z_]+)' | sed -E 's/^[ ,]//' | sort -u >"$T/help.opts"
vd_check "--help lists options ($(wc -l <"$T/help.opts"))" test "$(wc -l <"$T/help.opts")" -ge 10
while read -r opt; do
	vd_check "vdmount(1) documents $opt" grep -qF -- "$opt" "$T/page.txt"
done <"$T/help.opts"
ver=$("$VDMOUNT" -V | sed -E 's/^vdmount ([^,]*),.*/\1/')
vd_check "the page is of version $ver" grep -q "^\.TH VDMOUNT 1 .*\"vdmount $ver\"" "$PAGE"

# Completion: loads silently; completes options, -o items, images.
mkdir -p "$T/files/sub" && touch "$T/files/a.vmdk" "$T/files/b.VHD" "$T/files/c.txt"
complete_words()
{
	# complete_words WORD...: COMPREPLY for the last word of "vdmount WORD..."
	bash -c '
		source "$1" && source "$2" || exit 1
		shift 2
		COMP_WORDS=(vdmount "$@"); COMP_CWORD=$#
		COMP_LINE="vdmount $*"; COMP_POINT=${#COMP_LINE}
		_vdmount vdmount "${@: -1}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}"' _ "$BC" "$COMP" "$@"
}
out=$(bash -c 'source "$1" && source "$2" && complete -p vdmount' _ $BC "$COMP" 2>&1)
vd_check "the completion loads without a message ($out)" test "$out" = "complete -F _vdmount vdmount"
complete_words -- >"$T/comp.opts" 2>"$T/comp.err"
vd_check "completing -- prints nothing on stderr" test ! -s "$T/comp.err"
for opt in $(grep -- '^--' "$T/help.opts"); do
	vd_check "completion offers $opt" grep -qxF -- "$opt" "$T/comp.opts"
done
got=$(complete_words -o ro,allow_ot)
vd_check "completion: -o ro,allow_ot -> ro,allow_other ($got)" test "$got" = ro,allow_other
got=$(cd "$T/files" && complete_words "" | sort | tr '\n' ' ')
vd_check "completion: images and directories, not other files ($got)" test "$got" = "a.vmdk b.VHD sub "

# cmake --install layout.
cmake --install "$VD_BUILD" --prefix "$T/prefix" >"$T/install.log" 2>&1
vd_check "cmake --install succeeds" test $? = 0
for f in bin/vdmount share/man/man1/vdmount.1 share/bash-completion/completions/vdmount \
	share/doc/vdmount/chain.json.md share/doc/vdmount/README.md; do
	vd_check "installed: $f" test -s "$T/prefix/$f"
done
vd_check "installed vdmount runs" "$T/prefix/bin/vdmount" --version
vd_check "man finds the installed page by name" \
	bash -c 'MANPATH="$1" LC_ALL=C man -w vdmount | grep -q "^$1/man1/vdmount.1"' _ "$T/prefix/share/man"

if [ "$VD_FAILS" -ne 0 ]; then
	echo "docs: $VD_FAILS check(s) FAILED"
	exit 1
fi
echo "docs: all checks passed"
