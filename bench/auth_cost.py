#!/usr/bin/env python3
"""What inline sender authentication costs the relay: relaisd with SPF, DKIM and DMARC on
against the same relaisd with them off, in the same run, on the same workload.

relais-bench sends MESSAGES copies of one DKIM-signed message (--message) over SESSIONS
connections to relaisd, which relays them to smtp-sink. With checks on, every client is checked
(auth.skip_networks = []): SPF of the envelope sender's domain at MAIL FROM, the DKIM signature
and DMARC of the From domain at the end of data, against a dnsmasq on loopback that serves the
zone; after the first message every answer comes from the shard's cache (warm cache, as the
issue asks). The run also checks that every message got dkim=pass and dmarc=pass (from the
metrics). Runs alternate on/off; medians of the runs and their ratio are printed.

Usage: bench/auth_cost.py [--runs 3] [--messages 20000] [--sessions 50] [--size 4096]
       [--key rsa2048|ed25519] [--relaisd PATH] [--bench PATH] [--auth PATH] [--threads N]
Needs smtp-sink (bench/setup-postfix-tools.sh) and dnsmasq. Loopback only.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import (Sink, free_port, process_tree_cpu_seconds, relaisd, require_postfix_tools,
                      stop)

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = os.path.join(HERE, "..", "tests", "testdata", "dkim")


def dnsmasq(records):
    port = free_port()
    proc = subprocess.Popen(
        ["/usr/sbin/dnsmasq", "--no-daemon", f"--port={port}", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
         "--local=/test/", "--local-ttl=3600", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def txt(name, text):
    return f"--txt-record={name}," + ",".join(text[i:i + 250] for i in range(0, len(text), 250))


def message(args, work):
    """A message of about --size bytes, signed by relais-auth with the chosen key."""
    body = "".join(f"line {i:05d} " + "x" * 64 + "\n" for i in range(args.size // 76 + 1))
    plain = ("From: Joe <joe@example.test>\nTo: sue@example.net\nSubject: auth cost\n"
             "Date: Thu, 26 Nov 2026 10:00:00 +0000\nMessage-ID: <1@example.test>\n"
             "MIME-Version: 1.0\n\n" + body)
    signed = subprocess.run([args.auth, "dkim", "sign", "--domain", "example.test", "--selector",
                             "s", "--key", os.path.join(KEYS, f"{args.key}.pem")],
                            input=plain.encode(), capture_output=True, check=True).stdout
    path = os.path.join(work, "message.eml")
    with open(path, "wb") as f:
        f.write(signed)
    return path


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def one_run(args, sink, message_path, dns_port, checks):
    if checks:
        extra = ('[auth]\nskip_networks = []\nspf = "tag"\ndkim = "tag"\ndmarc = "tag"\n'
                 f'[dns]\nservers = ["127.0.0.1:{dns_port}"]\n')
    else:
        extra = '[auth]\nspf = "off"\ndkim = "off"\ndmarc = "off"\n'
    metrics_port = free_port()
    with relaisd(args.relaisd, args.threads, f"127.0.0.1:{sink.port}", metrics_port,
                 extra) as (proc, port, _):
        base = sink.count()
        cpu0 = process_tree_cpu_seconds(proc.pid)
        start = time.monotonic()
        send = subprocess.run(
            [args.bench, "send", "--target", f"127.0.0.1:{port}", "--connections",
             str(args.sessions), "--messages", str(args.messages), "--message", message_path,
             "--from", "bounce@example.test", "--bind", "none", "--quiet"],
            capture_output=True, text=True, timeout=900)
        if send.returncode != 0:
            raise RuntimeError(f"relais-bench failed: {send.stdout}{send.stderr}")
        deadline = time.monotonic() + 600
        while sink.count() - base < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sink.count() - base} of {args.messages} relayed")
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        cpu = process_tree_cpu_seconds(proc.pid) - cpu0
        metrics = scrape(metrics_port)
        stop(proc)
    if checks:
        for method in ("spf", "dkim", "dmarc"):
            found = re.search(r'relais_auth_results_total\{method="%s",result="pass"\} (\d+)'
                              % method, metrics)
            if not found or int(found.group(1)) != args.messages:
                raise RuntimeError(f"{method}: not every message passed: "
                                   f"{found.group(0) if found else 'no metric'}")
    return args.messages / elapsed, args.messages / cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--key", choices=("rsa2048", "ed25519"), default="rsa2048")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--relaisd", default=os.path.join(HERE, "../build-rel/tools/relaisd/relaisd"))
    p.add_argument("--bench",
                   default=os.path.join(HERE, "../build-rel/tools/relais-bench/relais-bench"))
    p.add_argument("--auth",
                   default=os.path.join(HERE, "../build-rel/tools/relais-auth/relais-auth"))
    args = p.parse_args()
    require_postfix_tools()
    work = tempfile.mkdtemp(prefix="relais-auth-cost-")
    record = subprocess.run([args.auth, "dkim", "record", "--key",
                             os.path.join(KEYS, f"{args.key}.pem")],
                            capture_output=True, text=True, check=True).stdout.strip()
    dns, dns_port = dnsmasq([txt("s._domainkey.example.test", record),
                             "--txt-record=example.test,v=spf1 ip4:127.0.0.0/8 -all",
                             "--txt-record=_dmarc.example.test,v=DMARC1; p=reject"])
    sink = Sink()
    results = {True: [], False: []}
    try:
        path = message(args, work)
        for run in range(args.runs):
            for checks in (True, False):
                rate, per_cpu = one_run(args, sink, path, dns_port, checks)
                results[checks].append((rate, per_cpu))
                print(f"run {run + 1} checks {'on ' if checks else 'off'}: {rate:8.0f} msg/s, "
                      f"{per_cpu:8.0f} msgs per relay CPU-second", flush=True)
    finally:
        sink.close()
        dns.terminate()
        dns.wait()
        shutil.rmtree(work, ignore_errors=True)
    on_rate = statistics.median(r for r, _ in results[True])
    off_rate = statistics.median(r for r, _ in results[False])
    on_cpu = statistics.median(c for _, c in results[True])
    off_cpu = statistics.median(c for _, c in results[False])
    print(f"\nmedians over {args.runs} runs, {args.messages} x {args.size} B, {args.key} signature,"
          f" {args.sessions} connections:")
    print(f"  checks off: {off_rate:8.0f} msg/s  {off_cpu:8.0f} msgs/CPU-s")
    print(f"  checks on:  {on_rate:8.0f} msg/s  {on_cpu:8.0f} msgs/CPU-s")
    print(f"  throughput with checks: {100 * on_rate / off_rate:.0f}% "
          f"(cost {100 * (1 - on_rate / off_rate):.0f}%); CPU per message x{off_cpu / on_cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
