#!/usr/bin/env python3
"""Kernel buffer memory of connections with data queued: N clients each send one
SIZE-byte message and never read the echo. Holds them, sums ss skmem per side.

    unread.py ADDR N SIZE
"""
import re
import socket
import struct
import subprocess
import sys
import time

REQ = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
addr, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = addr.rsplit(":", 1)
head = struct.pack("!BBQ", 0x82, 0x80 | 127, size) if size >= 65536 else struct.pack("!BBH", 0x82, 0x80 | 126, size)
msg = head + b"\0\0\0\0" + bytes(size)
socks = []
for _ in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(REQ)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(1)
    s.sendall(msg)
    socks.append(s)
time.sleep(2)
out = subprocess.run(["ss", "-Htmn", "state", "established"], capture_output=True, text=True).stdout
side = {"client": [0, 0], "gateway": [0, 0]}
for m in re.finditer(r"\S+:(\d+)\s+\S+:(\d+)\s*\n?\s*skmem:\(([^)]*)\)", out):
    local_port = m.group(1)
    kv = {re.match(r"[a-z]+", x).group(0): int(re.sub(r"^[a-z]+", "", x)) for x in m.group(3).split(",")}
    who = "gateway" if local_port == port else "client"
    side[who][0] += 1
    side[who][1] += kv["r"] + kv["t"] + kv["f"] + kv["w"] + kv["o"] + kv["bl"]
for who, (cnt, b) in side.items():
    print("%s sockets=%d kernel buffer memory=%.1f MiB (%.1f KiB per connection)" % (who, cnt, b / 2**20, b / max(cnt, 1) / 1024))
tot = sum(b for _, b in side.values())
print("both ends: %.1f KiB per connection with one unread %d-byte echo" % (tot / n / 1024, size))
