#!/usr/bin/env bash
# Startup time of the disk backend with a full store: publishes EVENTS events
# (default 1,000,000: 1,000 streams x 1,000 events of ~60 bytes, in batches of
# 1,000), stops the gateway, starts it again on the same data directory and reports
# the time until it answers /readyz, what it loaded, and the data directory's size.
# Medians of RUNS restarts.
#
#   bash bench/disk-startup.sh            # EVENTS=1000000 RUNS=3
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000} RUNS=${RUNS:-3}
cargo build --release --locked --quiet --bin sse-gateway -p sse-gateway
GATEWAY=target/release/sse-gateway
WORK=$(mktemp -d /tmp/disk-startup.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export SSE_GATEWAY_AUTH__HS256_SECRET
SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SSE_GATEWAY_BACKEND__KIND=disk SSE_GATEWAY_BACKEND__DISK__PATH="$WORK/data"
export SSE_GATEWAY_DEMO__PUBLISHER=false SSE_GATEWAY_LOG__LEVEL=info
export SSE_GATEWAY_STREAMS__BUFFER_SIZE=1000 SSE_GATEWAY_STREAMS__MAX_HISTORY_BYTES=1073741824
TOKEN=$($GATEWAY token --sub bench --publish '*' --ttl 2h)

start() { # sets PID, ADDR and READY_S (seconds until /readyz answers)
    local port started; port=$(free_port)
    started=$(date +%s.%N)
    SSE_GATEWAY_SERVER__ADDR="127.0.0.1:$port" "$GATEWAY" serve >"$WORK/log" 2>&1 &
    PID=$! ADDR="127.0.0.1:$port"
    until curl -sf -o /dev/null "http://$ADDR/readyz"; do sleep 0.01; done
    READY_S=$(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')")
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

start
python3 - "$ADDR" "$TOKEN" "$EVENTS" <<'PY'
import json, sys, urllib.request
addr, token, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
batch = 1000
for n in range(events // batch):
    body = json.dumps([{"stream": f"s{n % 1000}", "data": f"event {n * batch + i:09d} of the startup benchmark"} for i in range(batch)]).encode()
    request = urllib.request.Request(f"http://{addr}/events", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
PY
stop
times=()
for _ in $(seq "$RUNS"); do
    start
    times+=("$READY_S")
    grep -o 'loaded durable history.*' "$WORK/log" | head -1 >&2
    stop
done
echo "$EVENTS events stored, data directory $(du -sh "$WORK/data" | cut -f1)"
echo "restart until ready: ${times[*]} s (median $(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p") s)"
