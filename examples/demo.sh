#!/usr/bin/env bash
# examples/demo.sh - the main job on an embedded default, on a fresh Debian machine:
# install what is needed, build autorthanc, start a local Orthanc (built-in SQLite
# index, loopback, a free port, data under ./demo/), load sample studies, and run
# `autorthanc run` with the example rules.  Exports land in ./demo/storage/.
#   bash examples/demo.sh          watch until Ctrl-C
#   bash examples/demo.sh --once   one pass, print the exported tree, exit
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
once=0
[[ "${1:-}" == "--once" ]] && once=1

bash "$here/tests/deps.sh"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$here/build" -j"$(nproc)" --target autorthanc >/dev/null
bin="$here/build/autorthanc"

demo="$PWD/demo"
mkdir -p "$demo/orthanc" "$demo/storage" "$demo/state" "$demo/rules"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$demo/orthanc.json" <<JSON
{ "Name": "autorthanc-demo", "StorageDirectory": "$demo/orthanc/storage",
  "IndexDirectory": "$demo/orthanc/index", "HttpPort": $port, "DicomPort": $dport,
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "StableAge": 2,
  "DicomAet": "DEMO", "Plugins": [] }
JSON
TCP_NODELAY=1 Orthanc "$demo/orthanc.json" >"$demo/orthanc.log" 2>&1 &
orthanc_pid=$!
trap 'kill $orthanc_pid 2>/dev/null || true' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -fs "$url/system" >/dev/null && break; sleep 0.1; done
curl -fs "$url/system" >/dev/null || { echo "Orthanc did not start, see $demo/orthanc.log"; exit 1; }
echo "Orthanc is at $url (log: $demo/orthanc.log)"

# The example rules (the forward example stays inactive until you configure a modality).
cp -r "$here"/examples/rules/. "$demo/rules/"

# Sample data: a few small studies made by Orthanc itself.
python3 "$here/examples/sample_data.py" "$url"

export AUTORTHANC_ORTHANC_URL="$url" AUTORTHANC_RULES_DIR="$demo/rules" \
       AUTORTHANC_STORAGE_DIR="$demo/storage" AUTORTHANC_STATE_DIR="$demo/state"
"$bin" check || true
if [[ $once == 1 ]]; then
    # Let Orthanc mark the sample studies stable first.
    python3 - "$url" <<'PY'
import json, sys, time, urllib.request
url = sys.argv[1]
deadline = time.time() + 60
while time.time() < deadline:
    studies = json.load(urllib.request.urlopen(url + "/studies?expand"))
    if studies and all(s["IsStable"] for s in studies):
        break
    time.sleep(0.5)
PY
    "$bin" run --once
    echo; echo "Exported under $demo/storage:"; find "$demo/storage" -maxdepth 3 | sort
else
    echo "Watching; exports go to $demo/storage (Ctrl-C to stop)"
    "$bin" run
fi
