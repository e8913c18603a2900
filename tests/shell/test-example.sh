#!/usr/bin/env bash
# The README's library example builds, runs, and makes an image qemu-img
# finds clean.
set -u
ex=$(dirname "$FASTQCOW")/example
[ -x "$ex" ] || { echo "example not built"; exit 77; }
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
"$ex" "$d/ex.qcow2" || exit 1
if command -v qemu-img >/dev/null; then
  qemu-img check -q "$d/ex.qcow2" || { echo "qemu-img check failed"; exit 1; }
fi
echo ok
