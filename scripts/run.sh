#!/usr/bin/env bash
# The main job: install, build, start the control plane (wrenn-cp, with its own embedded
# PostgreSQL) and a host agent registered with it, then use the REST API the way an
# application does: create a capsule from the `minimal` template, run commands in it, write
# and read a file, destroy it, and stop both services.
#
#   sudo bash scripts/run.sh          (WRENN_DIR defaults to /var/lib/wrenn)
#
# The agent needs root: it creates namespaces, cgroups, veth links and an nftables table
# (inet wrenn). Sandboxes get no route to the host or to private networks. Both services
# listen on 127.0.0.1 only; the admin API key is in $WRENN_DIR/admin-api-key.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run.sh: the agent needs root; run it with sudo" >&2; exit 1; }

bash scripts/install-deps.sh
cmake -S . -B build -G Ninja >/dev/null
echo "run: building wrenn-cp, wrenn-agent, wrenn-nsinit and envd in build/" >&2
ninja -C build wrenn-cp wrenn-agent wrenn-nsinit envd

export WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
cp_port=${WRENN_CP_PORT:-8000}
agent_port=${WRENN_AGENT_PORT:-50051}
api="http://127.0.0.1:$cp_port"
mkdir -p "$WRENN_DIR/images"
if [ ! -e "$WRENN_DIR/images/minimal/etc/wrenn-template" ]; then
  echo "run: building the busybox template as \`minimal\` into $WRENN_DIR/images/minimal" >&2
  bash images/busybox/build.sh "$WRENN_DIR/images/minimal" build/bin/envd >&2
fi

cp_log=$WRENN_DIR/cp.log agent_log=$WRENN_DIR/agent.log
cp_pid="" agent_pid="" capsule=""
stop() {  # stop PID: SIGTERM, then wait
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  if [ -n "$capsule" ]; then
    curl -fsS -X DELETE -H "X-API-Key: $key" "$api/v1/capsules/$capsule" >/dev/null 2>&1 || true
  fi
  stop "$agent_pid"
  stop "$cp_pid"
}
trap cleanup EXIT

wait_for() {  # wait_for CHECK PID LOG WHAT: until the CHECK command succeeds, or PID is gone
  for _ in $(seq 600); do
    $1 >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "run: $4 exited; the end of $3:" >&2; tail -20 "$3" >&2; exit 1; }
    sleep 0.1
  done
  echo "run: $4 was not ready within 60 s; the end of $3:" >&2
  tail -20 "$3" >&2
  exit 1
}

echo "run: starting wrenn-cp on 127.0.0.1:$cp_port (embedded PostgreSQL under $WRENN_DIR/pg; log $cp_log)" >&2
build/bin/wrenn-cp --dir "$WRENN_DIR" --listen "127.0.0.1:$cp_port" 2>>"$cp_log" &
cp_pid=$!
cp_up() { curl -fs "$api/health"; }
wait_for cp_up "$cp_pid" "$cp_log" wrenn-cp
key=$(cat "$WRENN_DIR/admin-api-key")
echo "run: wrenn-cp is up; admin API key in $WRENN_DIR/admin-api-key" >&2

register=()
if [ ! -e "$WRENN_DIR/host-credentials.json" ]; then
  token=$(curl -fsS -X POST -H "X-API-Key: $key" -H 'Content-Type: application/json' -d '{}' \
    "$api/v1/hosts" | jq -r .registration_token)
  register=(--register "$token")
fi
echo "run: starting wrenn-agent on 127.0.0.1:$agent_port (log $agent_log)" >&2
build/bin/wrenn-agent --dir "$WRENN_DIR" --listen "127.0.0.1:$agent_port" \
  --cp-url "$api" --address "127.0.0.1:$agent_port" "${register[@]}" 2>>"$agent_log" &
agent_pid=$!
# The agent now speaks only mutual TLS with the control plane: ready means online there.
agent_online() {
  curl -fsS -H "X-API-Key: $key" "$api/v1/hosts" |
    jq -e --arg a "127.0.0.1:$agent_port" 'any(.[]; .address == $a and .status == "online")'
}
wait_for agent_online "$agent_pid" "$agent_log" wrenn-agent
echo "run: wrenn-agent registered and online (mutual TLS)" >&2

rest() {  # rest METHOD PATH [JSON]: prints the body; fails on an error status
  curl -fsS -X "$1" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} "$api$2"
}

echo "run: POST /v1/capsules (template minimal)" >&2
start=$(date +%s%N)
for _ in $(seq 100); do  # the host is online once its first heartbeat arrived
  if reply=$(rest POST /v1/capsules '{"template":"minimal","timeout_sec":600}' 2>/dev/null); then break; fi
  sleep 0.1
done
capsule=$(jq -r .id <<<"$reply")
[ -n "$capsule" ] && [ "$capsule" != null ] || { echo "run: no capsule: $reply" >&2; exit 1; }
echo "run: capsule $capsule is $(jq -r .status <<<"$reply") after $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2

run() {  # run SHELL-COMMAND: POST .../exec and print stdout, stderr and the exit code
  local r
  r=$(rest POST "/v1/capsules/$capsule/exec" "$(jq -nc --arg c "$1" '{cmd:"/bin/sh",args:["-c",$c]}')")
  jq -r '(.stdout | rtrimstr("\n")), (.stderr | rtrimstr("\n") | select(. != "")), "(exit \(.exit_code), \(.duration_ms) ms)"' <<<"$r"
}
run 'echo "hello from $(hostname) as $(id -un), pid $$"; echo "processes visible: $(ls -d /proc/[0-9]* | wc -l)"; df -h / | tail -1'
run 'mount -t tmpfs none /mnt 2>&1 || echo "(mount is refused inside, as it should be)"'

echo "run: writing /root/notes/hello.txt and reading it back" >&2
echo "written through the REST API" | curl -fsS -H "X-API-Key: $key" \
  -F path=/root/notes/hello.txt -F file=@- "$api/v1/capsules/$capsule/files/write"
rest POST "/v1/capsules/$capsule/files/read" '{"path":"/root/notes/hello.txt"}'
rest POST "/v1/capsules/$capsule/files/list" '{"path":"/root/notes","depth":1}' |
  jq -r '.entries[] | "\(.permissions) \(.size) \(.path)"'

echo "run: GET /v1/capsules" >&2
rest GET /v1/capsules | jq -c '[.[] | {id, status, template}]'
echo "run: destroying $capsule and stopping the services" >&2
curl -fsS -X DELETE -H "X-API-Key: $key" "$api/v1/capsules/$capsule"
echo "run: the capsule is now $(rest GET "/v1/capsules/$capsule" | jq -r .status)" >&2
capsule=""
