"""TLS and AUTH between relaisd and real MTAs on loopback.

- Postfix's SMTP client relays to relaisd with smtp_tls_security_level = encrypt (and verify,
  against the test CA).
- relaisd relays through a smarthost route to a Postfix smtpd that requires TLS and AUTH
  (smtpd_tls_security_level = encrypt, Cyrus SASL with a sasldb): route tls = "verify"
  (tls_ca_file = the test CA) with auth_user / auth_password_file (AUTH needs "verify"); a CA
  that did not sign the peer's certificate defers instead.
- route tls = "may" against a next hop that offers STARTTLS and then answers the handshake
  with garbage: the message goes in plaintext.
- route tls = "encrypt" against a next hop without STARTTLS (Postfix's smtp-sink): deferred
  (4.7.10), nothing sent, the message stays queued.

The private Postfix instances (postfix_peer.py) need root; those tests skip otherwise.
"""

import os
import smtplib
import socketserver
import threading
import unittest

import postfix_peer
from harness import Daemon, Sink, free_port, wait_for
from postfix_peer import Postfix
from test_tls_clients import received_header
from tls_certs import TestCerts, tls_section

FAST_RETRY = "[queue]\nretry_first_ms = 300\nretry_max_ms = 1000\n"
PEER_USER, PEER_PASSWORD = "relay@postfix.test", "peer pass phrase"


def send(port, subject, rcpt="rcpt@dst.test", sender="a@src.test"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail(sender, [rcpt], f"Subject: {subject}\r\n\r\nhello\r\n".encode())


class PeerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = TestCerts()

    @classmethod
    def tearDownClass(cls):
        cls.certs.cleanup()

    def daemon(self, config, threads=2):
        d = Daemon(config, threads=threads)
        self.addCleanup(d.cleanup)
        return d.start()

    def postfix(self, **kwargs):
        why = postfix_peer.available()
        if why:
            self.skipTest(why)
        pf = Postfix(**kwargs)
        self.addCleanup(pf.cleanup)
        self.addCleanup(lambda: self._dump_on_failure(pf))
        return pf.start()

    def _dump_on_failure(self, pf):
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            print(f"--- Postfix log ({pf.dir}) ---\n{pf.log()[-4000:]}")

    def attempts(self, d, outcome=None):
        return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                and (outcome is None or e.get("outcome") == outcome)]

    def smarthost(self, host, extra=""):
        return (FAST_RETRY + '[relay]\nnetworks = ["127.0.0.0/8"]\n'
                f'[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = ["{host}"]\n{extra}')


class PostfixToRelaisTest(PeerTest):
    """Postfix's SMTP client as the sending MTA, relaying everything to relaisd."""

    def relais_with_tls(self):
        port = free_port()
        d = self.daemon(f'[server]\nlisten = ["127.0.0.1:{port}"]\nhostname = "relais.test"\n'
                        + tls_section(self.certs))
        return d, port

    def check_delivered(self, d, pf, subject):
        def found():
            return [m for m in d.maildir_messages() if f"Subject: {subject}" in m["body"]]
        [m] = wait_for(found, 60, f"'{subject}' relayed by Postfix into relaisd's Maildir")
        first = received_header(m["body"])  # Ours, above Postfix's.
        self.assertIn("from postfix.test", first)
        self.assertRegex(first, r"\bwith ESMTPS\b")
        return m

    def test_postfix_smtp_tls_security_level_encrypt(self):
        d, port = self.relais_with_tls()
        pf = self.postfix(main={"relayhost": f"[127.0.0.1]:{port}",
                                "smtp_tls_security_level": "encrypt",
                                "smtp_tls_loglevel": "1"})
        send(pf.port, "postfix encrypt")
        self.check_delivered(d, pf, "postfix encrypt")
        self.assertRegex(pf.log(), r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]"
                                   r":\d+: TLSv1\.[23] with cipher")
        self.assertIn("status=sent", pf.log())

    def test_postfix_smtp_tls_security_level_verify(self):
        d, port = self.relais_with_tls()
        pf = self.postfix(main={"relayhost": f"[localhost]:{port}",
                                "smtp_tls_security_level": "verify",
                                "smtp_tls_CAfile": self.certs.ca,
                                "smtp_tls_loglevel": "1"})
        send(pf.port, "postfix verify")
        self.check_delivered(d, pf, "postfix verify")
        self.assertRegex(pf.log(), r"Verified TLS connection established to localhost")


class RelaisToPostfixTest(PeerTest):
    """relaisd's smarthost route to a Postfix smtpd that requires TLS and AUTH; Postfix hands
    what it accepts on to an smtp-sink, where the test reads it."""

    def peer(self):
        sink = Sink()
        self.addCleanup(sink.cleanup)
        if not postfix_peer.sasl_available():
            self.skipTest("Cyrus SASL (sasl2-bin, libsasl2-modules) is not installed")
        pf = self.postfix(
            users={PEER_USER: PEER_PASSWORD},
            main={"smtpd_tls_security_level": "encrypt",
                  "smtpd_tls_chain_files": f"{self.certs.ecdsa_key} {self.certs.ecdsa_chain}",
                  "smtpd_tls_auth_only": "yes",
                  "smtpd_tls_received_header": "yes",
                  "smtpd_tls_loglevel": "1",
                  "mynetworks": "",  # Loopback is no excuse: only AUTH may relay.
                  "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
                  "relayhost": f"[127.0.0.1]:{sink.port}"})
        password_file = os.path.join(pf.dir, "peer-password")
        with open(os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(PEER_PASSWORD + "\n")
        return pf, sink, password_file

    def relay_through(self, tls, ca=None, host="localhost"):
        pf, sink, password_file = self.peer()
        extra = (f'tls = "{tls}"\nauth_user = "{PEER_USER}"\n'
                 f'auth_password_file = "{password_file}"\n')
        if ca:
            extra += f'tls_ca_file = "{ca}"\n'
        d = self.daemon(self.smarthost(f"{host}:{pf.port}", extra))
        return d, pf, sink

    def check_relayed(self, d, pf, sink, subject):
        wait_for(lambda: [m for m in sink.messages() if f"Subject: {subject}" in m], 60,
                 f"'{subject}' through Postfix at the sink")
        [m] = [m for m in sink.messages() if f"Subject: {subject}" in m]
        # Postfix's Received: says TLS and AUTH; its log names our login.
        self.assertRegex(m, r"using TLSv1\.[23] with cipher")
        self.assertRegex(m, r"by postfix\.test \(Postfix\) with ESMTPSA")
        # Log lines are written a moment after what they say happened: waited for.
        wait_for(lambda: f"sasl_username={PEER_USER}" in pf.log(), 30, "Postfix's log of the login")
        wait_for(lambda: not d.spool_messages(), 30, "relaisd's spool to drain")
        [attempt] = wait_for(lambda: self.attempts(d, "delivered"), 30, "the delivery logged")
        self.assertEqual(attempt["next_hop"].rsplit(":", 1)[1], str(pf.port))


    def test_route_tls_verify_with_the_test_ca(self):
        d, pf, sink = self.relay_through("verify", ca=self.certs.ca)
        send(d.port, "relais verify auth")
        self.check_relayed(d, pf, sink, "relais verify auth")

    def test_route_tls_verify_with_another_ca_defers(self):
        other = TestCerts()
        self.addCleanup(other.cleanup)
        d, pf, sink = self.relay_through("verify", ca=other.ca)
        send(d.port, "relais verify wrong ca")
        deferred = wait_for(lambda: self.attempts(d, "deferred"), 30, "a deferral")
        self.assertTrue(deferred[0]["reply"].startswith("4"), deferred[0])
        self.assertEqual(len(d.spool_messages()), 1)
        self.assertNotIn("sasl_username=", pf.log())  # No password to an unverified peer.
        self.assertEqual(sink.messages(), [])


class FakeNextHop(socketserver.ThreadingTCPServer):
    """An SMTP next hop on a loopback port that offers STARTTLS and answers the handshake with
    garbage, then closes; in plaintext it accepts mail and keeps each message."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.messages = []
        self.starttls_tries = 0
        super().__init__(("127.0.0.1", 0), FakeNextHopHandler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1})
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class FakeNextHopHandler(socketserver.StreamRequestHandler):
    timeout = 20

    def handle(self):
        w = self.wfile.write
        w(b"220 fake.test ESMTP\r\n")
        data = None
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if data is not None:
                if line == b".\r\n":
                    self.server.messages.append(b"".join(data))
                    data = None
                    w(b"250 2.0.0 queued\r\n")
                else:
                    data.append(line)
            elif verb == b"EHLO":
                w(b"250-fake.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
            elif verb == b"STAR":
                self.server.starttls_tries += 1
                w(b"220 2.0.0 go ahead\r\n")
                self.wfile.flush()
                self.request.recv(4096)  # The ClientHello...
                w(b"\x15garbage, not a ServerHello\r\n")  # ...answered with nonsense.
                return
            elif verb == b"DATA":
                data = []
                w(b"354 go\r\n")
            elif verb == b"QUIT":
                w(b"221 2.0.0 bye\r\n")
                return
            else:
                w(b"250 2.0.0 ok\r\n")


class OpportunisticTest(PeerTest):
    def test_may_falls_back_to_plaintext_when_the_handshake_fails(self):
        hop = FakeNextHop()
        self.addCleanup(hop.close)
        # One shard: each shard remembers its own fallbacks (nothing crosses cores).
        d = self.daemon(self.smarthost(f"127.0.0.1:{hop.port}", 'tls = "may"\n'), threads=1)
        send(d.port, "may fallback")
        wait_for(lambda: hop.messages, 60, "the message in plaintext at the next hop")
        self.assertIn(b"Subject: may fallback", hop.messages[0])
        self.assertGreaterEqual(hop.starttls_tries, 1)
        wait_for(lambda: not d.spool_messages(), 30, "the spool to drain")
        # Remembered: the next message goes in plaintext at once.
        tries = hop.starttls_tries
        send(d.port, "may fallback again")
        wait_for(lambda: len(hop.messages) == 2, 30, "the second message")
        self.assertEqual(hop.starttls_tries, tries)

    def test_encrypt_defers_when_starttls_is_not_offered(self):
        sink = Sink()  # Postfix's smtp-sink offers no STARTTLS.
        self.addCleanup(sink.cleanup)
        d = self.daemon(self.smarthost(f"127.0.0.1:{sink.port}", 'tls = "encrypt"\n'))
        send(d.port, "encrypt no starttls")
        deferred = wait_for(lambda: self.attempts(d, "deferred"), 30, "a deferral")
        self.assertIn("4.7.10", deferred[0]["reply"])
        self.assertEqual(len(d.spool_messages()), 1)
        self.assertEqual(sink.messages(), [])

    def test_encrypt_defers_when_the_handshake_fails(self):
        hop = FakeNextHop()
        self.addCleanup(hop.close)
        d = self.daemon(self.smarthost(f"127.0.0.1:{hop.port}", 'tls = "encrypt"\n'))
        send(d.port, "encrypt bad handshake")
        deferred = wait_for(lambda: self.attempts(d, "deferred"), 30, "a deferral")
        self.assertTrue(deferred[0]["reply"].startswith("4"), deferred[0])
        self.assertEqual(hop.messages, [])  # Never in clear.
        self.assertEqual(len(d.spool_messages()), 1)


if __name__ == "__main__":
    unittest.main()
