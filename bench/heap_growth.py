#!/usr/bin/env python3
"""What steady load adds to relaisd's live heap, by allocation site (heaptrack).

relais-bench send -> relaisd (under heaptrack) -> relais-bench sink on loopback, at a fixed
rate, twice: once for --short seconds and once for --long seconds. Each time, once the load
has ended and relaisd is idle again (every message relayed, every client session closed, as its
/metrics says), relaisd is killed (SIGKILL), so what heaptrack saw allocated and not freed is
exactly the heap an idle relaisd holds after that much load, with no work in flight. The
difference of the two runs (heaptrack_print --diff) is what the extra minutes of load left
behind, by allocation site: a leak or a structure that grows without bound shows up there, in
proportion to the extra messages.

RSS cannot tell these apart: an allocator keeps freed pages, so RSS can creep while the live
heap is flat (bench/soak.py). This script says which.

Needs heaptrack (Debian package heaptrack) and a relaisd linked with the C library's malloc,
which heaptrack follows (mimalloc's it does not):
    cmake -S . -B build-heap -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELAIS_MIMALLOC=OFF
    ninja -C build-heap relaisd relais-bench

Usage: python3 bench/heap_growth.py [--relaisd build-heap/tools/relaisd/relaisd]
       [--bench PATH] [--rate 3000] [--short 60] [--long 480] [--connections 50] [--size 2048]
Loopback only; every process it starts it stops by PID.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import (free_port, scrape_gauges, start_bench_sink, stop_all, wait_listening,
                      write_relay_config)

ENTRY = re.compile(r"^(-?[0-9.]+[KMG]?B?) leaked over (-?[0-9]+) calls from$")


def find_child(parent_pid, exe):
    """The process running `exe` below `parent_pid` (heaptrack runs it as a child)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode()
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if os.path.realpath(argv0) == os.path.realpath(exe) and ppid == parent_pid:
            return int(entry)
    return None


def run_once(args, seconds, work):
    """One run of `seconds` of load; returns (heaptrack data file, send's summary and check)."""
    procs = []
    try:
        sink, address = start_bench_sink(args.bench, work)
        procs.append(sink)
        port = free_port()
        metrics_port = free_port()
        config = write_relay_config(work, port, address, metrics_port, spool=f"spool-{seconds}")
        prefix = os.path.join(work, f"heaptrack-{seconds}")
        with open(prefix + ".out", "w") as log:
            tracer = subprocess.Popen(["heaptrack", "-o", prefix, args.relaisd, "--config",
                                       config], stdout=log, stderr=subprocess.STDOUT)
        procs.append(tracer)
        wait_listening(port, tracer, timeout=60)
        relay = find_child(tracer.pid, args.relaisd)
        if relay is None:
            raise RuntimeError("relaisd not found below heaptrack")
        out = os.path.join(work, f"send-{seconds}.json")
        subprocess.run([args.bench, "send", "--target", f"127.0.0.1:{port}", "--connections",
                        str(args.connections), "--duration", f"{seconds}s", "--rate",
                        str(args.rate), "--size", str(args.size), "--sink", address, "--json",
                        out, "--quiet"], check=True)
        wait_idle(metrics_port)
        os.kill(relay, signal.SIGKILL)  # Everything not freed by now was live.
        tracer.wait(timeout=300)
        with open(out) as f:
            sent = json.load(f)
        data = [p for p in (prefix + ".zst", prefix + ".gz") if os.path.exists(p)]
        if not data:
            raise RuntimeError(f"heaptrack wrote no data (see {prefix}.out)")
        return data[0], sent
    finally:
        stop_all(procs)


def wait_idle(metrics_port, timeout=60):
    """Until relaisd holds no message and no client session (then one more second)."""
    names = ("relais_spool_messages", "relais_connections_active")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(scrape_gauges(metrics_port, names).values()):
            time.sleep(1)
            return
        time.sleep(0.2)
    raise RuntimeError(f"relaisd still busy {timeout} s after the load ended")


def heaptrack_print(*extra):
    return subprocess.run(["heaptrack_print", "--print-leaks", "1", "--print-peaks", "0",
                           "--print-allocators", "0", "--print-temporary", "0", *extra],
                          capture_output=True, text=True, check=True).stdout


def total(text, what):
    m = re.search(rf"^{what}: (\S+)", text, re.M)
    return m.group(1) if m else "?"


def sites(text):
    """Top-level leak entries: (bytes text, calls, where), `where` being the first frame of the
    entry's first backtrace that is ours rather than the standard library's."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = ENTRY.match(line)
        if not m or i + 1 >= len(lines):
            continue
        where = lines[i + 1].strip()
        for frame in [] if where.startswith("relais::") else lines[i + 2:]:
            if ENTRY.match(frame):
                break  # The next entry: no frame of ours in this one.
            frame = frame.strip()
            if frame.startswith(("relais::", "main")):
                where = frame
                break
        found.append((m.group(1), int(m.group(2)), where))
    return found


def to_bytes(text):
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number = text.rstrip("B")
    if number and number[-1] in scale:
        return float(number[:-1]) * scale[number[-1]]
    return float(number)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd",
                   default=os.path.join(here, "../build-heap/tools/relaisd/relaisd"))
    p.add_argument("--bench",
                   default=os.path.join(here, "../build-heap/tools/relais-bench/relais-bench"))
    p.add_argument("--rate", type=int, default=3000)
    p.add_argument("--short", type=int, default=60)
    p.add_argument("--long", type=int, default=480)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--top", type=int, default=8)
    args = p.parse_args()
    if shutil.which("heaptrack") is None:
        sys.exit("heap_growth.py: heaptrack is not installed (apt-get install heaptrack)")
    libs = subprocess.run(["ldd", args.relaisd], capture_output=True, text=True).stdout
    if "mimalloc" in libs:
        sys.exit(f"heap_growth.py: {args.relaisd} uses mimalloc, which heaptrack cannot follow; "
                 "build one with -DRELAIS_MIMALLOC=OFF")
    work = tempfile.mkdtemp(prefix="relais-heap-")
    try:
        runs = {}
        for seconds in (args.short, args.long):
            data, sent = run_once(args, seconds, work)
            text = heaptrack_print("-f", data)
            runs[seconds] = data
            s, c = sent["summary"], sent["check"]
            print(f"{seconds:>4} s at {args.rate} msgs/s: {s['accepted']} accepted, lost "
                  f"{c['lost']}, duplicated {c['duplicates']}; relaisd's live heap when idle again "
                  f"{total(text, 'total memory leaked')}, peak "
                  f"{total(text, 'peak heap memory consumption')}, "
                  f"{total(text, 'calls to allocation functions')} allocations")
        diff = heaptrack_print("-f", runs[args.long], "-d", runs[args.short])
        print(f"\nlive heap after {args.long} s minus after {args.short} s: "
              f"{total(diff, 'total memory leaked')}; largest differences by site:")
        for size, calls, function in sorted(sites(diff), key=lambda e: -abs(to_bytes(e[0])))[
                :args.top]:
            print(f"  {size:>9}  {function}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
