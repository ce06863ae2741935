#!/usr/bin/env python3
"""What scraping /metrics costs relaisd under load.

relais-bench send -> relaisd -> smtp-sink (-c counts), MESSAGES messages of SIZE bytes over
SESSIONS connections, each run with metrics enabled; every other run a scraper fetches /metrics
every INTERVAL seconds for the whole run (Prometheus' default is every 15 s to 1 min, so the
default 1 s is a harsh case). Reported: median relayed msgs/s with and without scraping and
their ratio, and, measured apart on an idle daemon, the relay's CPU time per scrape, which
with the scrape rate and the relay's CPU use under load gives the share of its CPU that
scraping takes. The throughput ratio is a direct check but drowns in noise below a few
percent on a shared machine; the CPU share is the precise figure.

Usage: bench/scrape_cost.py [--runs 3] [--messages 20000] [--sessions 50] [--size 2048]
       [--interval 1] [--relaisd PATH] [--bench PATH]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request

from benchlib import (Sink, free_port, process_tree_cpu_seconds, relaisd, require_postfix_tools,
                      stop)
from relay_vs_postfix import measure


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return len(r.read())


def run_once(args, sink, scraping):
    metrics_port = free_port()
    with relaisd(args.relaisd, 0, f"127.0.0.1:{sink.port}", metrics_port) as (proc, port, _):
        scrape(metrics_port)
        done = threading.Event()
        scrapes = []

        def scraper():
            while not done.wait(args.interval):
                scrapes.append(scrape(metrics_port))
        thread = threading.Thread(target=scraper)
        if scraping:
            thread.start()
        elapsed, relay_cpu, _ = measure(args, port, sink, proc)
        done.set()
        if scraping:
            thread.join()
        stop(proc)
        return args.messages / elapsed, relay_cpu / elapsed, len(scrapes)


def cpu_per_scrape(args, sink, count=2000):
    metrics_port = free_port()
    with relaisd(args.relaisd, 0, f"127.0.0.1:{sink.port}", metrics_port) as (proc, _, _):
        scrape(metrics_port)
        cpu0 = process_tree_cpu_seconds(proc.pid)
        size = 0
        for _ in range(count):
            size = scrape(metrics_port)
        cpu = process_tree_cpu_seconds(proc.pid) - cpu0
        stop(proc)
        return cpu / count, size


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd", default=os.path.join(here, "../build/tools/relaisd/relaisd"))
    p.add_argument("--bench", default=os.path.join(here, "../build/tools/relais-bench/relais-bench"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    args.client, args.reuse = "relais-bench", True
    require_postfix_tools()
    sink = Sink()
    results = {False: [], True: []}
    try:
        for i in range(args.runs):
            for scraping in (False, True):
                rate, cpu_share, n = run_once(args, sink, scraping)
                results[scraping].append((rate, cpu_share))
                print(f"run {i + 1} scraping={scraping!s:5}: {rate:8.0f} msgs/s, relay busy "
                      f"{cpu_share:.2f} CPUs, {n} scrapes", file=sys.stderr)
        per_scrape, size = cpu_per_scrape(args, sink)
    finally:
        sink.close()
    without = statistics.median(r[0] for r in results[False])
    with_ = statistics.median(r[0] for r in results[True])
    busy = statistics.median(r[1] for r in results[True])
    share = per_scrape / args.interval / busy
    print(f"\n{args.messages} messages of {args.size} bytes, {args.sessions} connections reused, "
          f"relais-bench -> relaisd -> smtp-sink, median of {args.runs}\n")
    print("| scraping | relayed msgs/s |")
    print("| --- | ---: |")
    print(f"| none | {without:.0f} |")
    print(f"| every {args.interval:g} s | {with_:.0f} |")
    print(f"\nthroughput with / without scraping: {with_ / without:.3f}")
    print(f"relay CPU per scrape ({size} bytes of metrics): {per_scrape * 1e6:.0f} us; at one "
          f"scrape every {args.interval:g} s and {busy:.2f} CPUs busy under load, scraping takes "
          f"{100 * share:.3f}% of the relay's CPU")


if __name__ == "__main__":
    main()
