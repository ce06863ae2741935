"""Outbound TLS and AUTH of relaisd towards a smarthost (issue 15, items 3 and 4): mail relayed
through the real daemon to a next hop that speaks STARTTLS (RFC 3207) with Python's ssl module,
per route policy: "verify" with SNI, the name checked against the route's CA file, and AUTH
PLAIN over TLS; "may" falling back to plaintext when the handshake fails; "encrypt" deferring
with 4.7.10 rather than sending in the clear. The certificate is made at test time (openssl).

The next hop is a small SMTP server of this file (loopback, port 0, one thread per connection)
that records each connection: whether TLS came up, the SNI it was sent, the commands and the
messages it took."""

import base64
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest
import urllib.request

from harness import Daemon, wait_for


def make_certificate(directory, name):
    chain = os.path.join(directory, "hop.pem")
    key = os.path.join(directory, "hop.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", key, "-out", chain],
                   check=True, capture_output=True)
    return chain, key


class TlsNextHop:
    """starttls: offer STARTTLS; broken_handshake: answer 220 to it, then bytes that are not
    TLS; auth: "user:password" offered (PLAIN) once TLS is up."""

    def __init__(self, chain, key, starttls=True, broken_handshake=False, auth=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain, key)
        self.context.sni_callback = self._sni
        self.starttls = starttls
        self.broken_handshake = broken_handshake
        self.auth = auth
        self.lock = threading.Lock()
        self.connections = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _sni(self, ssl_socket, server_name, context):
        # Runs inside wrap_socket, on the connection's own thread: _serve reads it right after.
        self.last_sni = server_name

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock):
        record = {"tls": False, "sni": None, "commands": [], "messages": [], "auth": None}
        with self.lock:
            self.connections.append(record)
        sock.settimeout(30)
        reader = sock.makefile("rb")

        def reply(text):
            sock.sendall(text.encode() + b"\r\n")
        try:
            reply("220 hop.test ESMTP")
            while True:
                line = reader.readline(4096)
                if not line:
                    return
                command = line.rstrip(b"\r\n").decode("utf-8", "replace")
                record["commands"].append(command)
                verb = command[:4].upper()
                if verb == "EHLO":
                    offers = ["hop.test", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
                    if self.starttls and not record["tls"]:
                        offers.append("STARTTLS")
                    if self.auth and record["tls"]:
                        offers.append("AUTH PLAIN LOGIN")
                    for text in offers[:-1]:
                        reply(f"250-{text}")
                    reply(f"250 {offers[-1]}")
                elif command.upper() == "STARTTLS" and self.starttls and not record["tls"]:
                    reply("220 2.0.0 go ahead")
                    if self.broken_handshake:
                        sock.recv(4096)  # The ClientHello, answered with what is not TLS.
                        sock.sendall(b"this is no TLS record\r\n" * 4)
                        return
                    self.last_sni = None
                    sock = self.context.wrap_socket(sock, server_side=True)
                    reader = sock.makefile("rb")
                    record["tls"] = True
                    record["sni"] = self.last_sni
                elif verb == "AUTH":
                    user, password = self.auth.split(":", 1)
                    expected = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
                    ok = record["tls"] and command.split()[1:] == ["PLAIN", expected]
                    record["auth"] = ok
                    reply("235 2.7.0 ok" if ok else "535 5.7.8 bad credentials")
                elif verb == "MAIL":
                    reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    reply("250 2.1.5 ok")
                elif verb == "DATA":
                    reply("354 go")
                    data = bytearray()
                    while True:
                        chunk = reader.readline(1 << 20)
                        if not chunk or chunk == b".\r\n":
                            break
                        data += chunk
                    record["messages"].append(bytes(data))
                    reply("250 2.0.0 queued")
                elif verb in ("RSET", "NOOP"):
                    reply("250 2.0.0 ok")
                elif verb == "QUIT":
                    reply("221 2.0.0 bye")
                    return
                else:
                    reply("502 5.5.2 unknown command")
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()

    def snapshot(self):
        with self.lock:
            return [dict(c) for c in self.connections]

    def messages(self):
        return [m for c in self.snapshot() for m in c["messages"]]

    def stop(self):
        self.running = False
        self.sock.close()


class EgressTlsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="relais-tls-it-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.chain, self.key = make_certificate(self.dir, "localhost")

    def hop(self, **kwargs):
        h = TlsNextHop(self.chain, self.key, **kwargs)
        self.addCleanup(h.stop)
        return h

    def daemon(self, host, route_keys, threads=2):
        d = Daemon("", threads=threads)
        self.addCleanup(d.cleanup)
        d.config_text = (
            "[relay]\nlocal_domains = [\"local.test\"]\nnetworks = [\"127.0.0.0/8\"]\n"
            "[delivery]\nidle_timeout_ms = 200\n"
            "[[routes]]\ndomain = \"*\"\ntype = \"smarthost\"\n"
            f"hosts = [\"{host}\"]\n{route_keys}")
        return d.start()

    def metric(self, d, name, label=""):
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                    timeout=10) as r:
            total = 0
            for line in r.read().decode().splitlines():
                if line.startswith(name) and label in line and not line.startswith("#"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def send(self, d, rcpt, subject):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("a@src.test", [rcpt], f"Subject: {subject}\r\n\r\nhello\r\n".encode())

    def test_verify_sends_sni_checks_the_name_and_authenticates_over_tls(self):
        hop = self.hop(auth="relay:s3cret")
        password = os.path.join(self.dir, "relay.pass")
        with open(password, "w") as f:
            f.write("s3cret\n")
        os.chmod(password, 0o600)
        d = self.daemon(f"localhost:{hop.port}",
                        f"tls = \"verify\"\ntls_ca_file = \"{self.chain}\"\n"
                        f"auth_user = \"relay\"\nauth_password_file = \"{password}\"\n")
        self.send(d, "b@dst.test", "over tls")
        wait_for(lambda: hop.messages(), 20, "the message at the TLS next hop")
        carried = [c for c in hop.snapshot() if c["messages"]]
        self.assertEqual(len(carried), 1)
        self.assertTrue(carried[0]["tls"])
        self.assertEqual(carried[0]["sni"], "localhost")  # The route's host name, not 127.0.0.1.
        self.assertTrue(carried[0]["auth"])
        before_tls = carried[0]["commands"][:carried[0]["commands"].index("STARTTLS")]
        self.assertFalse([c for c in before_tls if c.startswith(("AUTH", "MAIL"))])
        wait_for(lambda: self.metric(d, "relais_egress_tls_handshakes_total",
                                     'result="ok"') >= 1, 10, "the handshake counted")
        self.assertEqual(d.stop(), 0)

    def test_the_next_connection_resumes_the_session(self):
        hop = self.hop()
        # One shard (each shard keeps its own session cache); idle_timeout_ms = 200 closes
        # the first connection before the second message.
        d = self.daemon(f"localhost:{hop.port}",
                        f"tls = \"verify\"\ntls_ca_file = \"{self.chain}\"\n", threads=1)
        self.send(d, "b@dst.test", "first")
        wait_for(lambda: hop.messages(), 20, "the first message")
        wait_for(lambda: all("QUIT" in c["commands"] for c in hop.snapshot()), 20,
                 "the first connection to say QUIT")
        self.send(d, "c@dst.test", "second")
        wait_for(lambda: len(hop.messages()) == 2, 20, "the second message")
        self.assertEqual(len([c for c in hop.snapshot() if c["tls"]]), 2)
        wait_for(lambda: self.metric(d, "relais_egress_tls_handshakes_total",
                                     'result="ok"') == 2, 10, "both handshakes counted")
        self.assertEqual(self.metric(d, "relais_egress_tls_resumed_total"), 1)
        self.assertEqual(d.stop(), 0)

    def test_may_falls_back_to_plaintext_when_the_handshake_fails(self):
        hop = self.hop(broken_handshake=True)
        # One shard: each shard remembers its own fallbacks (nothing is shared between them).
        d = self.daemon(f"127.0.0.1:{hop.port}", "tls = \"may\"\n", threads=1)
        self.send(d, "b@dst.test", "fallback")
        wait_for(lambda: hop.messages(), 20, "the message, in plaintext, at the next hop")
        connections = hop.snapshot()
        self.assertEqual(connections[0]["commands"][-1], "STARTTLS")
        self.assertFalse([c for c in connections if c["messages"] and c["tls"]])
        # Remembered: the next message goes in plaintext without trying STARTTLS again.
        self.send(d, "c@dst.test", "remembered")
        wait_for(lambda: len(hop.messages()) == 2, 20, "the second message")
        starttls = [c for c in hop.snapshot() if "STARTTLS" in c["commands"]]
        self.assertEqual(len(starttls), 1)
        wait_for(lambda: self.metric(d, "relais_egress_tls_plaintext_fallbacks_total") >= 1, 10,
                 "the fallback counted")
        self.assertEqual(self.metric(d, "relais_egress_tls_handshakes_total",
                                     'result="failed"'), 1)
        self.assertEqual(d.stop(), 0)

    def test_encrypt_defers_a_next_hop_without_starttls(self):
        hop = self.hop(starttls=False)
        d = self.daemon(f"127.0.0.1:{hop.port}", "tls = \"encrypt\"\n")
        self.send(d, "b@dst.test", "never in the clear")

        def deferred():
            return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                    and e.get("outcome") == "deferred"]
        attempts = wait_for(deferred, 20, "the deferral")
        self.assertIn("4.7.10", str(attempts[0]))
        self.assertEqual(hop.messages(), [])
        self.assertFalse([c for s in hop.snapshot() for c in s["commands"]
                          if c.startswith("MAIL")])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
