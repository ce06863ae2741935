#!/usr/bin/env python3
"""A/B ingest: two relaisd binaries under the same smtp-source load, interleaved, one run.

For comparing a change with its parent: the runs alternate A, B, B, A, A, B, ... so that drift
on a shared machine falls on both, and the table gives medians of accepted messages per second
and of relaisd's CPU time per message (user + system, from wait4), and B's ratio to A. The load
is ingest_vs_smtp_sink.py's: smtp-source, every message fdatasynced before its 250.

Usage: bench/ab_ingest.py --a OLD_RELAISD --b NEW_RELAISD [--runs 6] [--messages 20000]
       [--sessions 50] [--size 2048] [--threads N] [--reuse]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import statistics
import sys

from benchlib import require_postfix_tools
from ingest_vs_smtp_sink import add_load_arguments, bench_relaisd, load_description


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="relaisd binary A (the baseline)")
    p.add_argument("--b", required=True, help="relaisd binary B")
    p.add_argument("--runs", type=int, default=6, help="runs of each binary")
    add_load_arguments(p)
    args = p.parse_args()
    require_postfix_tools()
    results = {"A": [], "B": []}
    order = []
    for i in range(args.runs):
        order += ["A", "B"] if i % 2 == 0 else ["B", "A"]
    for n, name in enumerate(order):
        args.relaisd = args.a if name == "A" else args.b
        elapsed, cpu = bench_relaisd(args)
        results[name].append((args.messages / elapsed, cpu * 1e6 / args.messages))
        print(f"run {n + 1:2d} {name}: {args.messages / elapsed:8.0f} msgs/s, "
              f"{cpu * 1e6 / args.messages:6.1f} CPU us/msg", file=sys.stderr)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in results.items()}
    print(f"\n{load_description(args)}, medians of {args.runs} interleaved runs each\n")
    print("| relaisd | accepted msgs/s | relaisd CPU per message |")
    print("| --- | ---: | ---: |")
    for k, path in (("A", args.a), ("B", args.b)):
        print(f"| {k}: `{path}` | {med[k][0]:.0f} | {med[k][1]:.1f} us |")
    print(f"\nB / A: throughput {med['B'][0] / med['A'][0]:.3f}, "
          f"CPU per message {med['B'][1] / med['A'][1]:.3f}")


if __name__ == "__main__":
    main()
