#!/usr/bin/env python3
"""Fills the tables of results/cluster.md (markers <!--LAT--> etc.) from table.py."""
import contextlib, io, os, re, statistics, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import table

tags = sorted(t for t in os.listdir(table.OUT) if "discarded" not in t)
def out(f, *a):
    b = io.StringIO()
    with contextlib.redirect_stdout(b):
        f(*a)
    return b.getvalue().rstrip()

def medians():
    rows = ["| shape | runs | gateway µs/publication | gateway µs/delivery | broker µs/publication | p50 ms |",
            "|---|---:|---:|---:|---:|---:|"]
    base = {}
    for shape in ["cpu-memory-1", "cpu-redis-1", "cpu-nats-1", "cpu-redis-2", "cpu-nats-2"]:
        runs = [t for t in tags if t == shape or t.startswith(shape + "-r")]
        g, b, p = [], [], []
        for t in runs:
            c = table.cell(t); k = c["counts"]; ti = table.ticks(t)
            pubs = k["pubs_ok"] * (c["window_secs"] + 1.0) / c["window_secs"]
            g.append(sum(v for n, v in ti.items() if n.startswith("node")) * 10000 / pubs)
            if "broker" in ti:
                b.append(ti["broker"] * 10000 / pubs)
            p.append(c["latency"]["p50_ms"])
        gm = statistics.median(g)
        base.setdefault("memory", gm)
        extra = "" if shape == "cpu-memory-1" else f" (+{gm - base['memory']:.0f})"
        bm = f"{statistics.median(b):.1f}" if b else "—"
        rows.append(f"| {shape[4:]} | {len(runs)} | {gm:.1f}{extra} | {gm / 20:.2f} | {bm} | {statistics.median(p):.2f} |")
    return "\n".join(rows)

doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster.md")
s = open(doc).read()
for marker, text in [
    ("LAT", out(table.latency, [t for t in tags if t.startswith("lat-")])),
    ("CPU", out(table.cpu, [t for t in tags if t.startswith("cpu-")])),
    ("CPUMED", medians()),
    ("PL", out(table.placement_rows, [t for t in tags if t.startswith("pl-")])),
    ("PLMED", out(table.placement_summary, [t for t in tags if t.startswith("pl-")])),
    ("KILL", out(table.kill, [t for t in tags if t.startswith("kill-")]).replace("### ", "#### ")),
]:
    s = re.sub(rf"<!--{marker}-->(.*?<!--/{marker}-->)?", f"<!--{marker}-->\n{text}\n<!--/{marker}-->", s, flags=re.S)
open(doc, "w").write(s)
