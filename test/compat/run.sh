#!/usr/bin/env bash
# Third-party client compatibility test (ctest: compat_node_client). Runs the connect-es
# client (JSON codec, HTTP/1.1) in envd_client.test.mjs against the real envd binary:
#   1. npm ci in test/compat when node_modules is missing or older than package-lock.json,
#   2. builds a descriptor set of the envd protos with protoc,
#   3. starts $WRENN_BIN_DIR/envd on 127.0.0.1 with --port 0 and reads the port from its log,
#   4. runs node --test on the script, 5. stops envd on exit.
# Usage: WRENN_BIN_DIR=build/bin bash test/compat/run.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

die() {
  echo "compat: $*" >&2
  exit 1
}

[ -n "${WRENN_BIN_DIR:-}" ] ||
  die "WRENN_BIN_DIR is not set (the directory holding envd, e.g. build/bin)"
envd="$WRENN_BIN_DIR/envd"
[ -x "$envd" ] || die "$envd is missing or not executable (build the envd target first)"
command -v node >/dev/null || die "node is not installed (bash scripts/install-deps.sh installs it)"
command -v npm >/dev/null || die "npm is not installed (bash scripts/install-deps.sh installs it)"
command -v protoc >/dev/null || die "protoc is not installed (Debian package protobuf-compiler)"

# 1. Dependencies, pinned by package-lock.json. npm ci writes node_modules/.package-lock.json;
#    reinstall when it is missing or older than the committed lock file.
if [ ! -f "$here/node_modules/.package-lock.json" ] ||
  [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  echo "compat: installing npm packages (npm ci) in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) ||
    die "npm ci failed in $here (is the npm registry reachable?)"
fi

tmp="$(mktemp -d /tmp/wrenn-compat-XXXXXX)"
envd_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  if [ -n "$envd_pid" ] && kill -0 "$envd_pid" 2>/dev/null; then
    kill -TERM "$envd_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$envd_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$envd_pid" 2>/dev/null || true
    wait "$envd_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# 2. Descriptor set: the services the client loads at run time instead of generated code.
protoc --include_imports --descriptor_set_out="$tmp/envd.binpb" -I "$root/src/proto" \
  envd/process.proto envd/filesystem.proto

# 3. envd on a free loopback port; its JSON log line
#    {"msg":"envd listening","addr":"127.0.0.1:PORT",...} tells which.
mkdir -p "$tmp/run"
"$envd" --host 127.0.0.1 --port 0 --run-dir "$tmp/run" >"$tmp/envd.log" 2>&1 &
envd_pid=$!
port=""
for _ in $(seq 200); do
  port="$(grep -o '"addr":"127\.0\.0\.1:[0-9]*"' "$tmp/envd.log" | head -n1 |
    grep -o '[0-9]*"$' | tr -d '"' || true)"
  [ -n "$port" ] && break
  kill -0 "$envd_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "compat: envd did not start listening; its log:" >&2
  cat "$tmp/envd.log" >&2
  exit 1
fi
echo "compat: envd pid $envd_pid listening on 127.0.0.1:$port" >&2

# 4. The client.
status=0
ENVD_URL="http://127.0.0.1:$port" ENVD_DESCRIPTOR_SET="$tmp/envd.binpb" \
  node --test --test-reporter=spec "$here/envd_client.test.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "compat: node --test failed (exit $status); envd log:" >&2
  tail -n 50 "$tmp/envd.log" >&2
fi
exit "$status"
