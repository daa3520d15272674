#!/usr/bin/env bash
# Ingest throughput: UDP datagrams accepted per second, and AMQP messages per second
# from the queue to a subscriber with ingest.amqp.prefetch 100 and 1000. The gateway
# (release build, one worker thread, memory backend) is pinned to CPU 0; the sender
# (examples/ingest_bench.rs) to CPU 1. RUNS runs of each; prints every run.
#
#   bash bench/ingest.sh [RUNS] [UDP_SECONDS] [AMQP_MESSAGES]
#
# Needs the machine's RabbitMQ at 127.0.0.1:5672 (guest/guest) for the AMQP part.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3} UDP_SECONDS=${2:-5} AMQP_MESSAGES=${3:-50000}

cargo build --release --locked --quiet --bin sse-gateway --example ingest_bench
GW=target/release/sse-gateway
BENCH=target/release/examples/ingest_bench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 400); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.05; done; echo "not ready: $1" >&2; return 1; }

export SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SSE_GATEWAY_SERVER__WORKER_THREADS=1 SSE_GATEWAY_DEMO__ENABLED=false SSE_GATEWAY_DEMO__PUBLISHER=false SSE_GATEWAY_LOG__LEVEL=warn
export SSE_GATEWAY_LIMITS__SUBSCRIBER_QUEUE=65536 SSE_GATEWAY_STREAMS__BUFFER_SIZE=1000
BENCH_TOKEN=$($GW token --sub bench --subscribe 'bench.*' --ttl 24h)
export BENCH_TOKEN
LOG=$(mktemp)
echo "gateway log: $LOG" >&2
pid=""
stop() { if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap stop EXIT

for run in $(seq "$RUNS"); do
    port=$(free_port) udp=$(free_port)
    SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$port SSE_GATEWAY_INGEST__UDP__ENABLED=true \
        SSE_GATEWAY_INGEST__UDP__ADDR=127.0.0.1:$udp taskset -c 0 $GW serve >>"$LOG" 2>&1 &
    pid=$!
    wait_ready "127.0.0.1:$port"
    echo -n "run $run "
    taskset -c 1 $BENCH --http "127.0.0.1:$port" udp --target "127.0.0.1:$udp" --duration "${UDP_SECONDS}s"
    stop
done

for prefetch in 100 1000; do
    for run in $(seq "$RUNS"); do
        port=$(free_port) queue="sse-bench-$$-$prefetch-$run"
        SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$port SSE_GATEWAY_INGEST__AMQP__ENABLED=true \
            SSE_GATEWAY_INGEST__AMQP__QUEUE=$queue SSE_GATEWAY_INGEST__AMQP__DECLARE=true \
            SSE_GATEWAY_INGEST__AMQP__PREFETCH=$prefetch taskset -c 0 $GW serve >>"$LOG" 2>&1 &
        pid=$!
        wait_ready "127.0.0.1:$port"
        echo -n "prefetch $prefetch run $run "
        taskset -c 1 $BENCH --http "127.0.0.1:$port" amqp --queue "$queue" --messages "$AMQP_MESSAGES"
        stop
    done
done
