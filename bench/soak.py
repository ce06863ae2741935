#!/usr/bin/env python3
"""Soak: sustained load on relaisd with its RSS sampled every second.

relais-bench send -> relaisd -> relais-bench sink on loopback. First a closed-loop run of
--peak-seconds finds the peak rate; then the soak runs open-loop at --load (default 80%) of
that peak for --duration, with `send --sink` checking every acknowledged message arrived.
relaisd's VmRSS is read every second. Reported: RSS at the end of the warm-up (--warmup),
the largest and the last value after it, and the growth of the median of the last minute over
the median of the first minute after warm-up (the target: within 5%). To tell a leak from
memory that follows the load, each sample also splits the RSS into anonymous memory (heap,
stacks), mapped files (code paged in as it first runs) and what the allocator freed lazily
(MADV_FREE: counted until the kernel reclaims it), and scrapes the spool's and queue's
sizes from /metrics; a minute-by-minute table shows them side by side, and --samples writes
every sample as CSV.

Usage: python3 bench/soak.py [--duration 600] [--warmup 60] [--load 0.8] [--relaisd PATH]
       [--bench PATH] [--connections 50] [--size 2048] [--samples FILE.csv]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (free_port, memory_kib, scrape_gauges, start_bench_sink, stop_all,
                      wait_listening, write_relay_config)

GAUGES = ("relais_spool_messages", "relais_queue_messages", "relais_spool_segments",
          "relais_connections_active", "relais_egress_connections")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd", default=os.path.join(here, "../build/tools/relaisd/relaisd"))
    p.add_argument("--bench", default=os.path.join(here, "../build/tools/relais-bench/relais-bench"))
    p.add_argument("--duration", type=int, default=600)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--peak-seconds", type=int, default=15)
    p.add_argument("--load", type=float, default=0.8)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--samples", help="write every second's sample to this CSV file")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="relais-soak-")
    procs = []
    try:
        sink, address = start_bench_sink(args.bench, work)
        procs.append(sink)
        port = free_port()
        metrics_port = free_port()
        config = write_relay_config(work, port, address, metrics_port)
        relay = subprocess.Popen([args.relaisd, "--config", config], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(relay)
        wait_listening(port, relay)
        target = f"127.0.0.1:{port}"
        peak_json = os.path.join(work, "peak.json")
        subprocess.run([args.bench, "send", "--target", target, "--connections",
                        str(args.connections), "--duration", f"{args.peak_seconds}s", "--size",
                        str(args.size), "--json", peak_json, "--quiet"], check=True)
        with open(peak_json) as f:
            peak = json.load(f)["summary"]["messages_per_second"]
        rate = peak * args.load
        print(f"peak {peak:.0f} msgs/s; soaking at {rate:.0f} msgs/s for {args.duration} s",
              file=sys.stderr)
        samples = []
        stop = threading.Event()

        def sample():
            start = time.monotonic()
            while not stop.wait(1.0):
                t = time.monotonic() - start
                memory = memory_kib(relay.pid)
                gauges = scrape_gauges(metrics_port, GAUGES)
                samples.append({"t": t, "rss": memory["VmRSS"], "anon": memory["RssAnon"],
                                "file": memory["RssFile"],
                                "lazy_free": memory.get("LazyFree", 0),
                                **{g.removeprefix("relais_"): int(v) for g, v in gauges.items()}})
        sampler = threading.Thread(target=sample)
        sampler.start()
        soak_json = os.path.join(work, "soak.json")
        r = subprocess.run([args.bench, "send", "--target", target, "--connections",
                            str(args.connections), "--duration", f"{args.duration}s", "--rate",
                            f"{rate:.0f}", "--size", str(args.size), "--sink", address,
                            "--json", soak_json, "--quiet"])
        stop.set()
        sampler.join()
        with open(soak_json) as f:
            soak = json.load(f)
        if args.samples:
            with open(args.samples, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(samples[0]))
                w.writeheader()
                w.writerows(samples)
        report(args, peak, rate, soak, r.returncode, samples)
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


def report(args, peak, rate, soak, send_exit, samples):
    def median_of(key, lo, hi):
        return statistics.median(x[key] for x in samples if lo <= x["t"] < hi)

    end = samples[-1]["t"]
    after = [x for x in samples if x["t"] >= args.warmup]
    s, c = soak["summary"], soak["check"]
    print(f"\n{args.duration} s at {rate:.0f} msgs/s ({100 * args.load:.0f}% of the peak "
          f"{peak:.0f}), {args.connections} connections, {args.size} bytes: "
          f"{s['accepted']} accepted at {s['messages_per_second']:.0f} msgs/s, "
          f"data-end p99 {s['latency_us']['data_end']['p99'] / 1000:.2f} ms; sink check: "
          f"lost {c['lost']}, duplicated {c['duplicates']} (send exit {send_exit})")
    growth = {}
    for key in ("rss", "anon", "file", "lazy_free"):
        first = median_of(key, args.warmup, args.warmup + 60)
        last = median_of(key, end - 60, end + 1)
        growth[key] = (first, last)
    first, last = growth["rss"]
    print(f"relaisd RSS: {samples[0]['rss']} KiB at 1 s, {after[0]['rss']} KiB at the end of the "
          f"{args.warmup} s warm-up, max after it {max(x['rss'] for x in after)} KiB, last "
          f"{samples[-1]['rss']} KiB; median of the first minute after warm-up {first:.0f} KiB, "
          f"of the last minute {last:.0f} KiB: growth {100 * (last - first) / first:+.1f}%")
    print("of which (same medians): " + "; ".join(
        f"{name} {growth[key][0]:.0f} -> {growth[key][1]:.0f} KiB ({growth[key][1] - growth[key][0]:+.0f})"
        for key, name in (("anon", "anonymous"), ("file", "mapped files"),
                          ("lazy_free", "freed lazily (MADV_FREE, still counted)"))))
    print("\nminute  RSS median  anon median  file median  lazy free  spool msgs max  running max  "
          "segments")
    running = 0
    for lo in range(0, int(end) + 1, 60):
        minute = [x for x in samples if lo <= x["t"] < lo + 60]
        if not minute:
            continue
        peak_messages = max(x["spool_messages"] for x in minute)
        running = max(running, peak_messages)
        print(f"{lo // 60:>6}  {statistics.median(x['rss'] for x in minute):>10.0f}  "
              f"{statistics.median(x['anon'] for x in minute):>11.0f}  "
              f"{statistics.median(x['file'] for x in minute):>11.0f}  "
              f"{statistics.median(x['lazy_free'] for x in minute):>9.0f}  {peak_messages:>14}  "
              f"{running:>11}  {max(x['spool_segments'] for x in minute):>8}")


if __name__ == "__main__":
    main()
