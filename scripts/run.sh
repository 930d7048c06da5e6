#!/usr/bin/env bash
# The main job, on a fresh Debian/Ubuntu machine as root: install the packages, build,
# start the control plane (wrenn-cp, with its own embedded PostgreSQL), apply the example
# fleet (examples/gitops/specs: team `demo`, template `tools`, a webhook channel, host
# `local`), register a local agent as host `local`, wait until the reconciler has built
# the template there, then use it the way an application does: create a sandbox over REST,
# run commands in it, write and read a file, destroy it. The stack keeps running.
#
#   sudo bash scripts/run.sh         set up and run (again: restarts the services)
#   sudo bash scripts/run.sh stop    stop what it started
#
# WRENN_DIR (default /var/lib/wrenn) holds everything: the database, the images, the logs,
# the admin API key (admin-api-key) and the demo team's key (demo-api-key), both 0600.
# The agent needs root: namespaces, cgroups, veth links and an nftables table (inet wrenn).
# Sandboxes get no route to the host or to private networks. Both services listen on
# 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

export WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
cp_port=${WRENN_CP_PORT:-8000}
agent_port=50051  # host `local` in examples/gitops/specs/hosts.toml declares this port
api="http://127.0.0.1:$cp_port"
run_dir=$WRENN_DIR/run
cp_log=$WRENN_DIR/cp.log agent_log=$WRENN_DIR/agent.log

step_name=""
step() {  # step N TEXT: announce a step; a failure names the step
  step_name="$1"
  echo "==> [$1/9] $2" >&2
}
fail() {  # fail WHAT [LOG]: what went wrong, what to check
  echo "run: step $step_name failed: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    echo "run: the end of $2:" >&2
    tail -20 "$2" >&2
  fi
  exit 1
}

stop_service() {  # stop_service NAME: SIGTERM the process in run/NAME.pid, wait for it
  local f=$run_dir/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
stop_all() {
  stop_service agent
  stop_service cp
}

if [ "${1:-}" = stop ]; then
  stop_all
  echo "run: stopped wrenn-agent and wrenn-cp (state stays in $WRENN_DIR)" >&2
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: sudo bash scripts/run.sh [stop]" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run: the agent needs root; run it with sudo" >&2; exit 1; }

step 1 "installing packages (scripts/install-deps.sh)"
bash scripts/install-deps.sh || fail "package installation; check apt's output above"

step 2 "building wrenn-cp, wrenn-agent, wrenn-nsinit, envd and wrennctl in build/"
cmake -S . -B build -G Ninja >/dev/null || fail "cmake configure"
ninja -C build wrenn-cp wrenn-agent wrenn-nsinit envd wrennctl || fail "the build; see the compiler output above"
ctl=build/bin/wrennctl

step 3 "image builder busybox -> $WRENN_DIR/images (template \`minimal\`)"
mkdir -p "$WRENN_DIR/images" "$run_dir"
if [ ! -e "$WRENN_DIR/images/minimal/etc/wrenn-template" ]; then
  bash images/busybox/build.sh "$WRENN_DIR/images/minimal" build/bin/envd >&2 ||
    fail "images/busybox/build.sh (needs busybox-static)"
fi
# Templates declared with `image = "busybox"` start from images/busybox.
[ -e "$WRENN_DIR/images/busybox" ] || ln -s minimal "$WRENN_DIR/images/busybox"

stop_all  # a previous run's services

step 4 "starting wrenn-cp on 127.0.0.1:$cp_port (embedded PostgreSQL; log $cp_log)"
# The example channel's signing key comes from the control plane's environment.
if [ ! -s "$WRENN_DIR/demo-webhook-secret" ]; then
  (umask 077 && openssl rand -hex 32 >"$WRENN_DIR/demo-webhook-secret")
fi
WRENN_DEMO_WEBHOOK_SECRET=$(cat "$WRENN_DIR/demo-webhook-secret") \
  setsid build/bin/wrenn-cp --dir "$WRENN_DIR" --listen "127.0.0.1:$cp_port" \
  --fleet-interval 2 </dev/null >>"$cp_log" 2>&1 &
echo $! >"$run_dir/cp.pid"
for _ in $(seq 600); do
  curl -fs "$api/health" >/dev/null 2>&1 && break
  kill -0 "$(cat "$run_dir/cp.pid")" 2>/dev/null || fail "wrenn-cp exited" "$cp_log"
  sleep 0.1
done
curl -fs "$api/health" >/dev/null || fail "wrenn-cp did not answer on $api/health within 60 s" "$cp_log"
export WRENN_URL=$api
WRENN_API_KEY=$(cat "$WRENN_DIR/admin-api-key")
export WRENN_API_KEY

step 5 "applying the example fleet (examples/gitops/specs, apply set \`quickstart\`)"
# A copy of the example with one addition: an API key for team `demo`, generated here and
# kept in $WRENN_DIR/demo-api-key; the spec holds only its SHA-256.
if [ ! -s "$WRENN_DIR/demo-api-key" ]; then
  (umask 077 && echo "wrn_$(openssl rand -hex 16)" >"$WRENN_DIR/demo-api-key")
fi
demo_key=$(cat "$WRENN_DIR/demo-api-key")
specs=$WRENN_DIR/quickstart
rm -rf "$specs" && mkdir -p "$specs"
cp examples/gitops/specs/*.toml "$specs/"
cat >>"$specs/teams.toml" <<EOF

# Added by scripts/run.sh: the quickstart's key (the key is in \$WRENN_DIR/demo-api-key).
[[team.api_keys]]
name = "quickstart"
sha256 = "$(printf %s "$demo_key" | sha256sum | cut -d' ' -f1)"
EOF
"$ctl" apply -f "$specs" --yes || fail "wrennctl apply" "$cp_log"

step 6 "registering a wrenn-agent as host \`local\` (127.0.0.1:$agent_port; log $agent_log)"
register=()
if [ ! -e "$WRENN_DIR/host-credentials.json" ]; then
  token=$(curl -fsS -X POST -H "X-API-Key: $WRENN_API_KEY" \
    "$api/v1/fleet/hosts/local/registration-token" | jq -r .registration_token) ||
    fail "no registration token for host local" "$cp_log"
  register=(--register "$token")
fi
setsid build/bin/wrenn-agent --dir "$WRENN_DIR" --listen "127.0.0.1:$agent_port" \
  --cp-url "$api" --address "127.0.0.1:$agent_port" "${register[@]}" </dev/null >>"$agent_log" 2>&1 &
echo $! >"$run_dir/agent.pid"
host_status() { "$ctl" get host local -o json 2>/dev/null | jq -r '.live.status // "unknown"'; }
for _ in $(seq 600); do
  [ "$(host_status)" = online ] && break
  kill -0 "$(cat "$run_dir/agent.pid")" 2>/dev/null || fail "wrenn-agent exited" "$agent_log"
  sleep 0.1
done
[ "$(host_status)" = online ] || fail "host local is not online after 60 s (status $(host_status))" "$agent_log"
echo "run: host local is online (mutual TLS between wrenn-cp and the agent)" >&2

step 7 "waiting for the reconciler to build template demo/tools on host local"
last=""
for _ in $(seq 900); do
  phase=$("$ctl" get template demo/tools -o json 2>/dev/null | jq -r '.status.phase // "Pending"')
  [ "$phase" != "$last" ] && echo "run: template demo/tools: $phase" >&2 && last=$phase
  [ "$phase" = Ready ] && break
  [ "$phase" = Failed ] && { "$ctl" get template demo/tools >&2 || true; fail "the template build failed (build log above)" "$cp_log"; }
  sleep 0.2
done
[ "$phase" = Ready ] || fail "template demo/tools is not ready after 180 s (phase $phase)" "$cp_log"

step 8 "a sandbox from template tools, as team demo"
export WRENN_API_KEY=$demo_key
start=$(date +%s%N)
capsule=$("$ctl" sandbox create --template tools --timeout 600) || fail "wrennctl sandbox create" "$cp_log"
echo "run: sandbox $capsule is running after $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
"$ctl" sandbox exec "$capsule" -- /opt/demo/hello
"$ctl" sandbox exec "$capsule" -- /bin/sh -c \
  'echo "hello from $(hostname) as $(id -un), pid $$"; echo "processes visible: $(ls -d /proc/[0-9]* | wc -l)"; df -h / | tail -1'
"$ctl" sandbox exec "$capsule" -- /bin/sh -c \
  'mount -t tmpfs none /mnt 2>&1 || echo "(mount is refused inside, as it should be)"'
echo "run: writing /root/notes/hello.txt through the REST API and reading it back" >&2
echo "written through the REST API" | curl -fsS -H "X-API-Key: $demo_key" \
  -F path=/root/notes/hello.txt -F file=@- "$api/v1/capsules/$capsule/files/write" >/dev/null
curl -fsS -X POST -H "X-API-Key: $demo_key" -H 'Content-Type: application/json' \
  -d '{"path":"/root/notes/hello.txt"}' "$api/v1/capsules/$capsule/files/read"
"$ctl" sandbox rm "$capsule" >/dev/null || fail "wrennctl sandbox rm $capsule" "$cp_log"
echo "run: sandbox $capsule destroyed" >&2

step 9 "done"
cat >&2 <<EOF

Wrenn is running: control plane $api, agent 127.0.0.1:$agent_port (logs: $cp_log, $agent_log).
Use it:
  export WRENN_URL=$api WRENN_API_KEY=\$(sudo cat $WRENN_DIR/admin-api-key)
  build/bin/wrennctl get hosts                 # live status of the fleet
  build/bin/wrennctl diff -f $specs            # edit the specs there, then apply
  WRENN_API_KEY=\$(sudo cat $WRENN_DIR/demo-api-key) build/bin/wrennctl sandbox create --template tools
Stop it:
  sudo bash scripts/run.sh stop
EOF
