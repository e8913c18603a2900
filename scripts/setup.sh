#!/usr/bin/env bash
# Install what fastqcow needs to build, test and benchmark on Debian 12.
# Idempotent and quick when everything is present.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc clang liburing-dev zlib1g-dev libzstd-dev
      qemu-utils fio gnuplot-nox time python3 libclang-rt-14-dev scdoc
      libgnutls28-dev nettle-dev gnutls-bin libnbd-bin python3-libnbd libnbd-dev
      fuse3 libfuse3-dev e2fsprogs qemu-system-common strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
