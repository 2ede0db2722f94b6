#!/usr/bin/env python3
"""Tiny TCP/UDP/SCTP "who are you" server for the netns e2e tests.

usage: echo-server.py NAME PORTSPEC... [--addr IP]... [--pidfile FILE]

PORTSPEC is PORT (tcp+udp+sctp on that port) or PROTO:PORT (tcp:80, udp:53, sctp:9).
Default addresses: 0.0.0.0 and :: (v6-only). For every TCP/SCTP connection and every
UDP datagram it answers one line "NAME SRC_IP" (SRC_IP = the peer address it saw), then
closes. UDP replies leave from the address the datagram was sent to (IP_PKTINFO), so a
multi-address namespace (the node sentinel) answers correctly. The pid file is written
once every socket is bound: its existence means "listening".
Without kernel SCTP support it says so on stderr and serves TCP/UDP only.
"""
import argparse
import os
import selectors
import signal
import socket
import sys

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
KINDS = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
         "sctp": (socket.SOCK_STREAM, IPPROTO_SCTP)}


def parse_specs(specs):
    out = []
    for spec in specs:
        proto, _, port = spec.rpartition(":")
        for p in [proto] if proto else ["tcp", "udp", "sctp"]:
            if p not in KINDS or not port.isdigit():
                sys.exit(f"echo-server: bad port spec {spec!r}")
            out.append((p, int(port)))
    return out


def peer_ip(addr):
    ip = addr[0]
    return ip[7:] if ip.startswith("::ffff:") else ip


def open_socket(proto, addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    kind, num = KINDS[proto]
    s = socket.socket(fam, kind, num)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if proto == "udp":
        if fam == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen(512)
    s.setblocking(False)
    return s


def answer_stream(lsock, name):
    conn, addr = lsock.accept()
    with conn:
        conn.settimeout(1.0)
        conn.sendall(f"{name} {peer_ip(addr)}\n".encode())


def answer_dgram(sock, name):
    data, anc, _flags, addr = sock.recvmsg(2048, socket.CMSG_SPACE(64))
    reply = [f"{name} {peer_ip(addr)}\n".encode()]
    cmsgs = []
    for level, typ, val in anc:
        if level == socket.IPPROTO_IP and typ == IP_PKTINFO:
            # struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr;}:
            # reply from the header destination address, let routing pick the device.
            cmsgs = [(level, typ, bytes(4) + val[8:12] + bytes(4))]
        elif level == socket.IPPROTO_IPV6 and typ == socket.IPV6_PKTINFO:
            cmsgs = [(level, typ, val[:16] + bytes(4))]
    sock.sendmsg(reply, cmsgs, 0, addr)


def main():
    ap = argparse.ArgumentParser(description="answer 'NAME SRC_IP' on TCP/UDP/SCTP")
    ap.add_argument("name")
    ap.add_argument("ports", nargs="+", metavar="PORTSPEC")
    ap.add_argument("--addr", action="append", help="listen address (repeatable)")
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    default_addrs = not a.addr
    addrs = a.addr or ["0.0.0.0", "::"]

    sel = selectors.DefaultSelector()
    sctp_ok = True
    for proto, port in parse_specs(a.ports):
        if proto == "sctp" and not sctp_ok:
            continue
        for addr in addrs:
            try:
                s = open_socket(proto, addr, port)
            except OSError as e:
                if proto == "sctp" and e.errno in (93, 94, 97):  # EPROTONOSUPPORT...
                    print(f"echo-server {a.name}: kernel has no SCTP support ({e.strerror});"
                          " serving TCP/UDP only", file=sys.stderr)
                    sctp_ok = False
                    break
                if default_addrs and ":" in addr:  # no IPv6 in this namespace
                    print(f"echo-server {a.name}: skipping [{addr}]:{port}/{proto}: {e}",
                          file=sys.stderr)
                    continue
                sys.exit(f"echo-server {a.name}: cannot listen on {addr} {port}/{proto}: {e}")
            sel.register(s, selectors.EVENT_READ,
                         answer_dgram if proto == "udp" else answer_stream)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if a.pidfile:
        tmp = f"{a.pidfile}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, a.pidfile)
    while True:
        for key, _ in sel.select():
            try:
                key.data(key.fileobj, a.name)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                print(f"echo-server {a.name}: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
