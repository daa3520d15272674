#!/usr/bin/env bash
# The disk backend beside the memory backend, same machine, same generator
# (bench/loadgen), same flags: publishes/s and the time until a publish is
# acknowledged with 1, 16 and 64 concurrent publishers (fsync and group commit on
# disk), and the fan-out scenarios of bench/compare-nchan.sh. The gateway runs one
# worker pinned to CPU 0, the generator is pinned to CPU 1; every scenario runs
# RUNS times per backend, alternating; a fresh gateway (and an empty data
# directory) serves each run. Prints medians and ratios (disk / memory).
#
#   bash bench/disk-vs-memory.sh                   # RUNS=3, all scenarios
#   RUNS=5 bash bench/disk-vs-memory.sh pub-16
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(pub-1 pub-16 pub-64 fanout-100 fanout-max streams-1000 streams-max)

declare -A ARGS=(
    [pub-1]="run --streams 1 --subscribers-per-stream 10 --publishers 1 --rate 0 --duration 10s"
    [pub-16]="run --streams 1 --subscribers-per-stream 10 --publishers 16 --rate 0 --duration 10s"
    [pub-64]="run --streams 1 --subscribers-per-stream 10 --publishers 64 --rate 0 --duration 10s"
    [fanout-100]="run --streams 1 --subscribers-per-stream 1000 --publishers 2 --rate 100 --duration 10s"
    [fanout-max]="run --streams 1 --subscribers-per-stream 1000 --publishers 4 --rate 0 --duration 10s"
    [streams-1000]="run --streams 1000 --subscribers-per-stream 10 --publishers 4 --rate 1000 --duration 10s"
    [streams-max]="run --streams 1000 --subscribers-per-stream 10 --publishers 16 --rate 0 --duration 10s"
)

cargo build --release --locked --quiet --bin sse-gateway -p sse-gateway
cargo build --release --locked --quiet -p sse-loadgen
GATEWAY=target/release/sse-gateway LOADGEN=target/release/sse-loadgen
WORK=$(mktemp -d /tmp/disk-vs-memory.XXXXXX)
RESULTS=$WORK/results
SERVER_PID=""
trap 'stop_server; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 400); do curl -sf -o /dev/null "http://$1/readyz" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

export SSE_GATEWAY_AUTH__HS256_SECRET
SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOADGEN_TOKEN=$($GATEWAY token --sub bench --subscribe '*' --publish '*' --ttl 24h)
export LOADGEN_TOKEN

start_server() { # backend
    local port; port=$(free_port)
    rm -rf "$WORK/data"
    env $(grep -v '^#' bench/gateway.env | xargs) SSE_GATEWAY_SERVER__ADDR="127.0.0.1:$port" \
        SSE_GATEWAY_BACKEND__KIND="$1" SSE_GATEWAY_BACKEND__DISK__PATH="$WORK/data" \
        taskset -c 0 "$GATEWAY" serve >"$WORK/gateway.log" 2>&1 &
    SERVER_PID=$! ADDR="127.0.0.1:$port"
    wait_ready "$ADDR"
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

for run in $(seq "$RUNS"); do
    for scenario in "${SCENARIOS[@]}"; do
        backends=(memory disk)
        [ $((run % 2)) -eq 0 ] && backends=(disk memory)
        for backend in "${backends[@]}"; do
            echo "run $run/$RUNS  $scenario  $backend" >&2
            start_server "$backend"
            # shellcheck disable=SC2086 # ARGS holds several flags
            if line=$(taskset -c 1 "$LOADGEN" --target gateway --addr "$ADDR" --pid "$SERVER_PID" ${ARGS[$scenario]} \
                | tee -a "$WORK/log" | grep '^RESULT'); then
                echo "$scenario $backend $run $line" >>"$RESULTS"
            else
                echo "$scenario $backend $run RESULT failed=1" >>"$RESULTS"
            fi
            stop_server
        done
    done
done

echo
echo "$(nproc) CPUs, $(uname -r), $(df -h "$WORK" | tail -1 | awk '{print $1}'), $($GATEWAY --version 2>/dev/null || echo sse-gateway)"
echo "medians of $RUNS runs; gateway on CPU 0 (1 worker), generator on CPU 1; disk: fsync before every acknowledgement"
echo
python3 bench/table.py "$RESULTS" disk memory
cp "$RESULTS" "${RESULTS_OUT:-target/disk-vs-memory.results}"
