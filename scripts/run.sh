#!/usr/bin/env bash
# The main job: install, build, start the host agent on the embedded defaults, create a
# real sandbox from the busybox template, run commands in it through the agent's proxy to
# envd, then destroy it and stop the agent.
#
#   sudo bash scripts/run.sh          (WRENN_DIR defaults to /var/lib/wrenn)
#
# The agent needs root: it creates namespaces, cgroups, veth links and an nftables table
# (inet wrenn). Sandboxes get no route to the host or to private networks.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run.sh: the agent needs root; run it with sudo" >&2; exit 1; }

bash scripts/install-deps.sh
cmake -S . -B build -G Ninja >/dev/null
echo "run: building wrenn-agent, wrenn-nsinit, envd and envd-exec in build/" >&2
ninja -C build wrenn-agent wrenn-nsinit envd envd-exec

export WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
port=${WRENN_AGENT_PORT:-50051}
mkdir -p "$WRENN_DIR/images"
if [ ! -e "$WRENN_DIR/images/busybox/etc/wrenn-template" ]; then
  echo "run: building the busybox template into $WRENN_DIR/images/busybox" >&2
  bash images/busybox/build.sh "$WRENN_DIR/images/busybox" build/bin/envd >&2
fi

log=$WRENN_DIR/agent.log
build/bin/wrenn-agent --dir "$WRENN_DIR" --listen "127.0.0.1:$port" 2>>"$log" &
agent_pid=$!
api="http://127.0.0.1:$port/wrenn.agent.v1.AgentService"
cleanup() {
  if [ -n "${token:-}" ]; then
    curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d '{"sandboxId":"quickstart"}' "$api/DestroySandbox" >/dev/null 2>&1 || true
  fi
  kill "$agent_pid" 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 200); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$agent_pid" 2>/dev/null || { echo "run: wrenn-agent exited; its log:" >&2; tail -20 "$log" >&2; exit 1; }
  sleep 0.05
done
token=$(cat "$WRENN_DIR/agent-token")
echo "run: wrenn-agent is up on 127.0.0.1:$port (log: $log, token: $WRENN_DIR/agent-token)" >&2

call() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$2" "$api/$1"; }
echo "run: creating sandbox 'quickstart' (1 vCPU, 256 MiB, 512 MiB disk)" >&2
start=$(date +%s%N)
call CreateSandbox '{"sandboxId":"quickstart","template":"busybox","vcpus":1,"memoryMb":256,"diskMb":512}'
echo
echo "run: created in $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2

exec_in() {
  build/bin/envd-exec --port "$port" --prefix /proxy/quickstart/49983 \
    --header "X-Wrenn-Agent-Token: $token" "$@"
}
exec_in -- /bin/sh -c 'echo "hello from $(hostname) as $(id -un), pid $$"; echo "processes visible: $(ls -d /proc/[0-9]* | wc -l)"; df -h / | tail -1'
exec_in --user wrenn-user --cwd /home/wrenn-user -- /bin/sh -c 'echo "and from $(id -un) in $PWD"; mount -t tmpfs none /mnt 2>&1 || echo "(mount is refused inside, as it should be)"'
call ListSandboxes '{}'
echo
echo "run: destroying the sandbox and stopping the agent" >&2
