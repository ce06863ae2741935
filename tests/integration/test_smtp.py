"""SMTP ingress against a real relaisd on loopback: python's smtplib, swaks, raw sockets."""

import shutil
import smtplib
import subprocess
import time
import unittest
import urllib.request

import os
import socket

from harness import RELAISD, Daemon, RawClient, wait_for


class IngressTest(unittest.TestCase):
    def start(self, config="", threads=2):
        daemon = Daemon(config, threads=threads).start()
        self.addCleanup(daemon.cleanup)
        return daemon

    def test_smtplib_messages_are_stored_then_delivered(self):
        d = self.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            code, caps = s.ehlo("client.test")
            self.assertEqual(code, 250)
            for ext in (b"PIPELINING", b"SIZE", b"8BITMIME", b"SMTPUTF8", b"ENHANCEDSTATUSCODES",
                        b"CHUNKING"):
                self.assertIn(ext, caps)
            s.sendmail("alice@sender.test", ["bob@example.com", "carol@example.com"],
                       b"Subject: one\r\nX-Test-Id: first\r\n\r\n.leading dot\r\nbody\r\n")
            s.sendmail("", ["postmaster@example.com"], b"Subject: bounce-like\r\n\r\nx\r\n")
            s.sendmail("j\u00f6rg@sender.test", ["\u00fc@example.com"],
                       "Subject: utf8\r\n\r\nh\u00e9llo\r\n".encode(),
                       mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        # Four recipients, each delivered into its own Maildir.
        wait_for(lambda: len(d.maildir_messages()) == 4, 20, "four Maildir deliveries")
        by_path = {os.path.relpath(m["path"], d.mail_root).split("/new/")[0]: m["body"]
                   for m in d.maildir_messages()}
        self.assertEqual(sorted(by_path), ["example.com/bob", "example.com/carol",
                                           "example.com/postmaster", "example.com/\u00fc"])
        bob = by_path["example.com/bob"]
        self.assertTrue(bob.startswith("Return-Path: <alice@sender.test>\n"
                                       "Delivered-To: bob@example.com\n"
                                       "Received: from client.test ([127.0.0.1])\n"), bob)
        self.assertIn("X-Test-Id: first\n\n.leading dot\nbody\n", bob)
        self.assertIn("Return-Path: <>\n", by_path["example.com/postmaster"])
        self.assertIn("with UTF8SMTP", by_path["example.com/\u00fc"])
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.spool_messages(), [])  # Delivered messages leave the spool.

    @unittest.skipUnless(shutil.which("swaks"), "swaks is not installed")
    def test_swaks_with_and_without_pipelining(self):
        d = self.start()
        for extra in ([], ["--pipeline"]):
            out = subprocess.run(
                ["swaks", "--server", f"127.0.0.1:{d.port}", "--to", "a@example.com",
                 "--from", "b@sender.test", "--header", "X-Test-Id: swaks"] + extra,
                capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn("250 2.0.0 OK: queued as", out.stdout)
        wait_for(lambda: len(d.maildir_messages()) == 2, 20, "two Maildir deliveries")

    @unittest.skipUnless(shutil.which("swaks"), "swaks is not installed")
    def test_readme_flow_swaks_then_kill9_then_restart(self):
        d = self.start()
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.port}", "--to", "a@example.com",
                              "--header", "X-Test-Id: readme"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        queued = out.stdout.split("queued as ")[1].split()[0]
        d.kill9()
        d.start()  # Recovery runs on the same spool; whatever was pending is delivered.
        wait_for(lambda: any(m["id"] == queued for m in d.maildir_messages()), 20,
                 "the message in the Maildir")
        self.assertEqual(d.stop(), 0)
        found = [m for m in d.all_messages() if m["id"] == queued]
        self.assertGreaterEqual(len(found), 1)
        self.assertIn("X-Test-Id: readme", found[0]["body"])

    def test_spool_cap_refuses_new_mail_and_keeps_the_rest(self):
        d = self.start("[spool]\nbytes_max = 65536\n[timeouts]\ncommand_timeout_ms = 5000\n",
                       threads=1)
        accepted = 0
        refused = None
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            for i in range(100):
                code, text = s.mail("a@sender.test")
                if code != 250:
                    refused = (code, text)
                    break
                s.rcpt("b@example.com")
                code, text = s.data(b"Subject: fill\r\n\r\n" + (b"x" * 98 + b"\r\n") * 20)
                if code != 250:
                    refused = (code, text)
                    break
                accepted += 1
        self.assertIsNotNone(refused, "the cap never refused")
        self.assertEqual(refused[0], 452)
        self.assertTrue(refused[1].startswith(b"4.3.1"), refused)
        self.assertGreater(accepted, 10)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(len({m["id"] for m in d.all_messages()}), accepted)

    def test_no_open_relay(self):
        d = self.start('[relay]\nlocal_domains = ["example.com"]\n')
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            s.mail("a@sender.test")
            code, text = s.rcpt("victim@elsewhere.test")
            self.assertEqual(code, 554)
            self.assertTrue(text.startswith(b"5.7.1"))
            self.assertEqual(s.rcpt("user@example.com")[0], 250)
        trusted = self.start('[relay]\nlocal_domains = ["example.com"]\n'
                             'networks = ["127.0.0.0/8"]\n')
        with smtplib.SMTP("127.0.0.1", trusted.port, timeout=10) as s:
            s.ehlo()
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("victim@elsewhere.test")[0], 250)

    def test_recipients_without_a_route_are_refused_at_rcpt(self):
        d = self.start('[[routes]]\ndomain = "example.com"\ntype = "maildir"\npath = "mail"\n'
                       '[[routes]]\ndomain = "blocked.example"\ntype = "reject"\n')
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("bob@example.com")[0], 250)
            code, text = s.rcpt("bob@unrouted.example")
            self.assertEqual((code, text[:5]), (550, b"5.1.2"))
            code, text = s.rcpt("bob@blocked.example")
            self.assertEqual((code, text[:5]), (550, b"5.7.1"))
            code, text = s.rcpt('"../../etc"@example.com')
            self.assertEqual((code, text[:5]), (550, b"5.1.3"))

    def test_smuggling_never_splits_a_message(self):
        d = self.start()
        for seq in (b"\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r\n", b"\r\n.\n"):
            c = RawClient(d.connect())
            self.assertEqual(c.reply()[0], 220)
            c.send(b"EHLO t\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
            c.send(b"Subject: outer\r\n\r\nbody" + seq +
                   b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.com>\r\n"
                   b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
            code, text = c.reply()
            self.assertEqual(code, 554, f"{seq!r}: {text}")
            self.assertIn("5.6.0", text)
            c.send(b"QUIT\r\n")
            self.assertEqual(c.reply()[0], 221)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.all_messages(), [])

    def test_bare_lf_in_a_command_is_refused(self):
        d = self.start()
        c = RawClient(d.connect())
        c.reply()
        c.send(b"EHLO t\nNOOP\r\nNOOP\r\n")
        code, text = c.reply()
        self.assertEqual(code, 500)
        self.assertIn("5.5.2", text)
        self.assertEqual(c.reply()[0], 250)

    def test_size_limits(self):
        d = self.start("[limits]\nmessage_bytes_max = 2048\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            code, text = s.mail("a@sender.test", ["SIZE=100000"])
            self.assertEqual((code, text[:5]), (552, b"5.3.4"))
            s.mail("a@sender.test")
            s.rcpt("b@example.com")
            code, text = s.data(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 200 +
                                (b"y" * 900 + b"\r\n") * 10)
            self.assertEqual((code, text[:5]), (552, b"5.3.4"))
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.all_messages(), [])

    def test_per_client_connection_cap(self):
        d = self.start("[limits]\nconnections_per_ip_max = 3\n")
        held = [RawClient(d.connect()) for _ in range(3)]
        for c in held:
            self.assertEqual(c.reply()[0], 220)
        extra = RawClient(d.connect())
        code, text = extra.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.7.0", text)
        self.assertTrue(extra.closed())
        held[0].send(b"QUIT\r\n")
        self.assertEqual(held[0].reply()[0], 221)
        self.assertTrue(held[0].closed())

        def admitted():
            c = RawClient(d.connect())
            code = c.reply()[0]
            c.sock.close()
            return code == 220
        wait_for(admitted, 10, "a slot to free up")

    def test_connection_flood_past_the_global_cap(self):
        # 40 connections against a cap of 10, from several loopback addresses so that the
        # per-client cap is not what stops them: 10 are served, every other one gets 421 and is
        # closed, and the metrics say why.
        d = self.start("[limits]\nconnections_max = 10\nconnections_per_ip_max = 100\n")
        greetings = []
        for i in range(40):
            sock = socket.socket()
            sock.bind((f"127.0.0.{2 + i % 4}", 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", d.port))
            d.sockets.append(sock)
            c = RawClient(sock)
            code, text = c.reply()
            greetings.append((code, text, c))
        served = [g for g in greetings if g[0] == 220]
        refused = [g for g in greetings if g[0] == 421]
        self.assertEqual(len(served), 10)
        self.assertEqual(len(refused), 30)
        for _, text, c in refused:
            self.assertIn("4.7.0", text)
            self.assertTrue(c.closed())
        # The ones let in still work.
        served[0][2].send(b"EHLO c\r\n")
        self.assertEqual(served[0][2].reply()[0], 250)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        self.assertIn('relais_connections_refused_total{reason="connections_max"} 30\n', metrics)

    def test_sessions_outnumber_the_descriptor_limit(self):
        # Sessions live in the shards' io_uring file tables, not in the process's descriptor
        # table: under a limit of 128 descriptors, 180 clients are all served (two shards, so
        # two tables of 128), and the daemon's open descriptors stay well under its limit.
        limit, clients = 128, 180
        d = Daemon("[limits]\nconnections_per_ip_max = 1000\n", descriptor_limit=limit)
        self.addCleanup(d.cleanup)
        d.start()
        ready = [e for e in d.events() if e.get("event") == "ready"][0]
        self.assertEqual(ready["session_slots_per_shard"], limit)
        self.assertEqual(ready["descriptor_limit"], limit)
        held = []
        for _ in range(clients):
            c = RawClient(d.connect())
            self.assertEqual(c.reply()[0], 220)
            c.send(b"EHLO c.test\r\n")
            held.append(c)
        for c in held:
            self.assertEqual(c.reply()[0], 250)
        open_fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        self.assertLess(open_fds, limit // 2)
        c = held[-1]
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
        c.send(b"Subject: t\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        for c in held:
            c.send(b"QUIT\r\n")
        for c in held:
            self.assertEqual(c.reply()[0], 221)
            self.assertTrue(c.closed())

    def test_full_session_table_closes_new_connections_then_recovers(self):
        # One shard under a descriptor limit of 64 has 64 session slots. Past them the kernel
        # closes each new connection unanswered (counted as unserved, logged once with the
        # reason). 20 extra clients are more than the shard's 16 accepts in flight: the last
        # ones are only taken after the accepts pause and re-arm. Once a session ends, a new
        # client is served again.
        limit = 64
        d = Daemon("[limits]\nconnections_per_ip_max = 1000\n", threads=1,
                   descriptor_limit=limit)
        self.addCleanup(d.cleanup)
        d.start()
        held = []
        for _ in range(limit):
            c = RawClient(d.connect())
            self.assertEqual(c.reply()[0], 220)
            held.append(c)
        extras = [RawClient(d.connect()) for _ in range(20)]
        for extra in extras:
            self.assertTrue(extra.closed(timeout=10))
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        self.assertIn('relais_connections_refused_total{reason="unserved"} 20\n', metrics)
        failures = [e for e in d.events() if e.get("event") == "accept_failed"]
        self.assertTrue(failures)
        self.assertIn("session table is full (64 sessions", failures[0]["error"])
        held[0].send(b"QUIT\r\n")
        self.assertEqual(held[0].reply()[0], 221)
        self.assertTrue(held[0].closed())

        def served():
            c = RawClient(d.connect())
            try:
                return c.reply(timeout=5)[0] == 220
            except (ConnectionError, OSError):
                return False
        wait_for(served, 10, "a freed slot to serve a new client")
        for c in held[1:]:
            c.send(b"EHLO c.test\r\n")
            self.assertEqual(c.reply()[0], 250)  # The sessions held all along still work.

    def test_idle_session_times_out_with_421(self):
        d = self.start("[timeouts]\ncommand_timeout_ms = 1000\n")
        c = RawClient(d.connect())
        self.assertEqual(c.reply()[0], 220)
        start = time.monotonic()
        code, text = c.reply(timeout=10)
        self.assertEqual(code, 421)
        self.assertIn("4.4.2", text)
        self.assertLess(time.monotonic() - start, 5)
        self.assertTrue(c.closed())

    def test_slowloris_clients_are_cut_off_while_others_are_served(self):
        # 200 clients send one byte at a time, never finishing a command line; each byte
        # would have restarted a per-read timeout. The command timeout runs per line instead.
        d = self.start("[timeouts]\ncommand_timeout_ms = 1500\n"
                       "[limits]\nconnections_per_ip_max = 1000\n")
        slow = []
        for _ in range(200):
            sock = d.connect()
            slow.append(sock)
        for sock in slow:
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"220")
        start = time.monotonic()
        cut = set()
        served = None
        while time.monotonic() - start < 8 and len(cut) < len(slow):
            for i, sock in enumerate(slow):
                if i in cut:
                    continue
                try:
                    sock.send(b"N")  # A byte of "NOOP" that never ends.
                except OSError:
                    cut.add(i)
            if served is None and time.monotonic() - start > 0.5:
                t = time.monotonic()
                with smtplib.SMTP("127.0.0.1", d.port, timeout=5) as s:
                    s.sendmail("a@sender.test", ["b@example.com"], b"Subject: x\r\n\r\ny\r\n")
                served = time.monotonic() - t
            for i, sock in enumerate(slow):
                if i not in cut:
                    sock.setblocking(False)
                    try:
                        data = sock.recv(100)
                        if data.startswith(b"421") or data == b"":
                            cut.add(i)
                    except BlockingIOError:
                        pass
                    except OSError:
                        cut.add(i)
            time.sleep(0.25)
        elapsed = time.monotonic() - start
        self.assertEqual(len(cut), len(slow), "every slow client is cut off")
        self.assertLess(elapsed, 6)  # Within the command timeout (1.5 s) plus slack.
        self.assertIsNotNone(served)
        self.assertLess(served, 2)  # Meanwhile a normal client was served promptly.

    def test_client_that_never_reads_is_throttled_then_closed(self):
        d = self.start("[timeouts]\ncommand_timeout_ms = 1000\n", threads=1)

        def rss_kib():
            with open(f"/proc/{d.proc.pid}/status") as f:
                return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])
        before = rss_kib()
        sock = d.connect()
        sock.setblocking(False)
        chunk = b"NOOP\r\n" * 10000
        sent = 0
        reset = False
        start = time.monotonic()
        while time.monotonic() < start + 15:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)  # The server stopped reading: back-pressure works.
            except (ConnectionResetError, BrokenPipeError):
                reset = True  # Closed with our unread flood still queued at the server.
                break
            if sent > (1 << 20):
                grew_mib = (rss_kib() - before) / 1024
                self.assertLess(grew_mib, 32, f"relaisd grew {grew_mib:.0f} MiB for one client")
        self.assertGreater(sent, 1 << 20)
        if not reset:
            sock.setblocking(True)
            sock.settimeout(15)
            try:
                while sock.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass
        # The command timeout (1 s) ends it, not the client.
        self.assertLess(time.monotonic() - start, 15)
        # The daemon is still healthy.
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            self.assertEqual(s.noop()[0], 250)

    def test_graceful_stop_lets_a_transaction_finish(self):
        d = self.start("[timeouts]\nshutdown_grace_ms = 10000\n")
        busy = RawClient(d.connect())
        idle = RawClient(d.connect())
        busy.reply()
        idle.reply()
        busy.send(b"EHLO t\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        self.assertEqual([busy.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        d.proc.send_signal(15)
        code, text = idle.reply()
        self.assertEqual(code, 421)
        self.assertIn("4.3.2", text)
        # Both shards must have heard the stop (it reaches the second over the mesh) before
        # the rest of this test means anything: the busy session may live on either.
        wait_for(lambda: len([e for e in d.events(d.log_offset)
                              if e.get("event") == "stopping"]) == 2, 10, "both shards stopping")
        busy.send(b"second half\r\n.\r\n")
        code, text = busy.reply()
        self.assertEqual(code, 250, text)
        busy.send(b"MAIL FROM:<a@sender.test>\r\n")
        self.assertEqual(busy.reply()[0], 421)
        self.assertEqual(d.proc.wait(timeout=20), 0)
        messages = d.all_messages()
        self.assertEqual(len({m["id"] for m in messages}), 1)
        self.assertIn("first half\nsecond half\n", messages[0]["body"])


class ConfigTest(unittest.TestCase):
    def test_bad_config_names_key_and_line(self):
        d = Daemon()
        self.addCleanup(d.cleanup)
        path = d.workdir + "/bad.toml"
        with open(path, "w") as f:
            f.write("[limits]\nrecipients_max = 10\nrecipient_max = 5\n")
        out = subprocess.run([RELAISD, "--config", path, "--check-config"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertIn("bad.toml:3: limits.recipient_max: unknown key", out.stderr)
        with open(path, "w") as f:
            f.write("[limits]\nrecipients_max = 10\n")
        out = subprocess.run([RELAISD, "--config", path, "--check-config"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)

    @unittest.skipUnless(os.environ.get("DENY_IO_URING"), "needs the deny_io_uring helper")
    def test_blocked_io_uring_is_one_clear_line(self):
        out = subprocess.run([os.environ["DENY_IO_URING"], RELAISD], capture_output=True,
                             text=True, timeout=10)
        self.assertEqual(out.returncode, 1)
        lines = out.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, out.stderr)
        self.assertIn("io_uring is blocked (EPERM)", lines[0])
        self.assertIn("kernel.io_uring_disabled", lines[0])

    def test_port_in_use_is_a_clear_error(self):
        # Held with SO_REUSEPORT too: the kernel would let relaisd's shards join that socket and
        # split the connections between the two programs; relaisd must refuse instead.
        for reuseport in (False, True):
            with self.subTest(reuseport=reuseport):
                holder = socket.socket()
                if reuseport:
                    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                self.addCleanup(holder.close)
                port = holder.getsockname()[1]
                d = Daemon(f'[server]\nlisten = ["127.0.0.1:{port}"]\n', threads=2)
                self.addCleanup(d.cleanup)
                with self.assertRaises(AssertionError) as ctx:
                    d.start()
                self.assertIn(f"listen 127.0.0.1:{port}: address already in use",
                              str(ctx.exception))
                self.assertEqual(d.proc.returncode, 1)

if __name__ == "__main__":
    unittest.main()
