#!/usr/bin/env bash
# Talks to envd with curl only: health, a command through Connect (JSON codec), a file.
#   build/bin/envd --port 49983 &   then   bash examples/envd-curl.sh
set -euo pipefail
ENVD=${ENVD:-http://127.0.0.1:49983}
curl -fsS "$ENVD/health"; echo
# Server-streaming Connect call: a 5-byte envelope (flags, big-endian length) then JSON.
body='{"process":{"cmd":"/bin/sh","args":["-c","echo hello from $(id -un) in $PWD"]}}'
python3 - "$ENVD" "$body" <<'PY'
import json, struct, sys, urllib.request, base64
url, body = sys.argv[1], sys.argv[2].encode()
req = urllib.request.Request(url + "/process.Process/Start", data=b"\0" + struct.pack(">I", len(body)) + body,
                             headers={"Content-Type": "application/connect+json"})
data = urllib.request.urlopen(req).read()
while data:
    flags, n = data[0], struct.unpack(">I", data[1:5])[0]
    msg, data = json.loads(data[5:5 + n]), data[5 + n:]
    ev = msg.get("event", {})
    if "data" in ev:
        for k, v in ev["data"].items():
            sys.stdout.write(f"[{k}] " + base64.b64decode(v).decode())
    elif flags & 2:
        print("end of stream:", msg)
    else:
        print(ev)
PY
