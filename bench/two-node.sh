#!/usr/bin/env bash
# Two-node scenario: deliveries/s, publish→receive latency and the time until a
# publish is acknowledged with the Redis backend (subscribers on node B, publishes on
# node A, one redis-server with one replica), with backend.redis.min_replicas 0 and
# 1 (every publish waits until the replica holds it), versus the in-memory backend
# (one node); same machine, same generator, alternating runs; prints medians.
#
#   bash bench/two-node.sh [RUNS] [SUBSCRIBERS] [DURATION] [RATE] [PUBLISHERS]
#
# e.g. 3 500 10 200 (fan-out at equal load) or 3 10 10 0 16 (publish cost: 16
# concurrent publishers as fast as acknowledged).
#
# Gateways run with one worker thread each, pinned to CPU 0 (with Redis); the
# generator is pinned to CPU 1. Needs redis-server (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3} SUBSCRIBERS=${2:-500} DURATION=${3:-10} RATE=${4:-0} PUBLISHERS=${5:-1}

cargo build --release --locked --quiet --bin sse-gateway -p sse-gateway
cargo build --release --locked --quiet -p sse-loadgen
GW=target/release/sse-gateway
GEN=target/release/sse-loadgen
LOAD=(run --streams 1 --subscribers-per-stream "$SUBSCRIBERS" --publishers "$PUBLISHERS" --rate "$RATE" --duration "${DURATION}s")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 200); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.05; done; echo "not ready: $1" >&2; return 1; }

export SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOADGEN_TOKEN=$($GW token --sub bench --subscribe '*' --publish '*' --ttl 24h)
export LOADGEN_TOKEN
export SSE_GATEWAY_SERVER__WORKER_THREADS=1 SSE_GATEWAY_DEMO__PUBLISHER=false SSE_GATEWAY_LOG__LEVEL=warn
export SSE_GATEWAY_LIMITS__SUBSCRIBER_QUEUE=65536 SSE_GATEWAY_STREAMS__BUFFER_SIZE=10000 SSE_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_SUBJECT=0
LOG=$(mktemp)
echo "gateway log: $LOG" >&2
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

run_memory() {
    local port; port=$(free_port)
    SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$port taskset -c 0 $GW serve >>"$LOG" 2>&1 & local pid=$!; pids+=($pid)
    wait_ready 127.0.0.1:$port
    taskset -c 1 $GEN --addr 127.0.0.1:$port "${LOAD[@]}" | grep '^RESULT'
    kill $pid; wait $pid 2>/dev/null || true
}

run_redis() { # min_replicas
    local rport qport aport bport; rport=$(free_port); qport=$(free_port); aport=$(free_port); bport=$(free_port)
    # Their own directories: a replica writes the snapshot it syncs from (dump.rdb).
    local rdir qdir; rdir=$(mktemp -d); qdir=$(mktemp -d)
    taskset -c 0 redis-server --dir "$rdir" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --repl-diskless-sync-delay 0 >/dev/null & local redis=$!; pids+=($redis)
    until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
    taskset -c 0 redis-server --dir "$qdir" --port "$qport" --bind 127.0.0.1 --save '' --appendonly no --replicaof 127.0.0.1 "$rport" >/dev/null & local replica=$!; pids+=($replica)
    until redis-cli -p "$rport" info replication | grep -q 'state=online'; do sleep 0.05; done
    export SSE_GATEWAY_BACKEND__KIND=redis SSE_GATEWAY_BACKEND__REDIS__URL=redis://127.0.0.1:$rport
    export SSE_GATEWAY_BACKEND__REDIS__MIN_REPLICAS=$1 SSE_GATEWAY_BACKEND__REDIS__CONNECTIONS=4
    SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$aport taskset -c 0 $GW serve >>"$LOG" 2>&1 & local a=$!; pids+=($a)
    SSE_GATEWAY_SERVER__ADDR=127.0.0.1:$bport taskset -c 0 $GW serve >>"$LOG" 2>&1 & local b=$!; pids+=($b)
    unset SSE_GATEWAY_BACKEND__KIND SSE_GATEWAY_BACKEND__REDIS__URL SSE_GATEWAY_BACKEND__REDIS__MIN_REPLICAS SSE_GATEWAY_BACKEND__REDIS__CONNECTIONS
    wait_ready 127.0.0.1:$aport; wait_ready 127.0.0.1:$bport
    taskset -c 1 $GEN --addr 127.0.0.1:$bport --publish-addr 127.0.0.1:$aport "${LOAD[@]}" | grep '^RESULT'
    kill $a $b $redis $replica; wait $a $b $redis $replica 2>/dev/null || true
}

declare -a memory_results redis_results waiting_results
for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS" >&2
    memory_results+=("$(run_memory)")
    redis_results+=("$(run_redis 0)")
    waiting_results+=("$(run_redis 1)")
done

python3 - "$SUBSCRIBERS" "$DURATION" "$RATE" "$PUBLISHERS" "${memory_results[@]}" -- "${redis_results[@]}" -- "${waiting_results[@]}" <<'PY'
import statistics, sys
subs, duration, rate, publishers = sys.argv[1:5]
rest = sys.argv[5:]
first = rest.index("--")
second = rest.index("--", first + 1)
def parse(lines):
    rows = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in lines]
    return {k: statistics.median(float(r[k]) for r in rows) for k in rows[0] if k != "scenario"}
memory, redis, waiting = parse(rest[:first]), parse(rest[first + 1:second]), parse(rest[second + 1:])
print(f"two-node scenario: {subs} subscribers on one stream, {duration} s of 100 B events, rate {'max' if rate == '0' else rate + '/s'}, {publishers} publisher(s); medians of {len(rest[:first])} runs")
print(f"{'':30}{'memory (1 node)':>17}{'redis (2 nodes)':>17}{'min_replicas=1':>16}{'redis/mem':>11}{'wait/redis':>11}")
for key, label in [("events_per_s", "publishes/s"), ("publish_p50_us", "publish acknowledged p50 (µs)"),
                   ("publish_p99_us", "publish acknowledged p99 (µs)"), ("deliveries_per_s", "deliveries/s"),
                   ("p50_us", "latency p50 (µs)"), ("p99_us", "latency p99 (µs)"),
                   ("lost", "lost"), ("duplicated", "duplicated"), ("out_of_order", "out of order")]:
    ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
    print(f"{label:30}{memory[key]:>17.0f}{redis[key]:>17.0f}{waiting[key]:>16.0f}{ratio(redis[key], memory[key]):>11}{ratio(waiting[key], redis[key]):>11}")
PY
