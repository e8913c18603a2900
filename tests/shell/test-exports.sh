#!/usr/bin/env bash
# The shared library exports exactly the functions of the public header.
set -u
lib=$(ls "$(dirname "$FASTQCOW")"/libfastqcow.so.* 2>/dev/null | head -1)
[ -n "$lib" ] || { echo "no shared library next to $FASTQCOW"; exit 77; }
hdr=$TEST_SRCDIR/../include/fastqcow.h
want=$(bash "$TEST_SRCDIR/../scripts/public-functions.sh" "$hdr")
got=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TW]$/ {sub(/@.*/, "", $3); print $3}' | sort -u)
if [ "$want" != "$got" ]; then
  echo "exported symbols differ from the header's functions:"
  diff <(echo "$want") <(echo "$got")
  echo "(run scripts/gen-map.sh after changing include/fastqcow.h)"
  exit 1
fi
echo "ok: $(echo "$got" | wc -l) exported functions, all declared in fastqcow.h"
