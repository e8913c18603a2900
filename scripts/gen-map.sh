#!/usr/bin/env bash
# Regenerate src/api/libfastqcow.map from the functions declared in the public
# header: the shared library exports exactly those.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "FASTQCOW_0 {"
  echo "  global:"
  bash scripts/public-functions.sh | sed 's/^/    /; s/$/;/'
  echo "  local:"
  echo "    *;"
  echo "};"
} > src/api/libfastqcow.map
