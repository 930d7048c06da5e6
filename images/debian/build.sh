#!/usr/bin/env bash
# Builds the minimal Debian template: a root tree for the ns runtime made with debootstrap
# (bash, coreutils, ca-certificates, curl, git, python3, sudo), with an unprivileged
# `wrenn-user` (passwordless sudo inside the sandbox) and envd injected. Takes a few minutes
# and needs the Debian mirror.
#
#   images/debian/build.sh OUT_DIR [ENVD_BINARY]
#
# Environment: WRENN_DEBIAN_SUITE (default bookworm), WRENN_DEBIAN_MIRROR (default
# http://deb.debian.org/debian). OUT_DIR is built next to itself and renamed into place, so
# a template is never seen half-built; an existing OUT_DIR is replaced only on success.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [ENVD_BINARY]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 == -h || $1 == --help ]] && usage
[ "$(id -u)" -eq 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }

out=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
envd=${2:-$here/build/bin/envd}
suite=${WRENN_DEBIAN_SUITE:-bookworm}
mirror=${WRENN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
[[ -x $envd ]] || { echo "envd not found at $envd (build it first)" >&2; exit 1; }
file -L "$envd" | grep -q "statically linked" || { echo "$envd is not static (a sanitizer build?)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  echo "installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "$(dirname "$out")/.build-$(basename "$out").XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "debian: debootstrap $suite from $mirror into $tmp (a few minutes)" >&2
debootstrap --variant=minbase --include=bash,coreutils,ca-certificates,curl,git,python3,sudo,procps,iproute2,less \
  "$suite" "$tmp" "$mirror" >&2

echo "debian: adding wrenn-user and envd" >&2
chroot "$tmp" /usr/sbin/useradd --create-home --uid 1000 --shell /bin/bash wrenn-user
echo "wrenn-user ALL=(ALL) NOPASSWD:ALL" >"$tmp/etc/sudoers.d/wrenn-user"
chmod 0440 "$tmp/etc/sudoers.d/wrenn-user"
install -m 0755 "$envd" "$tmp/usr/local/bin/envd"
strip --strip-unneeded "$tmp/usr/local/bin/envd" 2>/dev/null || true
# Caches and logs are not part of a template.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/*.log
echo "wrenn-debian-$suite" >"$tmp/etc/wrenn-template"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "built Debian $suite template at $out ($(du -sh "$out" | cut -f1))"
