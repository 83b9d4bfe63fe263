#!/usr/bin/env python3
"""Echo throughput of large messages over C WebSocket connections.

    echo_tput.py ADDR SECONDS SIZE [--conns C] [--inflight K]

Each connection has a writer thread sending binary messages of SIZE bytes
(masked with key 0, which leaves the payload unchanged, so the client spends no
time masking) with at most K messages outstanding, and a reader thread that
counts echoed bytes. Prints one JSON line with messages/s and MB/s echoed
(each direction) over the measured period.
"""
import json
import socket
import struct
import sys
import threading
import time

REQ = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def arg(name, default):
    a = sys.argv
    return int(a[a.index(name) + 1]) if name in a else default


def frame(size):
    if size < 126:
        head = struct.pack("!BB", 0x82, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, size)
    return head + b"\0\0\0\0" + bytes(size)


def echo_len(size):
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def run_conn(addr, size, inflight, stop, counts, idx):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.sendall(REQ)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:40]
    msg = frame(size)
    per = echo_len(size)
    sem = threading.Semaphore(inflight)
    got = [0]

    def reader():
        mv = memoryview(bytearray(1 << 20))
        done = 0
        while True:
            n = s.recv_into(mv)
            if n == 0:
                break
            got[0] += n
            while got[0] - done * per >= per:
                done += 1
                counts[idx] = done
                sem.release()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    while not stop.is_set():
        if sem.acquire(timeout=0.1):
            s.sendall(msg)


def main():
    addr, seconds, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    conns, inflight = arg("--conns", 1), arg("--inflight", 2)
    stop = threading.Event()
    counts = [0] * conns
    threads = [threading.Thread(target=run_conn, args=(addr, size, inflight, stop, counts, i), daemon=True)
               for i in range(conns)]
    for t in threads:
        t.start()
    time.sleep(1)  # warm-up: autotuning grows the windows
    c0, t0 = sum(counts), time.monotonic()
    time.sleep(seconds)
    c1, t1 = sum(counts), time.monotonic()
    stop.set()
    rate = (c1 - c0) / (t1 - t0)
    print(json.dumps({"size": size, "conns": conns, "inflight": inflight,
                      "msgs_per_s": round(rate, 1), "MB_per_s_each_way": round(rate * size / 1e6, 1)}))


if __name__ == "__main__":
    main()
