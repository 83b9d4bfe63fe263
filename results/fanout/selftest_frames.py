#!/usr/bin/env python3
"""Self-test of harness.c's WebSocket framing (not a benchmark).

A tiny asyncio WebSocket server that, on every connection, sends a stream
of publications as binary frames (7-bit, 16-bit and 64-bit lengths), as
newline-batched Centrifugo-style text frames, with WebSocket pings and app
pings (`{}`) in between, and writes the whole stream in random pieces (half of them 1..61
bytes) so frames straddle reads. It checks the pongs the harness sends
back (masked, same payload) and prints what the harness should report.

  python3 selftest_frames.py --port 9199 --conns 20 --pubs 300 &
  harness --mode uws --port 9199 --conns 20 --warmup 0 --duration 4 --linger 2
  -> FINAL total_pubs=6000 total_lost=0 total_dup=0 ws_pings=20*pings ...
"""
import argparse
import asyncio
import base64
import hashlib
import random
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return head + payload


def read_frames(buf):
    """Yields (opcode, payload) of complete masked client frames; returns the rest."""
    out = []
    while len(buf) >= 2:
        op, b1 = buf[0] & 15, buf[1]
        n, h = b1 & 127, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, h = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, h = struct.unpack(">Q", buf[2:10])[0], 10
        masked = b1 & 128
        if masked:
            h += 4
        if len(buf) < h + n:
            break
        p = bytearray(buf[h:h + n])
        if masked:
            key = buf[h - 4:h]
            for i in range(n):
                p[i] ^= key[i & 3]
        out.append((op, bytes(p), bool(masked)))
        buf = buf[h + n:]
    return out, buf


stats = {"conns": 0, "pongs_ok": 0, "pongs_bad": 0, "app_pongs": 0, "unmasked": 0}


async def handle(reader, writer, args):
    head = await reader.readuntil(b"\r\n\r\n")
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    stats["conns"] += 1
    rnd = random.Random(stats["conns"])
    # the 101 and the first frame in one write, to test frames arriving with the upgrade response
    stream = bytearray(resp)
    seq = 0
    sizes = [16, 100, 125, 126, 1000, 65535, 70000]
    pings = 0
    while seq < args.pubs:
        kind = rnd.random()
        if kind < 0.05:
            stream += frame(9, b"ping%d" % pings)
            pings += 1
        elif kind < 0.08:
            stream += frame(1, b"{}")
        elif kind < 0.35:
            lines = []
            for _ in range(rnd.randint(1, 3)):
                if seq >= args.pubs:
                    break
                data = '{"t":%d,"s":%d,"p":"%s"}' % (time.monotonic_ns(), seq, "x" * rnd.randint(0, 300))
                lines.append('{"push":{"channel":"bench","pub":{"data":%s}}}' % data)
                seq += 1
            stream += frame(1, "\n".join(lines).encode())
        else:
            size = rnd.choice(sizes)
            p = struct.pack("<qq", time.monotonic_ns(), seq) + b"x" * (size - 16)
            stream += frame(2, p)
            seq += 1
        if len(stream) > 4096 or seq >= args.pubs:
            # dribble the bytes in random pieces
            i = 0
            while i < len(stream):
                n = rnd.randint(1, 61) if rnd.random() < 0.5 else rnd.randint(1, 9000)
                writer.write(bytes(stream[i:i + n]))
                await writer.drain()
                i += n
                if rnd.random() < 0.02:
                    await asyncio.sleep(0.001)
            stream = bytearray()
    # collect pongs for a while
    buf = b""
    deadline = time.monotonic() + args.pong_wait
    expect = {b"ping%d" % i for i in range(pings)}
    while time.monotonic() < deadline and expect:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        frames, buf = read_frames(buf + chunk)
        for op, p, masked in frames:
            if not masked:
                stats["unmasked"] += 1
            if op == 10:
                if p in expect:
                    expect.discard(p)
                    stats["pongs_ok"] += 1
                else:
                    stats["pongs_bad"] += 1
            elif op == 1 and p == b"{}":
                stats["app_pongs"] += 1
    stats["pongs_bad"] += len(expect)
    print("conn done: pubs=%d pings=%d missing_pongs=%d" % (seq, pings, len(expect)), flush=True)
    await asyncio.sleep(3600)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9199)
    ap.add_argument("--conns", type=int, default=20)
    ap.add_argument("--pubs", type=int, default=300)
    ap.add_argument("--pong-wait", type=float, default=3)
    args = ap.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), "127.0.0.1", args.port)
    print("selftest listening on %d: expect total_pubs=%d" % (args.port, args.conns * args.pubs), flush=True)
    async with server:
        while True:
            await asyncio.sleep(1)
            if stats["conns"]:
                print("STATS", stats, flush=True)


asyncio.run(main())
