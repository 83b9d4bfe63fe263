#!/usr/bin/env python3
"""Tool-independent measurement window for one load-tool run.

Waits until the gateway's message counter starts moving (traffic began),
waits WARMUP seconds more, samples, waits WINDOW seconds, samples again, and
prints one JSON object:
  msgs            gateway_messages_received_total delta (the gateway's own count)
  msgs_per_s      msgs / wall seconds
  tool_cpu_s      user+system CPU of the load tool's process tree
                  (ROOT_PID and all live descendants: the Erlang VM and its port
                  programs for tsung; the one process for bench-client)
  gateway_cpu_s   user+system CPU of the gateway process
  *_us_per_msg    CPU microseconds per echoed message
  other_cpu_s     busy CPU seconds of the machine (/proc/stat) minus tool
                  and gateway. /proc/stat is tick-sampled and on this VM
                  disagrees with the per-process (precise) figures by up to
                  +-16 s per window, so this is informational only
  other_procs_cpu_s  CPU seconds of all other processes (reaped children
                  included): other engineers' jobs; a quiet run has ~0
  irq_softirq_cpu_s  irq+softirq time of all CPUs (loopback TCP delivery)

Usage: sampler.py TOOL_ROOT_PID GATEWAY_PID METRICS_URL WARMUP WINDOW
"""
import json
import os
import sys
import time
import urllib.request

TCK = os.sysconf("SC_CLK_TCK")


def stat(pid, children=False):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s.rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); ppid = field 4, utime = 14, stime = 15,
    # cutime = 16, cstime = 17 (reaped children)
    ticks = int(rest[11]) + int(rest[12])
    if children:
        ticks += int(rest[13]) + int(rest[14])
    return int(rest[1]), ticks / TCK


def all_procs_cpu():
    """CPU of every process on the box, reaped children included (a compile
    job's short-lived rustc processes show up in their parent's cutime)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                total += stat(int(d), children=True)[1]
            except (OSError, IndexError, ValueError):
                pass
    return total


def tree_cpu(root):
    children = {}
    cpu = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid, c = stat(int(d))
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        cpu[int(d)] = c
    total, todo = 0.0, [root]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def counter(url, name):
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    )


def buckets(url, name):
    """Cumulative histogram buckets {le: count}, summed over workers."""
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = out.get(le, 0) + float(line.rsplit(" ", 1)[1])
    return out


def quantile_bucket(a, b, q):
    """Upper bound (µs) of the bucket holding quantile q of the b - a delta."""
    les = sorted((float(k) for k in b if k != "+Inf"))
    total = b.get("+Inf", 0) - a.get("+Inf", 0)
    if total <= 0:
        return None
    for le in les:
        k = next(x for x in b if x != "+Inf" and float(x) == le)
        if b[k] - a.get(k, 0) >= q * total:
            return round(le * 1e6)
    return None


def msgs(url):
    return counter(url, "gateway_messages_received_total")


def busy():
    # all CPUs, seconds: (user+nice+system+steal, irq+softirq)
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (f[0] + f[1] + f[2] + f[7]) / TCK, (f[5] + f[6]) / TCK


def sample(root, gw, url):
    # The gateway publishes its counters every admin.publish_ms (1 s): wait
    # for the counter to change, so the count is fresh (< 50 ms old) when the
    # CPU times are read.
    m0 = msgs(url)
    end = time.monotonic() + 1.5
    m = m0
    while m == m0 and time.monotonic() < end:
        time.sleep(0.02)
        m = msgs(url)
    return {
        "t": time.monotonic(),
        "tool": tree_cpu(root),
        "gw": stat(gw)[1],
        "busy": busy(),
        "all": all_procs_cpu(),
        "msgs": m,
        "loops": counter(url, "gateway_engine_loop_iterations_total"),
        "lat": buckets(url, "gateway_message_latency_seconds"),
        "loadavg": open("/proc/loadavg").read().split()[0],
    }


def main():
    root, gw, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    warmup, window = float(sys.argv[4]), float(sys.argv[5])
    base = msgs(url)
    deadline = time.monotonic() + 60
    while msgs(url) == base:
        if time.monotonic() > deadline:
            sys.exit("no traffic within 60 s")
        time.sleep(0.2)
    time.sleep(warmup)
    a = sample(root, gw, url)
    time.sleep(window)
    b = sample(root, gw, url)
    try:  # a finished tool is a zombie until run.sh reaps it
        alive = open(f"/proc/{root}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        alive = False
    n = b["msgs"] - a["msgs"]
    secs = b["t"] - a["t"]
    out = {
        "window_s": round(secs, 2),
        # false: the tool stopped inside the window (its CPU figure is wrong)
        "tool_alive_at_end": alive,
        "msgs": int(n),
        "msgs_per_s": round(n / secs, 1),
        "tool_cpu_s": round(b["tool"] - a["tool"], 2),
        "gateway_cpu_s": round(b["gw"] - a["gw"], 2),
        "tool_cpu_us_per_msg": round((b["tool"] - a["tool"]) * 1e6 / n, 2) if n else None,
        "gateway_cpu_us_per_msg": round((b["gw"] - a["gw"]) * 1e6 / n, 2) if n else None,
        # gateway event-loop iterations (io_uring waits) per echoed message
        "gateway_loops_per_msg": round((b["loops"] - a["loops"]) / n, 3) if n else None,
        # the gateway's own view: message arrival -> its echo's send
        # completion; upper bound (µs) of the histogram bucket holding p50/p99
        "gateway_internal_latency_p50_le_us": quantile_bucket(a["lat"], b["lat"], 0.5),
        "gateway_internal_latency_p99_le_us": quantile_bucket(a["lat"], b["lat"], 0.99),
        "tool_cpu_util": round((b["tool"] - a["tool"]) / secs, 3),
        "gateway_cpu_util": round((b["gw"] - a["gw"]) / secs, 3),
        # CPU seconds used by everything else on the box during the window
        # (all busy time, irq and softirq included) - tool - gateway
        "other_cpu_s": round(sum(b["busy"]) - sum(a["busy"]) - (b["tool"] - a["tool"]) - (b["gw"] - a["gw"]), 2),
        # processes other than the tool's tree and the gateway (the test for
        # a quiet machine: other engineers' jobs)
        "other_procs_cpu_s": round((b["all"] - a["all"]) - (b["tool"] - a["tool"]) - (b["gw"] - a["gw"]), 2),
        # irq + softirq share of the busy time of all CPUs (tick-sampled; a
        # tick that lands in softirq is also charged to whichever task runs)
        "irq_softirq_cpu_s": round(b["busy"][1] - a["busy"][1], 2),
        "loadavg_at_window_start": a["loadavg"],
        "loadavg_at_window_end": b["loadavg"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
