"""Median table of benchmark results (bench/compare-nchan.sh, bench/disk-vs-memory.sh).

Input lines: `<scenario> <server> <run> RESULT key=value ...`.

    table.py RESULTS [SERVER ...]   (default: gateway nchan)

A column of medians per server, then a ratio column for every pair of servers in the
order given (A / B for A before B): with `gateway nchan floor`, gateway / nchan,
gateway / floor and nchan / floor.
"""

import statistics
import sys
from collections import defaultdict

ROWS = [
    ("idle", "kib_per_conn", "idle 10,000 subscribers: server RSS per connection (KiB)"),
    ("idle", "connect_ms", "idle 10,000 subscribers: time to open all (ms)"),
    ("scale", "kib_per_conn", "scale, 19,000 idle subscribers: server RSS per connection (KiB)"),
    ("scale", "connects_per_s", "scale: subscribers connected per second"),
    ("scale", "broadcast_ms", "scale: one event to all 19,000, last one has it (ms)"),
    ("fanout-100", "server_cpu_pct", "1 stream x 1,000 subs, 100 ev/s: server CPU (% of a core)"),
    ("fanout-100", "cpu_per_100k", "1 stream x 1,000 subs, 100 ev/s: server CPU per 100k deliveries/s (%)"),
    ("fanout-100", "deliveries_per_s", "1 stream x 1,000 subs, 100 ev/s: deliveries/s achieved"),
    ("fanout-100", "p99_us", "1 stream x 1,000 subs, 100 ev/s: latency p99 (µs)"),
    ("fanout-max", "deliveries_per_s", "1 stream x 1,000 subs, max: deliveries/s"),
    ("fanout-max", "p50_us", "1 stream x 1,000 subs, max: latency p50 (µs)"),
    ("fanout-max", "p99_us", "1 stream x 1,000 subs, max: latency p99 (µs)"),
    ("fanout-max", "server_cpu_pct", "1 stream x 1,000 subs, max: server CPU (%)"),
    ("fanout-max", "generator_cpu_pct", "1 stream x 1,000 subs, max: generator CPU (%)"),
    ("streams-1000", "p99_us", "1,000 streams x 10 subs, 1,000 ev/s: latency p99 (µs)"),
    ("streams-1000", "server_cpu_pct", "1,000 streams x 10 subs, 1,000 ev/s: server CPU (%)"),
    ("streams-max", "events_per_s", "1,000 streams x 10 subs, max: publishes/s"),
    ("streams-max", "p99_us", "1,000 streams x 10 subs, max: latency p99 (µs)"),
    ("streams-max", "generator_cpu_pct", "1,000 streams x 10 subs, max: generator CPU (%)"),
    ("batch", "events_per_s", "batch publish (100 events/request), 10 streams x 1 sub: events/s"),
    ("pub-1", "events_per_s", "1 publisher, 1 stream x 10 subs, max: publishes/s"),
    ("pub-1", "publish_p50_us", "1 publisher: publish acknowledged p50 (µs)"),
    ("pub-1", "publish_p99_us", "1 publisher: publish acknowledged p99 (µs)"),
    ("pub-16", "events_per_s", "16 publishers, 1 stream x 10 subs, max: publishes/s"),
    ("pub-16", "publish_p50_us", "16 publishers: publish acknowledged p50 (µs)"),
    ("pub-16", "publish_p99_us", "16 publishers: publish acknowledged p99 (µs)"),
    ("pub-64", "events_per_s", "64 publishers, 1 stream x 10 subs, max: publishes/s"),
    ("pub-64", "publish_p50_us", "64 publishers: publish acknowledged p50 (µs)"),
    ("pub-64", "publish_p99_us", "64 publishers: publish acknowledged p99 (µs)"),
    ("batch", "deliveries_per_s", "batch publish: deliveries/s"),
    ("storm", "storm_ms", "storm: 5,000 resume after 100 missed, all caught up (ms)"),
    ("storm", "rss_growth_kib", "storm: server RSS growth, peak (KiB)"),
    ("fanout-100-2w", "server_cpu_pct", "2 workers: 1 stream x 1,000 subs, 100 ev/s: server CPU (% of a core)"),
    ("fanout-100-2w", "cpu_per_100k", "2 workers: 1 stream x 1,000 subs, 100 ev/s: server CPU per 100k deliveries/s (%)"),
    ("fanout-100-2w", "deliveries_per_s", "2 workers: 1 stream x 1,000 subs, 100 ev/s: deliveries/s achieved"),
    ("fanout-100-2w", "p99_us", "2 workers: 1 stream x 1,000 subs, 100 ev/s: latency p99 (µs)"),
    ("fanout-max-2w", "deliveries_per_s", "2 workers: 1 stream x 1,000 subs, max: deliveries/s"),
    ("fanout-max-2w", "p99_us", "2 workers: 1 stream x 1,000 subs, max: latency p99 (µs)"),
    ("streams-1000-2w", "server_cpu_pct", "2 workers: 1,000 streams x 10 subs, 1,000 ev/s: server CPU (%)"),
    ("streams-max-2w", "events_per_s", "2 workers: 1,000 streams x 10 subs, max: publishes/s"),
    ("streams-max-2w", "p99_us", "2 workers: 1,000 streams x 10 subs, max: latency p99 (µs)"),
]
INTEGRITY = ["lost", "duplicated", "out_of_order", "gaps", "resumes", "failed"]


def load(path):
    values = defaultdict(list)
    integrity = defaultdict(lambda: defaultdict(int))
    runs = defaultdict(int)
    for line in open(path):
        parts = line.split()
        if len(parts) < 4:
            continue
        scenario, server = parts[0], parts[1]
        fields = dict(kv.split("=", 1) for kv in parts[4:] if "=" in kv)
        runs[(scenario, server)] += 1
        if "rss_peak_kib" in fields and "rss_before_kib" in fields:
            fields["rss_growth_kib"] = str(float(fields["rss_peak_kib"]) - float(fields["rss_before_kib"]))
        if "server_cpu_pct" in fields and float(fields.get("deliveries_per_s", 0)) > 0:
            fields["cpu_per_100k"] = str(float(fields["server_cpu_pct"]) * 1e5 / float(fields["deliveries_per_s"]))
        for key in INTEGRITY:
            integrity[(scenario, server)][key] += int(float(fields.get(key, 0)))
        if "failed" in fields:
            continue
        for key, value in fields.items():
            try:
                values[(scenario, server, key)].append(float(value))
            except ValueError:
                pass
    return values, integrity, runs


def fmt(value):
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


LABELS = {"gateway": "sse-gateway"}


def main():
    values, integrity, runs = load(sys.argv[1])
    servers = sys.argv[2:] or ["gateway", "nchan"]
    pairs = [(a, b) for i, a in enumerate(servers) for b in servers[i + 1 :]]
    median = lambda s, srv, k: statistics.median(values[(s, srv, k)]) if values.get((s, srv, k)) else None
    head = [LABELS.get(s, s) for s in servers] + [f"{a} / {b}" for a, b in pairs]
    print("| scenario: figure | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for scenario, key, label in ROWS:
        cells = {server: median(scenario, server, key) for server in servers}
        if all(v is None for v in cells.values()):
            continue
        ratios = [f"{cells[a] / cells[b]:.2f}" if cells[a] is not None and cells[b] else "–" for a, b in pairs]
        print(f"| {label} | " + " | ".join([fmt(cells[s]) for s in servers] + ratios) + " |")
    print()
    print("Integrity, summed over all runs (lost / duplicated / out of order / gap notices / resumes / failed runs):")
    print()
    print("| scenario | " + " | ".join(f"runs | {LABELS.get(s, s)}" for s in servers) + " |")
    print("|---|" + "---:|---|" * len(servers))
    for scenario in dict.fromkeys(s for s, _, _ in ROWS):
        cells = []
        for server in servers:
            if runs.get((scenario, server)):
                tally = integrity[(scenario, server)]
                cells += [str(runs[(scenario, server)]), " / ".join(str(tally[k]) for k in INTEGRITY)]
            else:
                cells += ["–", "–"]
        if any(c != "–" for c in cells):
            print(f"| {scenario} | " + " | ".join(cells) + " |")


main()
