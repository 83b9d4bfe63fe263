#!/usr/bin/env python3
"""How many connections can be open at once from one machine to a server?

    ports.py [--dst-ports K] [--src-ips K] [--max N]

Listens on K ports of 127.0.0.1 (backlog 65535, never accepting: established
connections wait in the accept queue and cost the server no descriptor), then
opens connections from this host until connect() fails or N are open.
Connections go round-robin over the destination ports and, with --src-ips,
over source addresses 127.0.0.1..K (bound with IP_BIND_ADDRESS_NO_PORT so the
port is still chosen at connect time, per 4-tuple). Client sockets are spread
over child processes of 19,000 each because RLIMIT_NOFILE is 20,000 per
process here. Prints one JSON line: connections open, the error that stopped
it, ip_local_port_range.
"""
import errno
import json
import os
import socket
import sys
import time

PER_CHILD = 19000


def arg(name, default):
    a = sys.argv
    return int(a[a.index(name) + 1]) if name in a else default


def child(first, count, ports, src_ips, w):
    socks, err = [], None
    for i in range(first, first + count):
        s = socket.socket()
        s.settimeout(3)
        try:
            if src_ips:
                s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
                s.bind((f"127.0.0.{i % src_ips + 1}", 0))
            s.connect(("127.0.0.1", ports[i % len(ports)]))
        except OSError as e:
            err = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
            s.close()
            break
        socks.append(s)
    os.write(w, (json.dumps({"open": len(socks), "error": err}) + "\n").encode())
    os.close(w)
    sys.stdin = open("/dev/stdin")
    time.sleep(3600)  # hold until the parent kills us


def main():
    k_ports, src_ips, limit = arg("--dst-ports", 1), arg("--src-ips", 0), arg("--max", 200000)
    listeners = []
    for _ in range(k_ports):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(65535)
        listeners.append(ls)
    ports = [ls.getsockname()[1] for ls in listeners]
    total, err, kids = 0, None, []
    t0 = time.monotonic()
    while total < limit and err is None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(total, min(PER_CHILD, limit - total), ports, src_ips, w)
            os._exit(0)
        os.close(w)
        kids.append(pid)
        line = os.fdopen(r).readline()
        res = json.loads(line)
        total += res["open"]
        err = res["error"]
        if res["open"] == 0:
            break
    elapsed = time.monotonic() - t0
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        rng = f.read().split()
    with open("/proc/net/sockstat") as f:
        sockstat = [l.strip() for l in f if l.startswith("TCP:")][0]
    print(json.dumps({"open": total, "stopped_by": err or f"--max {limit}",
                      "ip_local_port_range": " ".join(rng), "dst_ports": k_ports,
                      "src_ips": src_ips or 1, "seconds": round(elapsed, 1), "sockstat": sockstat}))
    sys.stdout.flush()
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
