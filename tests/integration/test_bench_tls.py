"""relais-bench with TLS on loopback: the sink offering STARTTLS (and AUTH once encrypted) or
implicit TLS to independent clients (Python's smtplib and ssl, `openssl s_client`), and
`send --tls` / `--tls-implicit` / `--tls-resume` / `--auth` against it, with the handshake
counts of both sides compared. The certificate is made at test time."""

import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import RELAIS_BENCH as BENCH, BenchSink

OPENSSL = shutil.which("openssl")


@unittest.skipIf(OPENSSL is None, "needs the openssl command to make a certificate")
class BenchTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="relais-bench-tls-")
        cls.chain = os.path.join(cls.certs, "chain.pem")
        cls.key = os.path.join(cls.certs, "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", cls.key, "-out", cls.chain,
                        "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost"], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="relais-bench-tls-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def sink(self, *args):
        s = BenchSink("--tls-cert", self.chain, "--tls-key", self.key, *args)
        self.addCleanup(s.cleanup)
        return s

    def send(self, target, *args, expect_status=0, timeout=120):
        path = os.path.join(self.tmp, f"send-{len(os.listdir(self.tmp))}.json")
        r = subprocess.run([BENCH, "send", "--target", target, "--json", path, "--quiet", *args],
                           capture_output=True, text=True, timeout=timeout)
        self.assertEqual(r.returncode, expect_status, r.stdout + r.stderr)
        if not os.path.exists(path):
            return None, r
        with open(path) as f:
            return json.load(f), r

    @staticmethod
    def client_context():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def test_sink_starttls_and_auth_with_smtplib(self):
        sink = self.sink()
        host, port = sink.address.split(":")
        with smtplib.SMTP(host, int(port), timeout=10) as client:
            client.ehlo("client.example")
            self.assertTrue(client.has_extn("starttls"))
            self.assertFalse(client.has_extn("auth"))  # Never offered in the clear.
            client.starttls(context=self.client_context())
            self.assertIn(client.sock.version(), ("TLSv1.3", "TLSv1.2"))
            client.ehlo("client.example")
            self.assertFalse(client.has_extn("starttls"))
            self.assertIn("PLAIN", client.esmtp_features["auth"].upper())
            client.login("user", "secret")
            client.sendmail("a@example.com", ["b@example.com"],
                            "X-Relais-Bench: smtplib 0 1\r\nSubject: t\r\n\r\nhello\r\n")
        summary = sink.stop()
        self.assertEqual(summary["messages"], 1)
        self.assertEqual(summary["tls"]["handshakes"], 1)
        self.assertEqual(summary["tls"]["authenticated"], 1)
        self.assertEqual(summary["tls"]["failed"], 0)

    def test_sink_drops_commands_pipelined_behind_starttls(self):
        sink = self.sink()
        host, port = sink.address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"220 "))
            s.sendall(b"EHLO x\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
            self.assertTrue(f.readline().startswith(b"220 "))
            # The injected command got no reply in the clear; the next bytes are TLS.
            with self.client_context().wrap_socket(s, server_hostname="localhost") as tls:
                tf = tls.makefile("rb")
                tls.sendall(b"MAIL FROM:<a@example.com>\r\n")
                self.assertTrue(tf.readline().startswith(b"503 "))  # EHLO again first.
                tls.sendall(b"QUIT\r\n")
                self.assertTrue(tf.readline().startswith(b"221 "))
                tf.close()

    def test_sink_implicit_tls_with_openssl_s_client(self):
        sink = self.sink("--tls-implicit")
        r = subprocess.run([OPENSSL, "s_client", "-connect", sink.address, "-quiet",
                            "-servername", "localhost"], input="EHLO x\r\nQUIT\r\n",
                           capture_output=True, text=True, timeout=20)
        self.assertIn("220 ", r.stdout)
        self.assertIn("250-AUTH PLAIN LOGIN", r.stdout)
        self.assertIn("221 ", r.stdout)
        self.assertNotIn("STARTTLS", r.stdout)
        self.assertEqual(sink.stop()["tls"]["handshakes"], 1)

    def test_sink_refuses_garbage_instead_of_a_client_hello(self):
        sink = self.sink("--tls-implicit")
        host, port = sink.address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"EHLO x\r\n")
            data = s.recv(4096)  # An alert at most, then the close; never an SMTP reply.
            self.assertFalse(data.startswith(b"2"))
        summary = sink.stop()
        self.assertEqual(summary["tls"]["failed"], 1)
        self.assertEqual(summary["tls"]["handshakes"], 0)

    def check_tls_run(self, report, sink_summary, messages, connections, sink_extra=0):
        """`sink_extra`: handshakes of the XSTAT connections (over implicit TLS)."""
        s = report["summary"]
        self.assertEqual(s["accepted"], messages)
        if "check" in report:
            self.assertEqual(report["check"]["lost"], 0)
        self.assertEqual(s["tls_failures"], 0)
        self.assertEqual(s["tls_handshakes"], s["connections_opened"])
        self.assertGreaterEqual(s["connections_opened"], connections)
        lat = s["latency_us"]["tls_handshake"]
        self.assertEqual(lat["count"], s["tls_handshakes"])
        self.assertTrue(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"])
        self.assertEqual(sink_summary["tls"]["handshakes"], s["tls_handshakes"] + sink_extra)
        self.assertEqual(sink_summary["runs"][report["run_id"]]["messages"], messages)

    def test_send_starttls_to_the_sink(self):
        sink = self.sink()
        report, _ = self.send(sink.address, "--tls", "--connections", "4", "--messages", "200",
                              "--sink", sink.address)
        self.check_tls_run(report, sink.stop(), 200, 4)
        self.assertEqual(report["config"]["tls"], "starttls")
        self.assertEqual(report["summary"]["tls_resumed"], 0)

    def test_send_one_message_per_connection_resumes(self):
        sink = self.sink()
        report, _ = self.send(sink.address, "--tls", "--tls-resume", "--connections", "2",
                              "--messages", "40", "--messages-per-connection", "1",
                              "--sink", sink.address)
        sink_summary = sink.stop()
        self.check_tls_run(report, sink_summary, 40, 2)
        s = report["summary"]
        self.assertEqual(s["tls_handshakes"], 40)
        self.assertGreater(s["tls_resumed"], 30)  # All but the first few.
        self.assertEqual(sink_summary["tls"]["resumed"], s["tls_resumed"])

    def test_send_implicit_tls_with_auth_refused_without_tls(self):
        sink = self.sink("--tls-implicit")
        report, _ = self.send(sink.address, "--tls-implicit", "--connections", "3",
                              "--messages", "90", "--sink", sink.address)
        self.assertEqual(report["check"]["delivered"], 90)  # XSTAT over TLS too.
        self.check_tls_run(report, sink.stop(), 90, 3, sink_extra=1)
        _, r = self.send("127.0.0.1:1", "--auth", "u:p", expect_status=2)
        self.assertIn("--auth needs --tls", r.stderr)

    def test_send_starttls_with_auth(self):
        sink = self.sink()
        report, _ = self.send(sink.address, "--tls", "--auth", "user:secret", "--connections",
                              "2", "--messages", "20", "--sink", sink.address)
        summary = sink.stop()
        self.check_tls_run(report, summary, 20, 2)
        self.assertEqual(summary["tls"]["authenticated"], report["summary"]["connections_opened"])

    def test_send_implicit_tls_with_auth(self):
        sink = self.sink("--tls-implicit")
        report, _ = self.send(sink.address, "--tls-implicit", "--auth", "user:secret",
                              "--connections", "2", "--messages", "20", "--sink", sink.address)
        summary = sink.stop()
        self.check_tls_run(report, summary, 20, 2, sink_extra=1)
        self.assertEqual(summary["tls"]["authenticated"], report["summary"]["connections_opened"])

    def test_report_has_the_handshakes(self):
        sink = self.sink()
        full, _ = self.send(sink.address, "--tls", "--connections", "2", "--messages", "10",
                            "--messages-per-connection", "1")
        resumed, _ = self.send(sink.address, "--tls", "--tls-resume", "--connections", "2",
                               "--messages", "10", "--messages-per-connection", "1")
        files = sorted(os.path.join(self.tmp, f) for f in os.listdir(self.tmp))
        r = subprocess.run([BENCH, "report", *files], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("| run | tls | handshakes | resumed |", r.stdout)
        rows = [line for line in r.stdout.splitlines() if "| starttls |" in line]
        self.assertEqual(len(rows), 2)
        for row, report in zip(rows, (full, resumed)):
            cells = [c.strip() for c in row.strip("|").split("|")]
            self.assertEqual(int(cells[2]), report["summary"]["tls_handshakes"])
            self.assertEqual(int(cells[3]), report["summary"]["tls_resumed"])
            self.assertAlmostEqual(float(cells[5]),
                                   report["summary"]["latency_us"]["tls_handshake"]["p50"] / 1000,
                                   delta=0.001)

    def test_send_gives_up_on_a_server_that_stalls_in_the_handshake(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)
        stop = threading.Event()
        self.addCleanup(stop.set)

        def serve():  # Says yes to STARTTLS, then never answers the ClientHello.
            while not stop.is_set():
                try:
                    c, _ = listener.accept()
                except OSError:
                    return
                f = c.makefile("rb")
                c.sendall(b"220 stall ESMTP\r\n")
                for line in f:
                    if line.upper().startswith(b"EHLO"):
                        c.sendall(b"250-stall\r\n250 STARTTLS\r\n")
                    elif line.upper().startswith(b"STARTTLS"):
                        c.sendall(b"220 go ahead\r\n")
                        stop.wait(30)
                        break
                c.close()

        threading.Thread(target=serve, daemon=True).start()
        started = time.monotonic()
        report, r = self.send(f"127.0.0.1:{listener.getsockname()[1]}", "--tls", "--connections",
                              "1", "--messages", "1", "--timeout", "1s", expect_status=1,
                              timeout=30)
        self.assertLess(time.monotonic() - started, 20)
        self.assertGreaterEqual(report["summary"]["tls_failures"], 1)
        self.assertTrue(any("TLS handshake" in e for e in report["summary"]["errors"]),
                        report["summary"]["errors"])

    def test_send_tls_to_a_plain_sink_fails(self):
        sink = BenchSink()
        self.addCleanup(sink.cleanup)
        report, r = self.send(sink.address, "--tls", "--connections", "1", "--messages", "5",
                              "--timeout", "2s", expect_status=1)
        self.assertEqual(report["summary"]["accepted"], 0)
        self.assertIn("TLS", r.stderr)


if __name__ == "__main__":
    unittest.main()
