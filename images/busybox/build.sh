#!/usr/bin/env bash
# Builds the tiny busybox template: a root tree for the ns runtime, made in about a second
# from Debian's busybox-static. Used by the tests and the quickstart.
#
#   images/busybox/build.sh OUT_DIR [ENVD_BINARY]
#
# OUT_DIR becomes the template's root tree ($WRENN_DIR/images/<name>/). It is built in a
# temporary directory next to it and renamed into place, so a template is never seen
# half-built. ENVD_BINARY (default build/bin/envd) is installed at /usr/local/bin/envd.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [ENVD_BINARY]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 == -h || $1 == --help ]] && usage

out=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
envd=${2:-$here/build/bin/envd}
busybox=$(command -v busybox || true)
[[ -n $busybox ]] || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -q "statically linked" \
  || { echo "$busybox is not static: apt-get install busybox-static" >&2; exit 1; }
[[ -x $envd ]] || { echo "envd not found at $envd (build it first)" >&2; exit 1; }

tmp=$(mktemp -d "$(dirname "$out")/.build-$(basename "$out").XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,proc,sys,dev,tmp,run,root,home/wrenn-user,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"
# One link per applet busybox reports (ls, sh, cat, wget, nc, ...).
for applet in $("$busybox" --list-full); do
  [[ -e $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
done
install -m 0755 "$envd" "$root/usr/local/bin/envd"
strip --strip-unneeded "$root/usr/local/bin/envd" 2>/dev/null || true

cat >"$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
wrenn-user:x:1000:1000:wrenn-user:/home/wrenn-user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$root/etc/group" <<'G'
root:x:0:
wrenn-user:x:1000:
nogroup:x:65534:
G
chown 1000:1000 "$root/home/wrenn-user"
echo "127.0.0.1 localhost" >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
echo "wrenn-busybox" >"$root/etc/wrenn-template"

rm -rf "$out"
mv "$root" "$out"
trap - EXIT
echo "built busybox template at $out"
