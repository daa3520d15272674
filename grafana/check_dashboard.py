#!/usr/bin/env python3
"""Print every sse-gateway metric name a Grafana dashboard queries, one per line.

Walks the dashboard JSON (panels, panels nested in collapsed rows, any depth) and
collects each `expr` field, i.e. every PromQL query. Names matching `sse_[a-z_]+`
are reported; the Prometheus histogram series suffixes `_bucket`, `_sum` and
`_count` are folded into the base histogram name, so
`sse_publish_duration_seconds_bucket` prints as `sse_publish_duration_seconds`.

The output is sorted and deduplicated, so a test can compare it with the names the
gateway exports (every line must be one of them).

Usage: check_dashboard.py [DASHBOARD_JSON]   (default: sse-gateway.json beside this file)
Exit status: 0 on success; 1 when the file has no `expr` field or no sse_ metric.
"""

import json
import re
import sys
from pathlib import Path

METRIC = re.compile(r"\bsse_[a-z_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def exprs(node):
    """Yields every string stored under an `expr` key, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def metric_names(dashboard):
    names = set()
    for expr in exprs(dashboard):
        for name in METRIC.findall(expr):
            names.add(HISTOGRAM_SUFFIX.sub("", name))
    return sorted(names)


def main(argv):
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("sse-gateway.json")
    with path.open(encoding="utf-8") as f:
        dashboard = json.load(f)
    names = metric_names(dashboard)
    if not names:
        print(f"{path}: no sse_ metric in any expr field", file=sys.stderr)
        return 1
    for name in names:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
