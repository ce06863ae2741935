#!/usr/bin/env python3
"""Ingest benchmark: Postfix's smtp-source against relaisd and against smtp-sink, one run.

smtp-sink accepts and discards every message without writing anything: it is the ceiling a
receiving server could reach on this machine with this client. relaisd writes every message to
its spool and fdatasyncs it before answering 250. For each target the script measures the wall
time of smtp-source (accepted messages per second) and the CPU seconds the server used (user +
system, from wait4 after it exits). Each configuration runs RUNS times, interleaved; the table
reports medians and the ratio relaisd / smtp-sink.

Usage: bench/ingest_vs_smtp_sink.py [--relaisd PATH] [--runs 3] [--messages 20000]
       [--sessions 50] [--size 2048] [--threads N] [--reuse]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import (SMTP_SINK, free_port, relaisd, require_postfix_tools, run,
                      smtp_source_command, stop, wait_listening)


def run_source(args, port):
    start = time.monotonic()
    run(smtp_source_command(args, port, args.reuse))
    return time.monotonic() - start


def bench_relaisd(args):
    # Nothing listens on port 9: each message gets one cheap deferred attempt and stays
    # spooled. The measured promise is "durable before 250"; delivery is measured apart.
    with relaisd(args.relaisd, args.threads, "127.0.0.1:9") as (proc, port, work):
        elapsed = run_source(args, port)
        cpu = stop(proc)
        listing = subprocess.run([args.relaisctl, "spool", "ls", "--spool", f"{work}/spool",
                                  "--json"], capture_output=True, check=True, timeout=300)
        stored = len(json.loads(listing.stdout))
        if stored != args.messages:
            raise RuntimeError(f"relaisd stored {stored} of {args.messages} messages")
        return elapsed, cpu


def bench_sink(args):
    port = free_port()
    proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        elapsed = run_source(args, port)
        return elapsed, stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def add_load_arguments(p):
    """The smtp-source load and relaisd's shards, shared with ab_ingest.py."""
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--relaisctl", default=os.path.join(here, "../build/tools/relaisctl/relaisctl"))
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="smtp-source -d: reuse sessions")


def load_description(args):
    mode = "one session per message" if not args.reuse else "sessions reused (-d)"
    return f"{args.messages} messages of {args.size} bytes, {args.sessions} sessions, {mode}"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd", default=os.path.join(here, "../build/tools/relaisd/relaisd"))
    p.add_argument("--runs", type=int, default=3)
    add_load_arguments(p)
    args = p.parse_args()
    require_postfix_tools()
    results = {"relaisd": [], "smtp-sink": []}
    for run in range(args.runs):
        for name, fn in (("relaisd", bench_relaisd), ("smtp-sink", bench_sink)):
            elapsed, cpu = fn(args)
            results[name].append((args.messages / elapsed, cpu))
            print(f"run {run + 1} {name:9s}: {args.messages / elapsed:9.0f} msgs/s, "
                  f"{cpu:6.2f} CPU s", file=sys.stderr)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in results.items()}
    print(f"\n{load_description(args)}, median of {args.runs}\n")
    print("| server | accepted msgs/s | server CPU s | durable before 250 |")
    print("| --- | ---: | ---: | --- |")
    print(f"| relaisd | {med['relaisd'][0]:.0f} | {med['relaisd'][1]:.2f} | yes (fdatasync) |")
    print(f"| smtp-sink (ceiling) | {med['smtp-sink'][0]:.0f} | {med['smtp-sink'][1]:.2f} | "
          "no (discards) |")
    print(f"\nrelaisd / smtp-sink throughput: {med['relaisd'][0] / med['smtp-sink'][0]:.0%}")


if __name__ == "__main__":
    main()
