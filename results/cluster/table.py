#!/usr/bin/env python3
"""Tables of results/cluster.md from results/cluster/out/*/ (run.sh's output)."""
import json, os, re, sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def cell(tag):
    return json.load(open(os.path.join(OUT, tag, "bench", "summary.json")))["cells"][0]


def ticks(tag):
    t = {}
    for line in open(os.path.join(OUT, tag, "cpu.txt")):
        m = re.match(r"(node\d|broker) ticks (-?\d+)", line)
        if m:
            t[m.group(1)] = int(m.group(2))
    return t



def other(tag):
    """Ticks used by processes other than ours during the run (None: not sampled)."""
    rows = [l.split() for l in open(os.path.join(OUT, tag, "cpu-series.txt")) if "all=" in l]
    if len(rows) < 2:
        return None
    def val(r, key):
        return int(next(x for x in r if x.startswith(key + "="))[len(key) + 1:])
    def ours(r):
        return sum(int(x) for x in r[1:] if x.isdigit()) + val(r, "bench")
    total = 0
    for a, b in zip(rows, rows[1:]):
        total += max(0, (val(b, "all") - ours(b)) - (val(a, "all") - ours(a)))
    return total


def rustc(tag):
    return open(os.path.join(OUT, tag, "load.txt")).read().strip().splitlines()[-1]


def latency(tags):
    print("| run | nodes | deliveries | missing / dup / ooo | all p50 / p99 ms | same-node p50 / p99 ms | cross-node p50 / p99 ms | gateway ticks (all nodes) | broker ticks |")
    print("|---|---:|---:|---|---|---|---|---:|---:|")
    for tag in tags:
        if not os.path.exists(os.path.join(OUT, tag)):
            continue
        c = cell(tag); k = c["counts"]; t = ticks(tag)
        miss = c["expected_deliveries"] - k["deliveries"]
        ns = c.get("node_split")
        f = lambda l: f"{l['p50_ms']:.2f} / {l['p99_ms']:.2f}"
        same = f(ns["same_node"]) if ns else "—"
        cross = f(ns["cross_node"]) if ns else "—"
        g = sum(v for n, v in t.items() if n.startswith("node"))
        print(f"| {tag} | {len(c.get('per_target') or [1])} | {k['deliveries']} | {miss} / {k['deliveries_dup']} / {k['deliveries_ooo']} | {f(c['latency'])} | {same} | {cross} | {g} | {t.get('broker', '—')} |")


def cpu(tags):
    print("| run | publications (window + warm-up) | deliveries | gateway ticks | gateway µs/publication | gateway µs/delivery | broker ticks | broker µs/publication | p50 / p99 ms | same / cross-node p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for tag in tags:
        if not os.path.exists(os.path.join(OUT, tag)):
            continue
        c = cell(tag); k = c["counts"]; t = ticks(tag)
        # pubs_ok counts the 20 s window; the 1 s warm-up publishes at the same rate.
        window = c["window_secs"]
        pubs = k["pubs_ok"] * (window + 1.0) / window
        subs = k["subs_ok"]
        g = sum(v for n, v in t.items() if n.startswith("node"))
        b = t.get("broker")
        us = lambda x: x * 10000 / pubs
        ns = c.get("node_split")
        split = f"{ns['same_node']['p50_ms']:.2f} / {ns['cross_node']['p50_ms']:.2f}" if ns else "—"
        print(f"| {tag} | {pubs:.0f} | {pubs * subs:.0f} | {g} | {us(g):.1f} | {us(g) / subs:.2f} | {b if b is not None else '—'} | {us(b):.1f} | {c['latency']['p50_ms']:.2f} / {c['latency']['p99_ms']:.2f} | {split} |" if b is not None else
              f"| {tag} | {pubs:.0f} | {pubs * subs:.0f} | {g} | {us(g):.1f} | {us(g) / subs:.2f} | — | — | {c['latency']['p50_ms']:.2f} / {c['latency']['p99_ms']:.2f} | {split} |")


def kill(tags):
    for tag in tags:
        if not os.path.exists(os.path.join(OUT, tag)):
            continue
        c = cell(tag); k = c["counts"]; r = c["reconnect"]
        print(f"### {tag}\n")
        print(open(os.path.join(OUT, tag, "kill.txt")).read().strip() + "\n")
        l = r["latency"]
        print("| figure | value |\n|---|---:|")
        for name, v in [
            ("connections dropped (server close/reset)", r["dropped"]),
            ("subscribers dropped / back", f"{r['subscribers_dropped']} / {r['subscribers_recovered']}"),
            ("reconnect attempts (established / failed)", f"{r['attempts']} ({r['attempts_ok']} / {r['attempts_failed']})"),
            ("resubscribed", r["resubscribed"]),
            ("drop → resubscribed p50 / p99 / max ms", f"{l['p50_ms']:.0f} / {l['p99_ms']:.0f} / {l['max_ms']:.0f}"),
            ("recovered in (first drop → last back)", f"{r['recovered_in_secs']:.2f} s" if r["recovered_in_secs"] is not None else "not recovered"),
            ("missed during reconnect", r["missed_during_reconnect"]),
            ("received before resubscribing", r["early"]),
            ("deliveries / expected / missing", f"{k['deliveries']} / {c['expected_deliveries']} / {c['expected_deliveries'] - k['deliveries']}"),
            ("duplicate / out of order", f"{k['deliveries_dup']} / {k['deliveries_ooo']}"),
        ]:
            print(f"| {name} | {v} |")
        print()
        print("| target | connections at start | up at end | reconnected here | deliveries | expected | missing | dup | ooo | missed during reconnect | p50 / p99 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for t in c["per_target"]:
            print(f"| {t['index']}{' (publisher)' if t['publisher_node'] else ''} | {t['connections']} | {t['up_at_end']} | {t['reconnects_ok']} | {t['deliveries']} | {t['expected_deliveries']} | {t['missing']} | {t['duplicate']} | {t['out_of_order']} | {t['missed_during_reconnect']} | {t['latency']['p50_ms']:.2f} / {t['latency']['p99_ms']:.2f} |")
        print()
        # Per-second CPU ticks of the nodes around the kill.
        rows = [l.split() for l in open(os.path.join(OUT, tag, "cpu-series.txt"))]
        t0 = float(rows[0][0])
        print("CPU ticks per second (100 = one core), seconds since the bench started:\n")
        print("| s | " + " | ".join(f"node{i}" for i in range(3)) + " | broker |")
        print("|---:|" + "---:|" * 4)
        for a, b in zip(rows, rows[1:]):
            vals = [int(y) - int(x) for x, y in zip(a[1:5], b[1:5])]
            print(f"| {float(b[0]) - t0:.0f} | " + " | ".join(str(v) if v >= 0 else "dead" for v in vals) + " |")
        print()


def placement_rows(tags, show=True):
    """broker.placement thread vs workers (tags pl-KIND-NODES-wWORKERS-PLACEMENT-ROUND)."""
    rows = {}
    if show:
        print("| run | publications | gateway ticks | gateway µs/publication | broker ticks | broker µs/publication | received from the broker (all nodes' connections) | p50 / p99 ms | missing / dup / ooo | other processes' ticks |")
        print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for tag in tags:
        m = re.match(r"pl-(\w+)-(\d)-w(\d)-(thread|workers)-(r\d+)$", tag)
        if not m or not os.path.exists(os.path.join(OUT, tag, "bench", "summary.json")):
            continue
        kind, nodes, workers, place, rnd = m.groups()
        c = cell(tag); k = c["counts"]; t = ticks(tag)
        window = c["window_secs"]
        pubs = k["pubs_ok"] * (window + 1.0) / window
        g = sum(v for n, v in t.items() if n.startswith("node"))
        b = t.get("broker", 0)
        us = lambda x: x * 10000 / pubs
        miss = c["expected_deliveries"] - k["deliveries"]
        recv = received(tag)
        o = other(tag)
        lat = c["latency"]
        if show:
            print(f"| {tag} | {pubs:.0f} | {g} | {us(g):.1f} | {b} | {us(b):.1f} | {recv if recv is not None else '—'} | {lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} | {miss} / {k['deliveries_dup']} / {k['deliveries_ooo']} | {o} |")
        rows.setdefault((kind, int(nodes), int(workers)), {}).setdefault(place, []).append(
            (us(g), us(b), lat["p50_ms"], lat["p99_ms"], us(g) + us(b)))
    return rows


def placement_summary(tags):
    """Medians per shape and placement (the median of two runs is their mean)."""
    rows = placement_rows(tags, show=False)
    def med(v):
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    print("| broker | nodes | workers/node | runs thread / workers | gateway µs/publication thread → workers | broker µs/publication thread → workers | gateway + broker µs/publication thread → workers | p50 ms thread → workers | p99 ms thread → workers |")
    print("|---|---:|---:|---|---|---|---|---|---|")
    order = lambda kv: ({"redis": 0, "nats": 1}.get(kv[0][0], 2), kv[0][1], kv[0][2])
    for (kind, nodes, workers), v in sorted(rows.items(), key=order):
        th, wk = v.get("thread", []), v.get("workers", [])
        if not th or not wk:
            continue
        def col(i, fmt):
            a, b = med([x[i] for x in th]), med([x[i] for x in wk])
            return f"{fmt.format(a)} → {fmt.format(b)} ({(b / a - 1) * 100:+.0f} %)"
        print(f"| {kind} | {nodes} | {workers} | {len(th)} / {len(wk)} | {col(0, '{:.1f}')} | {col(1, '{:.1f}')} | {col(4, '{:.1f}')} | {col(2, '{:.2f}')} | {col(3, '{:.2f}')} |")


def received(tag):
    """gateway_broker_received_total summed over the nodes' metrics at the end, if saved."""
    p = os.path.join(OUT, tag, "metrics-received.txt")
    if not os.path.exists(p):
        return None
    return sum(int(float(l.split()[-1])) for l in open(p) if l.strip())


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what == "other":
        print(f"other processes' ticks during the run: {other(sys.argv[2])}")
        sys.exit()
    # Runs that overlapped someone else's compile are kept, renamed *-discarded-rustc, and left out.
    tags = sorted(t for t in os.listdir(OUT) if "discarded" not in t)
    if what in ("latency", "all"):
        latency([t for t in tags if t.startswith("lat-")])
        print()
    if what in ("cpu", "all"):
        cpu([t for t in tags if t.startswith("cpu-")])
        print()
    if what == "placement":
        pl = [t for t in tags if t.startswith("pl-")]
        placement_rows(pl)
        print()
        placement_summary(pl)
    if what in ("kill", "all"):
        kill([t for t in tags if t.startswith("kill-")])
