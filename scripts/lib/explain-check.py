#!/usr/bin/env python3
"""Compare `nftproxy explain --output json` for one connection with what real packets did.

Usage: explain-check.py EXPLAIN_JSON_FILE REAL_KIND [REAL_IPS] [MASQ] [DST]
  REAL_KIND  answered | refused | timeout | sentinel | mixed
  REAL_IPS   comma-separated addresses of the backends that answered (answered only)
  MASQ       yes | no | - (unknown: the node itself sent it)
  DST        the destination address the client used
Prints `explain=<verdict summary>` and exits 0 when the tracer agrees, 1 when it does not.
"""
import json
import sys


def main():
    trace = json.load(open(sys.argv[1]))
    kind = sys.argv[2]
    real_ips = set(filter(None, (sys.argv[3] if len(sys.argv) > 3 else "").split(",")))
    masq = sys.argv[4] if len(sys.argv) > 4 else "-"
    dst = sys.argv[5] if len(sys.argv) > 5 else ""
    verdict = trace["verdict"]
    backends = {b.rsplit(":", 1)[0].strip("[]") for b in trace.get("backends", [])}
    summary = verdict if verdict != "dnat" else "dnat:" + ",".join(sorted(backends))
    summary += ",masq" if trace.get("masqueraded") else ",nomasq"
    print(f"explain={summary}")
    if kind == "refused":
        ok = verdict == "reject"
    elif kind == "timeout":
        ok = verdict == "drop"
    elif kind == "sentinel":
        ok = verdict == "untouched"
    elif kind == "answered" and verdict == "untouched":
        # No rule of ours matched and the host at the original destination answered.
        ok = real_ips == {dst}
    elif kind == "answered":
        # Every backend that answered must be one the tracer lists (affinity answers with one).
        ok = verdict == "dnat" and real_ips <= backends and bool(real_ips)
        if ok and masq != "-":
            ok = trace["masqueraded"] == (masq == "yes")
    else:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
