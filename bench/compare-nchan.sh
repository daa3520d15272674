#!/usr/bin/env bash
# Side-by-side benchmark: sse-gateway vs nginx + nchan vs the floor (bench/floor:
# the same socket work with no gateway logic), same load generator (bench/loadgen),
# same flags, on this machine. Each server runs one worker pinned to CPU 0; the
# generator is pinned to CPU 1. Scenarios ending in -2w run the gateway with 2 worker
# threads and nginx with 2 worker processes on both CPUs, the generator sharing them
# (the floor has one thread: it is not in those rows). Every scenario runs RUNS times
# per server, rotating the servers' order so drift hits all alike; a fresh server
# process serves each run. Prints a markdown table of medians and ratios.
#
#   bash bench/compare-nchan.sh                 # RUNS=3, all scenarios
#   RUNS=5 bash bench/compare-nchan.sh idle storm
#   SERVERS=gateway GATEWAY_BIN=/path/to/other/sse-gateway bash bench/compare-nchan.sh fanout-100
#                                               # only the gateway, another build of it (A/B)
#
# Installs nginx and libnginx-mod-nchan with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(idle fanout-100 fanout-max streams-1000 streams-max batch storm scale
    fanout-100-2w fanout-max-2w streams-1000-2w streams-max-2w)

# Generator flags per scenario: identical for both servers.
declare -A ARGS=(
    [idle]="idle --subscribers 10000"
    [fanout-100]="run --streams 1 --subscribers-per-stream 1000 --publishers 2 --rate 100 --duration 10s"
    [fanout-max]="run --streams 1 --subscribers-per-stream 1000 --publishers 4 --rate 0 --duration 10s"
    [streams-1000]="run --streams 1000 --subscribers-per-stream 10 --publishers 4 --rate 1000 --duration 10s"
    [streams-max]="run --streams 1000 --subscribers-per-stream 10 --publishers 16 --rate 0 --duration 10s"
    [batch]="run --streams 10 --subscribers-per-stream 1 --publishers 2 --batch 100 --rate 0 --duration 10s"
    [storm]="storm --subscribers 5000 --missed 100"
    # As many idle subscribers as the descriptor limit lets one process hold (the
    # hard RLIMIT_NOFILE of this machine kind is 20,000 and cannot be raised without
    # CAP_SYS_RESOURCE), then one event to all of them.
    [scale]="idle --subscribers ${SCALE_SUBSCRIBERS:-19000} --broadcast"
)
for scenario in fanout-100 fanout-max streams-1000 streams-max; do
    ARGS[$scenario-2w]=${ARGS[$scenario]}
done
NO_NCHAN=(batch) # nchan has no batch publish

if ! [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
fi
cargo build --release --locked --quiet --bin sse-gateway -p sse-gateway
cargo build --release --locked --quiet -p sse-loadgen -p sse-floor
GATEWAY=${GATEWAY_BIN:-target/release/sse-gateway} LOADGEN=target/release/sse-loadgen FLOOR=target/release/sse-floor
WORK=$(mktemp -d /tmp/compare-nchan.XXXXXX)
RESULTS=$WORK/results
SERVER_PID="" STOP_PID=""
trap 'stop_server; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 400); do curl -s -o /dev/null "http://$1/" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

export SSE_GATEWAY_AUTH__HS256_SECRET
SSE_GATEWAY_AUTH__HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOADGEN_TOKEN=$($GATEWAY token --sub bench --subscribe '*' --publish '*' --ttl 24h)
export LOADGEN_TOKEN

# Set per scenario: how many workers the servers run, and the CPUs of each side.
WORKERS=1 SERVER_CPUS=0 GENERATOR_CPUS=1

start_gateway() {
    local port; port=$(free_port)
    env $(grep -v '^#' bench/gateway.env | xargs) SSE_GATEWAY_SERVER__ADDR="127.0.0.1:$port" \
        SSE_GATEWAY_SERVER__WORKER_THREADS="$WORKERS" \
        taskset -c "$SERVER_CPUS" "$GATEWAY" serve >"$WORK/gateway.log" 2>&1 &
    STOP_PID=$! SERVER_PID=$! ADDR="127.0.0.1:$port"
    wait_http "$ADDR"
}

start_nchan() {
    local port dir; port=$(free_port); dir=$WORK/nchan-$port; mkdir -p "$dir"
    sed "s#@DIR@#$dir#g; s#@PORT@#$port#g; s#@WORKERS@#$WORKERS#g" bench/nchan/nginx.conf.template >"$dir/nginx.conf"
    taskset -c "$SERVER_CPUS" nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/out.log" 2>&1 &
    STOP_PID=$! ADDR="127.0.0.1:$port"
    wait_http "$ADDR"
    SERVER_PID=$(pgrep -P "$STOP_PID" | paste -sd,) # the workers
}

start_floor() {
    local port; port=$(free_port)
    taskset -c "$SERVER_CPUS" "$FLOOR" --addr "127.0.0.1:$port" >"$WORK/floor.log" 2>&1 &
    STOP_PID=$! SERVER_PID=$! ADDR="127.0.0.1:$port"
    wait_http "$ADDR"
}

stop_server() {
    if [ -n "$STOP_PID" ]; then
        kill "$STOP_PID" 2>/dev/null || true
        wait "$STOP_PID" 2>/dev/null || true
    fi
    STOP_PID="" SERVER_PID=""
}

measure() { # server scenario run
    local server=$1 scenario=$2 run=$3 line
    "start_$server"
    # The floor reads the gateway's requests (same bytes on the wire).
    local kind=$server; [ "$server" = floor ] && kind=gateway
    # shellcheck disable=SC2086 # ARGS holds several flags
    if line=$(taskset -c "$GENERATOR_CPUS" "$LOADGEN" --target "$kind" --addr "$ADDR" --pid "$SERVER_PID" ${ARGS[$scenario]} \
        | tee -a "$WORK/log" | grep '^RESULT'); then
        echo "$scenario $server $run $line" >>"$RESULTS"
    else
        echo "$scenario $server $run RESULT failed=1" >>"$RESULTS"
        echo "  $server $scenario run $run failed; generator output above" >&2
    fi
    stop_server
}

for run in $(seq "$RUNS"); do
    for scenario in "${SCENARIOS[@]}"; do
        servers=(gateway nchan floor)
        if [[ $scenario == *-2w ]]; then
            WORKERS=2 SERVER_CPUS=0,1 GENERATOR_CPUS=0,1 servers=(gateway nchan)
        else
            WORKERS=1 SERVER_CPUS=0 GENERATOR_CPUS=1
        fi
        [[ " ${NO_NCHAN[*]} " == *" $scenario "* ]] && servers=("${servers[@]/nchan/}")
        if [ -n "${SERVERS:-}" ]; then
            for i in "${!servers[@]}"; do [[ " $SERVERS " == *" ${servers[$i]} "* ]] || servers[i]=""; done
        fi
        # Rotate the order from run to run.
        for _ in $(seq $(((run - 1) % ${#servers[@]}))); do servers=("${servers[@]:1}" "${servers[0]}"); done
        for server in "${servers[@]}"; do
            [ -n "$server" ] || continue
            echo "run $run/$RUNS  $scenario  $server" >&2
            measure "$server" "$scenario" "$run"
        done
    done
done

echo
echo "$(nproc) CPUs, $(uname -r), $(nginx -v 2>&1 | sed 's/.*: //'), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null), $($GATEWAY --version 2>/dev/null || echo sse-gateway)"
echo "medians of $RUNS runs; server on CPU 0 (1 worker), generator on CPU 1; -2w rows: 2 workers, all share CPUs 0-1"
echo
python3 bench/table.py "$RESULTS" gateway nchan floor
cp "$RESULTS" "${RESULTS_OUT:-target/compare-nchan.results}"
