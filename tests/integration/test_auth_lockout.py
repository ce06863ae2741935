"""SMTP AUTH's failed-login lockout on a real relaisd with several shards: the daemon has ONE
login limiter, so a client whose connections SO_REUSEPORT spreads over the shards meets
lockout_failures, not lockout_failures x shards; attempts sent at once on parallel
connections see each other; and only the guessing address is refused. AUTH is offered in
clear on a trusted listener (no TLS needed here); AUTH PLAIN is sent by hand, one attempt per
connection (smtplib's login() would retry with another mechanism)."""

import base64
import shutil
import smtplib
import subprocess
import tempfile
import threading
import unittest

from harness import RELAISCTL, Daemon

USER = "alice@example.com"
PASSWORD = "correct horse battery staple"
LOCKOUT_FAILURES = 3


class AuthLockoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="relais-lockout-")
        cls.passwd = f"{cls.tmp}/passwd"
        subprocess.run([RELAISCTL, "passwd", "--file", cls.passwd, USER],
                       input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
        cls.daemon = Daemon(f"""
[server]
listen = ["127.0.0.1:0"]
hostname = "relais.test"
[relay]
local_domains = ["example.com"]
[auth]
spf = "off"
dkim = "off"
dmarc = "off"
[[listener]]
listen = "127.0.0.1:0"
tls = "off"
trusted = true
[smtp_auth]
credentials = "{cls.passwd}"
failures_before_delay = {LOCKOUT_FAILURES}
lockout_failures = {LOCKOUT_FAILURES}
""", threads=4).start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        cls.daemon.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def attempt(self, source, user, password):
        """The reply code to one AUTH PLAIN on a new connection from `source` (127.x.y.z)."""
        with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=30,
                          source_address=(source, 0)) as s:
            s.ehlo("client.test")
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            code, _ = s.docmd("AUTH", "PLAIN " + token)
            return code

    def shards_of(self, source):
        return {e.get("shard") for e in self.daemon.events()
                if e.get("event") == "session_end" and e.get("client", "").startswith(source)}

    def test_lockout_holds_across_shards(self):
        source = "127.0.0.21"
        codes = [self.attempt(source, "victim@example.com", f"guess{i}") for i in range(8)]
        self.assertEqual(codes, [535] * LOCKOUT_FAILURES + [454] * (8 - LOCKOUT_FAILURES))
        # Eight connections over four shards: more than one shard saw them (else this test
        # proves nothing about sharing; all on one shard has odds of 4^-7).
        self.assertGreater(len(self.shards_of(source)), 1, self.shards_of(source))
        # Only that address is refused: the user is locked for everyone, others are not.
        self.assertEqual(self.attempt("127.0.0.22", "victim@example.com", "x"), 454)
        self.assertEqual(self.attempt("127.0.0.22", USER, PASSWORD), 235)

    def test_parallel_guesses_stop_at_the_lockout(self):
        source = "127.0.0.31"
        codes = []
        lock = threading.Lock()

        def guess(i):
            code = self.attempt(source, f"user{i}@example.com", "guess")
            with lock:
                codes.append(code)
        threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(codes), 12)
        self.assertLessEqual(codes.count(535), LOCKOUT_FAILURES, codes)
        self.assertEqual(codes.count(535) + codes.count(454), 12, codes)
        # An honest client elsewhere is not refused meanwhile, nor after.
        self.assertEqual(self.attempt("127.0.0.32", USER, PASSWORD), 235)


if __name__ == "__main__":
    unittest.main()
