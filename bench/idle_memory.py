#!/usr/bin/env python3
"""Memory per idle SMTP session in relaisd.

Starts relaisd, then `relais-bench send --hold`, which opens CONNECTIONS connections from
addresses spread over 127.0.0.0/8, says EHLO on each and keeps them idle. Once relaisd's
`relais_connections_active` shows them all, relaisd's RSS (VmRSS) is read; the figure is
(RSS with the sessions - RSS before) / sessions. Kernel socket buffers are not in RSS and not
counted. Repeated for each --connections value.

relaisd's sessions hold no descriptors (they live in each shard's io_uring file table), but a
table has at most RLIMIT_NOFILE slots, so relaisd runs at least CONNECTIONS / (limit - margin)
shards, and the connections are split over as many relais-bench processes as the descriptor
limit needs, each from its own /16 of 127.0.0.0/8. Where the hard limit can be raised (root
with CAP_SYS_RESOURCE) it is, and fewer of both are needed.

With --tls, each count is measured twice in the same run: plaintext sessions, then sessions
that said STARTTLS (ECDSA P-256 certificate, TLS 1.3) and EHLO again before going idle; the
last column is then the extra memory a TLS session costs.

Usage: python3 bench/idle_memory.py [--connections 10000 100000] [--relaisd PATH]
       [--bench PATH] [--threads N] [--tls]
Loopback only; every process it starts it stops by PID.
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


def descriptor_limit(wanted):
    """The descriptor limit a child started with raise_fd_limit(wanted) gets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return wanted
    except (ValueError, OSError):
        return min(wanted, hard)


def make_certificate(work):
    chain, key = os.path.join(work, "chain.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", chain,
                    "-days", "30", "-subj", "/CN=bench.test"], check=True, capture_output=True)
    return chain, key


def measure(args, connections, tls=False):
    work = tempfile.mkdtemp(prefix="relais-idle-")
    port, metrics_port = free_port(), free_port()
    config = os.path.join(work, "relais.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nadmin_socket = "{work}/relaisd.sock"\n'
                f'[spool]\npath = "{work}/spool"\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
                f'[limits]\nconnections_max = {connections + 1000}\n'
                'connections_per_ip_max = 1000\n')
        if tls:
            chain, key = make_certificate(work)
            f.write(f'[[tls.certificate]]\nchain = "{chain}"\nkey = "{key}"\n')
    limit = descriptor_limit(connections + 10000)
    # The kernel spreads SO_REUSEPORT connections over the shards by a hash: a margin of 10%.
    shards = max(args.threads or os.cpu_count(), -(-connections * 11 // 10 // limit))
    per_sender = limit - 1024
    senders = -(-connections // per_sender)
    cmd = [args.relaisd, "--config", config, "--threads", str(shards)]
    relay = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=raise_fd_limit(limit))
    running = []
    try:
        wait_listening(port, relay)
        active_sessions(metrics_port)
        time.sleep(0.5)
        before = rss_kib(relay.pid)
        for i in range(senders):
            count = min(per_sender, connections - i * per_sender)
            running.append(subprocess.Popen(
                [args.bench, "send", "--target", f"127.0.0.1:{port}", "--connections",
                 str(count), "--bind", f"127.{i + 1}.0.0/16", "--hold", "600s", "--timeout",
                 "120s", "--quiet"] + (["--tls"] if tls else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=raise_fd_limit(limit)))
        deadline = time.monotonic() + 300
        while active_sessions(metrics_port) < connections:
            ended = [p for p in running if p.poll() is not None]
            if time.monotonic() > deadline or ended:
                detail = ended[0].stderr.read().decode()[-500:] if ended else ""
                raise RuntimeError(f"only {active_sessions(metrics_port)} of {connections} "
                                   f"sessions open: {detail}")
            time.sleep(0.5)
        time.sleep(1)  # Let the last greetings and EHLO replies settle.
        after = rss_kib(relay.pid)
        bench_rss = sum(rss_kib(p.pid) for p in running)
        return shards, senders, before, after, bench_rss
    finally:
        for p in running + [relay]:
            if p.poll() is None:
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
    p.add_argument("--tls", action="store_true", help="also measure STARTTLS sessions")
    args = p.parse_args()
    if args.tls:
        print("| idle sessions | relaisd shards | plaintext: per session bytes | STARTTLS: "
              "per session bytes | extra per TLS session bytes |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for n in args.connections:
            shards, _, before, after, _ = measure(args, n)
            _, _, tls_before, tls_after, _ = measure(args, n, tls=True)
            plain = (after - before) * 1024 / n
            tls = (tls_after - tls_before) * 1024 / n
            print(f"| {n} | {shards} | {plain:.0f} | {tls:.0f} | {tls - plain:.0f} |", flush=True)
        return
    print("| idle sessions | relaisd shards | relaisd RSS before KiB | with sessions KiB | "
          "per session bytes | relais-bench processes | relais-bench RSS per connection bytes |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.connections:
        shards, senders, before, after, bench_rss = measure(args, n)
        print(f"| {n} | {shards} | {before} | {after} | {(after - before) * 1024 / n:.0f} | "
              f"{senders} | {bench_rss * 1024 / n:.0f} |", flush=True)


if __name__ == "__main__":
    main()
