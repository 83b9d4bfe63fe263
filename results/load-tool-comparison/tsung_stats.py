#!/usr/bin/env python3
"""Summarise a tsung run for the load-tool comparison.

tsung_stats.py tsung.log
    tsung's own view of the steady state. tsung.log has one block per
    dumpstats interval (10 s); each "stats: request" line is
      count mean stddev max min global_mean global_count
    where count/mean/stddev cover the interval and max/min are since the
    start. The first block (users arriving, WebSocket handshakes, which tsung
    also counts as "request"s) and the last one (cut short when the test
    stops) are left out; the rest are pure echo requests.

tsung_stats.py --fullstats tsung-fullstats.log
    Percentiles of every "request" sample (ms) that tsung's fullstats
    backend wrote, leaving out the first 5 % (users arriving and their
    WebSocket handshakes, which tsung also counts as requests, come first).
"""
import json
import re
import sys


def text(path):
    blocks = []
    cur = None
    for line in open(path):
        m = re.match(r"# stats: dump at (\d+)", line)
        if m:
            cur = {"t": int(m.group(1))}
            blocks.append(cur)
            continue
        if cur is None or not line.startswith("stats: "):
            continue
        f = line.split()
        name = f[1]
        if name in ("request", "connect", "page", "session"):
            cur[name] = [float(x) for x in f[2:9]]
        elif name.startswith("error") or name in ("users", "connected", "websocket_succ", "websocket_fail"):
            cur[name] = f[2:]
    busy = [i for i, b in enumerate(blocks) if "request" in b and b["request"][0] > 0]
    steady = busy[1:-1]
    if not steady:
        return {"error": "fewer than 3 intervals with requests"}
    n = sum(blocks[i]["request"][0] for i in steady)
    mean = sum(blocks[i]["request"][0] * blocks[i]["request"][1] for i in steady) / n
    secs = blocks[steady[-1]]["t"] - blocks[steady[0] - 1]["t"]
    last = blocks[-1]
    errors = {k: v for k, v in last.items() if k.startswith("error")}
    return {
        "steady_intervals": len(steady),
        "steady_secs": secs,
        "requests": int(n),
        "requests_per_s": round(n / secs, 1),
        "mean_ms": round(mean, 3),
        "interval_means_ms": [round(blocks[i]["request"][1], 3) for i in steady],
        "max_ms_since_start": last["request"][3],
        "min_ms_since_start": last["request"][4],
        "total_requests_incl_handshakes": int(last["request"][6] + last["request"][0]),
        "errors": errors,
    }


def fullstats(path):
    # tsung writes batches: {sample,request,[1.032,1.039,...]} over several lines
    vals = []
    for m in re.finditer(r"\{sample,request,\s*\[([^\]]*)\]\}", open(path).read()):
        vals.extend(float(x) for x in m.group(1).split(","))
    cut = len(vals) // 20  # warm-up: users arriving, handshakes
    vals = sorted(vals[cut:])
    if not vals:
        return {"error": "no request samples"}

    def q(p):
        return round(vals[min(len(vals) - 1, int(p * len(vals)))], 3)

    return {
        "samples": len(vals),
        "mean_ms": round(sum(vals) / len(vals), 3),
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": vals[-1],
    }


if __name__ == "__main__":
    if sys.argv[1] == "--fullstats":
        print(json.dumps(fullstats(sys.argv[2])))
    else:
        print(json.dumps(text(sys.argv[1])))
