#!/usr/bin/env python3
"""End-to-end relay benchmark: smtp-source -> relay -> smtp-sink, relaisd against Postfix.

Both relays get the same workload in the same run: smtp-source sends MESSAGES messages of SIZE
bytes over SESSIONS concurrent sessions (one session per message unless --reuse) to the relay,
which relays everything to one smtp-sink (a smarthost for relaisd, the relayhost for Postfix).
The clock runs from the start of smtp-source until the sink has counted every message. Both
relays write each message to disk and fsync it before they answer 250 (Postfix's queue file,
relaisd's group-committed spool).

Postfix runs as a private instance: its own config and queue directories under a temporary
directory, listening on 127.0.0.1 only, master in the foreground as our child (stopped by PID),
delivery concurrency to the relayhost 20 (its default), the same as relaisd's
connections_per_destination_max. CPU seconds, over the same interval, are the relay's own (its
process tree from /proc, children it reaped included) and the whole machine's (source, relay and
sink together).

Usage: bench/relay_vs_postfix.py [--runs 3] [--messages 20000] [--sessions 50] [--size 2048]
       [--reuse] [--relaisd PATH] [--threads N] [--client smtp-source|relais-bench [--bench PATH]]
--client relais-bench drives the relays with relais-bench send instead of smtp-source (--bind
none: every connection from 127.0.0.1, as smtp-source's are).
Needs root for Postfix (it drops to the postfix user). Loopback only.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import (Sink, free_port, machine_cpu_seconds, process_tree_cpu_seconds, relaisd,
                      require_postfix_tools, smtp_source_command, stop, wait_listening)


def client_command(args, relay_port):
    if getattr(args, "client_command", None):
        return args.client_command(relay_port)  # A caller's own client (bench/tls_relay.py).
    if args.client == "smtp-source":
        return smtp_source_command(args, relay_port, args.reuse)
    cmd = [args.bench, "send", "--target", f"127.0.0.1:{relay_port}", "--connections",
           str(args.sessions), "--messages", str(args.messages), "--size", str(args.size),
           "--bind", "none", "--quiet"]
    if not args.reuse:
        cmd += ["--messages-per-connection", "1"]
    return cmd


def measure(args, relay_port, sink, relay_proc):
    """Runs smtp-source against the relay; returns (seconds until the sink has everything, CPU
    seconds of the relay's process tree, CPU seconds of the whole machine), over that time."""
    base = sink.count()
    cpu0 = machine_cpu_seconds()
    relay_cpu0 = process_tree_cpu_seconds(relay_proc.pid)
    start = time.monotonic()
    source = subprocess.Popen(client_command(args, relay_port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = start + 900
    while sink.count() - base < args.messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sink.count() - base} of {args.messages} relayed")
        if relay_proc.poll() is not None:
            raise RuntimeError(f"the relay exited with {relay_proc.returncode}")
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    machine = machine_cpu_seconds() - cpu0
    relay = process_tree_cpu_seconds(relay_proc.pid) - relay_cpu0
    if source.wait(timeout=60) != 0:
        raise RuntimeError(f"{args.client} failed: {source.stderr.read().decode().strip()}")
    return elapsed, relay, machine


def bench_relaisd(args, sink, extra=""):
    """`extra`: TOML tables added to relaisd's config."""
    with relaisd(args.relaisd, args.threads, f"127.0.0.1:{sink.port}", extra=extra) as (
            proc, port, _):
        elapsed, relay, machine = measure(args, port, sink, proc)
        stop(proc)
        return elapsed, relay, machine


def postfix_instance(base, port, sink_port):
    etc, queue, data = (os.path.join(base, d) for d in ("etc", "queue", "data"))
    for d in (etc, queue, data):
        os.makedirs(d)
    daemon_dir = subprocess.run(["postconf", "-d", "-h", "daemon_directory"], capture_output=True,
                                text=True, check=True).stdout.strip()
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
daemon_directory = {daemon_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtp_host_lookup = native
default_process_limit = 200
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {base}
maillog_file = {base}/maillog
""")
    master = []
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            fields = line.split()
            if not fields or line[0] in "# \t":
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            if len(fields) >= 8 and fields[1] in ("inet", "unix", "unix-dgram", "fifo", "pass"):
                fields[4] = "n"  # No chroot: the queue is not under /var/spool/postfix.
            master.append(" ".join(fields))
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write("\n".join(master) + "\n")
    return etc


def bench_postfix(args, sink, main_cf_extra=""):
    """`main_cf_extra`: lines added to Postfix's main.cf."""
    base = tempfile.mkdtemp(prefix="relais-bench-postfix-")
    os.chmod(base, 0o755)
    port = free_port()
    etc = postfix_instance(base, port, sink.port)
    if main_cf_extra:
        with open(os.path.join(etc, "main.cf"), "a") as f:
            f.write(main_cf_extra)
    subprocess.run(["postfix", "-c", etc, "set-permissions"], capture_output=True)
    subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, check=True)
    proc = subprocess.Popen(["postfix", "-c", etc, "start-fg"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, timeout=30)
        elapsed, relay, machine = measure(args, port, sink, proc)
        stop(proc)
        return elapsed, relay, machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--relaisd", default=os.path.join(here, "../build/tools/relaisd/relaisd"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="smtp-source -d: reuse sessions")
    p.add_argument("--only", choices=("relaisd", "postfix"))
    p.add_argument("--client", choices=("smtp-source", "relais-bench"), default="smtp-source")
    p.add_argument("--bench", default=os.path.join(here, "../build/tools/relais-bench/relais-bench"))
    args = p.parse_args()
    require_postfix_tools()
    if os.geteuid() != 0:
        sys.exit("the Postfix instance needs root (it drops to the postfix user)")
    sink = Sink()
    results = {"relaisd": [], "postfix": []}
    try:
        for run_index in range(args.runs):
            for name, fn in (("relaisd", bench_relaisd), ("postfix", bench_postfix)):
                if args.only and name != args.only:
                    continue
                elapsed, cpu, machine = fn(args, sink)
                results[name].append((args.messages / elapsed, cpu, machine))
                print(f"run {run_index + 1} {name:8s}: {args.messages / elapsed:8.0f} msgs/s, "
                      f"relay CPU {cpu:6.2f} s, machine CPU {machine:6.2f} s", file=sys.stderr)
    finally:
        sink.close()
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3))
           for k, v in results.items() if v}
    mode = "one session per message" if not args.reuse else "sessions reused"
    print(f"\n{args.messages} messages of {args.size} bytes, {args.sessions} sessions, {mode}, "
          f"client {args.client}, median of {args.runs}\n")
    print("| relay | relayed msgs/s | relay CPU s | machine CPU s | relay CPU ms/msg |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (rate, cpu, machine) in med.items():
        print(f"| {name} | {rate:.0f} | {cpu:.2f} | {machine:.2f} | "
              f"{1000 * cpu / args.messages:.3f} |")
    if len(med) == 2:
        print(f"\nrelaisd / postfix relayed msgs/s: {med['relaisd'][0] / med['postfix'][0]:.1f}x")


if __name__ == "__main__":
    main()
