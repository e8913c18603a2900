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
ninja -C "$dir" >/dev/null
echo "built: $dir/fastqcow"
