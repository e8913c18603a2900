#!/usr/bin/env bash
# Configure (once) and build into ${BUILD_DIR:-build}. Extra args go to meson setup.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build}
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "$@" >/dev/null
else
  meson setup --reconfigure "$dir" "$@" >/dev/null
fi
# quiet unless it fails; then the compiler's messages
if ! log=$(ninja -C "$dir" 2>&1); then
  printf '%s\n' "$log" | grep -v '^\[' | tail -n 60 >&2
  echo "build failed: $dir" >&2
  exit 1
fi
echo "built: $dir/fastqcow"
