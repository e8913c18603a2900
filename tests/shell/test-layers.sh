#!/usr/bin/env bash
# test-layers: the source tree keeps its layering (scripts/check-layers.py):
# no file includes a higher layer's header, drivers include only the driver
# interface, tools only the public header; and in the built objects no
# lower layer calls a higher one (the registry array excepted) and the
# qcow2 metadata cache never calls the refcount module.
set -euo pipefail
src=${TEST_SRCDIR:?}/..
build=$(dirname "${TEST_HELPERS:?}")
command -v python3 >/dev/null || { echo "python3 missing"; exit 77; }
args=()
command -v nm >/dev/null && args=(--objects "$build")
python3 "$src/scripts/check-layers.py" "${args[@]}"
# the check must catch an upward include: plant one in a scratch copy
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/layers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/layers"
cp -r "$src/scripts" "$src/src" "$src/include" "$tmp/layers/"
mkdir -p "$tmp/layers/tools" "$tmp/layers/examples"
printf '#include "core/ctx.h"\n' >> "$tmp/layers/src/drivers/raw/raw.c"
if python3 "$tmp/layers/scripts/check-layers.py" > "$tmp/layers/out.txt"; then
  echo "FAIL: an upward include (raw.c -> core/ctx.h) went unnoticed"; exit 1
fi
grep -q 'raw.c: includes "core/ctx.h"' "$tmp/layers/out.txt" || { cat "$tmp/layers/out.txt"; exit 1; }
echo "layers: ok"
