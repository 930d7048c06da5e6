#!/usr/bin/env bash
# Installs every Debian package the build and the test suite need. Idempotent: when all
# packages are present it prints nothing and touches nothing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git clang-format
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libprotobuf-dev protobuf-compiler
  catch2 libtomlplusplus-dev
  libpq-dev postgresql
  libnl-3-dev libnl-route-3-dev libnftables-dev libseccomp-dev libdevmapper-dev
  libssl-dev zlib1g-dev
  curl procps iproute2 util-linux nftables
  busybox-static libsystemd-dev crun wrk jq
  qemu-system-x86 qemu-utils linux-image-amd64 e2fsprogs
)
# node (for the third-party client tests) may come from nodesource with npm bundled;
# only ask Debian for it when there is no node at all.
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
