#!/usr/bin/env bash
# Soak: a release gateway under connection churn, resumes and publishes for
# DURATION seconds (default 1800), then checks RSS and open fds after clients leave.
#   bash bench/soak.sh [DURATION_SECONDS] [CLIENTS]
#   BACKEND=disk bash bench/soak.sh 600 300   # on the disk backend: the data
#                                             # directory's size is sampled throughout
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1800} CLIENTS=${2:-300} SETTLE=${SETTLE:-90}
cargo build --release --quiet --bin sse-gateway --example soak
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# History expires a minute after the last publish, so "after" measures a node with
# nothing left to hold.
data=""
if [ "${BACKEND:-memory}" = disk ]; then
    data=$(mktemp -d /tmp/soak-data.XXXXXX)
    export SSE_GATEWAY_BACKEND__KIND=disk SSE_GATEWAY_BACKEND__DISK__PATH=$data/store
fi
SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$port SSE_GATEWAY_DEMO__PUBLISHER=false SSE_GATEWAY_LOG__LEVEL=warn \
SSE_GATEWAY_STREAMS__BUFFER_TTL=60s SSE_GATEWAY_STREAMS__SWEEP_INTERVAL=5s \
    target/release/sse-gateway serve & gw=$!
sampler=""
if [ -n "$data" ]; then
    # The data directory's size every 30 s: bounded history means bounded disk use.
    (while sleep 30; do echo "$(date +%s) $(du -sb "$data/store" | cut -f1)"; done) >"$data/sizes" & sampler=$!
fi
trap 'kill $gw $sampler 2>/dev/null || true; [ -z "$data" ] || rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
target/release/examples/soak --addr 127.0.0.1:$port --duration "${DURATION}s" --clients "$CLIENTS" --settle "${SETTLE}s" --pid $gw
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^sse_(connections_open|subscriptions_open|streams_subscribed|streams_buffered) '
if [ -n "$data" ]; then
    echo "data directory size (bytes) every 30 s: $(cut -d' ' -f2 "$data/sizes" | paste -sd' ')"
    echo "max $(cut -d' ' -f2 "$data/sizes" | sort -n | tail -1), last $(tail -1 "$data/sizes" | cut -d' ' -f2), now $(du -sb "$data/store" | cut -f1)"
fi
