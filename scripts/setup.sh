#!/usr/bin/env bash
# Install what fastqcow needs to build, test and benchmark on Debian 12.
# Idempotent and quick when everything is present.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc clang liburing-dev zlib1g-dev libzstd-dev
      qemu-utils fio gnuplot-nox time python3 libclang-rt-14-dev scdoc
      libgnutls28-dev nettle-dev gnutls-bin libnbd-bin python3-libnbd libnbd-dev
      fuse3 libfuse3-dev e2fsprogs qemu-system-common strace)
# one dpkg-query for all (CI calls this script four times)
# (dpkg-query exits 1 when a package is unknown to it: not an error here)
installed=$({ dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null || true; } |
            awk '/ install ok installed$/ { print $1 }')
mapfile -t missing < <(printf '%s\n' "${pkgs[@]}" | grep -vxF -e "${installed:-.}" || true)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
