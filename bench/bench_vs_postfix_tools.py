#!/usr/bin/env python3
"""Load-tool benchmark: relais-bench send -> relais-bench sink against Postfix's smtp-source ->
smtp-sink, the same workload, in the same run.

Each pair moves MESSAGES messages of SIZE bytes over SESSIONS concurrent connections on
loopback (connections reused; --per-message for one session per message, smtp-source's
default). Measured per pair: wall time of the sender (messages/s) and CPU seconds (user +
system) of sender and sink together, from wait4 of each; the figure of merit is messages per
CPU-second, since a load tool that needs less CPU leaves more of the machine to the server
under test. Runs are interleaved; the table reports medians and the ratio.

Usage: bench/bench_vs_postfix_tools.py [--bench PATH] [--runs 3] [--messages 20000]
       [--sessions 50] [--size 2048] [--per-message]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from benchlib import (SMTP_SINK, free_port, require_postfix_tools, smtp_source_command, stop,
                      wait_listening)


def run_pair(sink_cmd, port, send_cmd):
    sink = subprocess.Popen(sink_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, sink)
        start = time.monotonic()
        sender = subprocess.Popen(send_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(sender.pid, 0)
        elapsed = time.monotonic() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{send_cmd[0]} failed: {sender.stderr.read().decode().strip()}")
        sender_cpu = usage.ru_utime + usage.ru_stime
        sink_cpu = stop(sink)
        return elapsed, sender_cpu, sink_cpu
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def relais_bench(args):
    port = free_port()
    send = [args.bench, "send", "--target", f"127.0.0.1:{port}", "--connections",
            str(args.sessions), "--messages", str(args.messages), "--size", str(args.size),
            "--quiet"]
    if args.per_message:
        send += ["--messages-per-connection", "1"]
    return run_pair([args.bench, "sink", "--listen", f"127.0.0.1:{port}"], port, send)


def postfix_tools(args):
    port = free_port()
    sink = [SMTP_SINK, f"127.0.0.1:{port}", "1024"]
    if os.geteuid() == 0:
        sink[1:1] = ["-u", "nobody"]
    args.reuse = not args.per_message
    return run_pair(sink, port, smtp_source_command(args, port, args.reuse))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--bench", default=os.path.join(here, "../build/tools/relais-bench/relais-bench"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--per-message", action="store_true", help="one session per message")
    args = p.parse_args()
    require_postfix_tools()
    results = {"relais-bench": [], "smtp-source/sink": []}
    for run_index in range(args.runs):
        for name, fn in (("relais-bench", relais_bench), ("smtp-source/sink", postfix_tools)):
            elapsed, sender, sink = fn(args)
            results[name].append((args.messages / elapsed, sender, sink,
                                  args.messages / (sender + sink)))
            print(f"run {run_index + 1} {name:16s}: {args.messages / elapsed:8.0f} msgs/s, "
                  f"CPU sender {sender:5.2f} s sink {sink:5.2f} s", file=sys.stderr)
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(4))
           for k, v in results.items()}
    mode = "one session per message" if args.per_message else "connections reused"
    print(f"\n{args.messages} messages of {args.size} bytes, {args.sessions} connections, {mode}, "
          f"median of {args.runs}\n")
    print("| tools | msgs/s | sender CPU s | sink CPU s | msgs per CPU-second |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (rate, sender, sink, per_cpu) in med.items():
        print(f"| {name} | {rate:.0f} | {sender:.2f} | {sink:.2f} | {per_cpu:.0f} |")
    a, b = med["relais-bench"], med["smtp-source/sink"]
    print(f"\nrelais-bench / smtp-source+sink: {a[3] / b[3]:.1f}x messages per CPU-second, "
          f"{a[0] / b[0]:.1f}x messages per second")


if __name__ == "__main__":
    main()
