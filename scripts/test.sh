#!/usr/bin/env bash
# The test command: installs what the build and tests need, builds, runs the whole suite.
#   bash scripts/test.sh             # normal build in build/
#   bash scripts/test.sh --sanitize  # AddressSanitizer + UBSan build in build-san/
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

build=build
flags=()
if [ "${1:-}" = "--sanitize" ]; then
  build=build-san
  # Sandboxes need a static envd, which a sanitizer build cannot link: take the normal one.
  cmake -S . -B build -G Ninja >/dev/null
  ninja -C build envd
  flags=(-DWRENN_SANITIZE=ON "-DWRENN_SANDBOX_ENVD=$PWD/build/bin/envd")
fi

cmake -S . -B "$build" -G Ninja "${flags[@]}" >/dev/null
ninja -C "$build"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$build" --output-on-failure -j2 --timeout 900
