#!/usr/bin/env bash
# Formats the C sources with the committed .clang-format (STYLE.md section 8).
# Usage: scripts/format.sh [--check]   (--check: list files that need it, exit 1)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format is not installed" >&2; exit 2; }
mapfile -t files < <(git ls-files '*.c' '*.h')
if [ "${1:-}" = --check ]; then
	bad=0
	for f in "${files[@]}"; do
		clang-format --style=file "$f" | cmp -s - "$f" || { echo "$f"; bad=1; }
	done
	exit $bad
fi
clang-format --style=file -i "${files[@]}"
