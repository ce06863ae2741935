#!/usr/bin/env python3
"""Crash loop: relais-bench send -> relaisd -> relais-bench sink while relaisd is killed with
SIGKILL at random moments and restarted, KILLS times.

The moments are drawn from a seeded generator: mostly while mail flows (during DATA, group
commit and delivery, which all run at once under load), and one kill in four within 50 ms of a
restart, while the daemon recovers its spool. send runs open-loop at a rate that spreads its
messages over the whole loop, so every kill lands on traffic. After the last restart the daemon
keeps running; send then asks the sink (XSTAT) until every message it saw acknowledged with 250
has arrived, or --verify-timeout passes. Lost (acknowledged, never delivered) must be 0;
duplicates (a kill between a delivery and its record) are expected and reported. With
--tls-connections N, a second send speaks STARTTLS on N connections (about a fifth of the
messages; relaisd has a test certificate), so mail acknowledged over TLS is checked alike.

Usage (long mode, see docs/reliability.md):
    RELAISD=build/tools/relaisd/relaisd RELAIS_BENCH=build/tools/relais-bench/relais-bench \\
        python3 tests/integration/crash_loop.py --kills 200 --messages 40000 --seed 1
Exit status 0 when nothing was lost. Loopback only; processes are stopped by PID.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import RELAIS_BENCH, BenchSink, Daemon, free_port  # noqa: E402
from tls_certs import TestCerts, tls_section  # noqa: E402

FAST_RETRY = "[queue]\nretry_first_ms = 200\nretry_max_ms = 1000\n"


def crash_loop(kills, messages, connections=20, seed=1, log=print, tls_connections=0):
    rng = random.Random(seed)
    certs = TestCerts() if tls_connections else None
    tls_messages = messages // 5 if tls_connections else 0
    messages -= tls_messages
    sink = BenchSink()
    routes = ('[relay]\nnetworks = ["127.0.0.0/8"]\n'  # Loopback senders may relay anywhere.
              f'[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = ["{sink.address}"]\n')
    daemon = Daemon(FAST_RETRY + routes, threads=2)
    work = tempfile.mkdtemp(prefix="relais-crash-loop-")
    report_path = os.path.join(work, "send.json")
    senders = []
    try:
        # Every restart binds the same port, from outside the ephemeral range: one the kernel
        # handed out would be free for any test's port-0 listener while relaisd is down (and
        # relaisd would then refuse to start).
        port = free_port()
        daemon.config_text = (FAST_RETRY + f'[server]\nlisten = ["127.0.0.1:{port}"]\n'
                              'hostname = "relais.test"\n' + routes
                              + (tls_section(certs, "10s") if certs else ""))
        daemon.start()
        # Spread the messages over the loop: about 0.45 s of traffic per kill.
        def start_sender(count, conns, path, run_id, extra=()):
            rate = max(50.0 * count / (messages + tls_messages), count / (kills * 0.45))
            return subprocess.Popen(
                [RELAIS_BENCH, "send", "--target", f"127.0.0.1:{port}", "--connections",
                 str(conns), "--messages", str(count), "--rate", f"{rate:.1f}",
                 "--sink", sink.address, "--verify-timeout", "300s", "--timeout", "60s",
                 "--json", path, "--quiet", "--seed", str(seed), "--run-id", run_id, *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        senders.append(("", start_sender(messages, connections, report_path, f"plain-{seed}"),
                        report_path))
        if tls_messages:
            tls_report = os.path.join(work, "send-tls.json")
            senders.append(("tls:", start_sender(tls_messages, tls_connections, tls_report,
                                                 f"tls-{seed}", ["--tls"]), tls_report))
        during_recovery = 0
        for k in range(kills):
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0, 0.05))  # Still recovering (or just listening).
                during_recovery += 1
            else:
                time.sleep(rng.uniform(0.1, 0.8))
            daemon.kill9()
            daemon.start(wait=rng.random() >= 0.25)
        if daemon.proc.poll() is not None or daemon.port is None:
            daemon.start()
        daemon.port = port
        result = {"kills": kills, "kills_during_recovery": during_recovery, "attempted": 0,
                  "acknowledged": 0, "delivered": 0, "lost": 0, "lost_seqs": [],
                  "duplicated": 0, "received_unacknowledged": 0, "tls_acknowledged": 0}
        for prefix, proc, path in senders:  # Summed; lost sequence numbers say which send.
            _, err = proc.communicate(timeout=900)
            if proc.returncode not in (0, 3):
                raise RuntimeError(f"relais-bench send {prefix}failed ({proc.returncode}): "
                                   f"{err.decode()}")
            with open(path) as f:
                report = json.load(f)
            check = report["check"]
            result["attempted"] += report["summary"]["attempted"]
            for key, name in (("acknowledged", "acknowledged"), ("delivered", "delivered"),
                              ("lost", "lost"), ("duplicated", "duplicates"),
                              ("received_unacknowledged", "received_unacknowledged")):
                result[key] += check[name]
            result["lost_seqs"] += [f"{prefix}{n}" for n in check["lost_seqs"]]
            if prefix:
                result["tls_acknowledged"] += check["acknowledged"]
        log(f"crash loop: {kills} kills ({during_recovery} during recovery), "
            f"{result['attempted']} messages tried, {result['acknowledged']} acknowledged "
            f"({result['tls_acknowledged']} over TLS), "
            f"{result['delivered']} delivered, {result['lost']} lost, "
            f"{result['duplicated']} duplicated, {result['received_unacknowledged']} "
            f"delivered without acknowledgement")
        return result
    finally:
        for _, proc, _ in senders:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        daemon.cleanup()
        sink.cleanup()
        if certs:
            certs.cleanup()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--messages", type=int, default=40000)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tls-connections", type=int, default=0)
    args = p.parse_args()
    result = crash_loop(args.kills, args.messages, args.connections, args.seed,
                        tls_connections=args.tls_connections)
    print(json.dumps(result))
    sys.exit(0 if result["lost"] == 0 else 1)


if __name__ == "__main__":
    main()
