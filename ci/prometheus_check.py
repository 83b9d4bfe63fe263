#!/usr/bin/env python3
"""Checks a running Prometheus that scrapes the gateway (called by ci/prometheus.sh).

    prometheus_check.py PROM_URL METRICS_FILE DASHBOARD_JSON

1. Waits until Prometheus has scraped the gateway at least twice (up == 1).
2. The connection gauge, queried over the HTTP API, is >= 1 (ci/prometheus.sh
   holds WebSocket connections open).
3. Every metric name any dashboard panel queries exists in the live /metrics
   output (METRICS_FILE), and every panel query, with the dashboard variables
   filled in, runs on Prometheus and returns data.

Standard library only; every wait is bounded. Exit status 1 on any failure.
"""

import json
import re
import sys
import time
import urllib.parse
import urllib.request

PROM, METRICS_FILE, DASHBOARD = sys.argv[1:4]
FAILURES = []


def query(expr):
    url = f"{PROM}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def wait_for(what, check, timeout=45):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # Prometheus still starting: keep polling
            last = e
        time.sleep(1)
    sys.exit(f"FAIL: timed out after {timeout}s waiting for {what} (last: {last!r})")


def fail(msg):
    print(f"FAIL: {msg}")
    FAILURES.append(msg)


# 1. Scraped, twice (so rate() has two points).
wait_for(
    "two successful scrapes of job gateway",
    lambda: [
        r for r in query('count_over_time(up{job="gateway"}[5m])') if float(r["value"][1]) >= 2
    ]
    and all(float(r["value"][1]) == 1 for r in query('up{job="gateway"}')),
)
print("ok: Prometheus scraped the gateway (up == 1, >= 2 scrapes)")

# 2. The connection gauge, through Prometheus.
result = wait_for(
    "sum(gateway_connections_active) >= 1",
    lambda: [r for r in query("sum(gateway_connections_active)") if float(r["value"][1]) >= 1],
)
print(f"ok: Prometheus reports sum(gateway_connections_active) = {result[0]['value'][1]}")

# 3. Dashboard queries against the live output and against Prometheus.
live = set()
with open(METRICS_FILE) as f:
    for line in f:
        if line.strip() and not line.startswith("#"):
            live.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))

dashboard = json.load(open(DASHBOARD))
exprs = []


def collect(panels):
    for p in panels:
        collect(p.get("panels", []))
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))


collect(dashboard["panels"])
if not exprs:
    sys.exit("FAIL: the dashboard has no queries")

# Words that look like identifiers in PromQL but are not metric names.
PROMQL_WORDS = {
    "sum", "rate", "by", "on", "without", "max", "min", "avg", "count", "time",
    "histogram_quantile", "clamp_min", "le", "job", "instance", "worker", "reason",
    "status", "opcode", "code", "version", "profile", "ignoring", "group_left",
    "source", "endpoint",
}
names = set()
for _, expr in exprs:
    stripped = re.sub(r'"[^"]*"', '""', expr)  # label values
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range selectors
    for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped):
        if word not in PROMQL_WORDS and not word.startswith("__"):
            names.add(word)
missing = sorted(n for n in names if n not in live)
for n in missing:
    fail(f"dashboard queries {n}, which is not in the live /metrics output")
print(f"ok: {len(names) - len(missing)}/{len(names)} metric names the dashboard queries are live")

variables = {
    "$__rate_interval": "1m",
    "$job": ".+",
    "$instance": ".+",
    "$worker": ".+",
}
bad = 0
for title, expr in exprs:
    concrete = expr
    for k, v in variables.items():
        concrete = concrete.replace(k, v)
    try:
        rows = query(concrete)
    except Exception as e:
        bad += 1
        fail(f"panel {title!r}: query failed: {e}")
        continue
    if not rows:
        bad += 1
        fail(f"panel {title!r}: no data for {concrete}")
print(f"ok: {len(exprs) - bad}/{len(exprs)} panel queries ran on Prometheus and returned data")

if FAILURES:
    sys.exit(f"FAIL: {len(FAILURES)} problem(s)")
print("prometheus_check: all checks passed")
