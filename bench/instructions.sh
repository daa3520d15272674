#!/usr/bin/env bash
# User-space instructions the gateway spends per new subscriber and per publish,
# counted by valgrind's callgrind: repeatable for the same build whatever else the
# machine is doing, so small changes to the per-connection and per-publish paths
# can be compared where `bench/compare-nchan.sh`'s timings are too noisy. Kernel
# work (the socket calls) is not counted: see compare-nchan.sh for that.
#
#   bash bench/instructions.sh                          # this checkout's build
#   GATEWAY_BIN=/path/to/other/sse-gateway bash bench/instructions.sh   # A/B
#
# connect: two runs opening N and 2N idle subscribers (each then closed by the
#   gateway's shutdown); (instructions(2N) - instructions(N)) / N.
# publish: two runs with 100 streams x 10 subscribers, publishing 300 events/s for
#   D and 2D seconds, one event per request; the difference per extra publish
#   (the request, the broker, ten deliveries).
# batch: the same with 10 streams x 1 subscriber and 100 events per request at
#   3,000 events/s: the difference per extra event (its share of a request, the
#   encoding, the broker, one delivery).
# All subtract the instructions of the metrics exporter's clock calibration at
# start-up (`quanta` spins on the clock for a fixed time, so its count varies).
# Installs valgrind with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000} D=${D:-4}
if ! command -v valgrind >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq valgrind >/dev/null
fi
cargo build --release --locked --quiet --bin sse-gateway -p sse-gateway
cargo build --release --locked --quiet -p sse-loadgen
GATEWAY=${GATEWAY_BIN:-target/release/sse-gateway} LOADGEN=target/release/sse-loadgen
WORK=$(mktemp -d /tmp/instructions.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export SSE_GATEWAY_AUTH__HS256_SECRET
SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOADGEN_TOKEN=$($GATEWAY token --sub bench --subscribe '*' --publish '*' --ttl 2h)
export LOADGEN_TOKEN

# Runs the gateway under callgrind while the generator runs "$@"; prints the
# instructions counted, less the clock calibration.
counted() {
    local port out=$WORK/callgrind.out
    port=$(free_port)
    env $(grep -v '^#' bench/gateway.env | xargs) SSE_GATEWAY_SERVER__ADDR="127.0.0.1:$port" \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$GATEWAY" serve >"$WORK/log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
    "$LOADGEN" --target gateway --addr "127.0.0.1:$port" --pid "$PID" "$@" >"$WORK/loadgen" 2>&1
    kill -TERM "$PID"; wait "$PID" || true; PID=""
    callgrind_annotate --inclusive=yes "$out" 2>/dev/null | python3 -c '
import re, sys
total = calibration = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) ", line)
    if not m:
        continue
    n = int(m.group(1).replace(",", ""))
    if "PROGRAM TOTALS" in line:
        total = n
    elif not calibration and "once_cell::imp::OnceCell<T>::initialize [" in line:
        calibration = n
print(total - calibration)'
}

echo "$($GATEWAY --version), N=$N, D=${D}s"
one=$(counted idle --subscribers "$N" --settle 1s)
two=$(counted idle --subscribers $((2 * N)) --settle 1s)
echo "connect: $(((two - one) / N)) instructions per new subscriber (and its teardown)"
run="run --streams 100 --subscribers-per-stream 10 --publishers 2 --rate 300"
one=$(counted $run --duration "${D}s")
two=$(counted $run --duration "$((2 * D))s")
echo "publish: $(((two - one) / (300 * D))) instructions per publish to 10 subscribers"
run="run --streams 10 --subscribers-per-stream 1 --publishers 2 --batch 100 --rate 3000"
one=$(counted $run --duration "${D}s")
two=$(counted $run --duration "$((2 * D))s")
echo "batch: $(((two - one) / (3000 * D))) instructions per event published in batches of 100"
