#!/usr/bin/env bash
# The main job, as far as it exists today: install, build, start envd on a private port,
# and run a command inside it as root and as an unprivileged user.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja >/dev/null
ninja -C build envd envd-exec
port=${WRENN_ENVD_PORT:-49983}
build/bin/envd --host 127.0.0.1 --port "$port" --run-dir /tmp/wrenn-run 2>/tmp/wrenn-envd.log &
envd_pid=$!
trap 'kill $envd_pid 2>/dev/null' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
echo "envd is up: $(curl -fsS "http://127.0.0.1:$port/health")"
build/bin/envd-exec --port "$port" -- /bin/sh -c 'echo "hello from $(id -un) in $PWD"; uname -a'
build/bin/envd-exec --port "$port" --user nobody --cwd /tmp -- /bin/sh -c 'echo "and from $(id -un) (uid $(id -u))"'
echo "(envd log: /tmp/wrenn-envd.log; the sandboxed main job arrives with the agent and control plane)"
