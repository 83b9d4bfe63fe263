#!/usr/bin/env python3
"""Connect storm: N clients connect at once and do the WebSocket upgrade.

    storm.py ADDR N [--tcp-only] [--timeout S] [--src-ips K]

All N connect() calls are issued back to back (non-blocking), then each socket
sends the upgrade request as soon as it is connected and waits for `101`.
Prints one JSON line: how many connected / upgraded, errors by kind, time until
the last one finished, connect and upgrade latency percentiles (ms), how many
took over 1 s (a dropped SYN or ACK costs a 1 s retransmission), and the
kernel's listen-queue counters (TcpExt ListenOverflows, ListenDrops,
TCPReqQFullDoCookies, TCPReqQFullDrop, SYN retransmits) and softnet drops,
read before and after from this network namespace.
"""
import errno
import json
import selectors
import socket
import sys
import time

REQ = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def netstat():
    out = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        with open(path) as f:
            lines = f.read().splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            p = head.split()[0].rstrip(":")
            for k, v in zip(head.split()[1:], vals.split()[1:]):
                out[p + k] = int(v)
    return out


def softnet_drops():
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


def main():
    args = sys.argv[1:]
    host, port = args[0].rsplit(":", 1)
    n = int(args[1])
    tcp_only = "--tcp-only" in args
    timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 30.0
    src_ips = int(args[args.index("--src-ips") + 1]) if "--src-ips" in args else 0
    before, sn0 = netstat(), softnet_drops()
    sel = selectors.DefaultSelector()
    state = {}
    errors = {}
    t0 = time.monotonic()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if src_ips:
            s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
            s.bind((f"127.0.{(i % src_ips) // 250}.{(i % src_ips) % 250 + 1}", 0))
        start = time.monotonic()
        rc = s.connect_ex((host, int(port)))
        if rc not in (0, errno.EINPROGRESS):
            errors[errno.errorcode.get(rc, str(rc))] = errors.get(errno.errorcode.get(rc, str(rc)), 0) + 1
            s.close()
            continue
        state[s] = [start, None, None, b""]
        sel.register(s, selectors.EVENT_WRITE)
    issued = time.monotonic() - t0
    connect_lat, upgrade_lat = [], []
    pending = len(state)
    deadline = t0 + timeout
    while pending and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            st = state[s]
            if st[1] is None:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    name = errno.errorcode.get(err, str(err))
                    errors[name] = errors.get(name, 0) + 1
                    sel.unregister(s); pending -= 1
                    continue
                st[1] = time.monotonic()
                connect_lat.append(st[1] - st[0])
                if tcp_only:
                    sel.unregister(s); pending -= 1
                    continue
                s.send(REQ)
                sel.modify(s, selectors.EVENT_READ)
            else:
                try:
                    data = s.recv(4096)
                except OSError as e:
                    name = errno.errorcode.get(e.errno, str(e.errno))
                    errors[name] = errors.get(name, 0) + 1
                    sel.unregister(s); pending -= 1
                    continue
                if not data:
                    errors["EOF"] = errors.get("EOF", 0) + 1
                    sel.unregister(s); pending -= 1
                    continue
                st[3] += data
                if b"\r\n\r\n" in st[3]:
                    if st[3].startswith(b"HTTP/1.1 101"):
                        upgrade_lat.append(time.monotonic() - st[0])
                    else:
                        code = st[3][9:12].decode()
                        errors["HTTP " + code] = errors.get("HTTP " + code, 0) + 1
                    sel.unregister(s); pending -= 1
    elapsed = time.monotonic() - t0
    after, sn1 = netstat(), softnet_drops()
    keys = ["TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDoCookies",
            "TcpExtTCPReqQFullDrop", "TcpExtSyncookiesSent", "TcpRetransSegs", "TcpExtTCPSynRetrans"]
    lat = upgrade_lat if not tcp_only else connect_lat
    print(json.dumps({
        "n": n, "connected": len(connect_lat), "upgraded": len(upgrade_lat),
        "unfinished": pending, "errors": errors,
        "issue_s": round(issued, 3), "last_done_s": round(elapsed, 3),
        "connect_ms": {"p50": pct(connect_lat, .5), "p99": pct(connect_lat, .99), "max": pct(connect_lat, 1)},
        "done_ms": {"p50": pct(lat, .5), "p99": pct(lat, .99), "max": pct(lat, 1)},
        "over_1s": sum(1 for x in lat if x >= 1.0),
        "kernel": {k: after.get(k, 0) - before.get(k, 0) for k in keys},
        "softnet_drops_hostwide": sn1 - sn0,
    }))
    sys.stdout.flush()
    if "--hold" in args:
        sys.stdin.read()


if __name__ == "__main__":
    main()
