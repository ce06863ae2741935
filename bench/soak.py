#!/usr/bin/env python3
"""Soak: sustained load on relaisd with its RSS sampled every second.

relais-bench send -> relaisd -> relais-bench sink on loopback. First a closed-loop run of
--peak-seconds finds the peak rate; then the soak runs open-loop at --load (default 80%) of
that peak for --duration, with `send --sink` checking every acknowledged message arrived.
relaisd's VmRSS is read every second. Reported: RSS at the end of the warm-up (--warmup),
the largest and the last value after it, and the growth of the median of the last minute over
the median of the first minute after warm-up (the target: within 5%).

Usage: python3 bench/soak.py [--duration 600] [--warmup 60] [--load 0.8] [--relaisd PATH]
       [--bench PATH] [--connections 50] [--size 2048]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import free_port, rss_kib, wait_listening


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
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="relais-soak-")
    procs = []
    try:
        sink_out = open(os.path.join(work, "sink.out"), "w+")
        sink = subprocess.Popen([args.bench, "sink", "--listen", "127.0.0.1:0"], stdout=sink_out,
                                stderr=subprocess.STDOUT)
        procs.append(sink)
        deadline = time.monotonic() + 10
        address = None
        while address is None and time.monotonic() < deadline:
            sink_out.seek(0)
            m = re.search(r"listening on (\S+)", sink_out.read())
            address = m.group(1) if m else None
            time.sleep(0.05)
        port = free_port()
        config = os.path.join(work, "relais.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nadmin_socket = "{work}/relaisd.sock"\n'
                    f'[spool]\npath = "{work}/spool"\n[metrics]\nlisten = ""\n'
                    f'[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = ["{address}"]\n')
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
                samples.append((time.monotonic() - start, rss_kib(relay.pid)))
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
        after = [kib for t, kib in samples if t >= args.warmup]
        first = statistics.median(kib for t, kib in samples if args.warmup <= t < args.warmup + 60)
        last = statistics.median(kib for t, kib in samples if t >= samples[-1][0] - 60)
        s, c = soak["summary"], soak["check"]
        print(f"\n{args.duration} s at {rate:.0f} msgs/s ({100 * args.load:.0f}% of the peak "
              f"{peak:.0f}), {args.connections} connections, {args.size} bytes: "
              f"{s['accepted']} accepted at {s['messages_per_second']:.0f} msgs/s, "
              f"data-end p99 {s['latency_us']['data_end']['p99'] / 1000:.2f} ms; sink check: "
              f"lost {c['lost']}, duplicated {c['duplicates']} (send exit {r.returncode})")
        print(f"relaisd RSS: {samples[0][1]} KiB at 1 s, {after[0]} KiB at the end of the "
              f"{args.warmup} s warm-up, max after it {max(after)} KiB, last {samples[-1][1]} "
              f"KiB; median of the first minute after warm-up {first:.0f} KiB, of the last "
              f"minute {last:.0f} KiB: growth {100 * (last - first) / first:+.1f}%")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
