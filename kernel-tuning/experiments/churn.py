#!/usr/bin/env python3
"""Short-connection churn from one source address: TIME_WAIT vs ephemeral ports.

    churn.py ADDR SECONDS [--ws]

For SECONDS, connect to ADDR, (with --ws: do the WebSocket upgrade and wait
for 101), then close first, so the client side keeps the port in TIME_WAIT for
60 s. Prints one JSON line: connections completed, failures by errno, the
first failure's time, completions per second, and TIME_WAIT sockets in this
network namespace at the end (/proc/net/sockstat "tw").
"""
import errno
import json
import socket
import sys
import time

REQ = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def tw():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("tw") + 1])
    return None


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    seconds = float(sys.argv[2])
    ws = "--ws" in sys.argv
    ok, errors, first_fail = 0, {}, None
    per_sec = []
    t0 = time.monotonic()
    sec_end, sec_ok = t0 + 1, 0
    while True:
        now = time.monotonic()
        if now >= sec_end:
            per_sec.append(sec_ok)
            sec_ok, sec_end = 0, sec_end + 1
        if now - t0 >= seconds:
            break
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((host, int(port)))
            if ws:
                s.sendall(REQ)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    d = s.recv(4096)
                    if not d:
                        raise OSError(errno.ECONNRESET, "EOF before 101")
                    buf += d
            ok += 1
            sec_ok += 1
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
            errors[name] = errors.get(name, 0) + 1
            if first_fail is None:
                first_fail = round(now - t0, 2)
            if e.errno == errno.EADDRNOTAVAIL:
                time.sleep(0.001)  # do not spin: the kernel frees ports only as TIME_WAIT expires
        finally:
            s.close()
    print(json.dumps({"seconds": seconds, "completed": ok, "errors": errors,
                      "first_failure_s": first_fail, "per_second": per_sec,
                      "time_wait_at_end": tw()}))


if __name__ == "__main__":
    main()
