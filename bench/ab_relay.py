#!/usr/bin/env python3
"""A/B relay: two relaisd binaries relaying the same load, interleaved, in one run.

For comparing a change with its parent on the whole path (ingress, spool, delivery): the load is
relay_vs_postfix.py's (smtp-source sends MESSAGES messages of SIZE bytes over SESSIONS sessions
to relaisd, which relays them through a smarthost route to one smtp-sink; the clock runs until
the sink has counted every message). Runs alternate A, B, B, A, A, B, ... so that drift on a
shared machine falls on both; the table gives medians of relayed messages per second and of
relaisd's CPU time per relayed message (its process tree, from /proc), and B's ratio to A.

Usage: bench/ab_relay.py --a OLD_RELAISD --b NEW_RELAISD [--runs 6] [--messages 20000]
       [--sessions 50] [--size 2048] [--threads N] [--reuse]
No root needed. Loopback only; every process it starts it stops by PID.
"""

import argparse
import statistics
import sys

from benchlib import Sink, require_postfix_tools
from relay_vs_postfix import bench_relaisd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="relaisd binary A (the baseline)")
    p.add_argument("--b", required=True, help="relaisd binary B")
    p.add_argument("--runs", type=int, default=6, help="runs of each binary")
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="smtp-source -d: reuse sessions")
    args = p.parse_args()
    args.client = "smtp-source"
    require_postfix_tools()
    order = []
    for i in range(args.runs):
        order += ["A", "B"] if i % 2 == 0 else ["B", "A"]
    results = {"A": [], "B": []}
    sink = Sink()
    try:
        for n, name in enumerate(order):
            args.relaisd = args.a if name == "A" else args.b
            elapsed, cpu, _ = bench_relaisd(args, sink)
            rate, per_message = args.messages / elapsed, cpu * 1e6 / args.messages
            results[name].append((rate, per_message))
            print(f"run {n + 1:2d} {name}: {rate:8.0f} msgs/s, {per_message:6.1f} CPU us/msg",
                  file=sys.stderr)
    finally:
        sink.close()
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in results.items()}
    spread = {k: (min(r[0] for r in v), max(r[0] for r in v)) for k, v in results.items()}
    mode = "one session per message" if not args.reuse else "sessions reused"
    print(f"\n{args.messages} messages of {args.size} bytes, {args.sessions} sessions, {mode}, "
          f"medians of {args.runs} interleaved runs each\n")
    print("| relaisd | relayed msgs/s (min-max) | relaisd CPU per relayed message |")
    print("| --- | ---: | ---: |")
    for k, path in (("A", args.a), ("B", args.b)):
        print(f"| {k}: `{path}` | {med[k][0]:.0f} ({spread[k][0]:.0f}-{spread[k][1]:.0f}) | "
              f"{med[k][1]:.1f} us |")
    print(f"\nB / A: throughput {med['B'][0] / med['A'][0]:.3f}, "
          f"CPU per message {med['B'][1] / med['A'][1]:.3f}")


if __name__ == "__main__":
    main()
