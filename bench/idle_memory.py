#!/usr/bin/env python3
"""Memory per idle SMTP session in relaisd.

Starts relaisd (limits raised to take the connections), then `relais-bench send --hold`, which
opens CONNECTIONS connections from addresses spread over 127.0.0.0/8, says EHLO on each and
keeps them idle. Once relaisd's `relais_connections_active` shows them all, relaisd's RSS
(VmRSS) is read; the figure is (RSS with the sessions - RSS before) / sessions. Kernel socket
buffers are not in RSS and not counted. Repeated for each --connections value.

Usage: sudo python3 bench/idle_memory.py [--connections 10000 100000] [--relaisd PATH]
       [--bench PATH] [--threads N]
Root (with CAP_SYS_RESOURCE) is needed to raise the file descriptor limits past the hard
limit; without it each process is capped at that limit, and larger counts fail. Loopback only;
every process it starts it stops by PID.
"""

import argparse
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from benchlib import free_port, rss_kib, wait_listening


def active_sessions(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith("relais_connections_active"))


def raise_fd_limit(n):
    """Raises the soft (and if allowed the hard) descriptor limit to n; without
    CAP_SYS_RESOURCE the hard limit caps it."""
    def apply():
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        except (ValueError, OSError):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    return apply


def measure(args, connections):
    work = tempfile.mkdtemp(prefix="relais-idle-")
    port, metrics_port = free_port(), free_port()
    config = os.path.join(work, "relais.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nadmin_socket = "{work}/relaisd.sock"\n'
                f'[spool]\npath = "{work}/spool"\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
                f'[limits]\nconnections_max = {connections + 1000}\n'
                'connections_per_ip_max = 1000\n')
    cmd = [args.relaisd, "--config", config]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    limit = connections + 10000
    relay = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=raise_fd_limit(limit))
    sender = None
    try:
        wait_listening(port, relay)
        active_sessions(metrics_port)
        time.sleep(0.5)
        before = rss_kib(relay.pid)
        sender = subprocess.Popen(
            [args.bench, "send", "--target", f"127.0.0.1:{port}", "--connections",
             str(connections), "--hold", "600s", "--timeout", "120s", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=raise_fd_limit(limit))
        deadline = time.monotonic() + 300
        while active_sessions(metrics_port) < connections:
            if time.monotonic() > deadline or sender.poll() is not None:
                raise RuntimeError(f"only {active_sessions(metrics_port)} of {connections} "
                                   f"sessions open: {sender.stderr.read().decode()[-500:] if sender.poll() is not None else ''}")
            time.sleep(0.5)
        time.sleep(1)  # Let the last greetings and EHLO replies settle.
        after = rss_kib(relay.pid)
        bench_rss = rss_kib(sender.pid)
        return before, after, bench_rss
    finally:
        for p in (sender, relay):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd", default=os.path.join(here, "../build/tools/relaisd/relaisd"))
    p.add_argument("--bench", default=os.path.join(here, "../build/tools/relais-bench/relais-bench"))
    p.add_argument("--connections", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    print("| idle sessions | relaisd RSS before KiB | with sessions KiB | per session bytes | "
          "relais-bench RSS per connection bytes |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in args.connections:
        before, after, bench_rss = measure(args, n)
        print(f"| {n} | {before} | {after} | {(after - before) * 1024 / n:.0f} | "
              f"{bench_rss * 1024 / n:.0f} |", flush=True)


if __name__ == "__main__":
    main()
