#!/usr/bin/env python3
"""One client probe for the netns e2e tests.

usage: probe.py tcp|udp|sctp DST_IP DST_PORT [--src IP] [--sport PORT] [--timeout 1.0] [--count N]
                [--serial]

Prints one line per attempt, in attempt order:
  ANSWER <name> <seen-src>  the server answered "<name> <seen-src>"
  REFUSED                   ECONNREFUSED: TCP RST / SCTP ABORT / ICMP port unreachable
                            (for UDP: on recv of a connected socket)
  TIMEOUT                   nothing within --timeout seconds (a DROP)
  ERROR <what>              anything else (EHOSTUNREACH, ENETUNREACH, EPROTONOSUPPORT, ...)
TCP and SCTP sockets set IP_RECVERR / IPV6_RECVERR: an ICMP error that arrives while connect()
still holds the socket lock (a reject on the same host answers that fast, seen with IPv6)
only sets the socket's soft error, and without RECVERR nothing wakes connect() until the SYN
is retransmitted ~1 s later, so a reject would look like a TIMEOUT. With it the error is
queued, connect() wakes at once and reports ECONNREFUSED.
Every attempt uses a new socket; all sockets stay open until the end, so every attempt
gets a distinct source port (hence a fresh conntrack entry). Attempts run concurrently
(so N drops cost one timeout) unless --serial is given (use it for session affinity).
--sport PORT binds every attempt to that source port (SO_REUSEADDR), so all attempts are one
flow (one conntrack entry for UDP); it implies --serial and closes each socket after its attempt.
"""
import argparse
import errno
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
KINDS = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
         "sctp": (socket.SOCK_STREAM, IPPROTO_SCTP)}


def attempt(a, keep):
    fam = socket.AF_INET6 if ":" in a.dst else socket.AF_INET
    kind, num = KINDS[a.proto]
    deadline = time.monotonic() + a.timeout
    try:
        s = socket.socket(fam, kind, num)
    except OSError as e:
        return "ERROR " + errno.errorcode.get(e.errno, str(e.errno))
    keep.append(s)
    try:
        if kind == socket.SOCK_STREAM:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        if a.sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((a.src or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), a.sport))
        elif a.src:
            s.bind((a.src, 0))
        s.settimeout(a.timeout)
        s.connect((a.dst, a.port))
        if a.proto == "udp":
            s.send(b"probe\n")
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            s.settimeout(left)
            chunk = s.recv(512)
            data += chunk
            if not chunk or a.proto == "udp":
                break
    except TimeoutError:
        return "TIMEOUT"
    except ConnectionRefusedError:
        return "REFUSED"
    except OSError as e:
        return "ERROR " + errno.errorcode.get(e.errno, str(e))
    words = data.decode(errors="replace").split()
    if len(words) != 2:
        return "ERROR bad-answer:" + (repr(data)[2:-1].replace(" ", "_") or "empty")
    return f"ANSWER {words[0]} {words[1]}"


def main():
    ap = argparse.ArgumentParser(description="probe a TCP/UDP/SCTP destination")
    ap.add_argument("proto", choices=sorted(KINDS))
    ap.add_argument("dst")
    ap.add_argument("port", type=int)
    ap.add_argument("--src")
    ap.add_argument("--sport", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--serial", action="store_true")
    a = ap.parse_args()
    if a.dst.startswith("[") and a.dst.endswith("]"):
        a.dst = a.dst[1:-1]
    keep = []
    try:
        if a.sport:
            results = []
            for _ in range(a.count):
                results.append(attempt(a, keep))
                for s in keep:
                    s.close()
                keep.clear()
        elif a.serial or a.count == 1:
            results = [attempt(a, keep) for _ in range(a.count)]
        else:
            with ThreadPoolExecutor(max_workers=min(a.count, 64)) as pool:
                results = list(pool.map(lambda _: attempt(a, keep), range(a.count)))
    finally:
        for s in keep:
            s.close()
    print("\n".join(results))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
