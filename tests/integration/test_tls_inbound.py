"""Inbound TLS and SMTP AUTH on a real relaisd: STARTTLS on one listener and implicit TLS on a
second, with a certificate and credentials made at test time by relaisctl (make-cert, passwd).
Checked with Python's smtplib and ssl, `openssl s_client -starttls smtp` and, where its TLS
module is installed, `swaks --tls --auth`. The broad real-peer tests (Postfix, testssl.sh) are
elsewhere; these pin what the daemon's wiring does: the offers per listener, AUTH refused in
clear, the STARTTLS injection case, a handshake that stalls, session resumption across shards,
and what the logs, the metrics and Received: say."""

import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from harness import RELAISCTL, Daemon, wait_for

PASSWORD = "correct horse battery staple"
USER = "alice@example.com"


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def swaks_has_tls():
    return shutil.which("swaks") is not None and subprocess.run(
        ["perl", "-MNet::SSLeay", "-e", "1"], capture_output=True).returncode == 0


class InboundTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="relais-tls-")
        chain = os.path.join(cls.tmp, "chain.pem")
        key = os.path.join(cls.tmp, "key.pem")
        subprocess.run([RELAISCTL, "make-cert", "--names", "relais.test", "--chain", chain,
                        "--key", key], check=True, capture_output=True)
        cls.passwd = os.path.join(cls.tmp, "passwd")
        subprocess.run([RELAISCTL, "passwd", "--file", cls.passwd, USER],
                       input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
        cls.daemon = Daemon(f"""
[server]
listen = ["127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"]
hostname = "relais.test"
[relay]
local_domains = ["example.com"]
[auth]
spf = "off"
dkim = "off"
dmarc = "off"
[tls]
handshake_timeout = "1s"
[[tls.certificate]]
chain = "{chain}"
key = "{key}"
[[listener]]
listen = "127.0.0.2:0"
tls = "implicit"
[[listener]]
listen = "127.0.0.3:0"
tls = "off"
trusted = true
[smtp_auth]
credentials = "{cls.passwd}"
require_sender_owned = true
""", threads=2).start()
        addresses = wait_for(lambda: cls.addresses(), 10, "three listening lines")
        cls.starttls_port = addresses["127.0.0.1"]
        cls.implicit_port = addresses["127.0.0.2"]
        cls.trusted_port = addresses["127.0.0.3"]

    @classmethod
    def addresses(cls):
        out = {}
        for event in cls.daemon.events(cls.daemon.log_offset):
            if event.get("event") == "listening":
                host, port = event["address"].rsplit(":", 1)
                out[host] = int(port)
        return out if len(out) == 3 else None

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        cls.daemon.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def metrics(self):
        url = f"http://127.0.0.1:{self.daemon.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def session_ends(self):
        return [e for e in self.daemon.events() if e.get("event") == "session_end"]

    def test_starttls_then_auth_then_relay(self):
        with smtplib.SMTP("127.0.0.1", self.starttls_port, timeout=10) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"))  # Never offered in clear here.
            code, _ = s.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHg=")
            self.assertEqual(code // 100, 5)
            s.starttls(context=client_context())
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"))
            self.assertIn("PLAIN", s.esmtp_features.get("auth", "").upper())
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login(USER, "wrong")
            s.login(USER, PASSWORD)
            # Authenticated: may relay to a domain that is not ours.
            s.sendmail(USER, ["bob@elsewhere.test"],
                       f"From: {USER}\r\nSubject: tls\r\n\r\nhello\r\n")
            # require_sender_owned: a From: domain the user does not own is refused.
            with self.assertRaises(smtplib.SMTPDataError) as refused:
                s.sendmail(USER, ["bob@elsewhere.test"], "From: x@other.test\r\n\r\nno\r\n")
            self.assertEqual(refused.exception.smtp_code, 553)
        messages = wait_for(
            lambda: [m for m in self.daemon.all_messages() if "Subject: tls" in m["body"]], 10,
            "the relayed message")
        received = messages[0]["body"].split("\n\n", 1)[0]
        self.assertRegex(received, r"with ESMTPSA \(version=TLSv1\.[23] cipher=")
        self.assertIn(f"authenticated as {USER}", received)
        ends = wait_for(lambda: [e for e in self.session_ends() if e.get("auth_user") == USER],
                        10, "the session's log line")
        self.assertEqual(ends[0]["tls_handshake"], "ok")
        self.assertRegex(ends[0]["tls_version"], r"^TLSv1\.[23]$")
        self.assertTrue(ends[0]["tls_cipher"])
        m = self.metrics()
        self.assertGreaterEqual(m['relais_smtp_auth_total{result="success"}'], 1)
        self.assertGreaterEqual(m['relais_smtp_auth_total{result="failure"}'], 1)

    def test_implicit_tls(self):
        with smtplib.SMTP_SSL("127.0.0.2", self.implicit_port, timeout=10,
                              context=client_context()) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("auth"))
            s.login(USER, PASSWORD)
            s.sendmail(USER, ["carol@example.com"],
                       f"From: {USER}\r\nSubject: implicit\r\n\r\nhi\r\n")
        self.assertGreaterEqual(self.metrics()['relais_tls_handshakes_total{result="full"}'], 1)

    def test_trusted_listener_offers_auth_in_clear_and_no_starttls(self):
        with smtplib.SMTP("127.0.0.3", self.trusted_port, timeout=10) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"))  # tls = "off" on this listener.
            self.assertTrue(s.has_extn("auth"))
            s.login(USER, PASSWORD)
            s.sendmail(USER, ["erin@elsewhere.test"],
                       f"From: {USER}\r\nSubject: trusted\r\n\r\nhi\r\n")
        messages = wait_for(
            lambda: [m for m in self.daemon.all_messages() if "Subject: trusted" in m["body"]],
            10, "the message")
        self.assertIn("with ESMTPA", messages[0]["body"])

    def test_openssl_s_client_starttls(self):
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{self.starttls_port}", "-quiet"],
            input=b"EHLO client.test\r\nQUIT\r\n", capture_output=True, timeout=30)
        text = out.stdout.decode(errors="replace")
        self.assertIn("250-AUTH PLAIN LOGIN", text)
        self.assertIn("221 2.0.0", text)

    @unittest.skipUnless(swaks_has_tls(), "swaks without Net::SSLeay")
    def test_swaks_tls_auth(self):
        out = subprocess.run(
            ["swaks", "--tls", "--server", f"127.0.0.1:{self.starttls_port}", "--from", USER,
             "--to", "dave@example.com", "--auth", "PLAIN", "--auth-user", USER,
             "--auth-password", PASSWORD, "--header", f"From: {USER}"],
            capture_output=True, timeout=60)
        text = out.stdout.decode(errors="replace")
        self.assertEqual(out.returncode, 0, text)
        self.assertIn("235 2.7.0", text)
        self.assertRegex(text, r"250 2\.0\.0 OK")

    def test_commands_pipelined_after_starttls_are_discarded(self):
        # CVE-2011-0411: what follows STARTTLS in the same write must never be executed.
        sock = socket.create_connection(("127.0.0.1", self.starttls_port), timeout=10)
        f = sock.makefile("rb")
        self.assertTrue(f.readline().startswith(b"220"))
        sock.sendall(b"EHLO x\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
        self.assertTrue(f.readline().startswith(b"220"))
        tls = client_context().wrap_socket(sock, server_hostname="relais.test")
        tls.sendall(b"RCPT TO:<carol@example.com>\r\n")
        reply = tls.recv(4096)
        self.assertTrue(reply.startswith(b"503"), reply)  # No MAIL was ever taken.
        tls.close()

    def test_stalled_handshake_is_cut_and_counted(self):
        before = self.metrics().get('relais_tls_handshakes_total{result="timeout"}', 0)
        sock = socket.create_connection(("127.0.0.2", self.implicit_port), timeout=10)
        started = time.monotonic()
        self.assertEqual(sock.recv(100), b"")  # Closed by the server, no byte sent.
        self.assertLess(time.monotonic() - started, 8)
        sock.close()
        wait_for(lambda: self.metrics()['relais_tls_handshakes_total{result="timeout"}'] > before,
                 10, "the timeout counted")
        wait_for(lambda: any(e.get("tls_handshake") == "timeout" for e in self.session_ends()),
                 10, "the timeout logged")

    def test_garbage_instead_of_client_hello(self):
        before = self.metrics().get('relais_tls_handshakes_total{result="failed"}', 0)
        sock = socket.create_connection(("127.0.0.2", self.implicit_port), timeout=10)
        sock.sendall(b"EHLO plaintext.test\r\n" * 10)
        while sock.recv(4096):
            pass
        sock.close()
        wait_for(lambda: self.metrics()['relais_tls_handshakes_total{result="failed"}'] > before,
                 10, "the failure counted")
        # The log line is written by the log thread, a moment after the counter moves.
        wait_for(lambda: any(e.get("tls_handshake", "").startswith("failed:")
                             for e in self.session_ends()), 10, "the failure logged")

    def test_sessions_resume_on_any_shard(self):
        # One ticket secret for every shard: a ticket issued by one shard resumes on the other
        # (SO_REUSEPORT spreads the connections).
        ctx = client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # The session is known after the handshake.
        with ctx.wrap_socket(socket.create_connection(("127.0.0.2", self.implicit_port)),
                             server_hostname="relais.test") as first:
            first.recv(100)
            session = first.session
        for _ in range(6):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.2", self.implicit_port)),
                                 server_hostname="relais.test", session=session) as again:
                again.recv(100)
                self.assertTrue(again.session_reused)
        wait_for(lambda: self.metrics()['relais_tls_handshakes_total{result="resumed"}'] >= 6, 10,
                 "resumed handshakes counted")


if __name__ == "__main__":
    unittest.main()
