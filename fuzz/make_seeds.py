#!/usr/bin/env python3
"""Writes the hand-written seed inputs of the wsproto fuzz targets to
fuzz/seeds/<target>/ (committed; rerun after changing an input layout).

Layouts (see fuzz/src/lib.rs and each target's header):
  most targets: [flags, n, cut_1 .. cut_n, body ..], cut c < 128 = c bytes,
                c >= 128 = (c - 128) * 32 bytes, the rest of the body last;
  session:      [flags, actions ..] (the table in fuzz_targets/session.rs).
"""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def framed(flags, cuts, body):
    assert len(cuts) < 16
    return bytes([flags, len(cuts)]) + bytes(cuts) + body


def frame(op, payload=b"", fin=True, mask=MASK):
    b0 = (0x80 if fin else 0) | op
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def close(code, reason=b"", mask=MASK):
    return frame(8, code.to_bytes(2, "big") + reason, mask=mask)


def upgrade(path=b"/ws", extra=b""):
    return (b"GET " + path + b" HTTP/1.1\r\nHost: example.com\r\n"
            b"Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
            + extra + b"\r\n")


def answer(extra=b""):
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n"
            + extra + b"\r\n")


def codec_frames(mask):
    m = mask
    return {
        "text": framed(0, [], frame(1, b"hello", mask=m)),
        "fragmented-with-ping": framed(4, [3, 9, 1], frame(1, "h\u00e9l".encode(), False, m)
                                       + frame(9, b"ping!", mask=m)
                                       + frame(0, "lo \u20ac".encode()[:5], False, m)
                                       + frame(0, "lo \u20ac".encode()[5:], True, m)),
        "binary-300": framed(1, [10, 140], frame(2, bytes(range(256)) + bytes(44), mask=m)),
        "binary-2000-16bit": framed(0, [0, 131], frame(2, b"\xab" * 2000, mask=m)),
        "close-bye": framed(0, [], close(1000, b"bye", mask=m)),
        "close-empty-then-pong": framed(4, [1], frame(8, mask=m) + frame(10, b"x", mask=m)),
        "64bit-length": framed(0, [5], bytes([0x82, (0x80 if m else 0) | 127])
                               + (70 << 20).to_bytes(8, "big") + (m or b"")),
        "bad-utf8": framed(2, [4], frame(1, b"ok\xe2\x82", False, m) + frame(0, b"\xac", mask=m)),
        "many-small": framed(6, [1, 2, 3, 4, 5, 6, 7],
                             b"".join(frame(1 + i % 2, bytes([i]) * i, mask=m) for i in range(12))),
    }


def seeds():
    s = {}
    s["server_handshake"] = {
        "upgrade-origin-subprotocol": framed(1, [10, 30], upgrade(
            b"/ws", b"Origin: https://good.example\r\n"
                    b"Sec-WebSocket-Protocol: chat, v1.gateway\r\n")),
        "upgrade-chat-query-pipelined": framed(0, [100], upgrade(b"/chat?room=1")
                                               + frame(1, b"early")),
        "health": framed(0, [], b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"),
        "no-version": framed(0, [], upgrade().replace(b"Sec-WebSocket-Version: 13\r\n", b"")),
        "http10": framed(0, [7], upgrade().replace(b"HTTP/1.1", b"HTTP/1.0")),
        "bad-origin": framed(1, [], upgrade(b"/ws", b"Origin: https://evil.example\r\n")),
    }
    s["client_handshake"] = {
        "accepted": framed(0, [20], answer()),
        "accepted-subprotocol-frames": framed(0, [50, 50], answer(b"Sec-WebSocket-Protocol: chat\r\n")
                                              + frame(1, b"hi", mask=None)),
        "refused-404": framed(0, [], b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        "wrong-accept": framed(1, [], answer().replace(ACCEPT[:4], b"AAAA")),
    }
    s["codec_server"] = codec_frames(MASK)
    s["codec_client"] = codec_frames(None)
    chunked_body = (b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\n"
                    b"X-Trailer: yes\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    s["http_request_head"] = {
        "post-length": framed(0x26, [], b"POST /api?x=1 HTTP/1.1\r\nHost: h\r\n"
                                        b"Content-Length: 5\r\n\r\nhello"),
        "post-chunked": framed(0x26, [40, 3, 9], b"POST /up HTTP/1.1\r\nHost: h\r\n"
                                                 b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                                                 + chunked_body),
        "get-upgrade": framed(0x39, [], upgrade()),
        "smuggle": framed(0x26, [], b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        "http10-keepalive": framed(0x05, [], b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    }
    s["http_response_head"] = {
        "chunked": framed(0x26, [30, 5, 7], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                            b"Content-Type: text/plain\r\n\r\n" + chunked_body),
        "length": framed(0x06, [], b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nok\n"),
        "no-content": framed(0x06, [], b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
        "head": framed(0x46, [], b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
        "to-eof-http10": framed(0x06, [], b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody"),
        "switching": framed(0x06, [], answer()),
    }

    def act_frame(op, payload=b"", fin=True, masked=True):
        assert len(payload) < 128
        return bytes([3, op | (0x80 if fin else 0) | (0 if masked else 0x40), len(payload)]) + payload

    up = bytes([2, 0])
    s["session"] = {
        "echo-ping-close": bytes([0]) + up + act_frame(1, b"hello") + bytes([9])
        + act_frame(9, b"abc") + bytes([9, 5, 9]) + act_frame(8, b"\x03\xe8") + bytes([9, 5]),
        "raw-request-and-frames": bytes([0, 0, 100]) + upgrade(b"/echo")[:100]
        + bytes([1, len(upgrade(b"/echo")) - 100]) + upgrade(b"/echo")[100:]
        + bytes([1, len(frame(2, b"\x00\x01"))]) + frame(2, b"\x00\x01") + bytes([9, 6]),
        "periodic-route": bytes([0, 2, 1, 5, 9]) + act_frame(1, b"{}") + bytes([5, 5, 9, 5, 9]),
        "health": bytes([0, 2, 32 | 2, 9]),
        "slow-consumer": bytes([2]) + up
        + b"".join(bytes([3, 0x82, 128 + 10]) + bytes(320) for _ in range(3)) + bytes([9]),
        "fragments-shutdown": bytes([0x21]) + up + act_frame(1, b"he", fin=False)
        + act_frame(10, b"p") + act_frame(0, b"llo") + bytes([9, 4, 100, 7, 9]),
        "unmasked-error": bytes([0]) + up + act_frame(1, b"x", masked=False) + bytes([9]),
        "app-close-refuse": bytes([0x18]) + bytes([2, 4 | 8]) + bytes([8, 77, 10, 9]),
        "handshake-timeout": bytes([0, 0, 10]) + b"GET /echo " + bytes([5, 9, 5]),
        "deferred-accept-early-frame": bytes([0x88, 2, 1 | 4]) + act_frame(1, b"early")
        + bytes([11, 1, 9]) + act_frame(2, b"\x01\x02") + bytes([9]),
        "deferred-unoffered-then-timeout": bytes([0x80, 2, 1, 11, 2, 9]),
        "deferred-refused-401": bytes([0x80, 2, 1, 10, 0, 9]),
        "deferred-no-decision": bytes([0x80, 2, 1, 4, 9, 5, 9, 5]),
    }
    return s


def main():
    root = os.path.join(HERE, "seeds")
    for target, files in seeds().items():
        d = os.path.join(root, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    print("seeds written under", root)


if __name__ == "__main__":
    main()
