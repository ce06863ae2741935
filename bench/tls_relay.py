#!/usr/bin/env python3
"""Relay with STARTTLS on every connection: relaisd against itself in plaintext and against
Postfix with TLS on, in one run.

relais-bench send -> relay -> smtp-sink. The relay takes mail with STARTTLS (an ECDSA P-256
certificate by default, made at start with openssl) and relays it in plaintext to one smtp-sink;
the clock runs until the sink has counted every message. Modes, each run in every round, rounds
interleaved so drift on a shared machine falls on all of them:

  relaisd-plain      no TLS (the baseline)
  relaisd-full       STARTTLS, one message per connection, a full handshake each time
  relaisd-resumed    STARTTLS, one message per connection, sessions resumed (tickets)
  relaisd-reused     STARTTLS, connections reused (--messages-per-connection 0... all of them)
  relaisd-plain-reused  no TLS, connections reused (the baseline of relaisd-reused)
  postfix-full       Postfix smtpd_tls_security_level = may, same certificate, full handshakes
  postfix-resumed    the same, sessions resumed

The table gives medians of relayed messages per second and of the relay's CPU per relayed
message (its process tree, from /proc), and the ratios the issue's targets name.

Usage: sudo bench/tls_relay.py [--runs 3] [--messages 10000] [--sessions 50] [--size 2048]
       [--key-type ecdsa|rsa] [--modes relaisd-plain,relaisd-full,...]
       [--relaisd PATH] [--bench PATH]
Postfix needs root (it drops to the postfix user); without root, leave the postfix modes out.
Loopback only; every process it starts it stops by PID.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import relay_vs_postfix
from benchlib import Sink, require_postfix_tools

ALL_MODES = ["relaisd-plain", "relaisd-full", "relaisd-resumed", "relaisd-plain-reused",
             "relaisd-reused", "postfix-full", "postfix-resumed"]


def make_certificate(work, key_type):
    chain, key = os.path.join(work, "chain.pem"), os.path.join(work, "key.pem")
    new_key = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
               if key_type == "ecdsa" else ["-newkey", "rsa:2048"])
    subprocess.run(["openssl", "req", "-x509", *new_key, "-nodes", "-keyout", key, "-out", chain,
                    "-days", "30", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test"],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)  # Postfix reads it after dropping privileges; a bench key only.
    return chain, key


def client_command(args, mode, port):
    cmd = [args.bench, "send", "--target", f"127.0.0.1:{port}", "--connections",
           str(args.sessions), "--messages", str(args.messages), "--size", str(args.size),
           "--bind", "none", "--quiet"]
    if not mode.endswith("reused"):
        cmd += ["--messages-per-connection", "1"]
    if "plain" not in mode:
        cmd.append("--tls")
    if mode.endswith("resumed"):
        cmd.append("--tls-resume")
    return cmd


def bench_relaisd(args, mode, sink, chain, key):
    args.client_command = lambda port: client_command(args, mode, port)
    extra = "" if "plain" in mode else f'[[tls.certificate]]\nchain = "{chain}"\nkey = "{key}"\n'
    return relay_vs_postfix.bench_relaisd(args, sink, extra)


def bench_postfix(args, mode, sink, chain, key):
    args.client_command = lambda port: client_command(args, mode, port)
    return relay_vs_postfix.bench_postfix(
        args, sink, f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {key}, {chain}\n"
        "smtpd_tls_loglevel = 0\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd", default=os.path.join(here, "../build/tools/relaisd/relaisd"))
    p.add_argument("--bench", default=os.path.join(here, "../build/tools/relais-bench/relais-bench"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa")
    p.add_argument("--modes", default=",".join(ALL_MODES))
    args = p.parse_args()
    args.client = "relais-bench"
    args.reuse = False
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in ALL_MODES:
            sys.exit(f"unknown mode {m}; modes: {', '.join(ALL_MODES)}")
    require_postfix_tools()
    if any(m.startswith("postfix") for m in modes) and os.geteuid() != 0:
        sys.exit("the Postfix modes need root (Postfix drops to the postfix user)")
    work = tempfile.mkdtemp(prefix="relais-tls-bench-")
    os.chmod(work, 0o755)
    chain, key = make_certificate(work, args.key_type)
    sink = Sink()
    results = {m: [] for m in modes}
    try:
        for run_index in range(args.runs):
            order = modes if run_index % 2 == 0 else list(reversed(modes))
            for mode in order:
                fn = bench_postfix if mode.startswith("postfix") else bench_relaisd
                elapsed, cpu, _machine = fn(args, mode, sink, chain, key)
                rate, per_message = args.messages / elapsed, cpu * 1e3 / args.messages
                results[mode].append((rate, per_message))
                print(f"run {run_index + 1} {mode:22s}: {rate:8.0f} msgs/s, "
                      f"{per_message:6.3f} relay CPU ms/msg", file=sys.stderr)
    finally:
        sink.close()
        shutil.rmtree(work, ignore_errors=True)
    med = {m: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for m, v in results.items() if v}
    print(f"\n{args.messages} messages of {args.size} bytes, {args.sessions} connections, "
          f"{args.key_type} certificate, client relais-bench, medians of {args.runs} runs\n")
    print("| mode | relayed msgs/s (min-max) | relay CPU ms/msg |")
    print("| --- | ---: | ---: |")
    for m, (rate, cpu) in med.items():
        rates = [r[0] for r in results[m]]
        print(f"| {m} | {rate:.0f} ({min(rates):.0f}-{max(rates):.0f}) | {cpu:.3f} |")
    print()
    for a, b, what in (("relaisd-full", "postfix-full", "msgs/s, Relais / Postfix, full handshakes"),
                       ("relaisd-resumed", "postfix-resumed",
                        "msgs/s, Relais / Postfix, resumed")):
        if a in med and b in med:
            print(f"- {what}: {med[a][0] / med[b][0]:.1f}x")
    for a, b, what in (("relaisd-resumed", "relaisd-plain",
                        "CPU per message, STARTTLS resumed / plaintext"),
                       ("relaisd-full", "relaisd-plain",
                        "CPU per message, STARTTLS full handshake / plaintext"),
                       ("relaisd-reused", "relaisd-plain-reused",
                        "CPU per message, STARTTLS on reused connections / plaintext reused")):
        if a in med and b in med:
            print(f"- {what}: {med[a][1] / med[b][1]:.2f}x")


if __name__ == "__main__":
    main()
