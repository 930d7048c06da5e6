#!/usr/bin/env bash
# The benchmark command: installs what the build needs, builds into build/ (the same build
# tree scripts/test.sh uses) and runs the benchmarks, printing their figures:
#  - envd_bench: the real envd on a loopback port (under a minute);
#  - agent_bench: the real wrenn-agent against crun, in private network and mount
#    namespaces so the host's networking and mounts are untouched (needs root, ~1 min);
#  - cp_bench: the control plane's REST API (wrenn-cp + PostgreSQL + a registered agent):
#    create -> first exec, exec round trip, GET throughput under wrk, 1 GiB up/download
#    with the control plane's RSS growth (needs root, ~2 min);
#  - fleet_bench: wrennctl diff and a no-op apply over 10,000 generated fleet resources,
#    end to end against wrenn-cp and PostgreSQL (~1 min, the first apply included);
#  - events_bench: 10,000 events fanned out to 10 webhook channels, delivered to a local
#    receiver: throughput and end-to-end latency p50/p99 (~1 min).
#   bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

build=build
cmake -S . -B "$build" -G Ninja >/dev/null
echo "bench: building the benchmarks in $build/" >&2
ninja -C "$build" envd envd_bench agent_bench cp_bench fleet_bench events_bench wrenn-cp wrenn-agent wrenn-nsinit \
  wrennctl busybox_test_image
if grep -q '^WRENN_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "bench: warning: $build/ is built with WRENN_SANITIZE=ON; figures are not representative" >&2
fi

echo >&2
WRENN_BIN_DIR="$PWD/$build/bin" "$build/bin/envd_bench"
echo >&2
WRENN_BIN_DIR="$PWD/$build/bin" "$build/bin/fleet_bench"
echo >&2
WRENN_BIN_DIR="$PWD/$build/bin" "$build/bin/events_bench"
echo >&2
if [ "$(id -u)" -eq 0 ]; then
  WRENN_BIN_DIR="$PWD/$build/bin" unshare --mount --propagation private "$build/bin/agent_bench"
  echo >&2
  WRENN_BIN_DIR="$PWD/$build/bin" unshare --mount --propagation private "$build/bin/cp_bench"
else
  echo "bench: agent_bench and cp_bench skipped (need root)" >&2
fi
