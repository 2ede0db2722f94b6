#!/usr/bin/env python3
"""Long-running UDP flows for the agent's conntrack scenarios (scripts/agent-e2e).

usage: udpflow.py stream DST PORT --sport N [--interval 0.2] [--one-way] --out FILE
       udpflow.py sink NAME PORT --out FILE [--addr 0.0.0.0]

stream: a connected UDP socket bound to the fixed source port --sport (so every datagram is
  one flow: one conntrack entry), sending "probe" every --interval seconds until killed. One
  line per datagram, appended and flushed to --out, with the wall-clock time (time.time()):
    T ANSWER <name> <seen-src>   a reply arrived ("<name> <seen-src>", as echo-server.py sends)
    T TIMEOUT                    no reply within the interval (two-way mode only)
    T REFUSED                    ECONNREFUSED: an ICMP port/host unreachable came back
    T SENT                       one-way mode: sent, nothing came back (no error either)
    T ERROR <errno-name>
  --one-way: statsd style, the peer never answers; errors are still caught (a connected
  socket reports a queued ICMP error on the next send/recv).
sink: a UDP server that never answers; one line "T <src-ip> <src-port>" per datagram.
Both write their pid into --out's first line as "# pid N" so a caller can stop them.
"""
import argparse
import errno
import os
import socket
import sys
import time


def log(f, text):
    f.write(f"{time.time():.3f} {text}\n")
    f.flush()


def stream(a, f):
    s = socket.socket(socket.AF_INET6 if ":" in a.dst else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if ":" in a.dst else "0.0.0.0", a.sport))
    s.connect((a.dst, a.port))
    while True:
        start = time.monotonic()
        try:
            s.send(b"probe\n")
            if a.one_way:
                s.settimeout(0.05)
                try:
                    s.recv(512)
                except TimeoutError:
                    pass
                log(f, "SENT")
            else:
                s.settimeout(a.interval)
                words = s.recv(512).decode(errors="replace").split()
                log(f, "ANSWER " + " ".join(words[:2]) if len(words) >= 2 else "ERROR bad-answer")
        except TimeoutError:
            log(f, "TIMEOUT")
        except ConnectionRefusedError:
            log(f, "REFUSED")
        except OSError as e:
            log(f, "ERROR " + errno.errorcode.get(e.errno, str(e.errno)))
        left = a.interval - (time.monotonic() - start)
        if left > 0:
            time.sleep(left)


def sink(a, f):
    s = socket.socket(socket.AF_INET6 if ":" in a.addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.addr, a.port))
    log(f, f"LISTENING {a.name}")
    while True:
        _data, peer = s.recvfrom(2048)
        log(f, f"{peer[0]} {peer[1]}")


def main():
    ap = argparse.ArgumentParser(description="UDP stream / sink for conntrack tests")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stream")
    st.add_argument("dst")
    st.add_argument("port", type=int)
    st.add_argument("--sport", type=int, required=True)
    st.add_argument("--interval", type=float, default=0.2)
    st.add_argument("--one-way", action="store_true")
    st.add_argument("--out", required=True)
    sk = sub.add_parser("sink")
    sk.add_argument("name")
    sk.add_argument("port", type=int)
    sk.add_argument("--addr", default="0.0.0.0")
    sk.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.out, "a") as f:
        f.write(f"# pid {os.getpid()}\n")
        f.flush()
        try:
            (stream if a.cmd == "stream" else sink)(a, f)
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
