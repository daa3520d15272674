#!/usr/bin/env bash
# Soak: a release gateway under connection churn, resumes and publishes for
# DURATION seconds (default 1800), then checks RSS and open fds after clients leave.
#   bash bench/soak.sh [DURATION_SECONDS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1800} CLIENTS=${2:-300} SETTLE=${SETTLE:-90}
cargo build --release --quiet --bin sse-gateway --example soak
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# History expires a minute after the last publish, so "after" measures a node with
# nothing left to hold.
SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$port SSE_GATEWAY_DEMO__PUBLISHER=false SSE_GATEWAY_LOG__LEVEL=warn \
SSE_GATEWAY_STREAMS__BUFFER_TTL=60s SSE_GATEWAY_STREAMS__SWEEP_INTERVAL=5s \
    target/release/sse-gateway serve & gw=$!
trap 'kill $gw 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
target/release/examples/soak --addr 127.0.0.1:$port --duration "${DURATION}s" --clients "$CLIENTS" --settle "${SETTLE}s" --pid $gw
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^sse_(connections_open|subscriptions_open|streams_subscribed|streams_buffered) '
