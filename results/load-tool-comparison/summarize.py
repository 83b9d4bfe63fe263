#!/usr/bin/env python3
"""Prints the tables of results/load-tool-comparison.md from the run folders
(<tool>-<workload>-<label>/ next to this script)."""
import glob
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def load(d):
    r = {"dir": os.path.basename(d.rstrip("/"))}
    r["s"] = json.load(open(f"{d}/sampler.json"))
    run = open(f"{d}/run.txt").read()
    r["load"] = re.search(r"loadavg_start=(\S+)", run).group(1)
    r["accepted"] = os.path.exists(f"{d}/accepted")
    if os.path.exists(f"{d}/summary.json"):
        r["bench"] = json.load(open(f"{d}/summary.json"))
    if os.path.exists(f"{d}/tsung-summary.json"):
        r["tsung"] = json.load(open(f"{d}/tsung-summary.json"))
    if os.path.exists(f"{d}/fullstats-summary.json"):
        r["full"] = json.load(open(f"{d}/fullstats-summary.json"))
    return r


def cell(bench):
    c = bench["cells"][0] if "cells" in bench else bench[0]
    return c


def fmt(v, p=2):
    return "–" if v is None else f"{v:.{p}f}"


def main():
    rows = [load(d) for d in sorted(glob.glob(f"{HERE}/*-*-*/")) if os.path.exists(f"{d}/run.txt") and os.path.getsize(f"{d}/sampler.json")]
    print("| run | load1 at start | other procs CPU s | msg/s (gateway count) | msg/s (tool's own) | latency (tool's own), ms | tool CPU util | tool µs/msg | gateway µs/msg | tool's own µs/msg client / server | gateway loops/msg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["s"]
        own_rate, lat, own_cost = "", "", ""
        if "bench" in r:
            c = cell(r["bench"])
            own_rate = f"{c['tps']:.0f}"
            L = c["latency"]
            lat = f"avg {L['avg_ms']:.3f} p50 {L['p50_ms']:.3f} p99 {L['p99_ms']:.3f} p99.9 {L['p999_ms']:.3f} max {L['max_ms']:.3f}"
            if c.get("raw_latency"):
                R = c["raw_latency"]
                lat = "corrected: " + lat + f"; raw: avg {R['avg_ms']:.3f} p50 {R['p50_ms']:.3f} p99 {R['p99_ms']:.3f} max {R['max_ms']:.3f}"
            k = c["cost"]
            own_cost = f"{fmt(k.get('client_cpu_us_per_msg'))} / {fmt(k.get('server_cpu_us_per_msg'))}"
        if "tsung" in r:
            t = r["tsung"]
            own_rate = f"{t['requests_per_s']:.0f}"
            lat = f"mean {t['mean_ms']:.3f} (max since start {t['max_ms_since_start']:.3f})"
        if "full" in r and "p50_ms" in r["full"]:
            f = r["full"]
            lat += f"; all samples: mean {f['mean_ms']:.3f} p50 {f['p50_ms']:.3f} p90 {f['p90_ms']:.3f} p99 {f['p99_ms']:.3f} p99.9 {f['p999_ms']:.3f} max {f['max_ms']:.3f}"
        print(
            f"| {r['dir']}{'' if r['accepted'] else ' (not accepted)'} | {r['load']} | {s['other_procs_cpu_s']:.2f} "
            f"| {s['msgs_per_s']:.0f} | {own_rate} | {lat} | {s['tool_cpu_util']:.2f} "
            f"| {s['tool_cpu_us_per_msg']:.1f} | {s['gateway_cpu_us_per_msg']:.1f} | {own_cost} "
            f"| {fmt(s.get('gateway_loops_per_msg'))} |"
        )


if __name__ == "__main__":
    main()
