#!/usr/bin/env python3
"""Which sysctl gives a new socket its buffer sizes? Prints SO_RCVBUF/SO_SNDBUF of
fresh TCP and UDP sockets next to net.core.{r,w}mem_default and tcp_{r,w}mem[1],
and what SO_RCVBUF=16 MiB turns into (capped by net.core.rmem_max, doubled)."""
import socket


def rd(key):
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().split()


tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("net.core.rmem_default=%s wmem_default=%s rmem_max=%s | tcp_rmem[1]=%s tcp_wmem[1]=%s" % (
    rd("net.core.rmem_default")[0], rd("net.core.wmem_default")[0], rd("net.core.rmem_max")[0],
    rd("net.ipv4.tcp_rmem")[1], rd("net.ipv4.tcp_wmem")[1]))
for name, s in (("TCP", tcp), ("UDP", udp)):
    print("new %s socket: SO_RCVBUF=%d SO_SNDBUF=%d" % (
        name, s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)))
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
print("TCP after setsockopt(SO_RCVBUF, 16 MiB): SO_RCVBUF=%d" % tcp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
