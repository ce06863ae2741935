"""MX delivery on a fake internet inside loopback (issue 16, item 7).

Every test starts its own world: fake_dns.py (an authoritative server on 127.0.0.53 and a free
port, the daemon's only [dns] server), receiving servers on their own 127.0.1.x addresses (or
::1), all on one port that [mx] port names, and a relaisd whose catch-all route is `mx` (or a
relayed domain with the implicit mx route). Receivers are Postfix's smtp-sink (its dump files
name the client address and EHLO, so a test sees which source the daemon used),
`relais-bench sink` with scripted replies (--reply), and, where a test needs one exact reply
text, a small scripted server of this file. Every process is stopped by its PID; every wait
polls with a deadline.

The rules (docs/mx-delivery.md): preference order, random order among equal preferences, the
implicit MX, null MX (556 5.1.10), NXDOMAIN (550 5.1.2), SERVFAIL and silence (451 4.4.3, the
queue keeps the message), MX to self (550 5.4.6), failover on a refused connection and on a
421 greeting, IPv6 on ::1, a destination answering 421 backs off and recovers, a suspended
destination holds while another flows, a source pool's address seen by the receiver, the
bounce class in the delivery_attempt line and the DSN, `relaisctl queue summary --json`, and a
smarthost named by a host name resolved through the same DNS.
"""

import json
import os
import shutil
import signal
import smtplib
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from fake_dns import FakeDns
from harness import RELAIS_BENCH, RELAISCTL, SMTP_SINK, Daemon, free_port, wait_for

DNS_ADDRESS = "127.0.0.53"


def hostport(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def accepts(ip, port):
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect((ip, port))
            s.recv(100)  # The greeting: a whole (if empty) session.
        return True
    except OSError:
        return False


class PostfixSink:
    """smtp-sink on ip:port, dumping every message with its X-Client-Addr / X-Helo-Args."""

    def __init__(self, ip, port, args=()):
        self.ip, self.port = ip, port
        self.dir = tempfile.mkdtemp(prefix="relais-mx-sink-")
        os.chmod(self.dir, 0o777)  # smtp-sink writes as nobody.
        cmd = [SMTP_SINK]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += ["-d", os.path.join(self.dir, "msg."), *args, hostport(ip, port), "100"]
        self.log = open(os.path.join(self.dir, "sink.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        wait_for(self._up, 10, f"smtp-sink on {hostport(ip, port)}")

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"smtp-sink exited with {self.proc.returncode}")
        return accepts(self.ip, self.port)

    def messages(self):
        """[{"client": addr, "helo": name, "rcpts": [...], "text": ...}] dumped so far."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            if not name.startswith("msg."):
                continue
            with open(os.path.join(self.dir, name), "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if not text:
                continue
            fields = {"client": None, "helo": None, "rcpts": [], "text": text}
            for line in text.splitlines():
                if line.startswith("X-Client-Addr: "):
                    fields["client"] = line.split(": ", 1)[1].strip()
                elif line.startswith("X-Helo-Args: "):
                    fields["helo"] = line.split(": ", 1)[1].split()[0]
                elif line.startswith("X-Rcpt-Args: "):
                    fields["rcpts"].append(line.split(": ", 1)[1].strip())
                elif not line.strip():
                    break
            out.append(fields)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if not self.log.closed:
            self.log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class BenchSinkAt:
    """`relais-bench sink` on ip:port with scripted replies (--reply STEP:CODE:P ...)."""

    def __init__(self, ip, port, *args):
        self.dir = tempfile.mkdtemp(prefix="relais-mx-bench-sink-")
        self.json_path = os.path.join(self.dir, "sink.json")
        self.out_path = os.path.join(self.dir, "sink.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [RELAIS_BENCH, "sink", "--listen", hostport(ip, port), "--json", self.json_path,
             *args], stdout=self.out, stderr=subprocess.STDOUT)
        wait_for(self._up, 10, f"relais-bench sink on {hostport(ip, port)}")

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"sink exited with {self.proc.returncode}: {self.text()}")
        return "listening on" in self.text()

    def text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """Stops the sink and returns its summary (messages, connections, ...)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        if not self.out.closed:
            self.out.close()
        with open(self.json_path) as f:
            return json.load(f)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.out.closed:
            self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ScriptedMx:
    """A receiving server on ip:port answering `replies[VERB]` (a whole reply line) where
    given and success otherwise; records each connection's peer and the messages taken."""

    def __init__(self, ip, port, replies=None):
        self.replies = {k.upper(): v for k, v in (replies or {}).items()}
        self.lock = threading.Lock()
        self.peers = []
        self.messages = []
        mx = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with mx.lock:
                    mx.peers.append(self.client_address[0])
                mx.serve(self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in ip else socket.AF_INET

        self.server = Server((ip, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, rfile, wfile):
        def reply(verb, default):
            wfile.write((self.replies.get(verb, default) + "\r\n").encode())
            wfile.flush()
            return self.replies.get(verb, default)[:1] == "2" or verb == "DATA"
        try:
            if not reply("CONNECT", "220 scripted.test ESMTP"):
                return
            rcpts = []
            while True:
                line = rfile.readline(4096)
                if not line:
                    return
                verb = line[:4].decode("ascii", "replace").upper()
                if verb == "EHLO":
                    wfile.write(b"250-scripted.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                b"250 ENHANCEDSTATUSCODES\r\n")
                    wfile.flush()
                elif verb == "MAIL":
                    rcpts = []
                    reply("MAIL", "250 2.1.0 ok")
                elif verb == "RCPT":
                    if reply("RCPT", "250 2.1.5 ok"):
                        rcpts.append(line.decode("utf-8", "replace").strip())
                elif verb == "DATA":
                    if not rcpts:
                        wfile.write(b"554 5.5.1 no valid recipients\r\n")
                        wfile.flush()
                        continue
                    wfile.write(b"354 go\r\n")
                    wfile.flush()
                    while True:
                        chunk = rfile.readline(1 << 20)
                        if not chunk or chunk == b".\r\n":
                            break
                    if reply("EOD", "250 2.0.0 queued"):
                        with self.lock:
                            self.messages.append(rcpts)
                elif verb == "QUIT":
                    wfile.write(b"221 2.0.0 bye\r\n")
                    wfile.flush()
                    return
                else:
                    wfile.write(b"250 2.0.0 ok\r\n")
                    wfile.flush()
        except OSError:
            pass

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class MxDeliveryTest(unittest.TestCase):
    def setUp(self):
        self.mx_port = free_port()

    # ---- the world ----

    def dns(self, zone):
        d = FakeDns(zone, DNS_ADDRESS)
        self.addCleanup(d.cleanup)
        return d

    def sink(self, ip, args=()):
        s = PostfixSink(ip, self.mx_port, args)
        self.addCleanup(s.cleanup)
        return s

    def bench_sink(self, ip, *args):
        s = BenchSinkAt(ip, self.mx_port, *args)
        self.addCleanup(s.cleanup)
        return s

    def scripted(self, ip, replies):
        s = ScriptedMx(ip, self.mx_port, replies)
        self.addCleanup(s.stop)
        return s

    def daemon(self, dns, extra="", routes=None, relay_domains=None):
        """relaisd relaying for 127.0.0.0/8, local.test into Maildir (the DSNs), everything
        else by `routes` (default: a catch-all mx route)."""
        d = Daemon("")
        self.addCleanup(d.cleanup)
        self.local_root = os.path.join(d.workdir, "mailroot")
        self.admin_socket = os.path.join(d.workdir, "admin.sock")
        if routes is None:
            routes = '[[routes]]\ndomain = "*"\ntype = "mx"\n'
        relay = ('[relay]\nlocal_domains = ["local.test"]\n'
                 + (f'relay_domains = {json.dumps(relay_domains)}\n' if relay_domains
                    else 'networks = ["127.0.0.0/8"]\n'))
        d.config_text = (
            '[server]\nlisten = ["127.0.0.1:0"]\nhostname = "relais.test"\n'
            f'admin_socket = "{self.admin_socket}"\n'
            + relay +
            f'[dns]\nservers = ["{dns.address}"]\ntimeout_ms = 300\ntries = 1\n'
            '[queue]\nretry_first_ms = 500\nretry_max_ms = 1000\n'
            + (f'[mx]\nport = {self.mx_port}\n' if "[mx]" not in extra else "")
            + extra.replace("[mx]\n", f"[mx]\nport = {self.mx_port}\n") +
            f'[[routes]]\ndomain = "local.test"\ntype = "maildir"\npath = "{self.local_root}"\n'
            + routes)
        return d.start()

    def send(self, d, recipients, sender="a@local.test", subject="mx test"):
        if isinstance(recipients, str):
            recipients = [recipients]
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as s:
            s.sendmail(sender, recipients,
                       f"From: {sender}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())

    def attempts(self, d, outcome=None, recipient=None):
        return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                and (outcome is None or e.get("outcome") == outcome)
                and (recipient is None or e.get("recipient") == recipient)]

    def wait_attempt(self, d, recipient, outcome, timeout=20):
        try:
            return wait_for(lambda: self.attempts(d, outcome, recipient), timeout,
                            f"a {outcome} delivery_attempt for {recipient}")[-1]
        except AssertionError as e:
            raise AssertionError(f"{e}; the last attempts: {self.attempts(d)[-5:]}") from None

    def dsns(self, user="a"):
        inbox = os.path.join(self.local_root, "local.test", user, "new")
        if not os.path.isdir(inbox):
            return []
        out = []
        for name in sorted(os.listdir(inbox)):
            with open(os.path.join(inbox, name), "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
        return out

    def pending(self, d):
        """Recipients still waiting in the spool."""
        return sorted(r["address"] for m in d.spool_messages() for r in m["recipients"]
                      if r.get("state") == "pending")

    def ctl(self, *args, check=True):
        out = subprocess.run([RELAISCTL, "--socket", self.admin_socket, *args],
                             capture_output=True, text=True, timeout=30)
        if check:
            self.assertEqual(out.returncode, 0, f"relaisctl {' '.join(args)}: {out.stderr}")
        return out

    def metric(self, d, name, labels=""):
        """Sum of `name` over the series whose labels contain `labels`; None when absent."""
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                    timeout=10) as r:
            total = None
            for line in r.read().decode().splitlines():
                if (line.startswith(name + " ") or line.startswith(name + "{")) and \
                        labels in line:
                    total = (total or 0) + float(line.rsplit(" ", 1)[1])
        return total

    # ---- RFC 5321 5.1 ----

    def test_preference_order(self):
        dns = self.dns({"pref.test": {"MX": [[20, "mx2.pref.test"], [10, "mx1.pref.test"]]},
                        "mx1.pref.test": {"A": ["127.0.1.1"]},
                        "mx2.pref.test": {"A": ["127.0.1.2"]}})
        best, second = self.sink("127.0.1.1"), self.sink("127.0.1.2")
        d = self.daemon(dns)
        for i in range(3):
            self.send(d, f"u{i}@pref.test")
        wait_for(lambda: len(best.messages()) == 3, 20, "3 messages at the preference-10 MX")
        self.assertEqual(second.messages(), [])
        for e in self.attempts(d, "delivered"):
            self.assertEqual(e["route"], "mx", e)
            self.assertIn("127.0.1.1", e["next_hop"], e)

    def test_equal_preferences_share_the_load(self):
        # 20 domains, each with two MX hosts of equal preference: every resolution orders them
        # at random, and one message per connection leaves no connection reuse to hide it.
        zone = {"mxa.spread.test": {"A": ["127.0.1.1"]}, "mxb.spread.test": {"A": ["127.0.1.2"]}}
        for i in range(20):
            zone[f"d{i}.spread.test"] = {"MX": [[10, "mxa.spread.test"],
                                                [10, "mxb.spread.test"]]}
        dns = self.dns(zone)
        a, b = self.sink("127.0.1.1"), self.sink("127.0.1.2")
        d = self.daemon(dns, "[shaping]\nmessages_per_connection_max = 1\n")
        for i in range(20):
            self.send(d, f"u@d{i}.spread.test")
        wait_for(lambda: len(a.messages()) + len(b.messages()) == 20, 30,
                 "20 messages at the two MX hosts")
        print(f"\nequal preference: {len(a.messages())} / {len(b.messages())}")
        self.assertGreater(len(a.messages()), 0)
        self.assertGreater(len(b.messages()), 0)

    def test_implicit_mx(self):
        dns = self.dns({"bare.test": {"A": ["127.0.1.3"]}})
        s = self.sink("127.0.1.3")
        d = self.daemon(dns)
        self.send(d, "u@bare.test")
        wait_for(lambda: s.messages(), 20, "the message at the domain's own address")
        self.assertEqual(s.messages()[0]["rcpts"], ["<u@bare.test>"])

    def test_relayed_domain_without_a_route_goes_by_mx(self):
        # No catch-all route: the router's implicit {domain = "*", type = "mx"}.
        dns = self.dns({"relayed.test": {"MX": [[10, "in.relayed.test"]]},
                        "in.relayed.test": {"A": ["127.0.1.4"]}})
        s = self.sink("127.0.1.4")
        d = self.daemon(dns, routes="", relay_domains=["relayed.test"])
        self.send(d, "u@relayed.test", sender="someone@elsewhere.test")
        wait_for(lambda: s.messages(), 20, "the relayed message at the domain's MX")
        self.assertEqual(self.wait_attempt(d, "u@relayed.test", "delivered")["route"], "mx")

    # ---- failures decided by DNS ----

    def test_null_mx_fails_at_once_with_556(self):
        dns = self.dns({"null.test": {"MX": [[0, "."]], "A": ["127.0.1.5"]}})
        s = self.sink("127.0.1.5")  # The domain's A record must not be used (RFC 7505 3).
        d = self.daemon(dns)
        self.send(d, "u@null.test")
        e = self.wait_attempt(d, "u@null.test", "failed")
        self.assertIn("556 5.1.10", e["reply"], e)
        self.assertIn("bounce_class", e)
        dsn = wait_for(lambda: self.dsns(), 20, "the DSN to the sender")[0]
        self.assertIn("5.1.10", dsn)
        self.assertIn("u@null.test", dsn)
        self.assertEqual(s.messages(), [])
        self.assertEqual(len(self.attempts(d, recipient="u@null.test")), 1, "no retry")

    def test_nxdomain_fails_with_5_1_2(self):
        dns = self.dns({"other.test": {"A": ["127.0.1.9"]}})  # nxdomain.test is not there.
        d = self.daemon(dns)
        self.send(d, "u@nxdomain.test")
        e = self.wait_attempt(d, "u@nxdomain.test", "failed")
        self.assertIn("5.1.2", e["reply"], e)
        self.assertTrue(e["reply"].startswith("550"), e)
        dsn = wait_for(lambda: self.dsns(), 20, "the DSN to the sender")[0]
        self.assertIn("5.1.2", dsn)

    def check_temporary_dns_failure(self, word):
        domain = f"{word.lower()}.test"
        zone = {domain: word, f"mx.{domain}": {"A": ["127.0.1.6"]}}
        dns = self.dns(zone)
        s = self.sink("127.0.1.6")
        d = self.daemon(dns)
        self.send(d, f"u@{domain}")
        e = self.wait_attempt(d, f"u@{domain}", "deferred")
        self.assertIn("4.4.3", e["reply"], e)
        self.assertTrue(e["reply"].startswith("4"), e)
        # The queue keeps it, and no report goes out for a deferral.
        self.assertEqual(self.pending(d), [f"u@{domain}"])
        self.assertEqual(self.dsns(), [])
        # The zone mends: the next retry delivers.
        dns.set_zone({domain: {"MX": [[10, f"mx.{domain}"]]}, f"mx.{domain}": {"A": ["127.0.1.6"]}})
        wait_for(lambda: s.messages(), 30, "the message once DNS answers")
        self.wait_attempt(d, f"u@{domain}", "delivered")

    def test_servfail_defers_with_4_4_3(self):
        self.check_temporary_dns_failure("SERVFAIL")

    def test_dns_timeout_defers_with_4_4_3(self):
        self.check_temporary_dns_failure("TIMEOUT")

    def test_mx_pointing_at_this_relay_fails_with_5_4_6(self):
        dns = self.dns({"loopname.test": {"MX": [[10, "relais.test"]]},  # [server] hostname
                        "relais.test": {"A": ["127.0.1.7"]},
                        "loopaddr.test": {"MX": [[10, "me.loopaddr.test"]]},
                        "me.loopaddr.test": {"A": ["127.0.0.1"]},  # a listen address
                        # This relay is the backup: the better MX is used.
                        "backup.test": {"MX": [[10, "primary.backup.test"], [20, "relais.test"]]},
                        "primary.backup.test": {"A": ["127.0.1.8"]}})
        primary = self.sink("127.0.1.8")
        d = self.daemon(dns)
        for rcpt in ("u@loopname.test", "u@loopaddr.test", "u@backup.test"):
            self.send(d, rcpt)
        for rcpt in ("u@loopname.test", "u@loopaddr.test"):
            e = self.wait_attempt(d, rcpt, "failed")
            self.assertIn("5.4.6", e["reply"], e)
        wait_for(lambda: primary.messages(), 20, "backup.test's mail at its primary MX")

    # ---- failover inside one attempt ----

    def test_failover_on_connection_refused(self):
        dns = self.dns({"fo.test": {"MX": [[10, "dead.fo.test"], [20, "live.fo.test"]]},
                        "dead.fo.test": {"A": ["127.0.1.10"]},  # nobody listens there
                        "live.fo.test": {"A": ["127.0.1.11"]}})
        live = self.sink("127.0.1.11")
        d = self.daemon(dns)
        self.send(d, "u@fo.test")
        wait_for(lambda: live.messages(), 20, "the message at the second MX")
        e = self.wait_attempt(d, "u@fo.test", "delivered")
        self.assertIn("127.0.1.11", e["next_hop"], e)
        self.assertEqual(self.attempts(d, "deferred"), [], "failover is inside one attempt")

    def test_failover_on_421_greeting(self):
        dns = self.dns({"fo421.test": {"MX": [[10, "busy.fo421.test"], [20, "ok.fo421.test"]]},
                        "busy.fo421.test": {"A": ["127.0.1.12"]},
                        "ok.fo421.test": {"A": ["127.0.1.13"]}})
        busy = self.bench_sink("127.0.1.12", "--reply", "CONNECT:421:1")
        ok = self.sink("127.0.1.13")
        d = self.daemon(dns)
        self.send(d, "u@fo421.test")
        wait_for(lambda: ok.messages(), 20, "the message at the second MX")
        self.assertEqual(self.attempts(d, "deferred"), [], "failover is inside one attempt")
        summary = busy.stop()
        self.assertGreaterEqual(summary["connections"], 1, "the first MX was tried")
        self.assertEqual(summary["messages"], 0)

    def test_ipv6_on_loopback(self):
        dns = self.dns({"v6.test": {"MX": [[10, "mx.v6.test"]]},
                        "mx.v6.test": {"A": ["127.0.1.14"], "AAAA": ["::1"]}})
        v4 = self.sink("127.0.1.14")
        v6 = self.bench_sink("::1")
        d = self.daemon(dns, '[mx]\nip_family = "ipv6"\n')
        self.send(d, "u@v6.test")
        e = self.wait_attempt(d, "u@v6.test", "delivered")
        self.assertIn("::1", e["next_hop"], e)
        self.assertEqual(v6.stop()["messages"], 1)
        self.assertEqual(v4.messages(), [])

    # ---- destinations and shaping ----

    def test_destination_answering_421_backs_off_and_recovers(self):
        dns = self.dns({"slow.test": {"MX": [[10, "mx.slow.test"]]},
                        "mx.slow.test": {"A": ["127.0.1.15"]}})
        busy = self.bench_sink("127.0.1.15", "--reply", "MAIL:421:1")
        d = self.daemon(dns, "[shaping]\nconnections_max = 4\nbackoff_ms = 1000\n"
                             "recover_after = 2\n")
        for i in range(6):
            self.send(d, f"u{i}@slow.test")
        wait_for(lambda: (self.metric(d, "relais_destination_backoffs_total") or 0) >= 1, 20,
                 "relais_destination_backoffs_total to count the 421s")
        shown = json.loads(self.ctl("dest", "show", "mx.slow.test", "--json").stdout)
        self.assertEqual(shown["state"], "backing-off", shown)
        self.assertGreaterEqual(shown["backoffs"], 1, shown)
        # Summed over the shards that know it, as connections_max is.
        self.assertLess(shown["connections_allowed"], shown["connections_max"], shown)
        self.assertIn("421", shown["last_reply"], shown)
        self.assertEqual(len(self.pending(d)), 6, "deferred, not lost")
        busy.stop()
        healthy = self.sink("127.0.1.15")
        wait_for(lambda: len(healthy.messages()) == 6, 60, "the 6 messages once it answers")
        # Deliveries in a row give the connections back (recover_after each): active again.
        # Each shard recovers on its own deliveries (recover_after in a row per step, from
        # one connection back to connections_max): enough messages for every shard.
        for i in range(30):
            self.send(d, f"v{i}@slow.test")
        wait_for(lambda: len(healthy.messages()) == 36, 60, "30 more messages")

        def state():
            return json.loads(self.ctl("dest", "show", "mx.slow.test", "--json").stdout)
        wait_for(lambda: state()["state"] == "active", 30,
                 f"the destination to recover: {state()}")
        self.assertEqual(state()["connections_allowed"], state()["connections_max"])
        wait_for(lambda: (self.metric(d, "relais_destinations", 'state="active"') or 0) >= 1,
                 15, "relais_destinations{state=\"active\"} to count it")

    def test_suspended_destination_holds_while_another_flows(self):
        dns = self.dns({"held.test": {"MX": [[10, "mx.held.test"]]},
                        "mx.held.test": {"A": ["127.0.1.16"]},
                        "flows.test": {"MX": [[10, "mx.flows.test"]]},
                        "mx.flows.test": {"A": ["127.0.1.17"]}})
        held, flows = self.sink("127.0.1.16"), self.sink("127.0.1.17")
        d = self.daemon(dns)
        self.send(d, "first@held.test")  # Makes the destination known.
        wait_for(lambda: held.messages(), 20, "the first message at held.test")
        self.ctl("dest", "suspend", "mx.held.test", "--for", "10m", "--reason", "test")
        ls = {e["name"]: e for e in json.loads(self.ctl("dest", "ls", "--json").stdout)}
        self.assertEqual(ls["mx.held.test"]["state"], "suspended", ls)
        self.assertIn("test", ls["mx.held.test"]["reason"])
        for i in range(3):
            self.send(d, f"h{i}@held.test")
            self.send(d, f"f{i}@flows.test")
        wait_for(lambda: len(flows.messages()) == 3, 20, "the other destination's mail")
        time.sleep(1)  # Give the held mail every chance to leak.
        self.assertEqual(len(held.messages()), 1, "nothing delivered while suspended")
        self.assertEqual(self.pending(d), ["h0@held.test", "h1@held.test", "h2@held.test"])
        self.ctl("dest", "resume", "mx.held.test")
        wait_for(lambda: len(held.messages()) == 4, 20, "the held mail after resume")
        shown = json.loads(self.ctl("dest", "show", "mx.held.test", "--json").stdout)
        self.assertEqual(shown["state"], "active", shown)

    def test_source_pool_address_is_what_the_receiver_sees(self):
        dns = self.dns({"src.test": {"MX": [[10, "mx.src.test"]]},
                        "mx.src.test": {"A": ["127.0.1.18"]}})
        s = self.sink("127.0.1.18")
        d = self.daemon(
            dns, '[[source]]\nname = "s2"\naddress = "127.0.0.2"\nehlo = "out2.relais.test"\n'
                 '[[source_pool]]\nname = "out"\nsources = ["s2"]\n',
            routes='[[routes]]\ndomain = "*"\ntype = "mx"\nsource_pool = "out"\n')
        self.send(d, "u@src.test")
        m = wait_for(lambda: s.messages(), 20, "the message at the MX")[0]
        self.assertEqual(m["client"], "127.0.0.2", m["text"][:400])
        self.assertEqual(m["helo"], "out2.relais.test", m["text"][:400])

    # ---- bounce classes, queue views, smarthost names ----

    def test_bounce_class_in_log_line_and_dsn(self):
        dns = self.dns({"bc.test": {"MX": [[10, "mx.bc.test"]]},
                        "mx.bc.test": {"A": ["127.0.1.19"]}})
        self.scripted("127.0.1.19",
                      {"RCPT": "550 5.1.1 <nobody@bc.test>: Recipient address rejected: "
                               "User unknown in local recipient table"})
        d = self.daemon(dns)
        self.send(d, "nobody@bc.test")
        e = self.wait_attempt(d, "nobody@bc.test", "failed")
        self.assertEqual(e.get("bounce_class"), "bad-mailbox", e)
        dsn = wait_for(lambda: self.dsns(), 20, "the DSN to the sender")[0]
        self.assertIn("bad-mailbox", dsn)
        self.assertGreaterEqual(
            self.metric(d, "relais_delivery_bounces_total", 'class="bad-mailbox"') or 0, 1)

    def test_queue_summary_json(self):
        dns = self.dns({"qa.test": {"MX": [[10, "mx.qa.test"]]},
                        "mx.qa.test": {"A": ["127.0.1.20"]},  # nobody listens: deferred
                        "qb.test": {"MX": [[10, "mx.qb.test"]]},
                        "mx.qb.test": {"A": ["127.0.1.21"]}})
        d = self.daemon(dns)
        for i in range(3):
            self.send(d, f"a{i}@qa.test")
        for i in range(2):
            self.send(d, f"b{i}@qb.test")
        wait_for(lambda: len(self.attempts(d, "deferred")) >= 5, 30, "5 deferrals")
        out = self.ctl("queue", "summary", "--json").stdout
        print(f"\nqueue summary --json: {out[:600]}")
        summary = json.loads(out)
        bounds = summary["bucket_bounds_minutes"]
        self.assertEqual(bounds, sorted(bounds))
        self.assertEqual(summary["total"]["name"], "TOTAL")
        self.assertEqual(summary["total"]["total"], 5, out)
        self.assertEqual(len(summary["total"]["buckets"]), len(bounds) + 1)
        self.assertEqual(summary["total"]["buckets"][0], 5, "all younger than the first bound")
        rows = {r["name"]: r for r in summary["rows"]}
        self.assertEqual(rows["mx.qa.test"]["total"], 3, out)
        self.assertEqual(rows["mx.qb.test"]["total"], 2, out)
        self.assertIn("mx.qa.test", rows["mx.qa.test"]["key"])
        self.assertEqual([r["name"] for r in summary["rows"]][:2], ["mx.qa.test", "mx.qb.test"],
                         "largest first")
        # The table form answers too.
        self.assertIn("mx.qa.test", self.ctl("queue", "summary").stdout)

    def test_smarthost_named_by_host_name(self):
        # Resolved on the shard through the same DNS: no start-time getaddrinfo.
        dns = self.dns({"smart.relay.test": {"A": ["127.0.1.22"]}})
        s = self.sink("127.0.1.22")
        d = self.daemon(dns, routes=(
            '[[routes]]\ndomain = "*"\ntype = "smarthost"\n'
            f'hosts = ["smart.relay.test:{self.mx_port}"]\n'))
        self.send(d, "u@anywhere.test")
        wait_for(lambda: s.messages(), 20, "the message at the smarthost")
        e = self.wait_attempt(d, "u@anywhere.test", "delivered")
        self.assertEqual(e["route"], "smarthost")
        self.assertTrue(any(q[0] == "smart.relay.test" for q in dns.queries()), dns.queries())


if __name__ == "__main__":
    unittest.main()
