"""Inbound TLS and SMTP AUTH against real clients on loopback: swaks (--tls, --tlsc, --auth),
openssl s_client -starttls smtp, Python's smtplib and ssl, and byte-exact raw clients.

relaisd gets a test CA's ECDSA and RSA certificates (made at test time, tls_certs.py), a
STARTTLS listener and an implicit-TLS listener (RFC 8314), and a credentials file written by
`relaisctl passwd`. Covered: delivery over both with Received: saying ESMTPS/ESMTPSA and the
protocol and cipher; AUTH PLAIN/LOGIN only over TLS (538 5.7.11 in clear); a bad password
(535 5.7.8) and the lockout (454 4.7.0); TLS 1.1 refused, 1.2 and 1.3 served; the certificate
chosen by what the client supports; the STARTTLS command injection (CVE-2011-0411); a client
stalling mid-handshake closed by tls.handshake_timeout; garbage instead of a ClientHello
closed and counted; tls = "required" (530 5.7.0); the JSON log's version and cipher.
"""

import base64
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import unittest
import urllib.request

from harness import RELAISCTL, Daemon, RawClient, free_port, wait_for
from tls_certs import OPENSSL, TestCerts, tls_section

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
USERS = {"alice": "correct horse", "bob": "battery staple"}


def write_credentials(path, users):
    """A credentials file made the way an operator makes it: `relaisctl passwd`."""
    for user, password in users.items():
        result = subprocess.run([RELAISCTL, "passwd", "--file", path, user],
                                input=(password + "\n").encode(), capture_output=True,
                                timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"relaisctl passwd {user}: {result.stderr.decode()}")


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def handshake_failures(text):
    """The sum of every TLS handshake failure counter sample, whatever its labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        low = name_labels.lower()
        if "tls" in low and "handshake" in low and not low.split("{")[0].endswith(
                ("_bucket", "_sum", "_count")) and re.search(r"fail|error|bad|abort", low):
            total += float(value)
    return total


def received_header(body):
    """Relais's own Received: field (the first one), unfolded."""
    m = re.search(r"^Received:(.*?)(?=^\S)", body, re.M | re.S)
    return " ".join(m.group(1).split()) if m else ""


class TlsDaemonTest(unittest.TestCase):
    """Each test starts its own relaisd: a STARTTLS port (self.port) and an implicit-TLS port
    (self.implicit_port), both with the ECDSA and RSA certificates."""

    @classmethod
    def setUpClass(cls):
        cls.certs = TestCerts()
        cls.credentials = os.path.join(cls.certs.dir, "passwd")
        write_credentials(cls.credentials, USERS)

    @classmethod
    def tearDownClass(cls):
        cls.certs.cleanup()

    def start(self, starttls_mode=None, auth=True, handshake_timeout="10s", auth_extra="",
              implicit=True, threads=2):
        self.port = free_port()
        self.implicit_port = free_port() if implicit else None
        ports = [self.port] + ([self.implicit_port] if implicit else [])
        listen = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
        config = (f'[server]\nlisten = [{listen}]\nhostname = "relais.test"\n'
                  + tls_section(self.certs, handshake_timeout))
        if implicit:
            config += f'[[listener]]\nlisten = "127.0.0.1:{self.implicit_port}"\ntls = "implicit"\n'
        if starttls_mode:
            config += f'[[listener]]\nlisten = "127.0.0.1:{self.port}"\ntls = "{starttls_mode}"\n'
        if auth:
            config += f'[smtp_auth]\ncredentials = "{self.credentials}"\n{auth_extra}'
        self.d = Daemon(config, threads=threads)
        self.addCleanup(self.d.cleanup)
        self.d.start()
        self.d.port = self.port
        for p in ports:
            wait_for(lambda: self._accepts(p), 20, f"relaisd to listen on {p}")
        return self.d

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return True
        except OSError:
            return False

    def context(self):
        return ssl.create_default_context(cafile=self.certs.ca)

    def delivered(self, subject, timeout=20):
        def find():
            return [m for m in self.d.maildir_messages() if f"Subject: {subject}" in m["body"]]
        [m] = wait_for(find, timeout, f"the message '{subject}' in the Maildir")
        return m["body"]

    def swaks(self, *args, port=None, subject="swaks", timeout=60):
        cmd = [SWAKS, "--server", "127.0.0.1", "--port", str(port or self.port),
               "--from", "sender@src.test", "--to", "rcpt@example.com", "--helo", "client.test",
               "--timeout", "20", "--header", f"Subject: {subject}", *args]
        return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def s_client(self, *args, port=None, timeout=30):
        cmd = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port or self.port}", "-CAfile",
               self.certs.ca, "-verify_return_error", "-brief", "-crlf", *args]
        return subprocess.run(cmd, input=b"NOOP\r\nQUIT\r\n", capture_output=True,
                              timeout=timeout)


class TlsInboundTest(TlsDaemonTest):
    def test_swaks_starttls_and_received_says_esmtps(self):
        self.start()
        r = self.swaks("--tls", subject="swaks starttls")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertIn("STARTTLS", r.stdout.decode())
        received = received_header(self.delivered("swaks starttls"))
        self.assertRegex(received, r"\bwith ESMTPS\b")
        self.assertRegex(received, r"TLS ?v?1\.[23]")
        self.assertRegex(received, r"AES|CHACHA20")
        self.assertEqual(self.d.stop(), 0)

    def test_swaks_implicit_tls_on_the_second_listener(self):
        self.start()
        r = self.swaks("--tlsc", port=self.implicit_port, subject="swaks implicit")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        received = received_header(self.delivered("swaks implicit"))
        self.assertRegex(received, r"\bwith ESMTPS\b")
        # Implicit TLS does not offer STARTTLS again.
        with smtplib.SMTP_SSL("127.0.0.1", self.implicit_port, context=self.context(),
                              timeout=10) as s:
            s.ehlo("client.test")
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("auth"))

    def test_swaks_auth_plain_and_login_over_tls(self):
        self.start()
        for mech in ("PLAIN", "LOGIN"):
            r = self.swaks("--tls", "--auth", mech, "--auth-user", "alice", "--auth-password",
                           USERS["alice"], subject=f"swaks auth {mech}")
            self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
            self.assertRegex(r.stdout.decode(), r"<~ +235")
            received = received_header(self.delivered(f"swaks auth {mech}"))
            self.assertRegex(received, r"\bwith ESMTPSA\b")
        # The implicit port too.
        r = self.swaks("--tlsc", "--auth", "PLAIN", "--auth-user", "bob", "--auth-password",
                       USERS["bob"], port=self.implicit_port, subject="swaks auth implicit")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertRegex(received_header(self.delivered("swaks auth implicit")),
                         r"\bwith ESMTPSA\b")

    def test_auth_is_refused_in_clear(self):
        self.start()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"), s.esmtp_features)
            token = base64.b64encode(b"\0alice\0" + USERS["alice"].encode()).decode()
            code, text = s.docmd("AUTH", f"PLAIN {token}")
            self.assertEqual(code, 538, text)
            self.assertIn(b"5.7.11", text)
            code, text = s.docmd("AUTH", "LOGIN")
            self.assertEqual(code, 538, text)
            # Still usable: it may start TLS and then log in.
            s.starttls(context=self.context())
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("auth"))
            self.assertIn("PLAIN", s.esmtp_features["auth"].upper())
            self.assertIn("LOGIN", s.esmtp_features["auth"].upper())
            self.assertEqual(s.login("alice", USERS["alice"])[0], 235)
            # AUTH once per session (RFC 4954 4).
            self.assertEqual(s.docmd("AUTH", f"PLAIN {token}")[0], 503)

    def test_smtplib_starttls_login_sendmail(self):
        self.start()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.ehlo("client.test")
            s.starttls(context=self.context())  # Verifies the chain and 127.0.0.1 in the SAN.
            s.ehlo("client.test")
            s.login("bob", USERS["bob"])
            s.sendmail("bob@src.test", ["rcpt@example.com"],
                       b"Subject: smtplib starttls\r\n\r\nover TLS\r\n")
            version, cipher = s.sock.version(), s.sock.cipher()[0]
        received = received_header(self.delivered("smtplib starttls"))
        self.assertRegex(received, r"\bwith ESMTPSA\b")
        self.assertIn(version.replace("TLSv", "").replace("TLS", ""), received)
        self.assertIn(cipher, received)

    def test_smtplib_smtp_ssl_implicit(self):
        self.start()
        with smtplib.SMTP_SSL("127.0.0.1", self.implicit_port, context=self.context(),
                              timeout=10) as s:
            s.ehlo("client.test")
            s.login("alice", USERS["alice"])
            s.sendmail("alice@src.test", ["rcpt@example.com"],
                       b"Subject: smtplib implicit\r\n\r\nover implicit TLS\r\n")
        self.assertRegex(received_header(self.delivered("smtplib implicit")),
                         r"\bwith ESMTPSA\b")

    def test_openssl_s_client_versions(self):
        self.start()
        for version in ("-tls1_3", "-tls1_2"):
            r = self.s_client("-starttls", "smtp", version)
            out = r.stdout.decode() + r.stderr.decode()
            self.assertEqual(r.returncode, 0, out)
            self.assertIn("Verification: OK", out)
            self.assertIn(f"Protocol version: TLSv1.{version[-1]}", out)
        r = self.s_client("-tls1_3", port=self.implicit_port)
        out = r.stdout.decode() + r.stderr.decode()
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Protocol version: TLSv1.3", out)
        # TLS 1.1 and 1.0 are refused by the server (the client's own floor lowered).
        for version in ("-tls1_1", "-tls1"):
            r = self.s_client("-starttls", "smtp", version, "-cipher", "DEFAULT@SECLEVEL=0")
            out = r.stdout.decode() + r.stderr.decode()
            self.assertNotEqual(r.returncode, 0, out)
            self.assertNotIn("Protocol version: TLSv1", out)
        self.assertEqual(self.d.stop(), 0)

    def test_certificate_follows_what_the_client_supports(self):
        self.start()

        def leaf_bits(cipher):
            ctx = self.context()
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(cipher)
            with socket.create_connection(("127.0.0.1", self.implicit_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="mail.test") as tls:
                    der = tls.getpeercert(binary_form=True)
            text = subprocess.run([OPENSSL, "x509", "-inform", "der", "-noout", "-text"],
                                  input=der, capture_output=True, timeout=30).stdout.decode()
            return re.search(r"Public-Key: \((\d+) bit\)", text).group(1)
        self.assertEqual(leaf_bits("ECDHE-ECDSA-AES128-GCM-SHA256"), "256")
        self.assertEqual(leaf_bits("ECDHE-RSA-AES128-GCM-SHA256"), "2048")

    def test_starttls_injection_is_never_executed(self):
        self.start()
        for injected in (b"RSET\r\n", b"MAIL FROM:<evil@src.test>\r\n",
                         b"MAIL FROM:<evil@src.test>\r\nRCPT TO:<x@example.com>\r\n"):
            with self.subTest(injected=injected):
                c = RawClient(self.d.connect())
                self.assertEqual(c.reply()[0], 220)
                c.send(b"EHLO client.test\r\n")
                self.assertEqual(c.reply()[0], 250)
                c.send(b"STARTTLS\r\n" + injected)  # One write: the injection.
                code, text = c.reply()
                self.assertEqual(code, 220, text)
                # Nothing more in clear: the injected commands are not answered before TLS...
                c.sock.settimeout(0.3)
                try:
                    extra = c.sock.recv(4096)
                except socket.timeout:
                    extra = b""
                self.assertEqual(c.buffer + extra, b"", "answered in clear after STARTTLS")
                c.sock.settimeout(10)
                try:
                    tls = self.context().wrap_socket(c.sock, server_hostname="localhost")
                except (ssl.SSLError, OSError):
                    continue  # Closing on pipelined STARTTLS is also safe.
                t = RawClient(tls)
                # ...nor after it: the first reply in TLS answers our NOOP.
                t.send(b"NOOP\r\n")
                code, text = t.reply()
                self.assertEqual(code, 250, text)
                self.assertIn("2.0.0", text)
                t.send(b"EHLO client.test\r\n")
                code, text = t.reply()
                self.assertEqual(code, 250, text)
                self.assertIn("relais.test", text.splitlines()[0])
                # No transaction was opened by the injected MAIL.
                t.send(b"RCPT TO:<y@example.com>\r\n")
                self.assertEqual(t.reply()[0], 503)
                t.send(b"QUIT\r\n")
                self.assertEqual(t.reply()[0], 221)
                tls.close()
        self.assertEqual([m for m in self.d.maildir_messages()], [])

    def test_stall_mid_handshake_is_closed_by_the_deadline(self):
        self.start(handshake_timeout="1s")
        # STARTTLS, then half a TLS record header, then nothing.
        c = RawClient(self.d.connect())
        self.assertEqual(c.reply()[0], 220)
        c.send(b"EHLO client.test\r\nSTARTTLS\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 220)
        started = time.monotonic()
        c.send(b"\x16\x03\x01")
        self.assertTrue(c.closed(timeout=8), "still open after the handshake deadline")
        self.assertLess(time.monotonic() - started, 8)
        self.assertGreater(time.monotonic() - started, 0.5)
        # Implicit TLS: connected, never a ClientHello.
        raw = socket.create_connection(("127.0.0.1", self.implicit_port), timeout=10)
        self.d.sockets.append(raw)
        started = time.monotonic()
        self.assertTrue(RawClient(raw).closed(timeout=8))
        self.assertLess(time.monotonic() - started, 8)
        # The daemon still serves.
        with smtplib.SMTP_SSL("127.0.0.1", self.implicit_port, context=self.context(),
                              timeout=10) as s:
            self.assertEqual(s.noop()[0], 250)

    def test_garbage_instead_of_client_hello_is_closed_and_counted(self):
        d = self.start()
        before = handshake_failures(metrics(d.metrics_port))
        for garbage in (b"EHLO client.test\r\n", b"\x16\x03\x01\x00\x05hello",
                        os.urandom(600)):
            raw = socket.create_connection(("127.0.0.1", self.implicit_port), timeout=10)
            self.d.sockets.append(raw)
            raw.sendall(garbage)
            raw.settimeout(10)
            data = b""
            try:
                while True:
                    chunk = raw.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            self.assertNotIn(b"250", data)  # At most an alert, never an SMTP reply.
        wait_for(lambda: handshake_failures(metrics(d.metrics_port)) >= before + 3, 10,
                 "three failed handshakes counted")
        with smtplib.SMTP_SSL("127.0.0.1", self.implicit_port, context=self.context(),
                              timeout=10) as s:
            self.assertEqual(s.noop()[0], 250)

    def test_json_log_carries_version_and_cipher(self):
        d = self.start()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.starttls(context=self.context())
            s.sendmail("a@src.test", ["rcpt@example.com"], b"Subject: logged tls\r\n\r\nx\r\n")
            version, cipher = s.sock.version(), s.sock.cipher()[0]
        self.delivered("logged tls")

        def tls_events():
            return [e for e in d.events(d.log_offset)
                    if version in [str(v) for v in e.values()]
                    and cipher in [str(v) for v in e.values()]]
        events = wait_for(tls_events, 10, f"a log line with {version} and {cipher}")
        self.assertTrue(events)


class TlsPolicyTest(TlsDaemonTest):
    def test_required_refuses_mail_before_starttls(self):
        self.start(starttls_mode="required", implicit=False)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("starttls"))
            code, text = s.docmd("MAIL", "FROM:<a@src.test>")
            self.assertEqual(code, 530, text)
            self.assertIn(b"5.7.0", text)
            s.starttls(context=self.context())
            s.ehlo("client.test")
            s.sendmail("a@src.test", ["rcpt@example.com"], b"Subject: required\r\n\r\nx\r\n")
        self.assertRegex(received_header(self.delivered("required")), r"\bwith ESMTPS\b")

    def test_bad_password_then_lockout(self):
        # One shard: the login limiter is per shard, so with more each would count its own.
        self.start(auth_extra='failures_before_delay = 2\nlockout_failures = 3\n'
                   'lockout_time = "10m"\n', threads=1)

        def try_login(user, password):
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as s:
                s.starttls(context=self.context())
                s.ehlo("client.test")
                # One AUTH command per try (smtplib's login() would try each mechanism).
                token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
                return s.docmd("AUTH", f"PLAIN {token}")
        code, text = try_login("alice", "wrong")
        self.assertEqual(code, 535, text)
        self.assertIn(b"5.7.8", text)
        code, text = try_login("nobody", "wrong")  # An unknown user reads the same.
        self.assertEqual(code, 535, text)
        self.assertIn(b"5.7.8", text)
        self.assertEqual(try_login("alice", "wrong")[0], 535)
        # lockout_failures reached (by the address): locked out, even with the right password.
        code, text = try_login("alice", USERS["alice"])
        self.assertEqual(code, 454, text)
        self.assertIn(b"4.7.0", text)


if __name__ == "__main__":
    unittest.main()
