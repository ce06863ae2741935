#!/usr/bin/env python3
"""MX delivery benchmarks (issue 16's targets), on a fake internet inside loopback.

The world: tests/integration/fake_dns.py answers for DOMAINS domains d<i>.bench, each with one
MX host mx<i>.bench whose A record is its own 127.1.x.y address; receivers are Postfix
smtp-sink processes (counting with -c), one per address, all on one port, which relaisd's
[mx] port names. Mail is injected by a pipelining SMTP client of this script (several
processes, one connection each, every message to the next domain in turn): relais-bench send
has one recipient domain per run.

  spread   (a) DOMAINS=100 destinations: the healthy run (every MX answers at once), then the
           hostile run (d0's MX delays every end-of-data reply by 5 s, relais-bench sink
           --delay EOD:5000; d1's MX refuses connections: nothing listens there). Reports the
           throughput of the other 98 destinations in both runs and their ratio (target: at
           least 90%).
  postfix  (b) relaisd against Postfix delivering by MX to the same sinks with the same DNS.
           Postfix gets a private /etc/resolv.conf (nameserver = the fake DNS on port 53 of
           its own 127.x address) by `unshare -m` and a bind mount, its own config and queue
           in a temporary directory (as bench/relay_vs_postfix.py), and a transport map
           "d<i>.bench smtp:d<i>.bench:PORT" (an MX lookup, then that port). Target: relaisd at least
           5x Postfix's msgs/s.
  memory   (c) MESSAGES messages that all stay queued (their MX addresses refuse
           connections; retries an hour apart; no body kept in memory), once over DOMAINS
           destinations and once over 100: relaisd's RssAnon before and after; per message
           from the 100-destination run, per destination from the difference of the two.

Usage: bench/mx_delivery.py spread|postfix|memory [--domains N] [--messages M]
       [--clients C] [--relaisd PATH] [--bench PATH] [--threads T] [--rounds R]
Needs root (Postfix, unshare -m, port 53 on 127.0.0.54). Loopback only; every process it
starts is stopped by its PID.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../tests/integration"))
from fake_dns import FakeDns  # noqa: E402

from benchlib import memory_kib, stop_all, wait_listening  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"
DNS_ADDRESS = "127.0.0.54"  # Port 53 for Postfix (resolv.conf has no port); not 127.0.0.53.


def mx_ip(i):
    """MX host i's address: 127.1.0.1, 127.1.0.2, ... (all of 127/8 is loopback)."""
    return f"127.{1 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


def zone(domains):
    z = {}
    for i in range(domains):
        z[f"d{i}.bench"] = {"MX": [[10, f"mx{i}.bench"]]}
        z[f"mx{i}.bench"] = {"A": [mx_ip(i)]}
    return z


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingSink:
    """smtp-sink -c on ip:port; count() is its running message counter."""

    def __init__(self, ip, port, work):
        self.out_path = os.path.join(work, f"sink-{ip}.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", f"{ip}:{port}", "256"],
                                     stdout=self.out, stderr=subprocess.DEVNULL)
        self.ip, self.port = ip, port

    def count(self):
        size = os.path.getsize(self.out_path)
        with open(self.out_path, "rb") as f:
            f.seek(max(0, size - 200))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0


def wait_up(ip, port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=1) as s:
                s.recv(100)
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {ip}:{port}")


# ---- the injector ----

def _inject(task):
    port, first, count, domains, stride = task
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    f = s.makefile("rb")

    last = [b""]

    def reply():
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("connection closed")
            last[0] = line
            if line[3:4] != b"-":
                return int(line[:3])
    assert reply() == 220
    s.sendall(b"EHLO inject.bench\r\n")
    reply()
    # About 1 KB, in RFC 5322 lines (a single 1000-character line exceeds the 998 limit).
    body = (b"From: b@src.bench\r\nSubject: mx bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 13
            + b".\r\n")

    def envelope(k):
        n = first + k * stride
        return (b"MAIL FROM:<b@src.bench>\r\nRCPT TO:<u%d@d%d.bench>\r\nDATA\r\n"
                % (n, n % domains))
    # RFC 2920: the next envelope rides with the previous message's end of data, so each
    # message costs one round trip.
    s.sendall(envelope(0))
    for k in range(count):
        codes = (reply(), reply(), reply())
        if codes != (250, 250, 354):
            raise RuntimeError(f"injection refused: {codes}")
        s.sendall(body + (envelope(k + 1) if k + 1 < count else b""))
        code = reply()
        if code != 250:
            raise RuntimeError(f"end of data refused: {code} {last[0]!r}")
    s.sendall(b"QUIT\r\n")
    s.close()
    return count


def inject(port, messages, domains, clients):
    """Sends `messages` messages, message n to d<n % domains>.bench, over `clients`
    connections in as many processes; returns the seconds it took."""
    per = [messages // clients + (1 if c < messages % clients else 0) for c in range(clients)]
    tasks = [(port, c, per[c], domains, clients) for c in range(clients) if per[c]]
    start = time.monotonic()
    with multiprocessing.Pool(len(tasks)) as pool:
        sent = sum(pool.map(_inject, tasks))
    assert sent == messages
    return time.monotonic() - start


# ---- relaisd ----

def start_relaisd(args, work, dns, mx_port, extra="", spool_extra=""):
    port, metrics = free_port(), free_port()
    config = os.path.join(work, "relais.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nhostname = "relais.bench"\n'
                f'admin_socket = "{work}/admin.sock"\n'
                f'[spool]\npath = "{work}/spool"\n{spool_extra}'
                f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
                '[limits]\nconnections_per_ip_max = 100000\n'
                '[relay]\nlocal_domains = []\nnetworks = ["127.0.0.0/8"]\n'
                f'[dns]\nservers = ["{dns.address}"]\n'
                f'[mx]\nport = {mx_port}\n'
                f'{extra}\n'
                '[[routes]]\ndomain = "*"\ntype = "mx"\n')
    cmd = [args.relaisd, "--config", config]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log = open(os.path.join(work, "relaisd.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    wait_listening(port, proc)
    return proc, port, metrics


def metric(port, name, labels=""):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if (line.startswith(name + " ") or line.startswith(name + "{")) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def wait_count(count, target, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        n = count()
        if n >= target:
            return time.monotonic()
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the relay exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {n} of {target} delivered in {timeout} s")
        time.sleep(0.1)


# ---- (a) spread ----

def run_spread(args, hostile):
    work = tempfile.mkdtemp(prefix="relais-mx-bench-")
    os.chmod(work, 0o755)
    procs = []
    dns = FakeDns(zone(args.domains), DNS_ADDRESS)
    try:
        mx_port = free_port()
        sinks = {}
        for i in range(args.domains):
            if hostile and i == 1:
                continue  # Refuses connections.
            if hostile and i == 0:
                slow = subprocess.Popen(
                    [args.bench, "sink", "--listen", f"{mx_ip(0)}:{mx_port}", "--delay",
                     "EOD:5000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(slow)
                continue
            sinks[i] = CountingSink(mx_ip(i), mx_port, work)
            procs.append(sinks[i].proc)
        for i, s in sinks.items():
            wait_up(s.ip, mx_port)
        rest = [s for i, s in sinks.items() if i >= 2]  # The 98 compared in both runs.
        proc, port, _ = start_relaisd(args, work, dns, mx_port)
        procs.append(proc)
        per_domain = args.messages // args.domains
        target = per_domain * len(rest)
        start = time.monotonic()
        injected = inject(port, per_domain * args.domains, args.domains, args.clients)
        done = wait_count(lambda: sum(s.count() for s in rest), target, 900, proc)
        elapsed = done - start
        return {"hostile": hostile, "rest_messages": target, "seconds": elapsed,
                "rest_msgs_per_s": target / elapsed, "inject_seconds": injected}
    finally:
        stop_all(procs)
        dns.cleanup()
        shutil.rmtree(work, ignore_errors=True)


# ---- (b) Postfix ----

def postfix_instance(base, port, mx_port, domains):
    etc, queue, data = (os.path.join(base, d) for d in ("etc", "queue", "data"))
    for d in (etc, queue, data):
        os.makedirs(d)
    daemon_dir = subprocess.run(["postconf", "-d", "-h", "daemon_directory"], capture_output=True,
                                text=True, check=True).stdout.strip()
    with open(os.path.join(etc, "transport"), "w") as f:
        # Transport maps allow no regexp substitution: one line per domain. "domain:port"
        # without brackets: an MX lookup, then that port.
        f.writelines(f"d{i}.bench smtp:d{i}.bench:{mx_port}\n" for i in range(domains))
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
relay_domains =
transport_maps = texthash:{etc}/transport
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtp_host_lookup = dns
smtp_dns_support_level = enabled
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


def run_compare(args, relay):
    work = tempfile.mkdtemp(prefix="relais-mx-bench-")
    os.chmod(work, 0o755)
    procs = []
    dns = FakeDns(zone(args.domains), DNS_ADDRESS) if relay == "relaisd" else None
    etc = None
    try:
        mx_port = free_port()
        sinks = [CountingSink(mx_ip(i), mx_port, work) for i in range(args.domains)]
        procs += [s.proc for s in sinks]
        for s in sinks:
            wait_up(s.ip, mx_port)
        if relay == "relaisd":
            proc, port, _ = start_relaisd(args, work, dns, mx_port)
        else:
            port = free_port()
            etc = postfix_instance(work, port, mx_port, args.domains)
            resolv = os.path.join(work, "resolv.conf")
            with open(resolv, "w") as f:
                # Generous: a lookup the loaded fake DNS answers late must not defer a message
                # (Postfix would retry it only minutes later, the run waiting for it).
                f.write(f"nameserver {DNS_ADDRESS}\noptions attempts:3 timeout:5\n")
            # The fake DNS on port 53 (resolv.conf names no port), inside the same namespace
            # as Postfix so it sees the private resolv.conf; both stopped with the shell.
            subprocess.run(["postfix", "-c", etc, "set-permissions"], capture_output=True)
            subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, check=True)
            zone_path = os.path.join(work, "zone.json")
            with open(zone_path, "w") as f:
                json.dump(zone(args.domains), f)
            script = (f"mount --bind {resolv} /etc/resolv.conf && "
                      f"{sys.executable} {os.path.join(HERE, '../tests/integration/fake_dns.py')}"
                      f" --zone {zone_path} --address {DNS_ADDRESS} --port 53 &"
                      f" exec postfix -c {etc} start-fg")
            proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                     script], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            wait_listening(port, proc, timeout=30)
        procs.append(proc)
        target = args.messages
        start = time.monotonic()
        inject(port, target, args.domains, args.clients)
        done = wait_count(lambda: sum(s.count() for s in sinks), target, 1800, proc)
        elapsed = done - start
        return {"relay": relay, "messages": target, "seconds": elapsed,
                "msgs_per_s": target / elapsed}
    finally:
        if relay == "postfix" and etc is not None:
            # Postfix's master makes a session of its own: stopped by its pid file.
            subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True, timeout=60)
        if relay == "postfix" and procs:
            # The namespace's process group (ours: start_new_session): what is left of it,
            # the DNS server we started there.
            try:
                os.killpg(procs[-1].pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                procs[-1].wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(procs[-1].pid, signal.SIGKILL)
                procs[-1].wait()
        stop_all(procs)
        if dns is not None:
            dns.cleanup()
        shutil.rmtree(work, ignore_errors=True)


# ---- (c) memory ----

def run_memory(args, domains):
    """relaisd holding args.messages messages over `domains` destinations, all queued (their MX
    addresses refuse connections, the next retry an hour away, bodies not cached in memory).
    Returns RSS figures (KiB) before the injection and once every message was tried."""
    work = tempfile.mkdtemp(prefix="relais-mx-bench-")
    procs = []
    dns = FakeDns(zone(domains), DNS_ADDRESS)
    try:
        mx_port = free_port()  # Nothing listens there: every destination defers and waits.
        proc, port, metrics_port = start_relaisd(
            args, work, dns, mx_port,
            "[queue]\nretry_first_ms = 3600000\nretry_max_ms = 3600000\n"
            "lifetime_ms = 86400000\n"
            "[shaping]\nidle_forget_ms = 86400000\n",
            spool_extra="body_memory_bytes_max = 0\n")
        procs.append(proc)
        time.sleep(1)
        before = memory_kib(proc.pid)
        inject_s = inject(port, args.messages, domains, args.clients)
        # Every message tried once (refused, or held by its destination's gate) and waiting:
        # the attempts counter stops moving.
        deadline = time.monotonic() + 3600
        last, still = -1.0, 0
        while still < 10:
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon never settled")
            if proc.poll() is not None:
                raise RuntimeError(f"relaisd exited with {proc.returncode}")
            now = metric(metrics_port, "relais_delivery_attempts_total")
            still = still + 1 if now == last else 0
            last = now
            time.sleep(1)
        after = memory_kib(proc.pid)
        # Where the messages are: the queue by state, attempts by outcome, the destinations'
        # gauges; and the log's delivery outcomes (its reply's first words), kept for a look.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            states = [line for line in r.read().decode().splitlines()
                      if line.startswith(("relais_queue_messages", "relais_spool_messages",
                                          "relais_delivery_attempts_total{",
                                          "relais_bounces_total", "relais_destination"))]
        outcomes = {}
        with open(os.path.join(work, "relaisd.log"), errors="replace") as f:
            for line in f:
                m = re.search(r'"outcome":"(\w+)".*?"reply":"([^"]{0,60})', line)
                if m:
                    key = m.group(1) + " " + re.sub(r"[0-9.:]+", "N", m.group(2))
                    outcomes[key] = outcomes.get(key, 0) + 1
        return {"messages": args.messages, "domains": domains, "metrics": states,
                "log_outcomes": outcomes,
                "destinations": metric(metrics_port, "relais_destinations"),
                "queued": metric(metrics_port, "relais_destination_queued"),
                "attempts": last, "inject_seconds": round(inject_s, 1),
                "rss_anon_kib_before": before["RssAnon"], "rss_anon_kib_after": after["RssAnon"],
                "vmrss_kib_after": after["VmRSS"]}
    finally:
        stop_all(procs)
        dns.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def fmt(xs, spec=".0f"):
    return "/".join(format(x, spec) for x in xs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("spread", "postfix", "memory"))
    p.add_argument("--domains", type=int, default=100)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="spread, postfix: A B pairs to run")
    p.add_argument("--relaisd", default=os.path.join(HERE, "../build/tools/relaisd/relaisd"))
    p.add_argument("--bench", default=os.path.join(HERE, "../build/tools/relais-bench/relais-bench"))
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (smtp-sink drops to nobody; Postfix; unshare -m)")
    if args.what == "spread":
        # A B A B ...: healthy and hostile alternate --rounds times; medians and each pair's
        # ratio (the machine's load drifts, a pair run back to back shares it).
        healthy, hostile = [], []
        for _ in range(args.rounds):
            healthy.append(run_spread(args, hostile=False))
            print(json.dumps(healthy[-1]), file=sys.stderr)
            hostile.append(run_spread(args, hostile=True))
            print(json.dumps(hostile[-1]), file=sys.stderr)
        h = [r["rest_msgs_per_s"] for r in healthy]
        b = [r["rest_msgs_per_s"] for r in hostile]
        print(f"\n{args.domains} destinations, {args.messages} messages, {args.rounds} rounds, "
              f"the other {args.domains - 2}: healthy {fmt(h)} msgs/s (median "
              f"{median(h):.0f}), with one slow (5 s) and one refusing {fmt(b)} msgs/s (median "
              f"{median(b):.0f}); per round {fmt([100 * y / x for x, y in zip(h, b)])}%, "
              f"medians {100 * median(b) / median(h):.0f}%")
    elif args.what == "postfix":
        r, pf = [], []
        for _ in range(args.rounds):
            r.append(run_compare(args, "relaisd"))
            print(json.dumps(r[-1]), file=sys.stderr)
            pf.append(run_compare(args, "postfix"))
            print(json.dumps(pf[-1]), file=sys.stderr)
        a = [x["msgs_per_s"] for x in r]
        b = [x["msgs_per_s"] for x in pf]
        print(f"\n{args.messages} messages over {args.domains} MX destinations, {args.rounds} "
              f"rounds: relaisd {fmt(a)} msgs/s (median {median(a):.0f}), Postfix {fmt(b)} "
              f"msgs/s (median {median(b):.0f}); per round "
              f"{fmt([x / y for x, y in zip(a, b)], '.1f')}x, medians {median(a) / median(b):.1f}x")
    else:
        # The same messages over `--domains` destinations and over 100: the difference is
        # what the extra destinations cost; the 100-destination run, per message.
        if args.domains <= 100:
            sys.exit("memory: --domains must be more than 100 (e.g. 100000)")
        many = run_memory(args, args.domains)
        print(json.dumps(many), file=sys.stderr)
        few = run_memory(args, 100)
        print(json.dumps(few), file=sys.stderr)
        per_message = (few["rss_anon_kib_after"] - few["rss_anon_kib_before"]) * 1024 / \
            args.messages
        # Over the destinations relaisd holds (relais_destinations): a message whose MX lookup
        # failed (the fake DNS answering late under load) waits without one.
        per_destination = (many["rss_anon_kib_after"] - few["rss_anon_kib_after"]) * 1024 / \
            (many["destinations"] - few["destinations"])
        print(f"\n{args.messages} queued messages: {per_message:.0f} bytes per message "
              f"(RssAnon, 100 destinations); over {args.domains} domains "
              f"({many['destinations']:.0f} destinations held) "
              f"{per_destination:.0f} bytes more per destination; RssAnon "
              f"{many['rss_anon_kib_after'] / 1024:.0f} MiB in all")


if __name__ == "__main__":
    main()
