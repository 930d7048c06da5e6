#!/usr/bin/env bash
# The benchmark command: installs what the build needs, builds envd and envd_bench into
# build/ (the same build tree scripts/test.sh uses) and runs the benchmark, which starts
# the real envd on a loopback port and prints its figures (under a minute).
#   bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

build=build
cmake -S . -B "$build" -G Ninja >/dev/null
echo "bench: building envd and envd_bench in $build/" >&2
ninja -C "$build" envd envd_bench
if grep -q '^WRENN_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "bench: warning: $build/ is built with WRENN_SANITIZE=ON; figures are not representative" >&2
fi

echo >&2
WRENN_BIN_DIR="$PWD/$build/bin" "$build/bin/envd_bench"
