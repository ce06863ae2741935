"""relais-bench end to end on loopback: send against its own sink and through relaisd, loss and
drop accounting, LMTP and BDAT, runs that cannot succeed, and the report.

Every count asserted here comes from two independent sides: what `send` saw acknowledged and
what the sink counted by tracking header (XSTAT), compared message by message."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from harness import RELAIS_BENCH as BENCH, BenchSink, Daemon, wait_for


class BenchTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="relais-bench-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def sink(self, *args):
        s = BenchSink(*args)
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

    def assert_complete_accounting(self, report, messages):
        s, c = report["summary"], report["check"]
        self.assertEqual(s["attempted"], messages)
        self.assertEqual(s["accepted"] + s["partial"] + s["refused"] + s["connection_lost"],
                         messages)
        self.assertEqual(c["lost"], 0, c.get("lost_seqs"))
        self.assertEqual(c["duplicates"], 0)
        self.assertEqual(c["delivered"], c["acknowledged"])

    def test_send_to_sink_loses_nothing(self):
        sink = self.sink()
        report, _ = self.send(sink.address, "--connections", "20", "--messages", "3000",
                              "--sink", sink.address)
        self.assert_complete_accounting(report, 3000)
        s = report["summary"]
        self.assertEqual(s["accepted"], 3000)
        self.assertEqual(s["replies"], {"250": 3000})
        self.assertEqual(report["check"]["acknowledged"], 3000)
        for phase in ("connect", "ehlo", "data_end"):
            lat = s["latency_us"][phase]
            self.assertGreater(lat["count"], 0, phase)
            self.assertTrue(lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"])
        self.assertEqual(s["latency_us"]["data_end"]["count"], 3000)
        self.assertGreater(s["messages_per_second"], 0)
        self.assertTrue(report["series"])
        self.assertEqual(sum(p["accepted"] for p in report["series"]), 3000)
        summary = sink.stop()
        self.assertEqual(summary["messages"], 3000)
        self.assertEqual(summary["runs"][report["run_id"]]["messages"], 3000)

    def test_drops_mid_data_are_reported_exactly(self):
        sink = self.sink("--reply", "BODY:drop:0.05", "--seed", "7")
        report, _ = self.send(sink.address, "--connections", "10", "--messages", "2000",
                              "--sink", sink.address)
        self.assert_complete_accounting(report, 2000)
        c, s = report["check"], report["summary"]
        self.assertGreater(c["dropped_by_sink"], 20)  # About 100 expected at 5%.
        self.assertEqual(c["dropped_by_sink"], s["connection_lost"])
        self.assertTrue(c["drops_match"])
        self.assertEqual(c["dropped_seqs"], c["connection_lost_seqs"])
        self.assertEqual(s["accepted"], 2000 - s["connection_lost"])

    def test_lmtp_partial_and_bdat(self):
        sink = self.sink("--lmtp", "--reply", "EOD:452:0.1", "--seed", "3")
        report, _ = self.send(sink.address, "--lmtp", "--rcpts", "3", "--messages", "500",
                              "--connections", "5", "--sink", sink.address)
        self.assert_complete_accounting(report, 500)
        s = report["summary"]
        self.assertGreater(s["partial"], 0)
        self.assertEqual(s["replies"]["250"] + s["replies"]["452"], 1500)
        # Each acknowledged recipient arrived: the sink saw exactly the 250s.
        self.assertEqual(sink.stop()["runs"][report["run_id"]]["deliveries"], s["replies"]["250"])

        smtp_sink = self.sink()
        report, _ = self.send(smtp_sink.address, "--bdat", "--pipelining", "off", "--messages",
                              "300", "--size", "1k:1,64k:1", "--sink", smtp_sink.address)
        self.assert_complete_accounting(report, 300)
        self.assertEqual(report["summary"]["accepted"], 300)

    def test_open_loop_rate_is_kept(self):
        sink = self.sink()
        report, _ = self.send(sink.address, "--rate", "400", "--messages", "400",
                              "--connections", "4", "--sink", sink.address)
        self.assert_complete_accounting(report, 400)
        # 400 messages at 400/s take about a second, not the fraction closed loop would take.
        self.assertGreater(report["summary"]["seconds"], 0.9)
        self.assertEqual(report["summary"]["latency_us"]["start_lag"]["count"], 400)

    def test_hold_keeps_idle_sessions_then_quits(self):
        sink = self.sink()
        start = time.monotonic()
        report, _ = self.send(sink.address, "--connections", "30", "--hold", "1s", timeout=60)
        self.assertLess(time.monotonic() - start, 20)
        s = report["summary"]
        self.assertEqual(s["sessions_ready"], 30)
        self.assertEqual(s["attempted"], 0)
        self.assertEqual(s["latency_us"]["ehlo"]["count"], 30)

    def test_through_relaisd_loses_nothing_and_metrics_count_it(self):
        sink = self.sink()
        d = Daemon('[relay]\nnetworks = ["127.0.0.0/8"]\n'  # Loopback senders may relay anywhere.
                   f'[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = ["{sink.address}"]\n')
        self.addCleanup(d.cleanup)
        d.start()
        report, _ = self.send(f"127.0.0.1:{d.port}", "--connections", "20", "--messages", "2000",
                              "--sink", sink.address, "--verify-timeout", "60s")
        self.assert_complete_accounting(report, 2000)
        self.assertEqual(report["check"]["acknowledged"], 2000)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        accepted = sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith("relais_messages_accepted_total"))
        self.assertEqual(accepted, 2000)

    def test_every_connection_ends_with_quit(self):
        # A server of the test's own that counts QUITs: the last messages' connections used to
        # be dropped with their QUIT still queued.
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        self.addCleanup(server.close)
        counts = {"connections": 0, "quits": 0}
        lock = threading.Lock()

        def session(conn):
            with conn, conn.makefile("rb") as f:
                conn.sendall(b"220 counter ESMTP\r\n")
                in_data = False
                for line in f:
                    if in_data:
                        if line == b".\r\n":
                            in_data = False
                            conn.sendall(b"250 ok\r\n")
                        continue
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250-counter\r\n250 PIPELINING\r\n")
                    elif verb == b"DATA":
                        in_data = True
                        conn.sendall(b"354 go on\r\n")
                    elif verb == b"QUIT":
                        with lock:
                            counts["quits"] += 1
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 ok\r\n")

        def accept():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with lock:
                    counts["connections"] += 1
                threading.Thread(target=session, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        report, _ = self.send(address, "--connections", "5", "--messages", "50",
                              "--messages-per-connection", "7")
        self.assertEqual(report["summary"]["accepted"], 50)
        with lock:
            self.assertGreaterEqual(counts["connections"], 8)  # 50 messages, 7 per connection.
            self.assertEqual(counts["quits"], counts["connections"])

    def test_message_file_is_sent_as_given(self):
        # LF line ends, a line that starts with a dot: stored byte for byte (in CRLF) under the
        # tracking header.
        path = os.path.join(self.tmp, "message.eml")
        text = "From: <a@example.test>\nSubject: given\n\n.leading dot\nlast line"
        with open(path, "w") as f:
            f.write(text)
        d = Daemon()
        self.addCleanup(d.cleanup)
        d.start()
        report, _ = self.send(f"127.0.0.1:{d.port}", "--message", path, "--messages", "5",
                              "--connections", "2")
        self.assertEqual(report["summary"]["accepted"], 5)
        bodies = wait_for(lambda: len(d.all_messages()) == 5 and d.all_messages(), 20, "5 stored")
        for m in bodies:
            self.assertIn("\nX-Relais-Bench: " + report["run_id"] + " ", m["body"])
            self.assertTrue(m["body"].endswith(text + "\n"), m["body"])
        _, r = self.send("127.0.0.1:1", "--message", os.path.join(self.tmp, "none.eml"),
                         expect_status=2)
        self.assertIn("--message", r.stderr)

    def test_runs_that_cannot_succeed_end_with_a_reason(self):
        with socket_closed_port() as port:
            report, r = self.send(f"127.0.0.1:{port}", "--messages", "10", expect_status=1,
                                  timeout=60)
        self.assertIn("cannot connect", r.stderr)
        sink = self.sink("--reply", "CONNECT:421:1")
        _, r = self.send(sink.address, "--messages", "10", "--timeout", "1s", expect_status=1,
                         timeout=60)
        self.assertIn("no session became ready for 1000 ms", r.stderr)
        self.assertIn("421", r.stderr)

    def test_bad_usage_names_the_problem(self):
        for args, needle in [(["send"], "--target is required"),
                             (["send", "--target", "127.0.0.1:1", "--size", "2x"], "bad size"),
                             (["send", "--target", "127.0.0.1:1", "--pipelining", "maybe"],
                              "--pipelining"),
                             (["sink", "--reply", "BODY:451:1"], "BODY only takes 'drop'"),
                             (["sink", "--reply", "RCPT:451:0.7", "--reply", "RCPT:550:0.7"],
                              "more than 1"),
                             (["sink", "--delay", "EOD:9-1"], "--delay"),
                             (["frobnicate"], "unknown command")]:
            r = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(needle, r.stderr, args)

    def test_report_makes_a_table_and_a_plot(self):
        sink = self.sink()
        a, _ = self.send(sink.address, "--messages", "500", "--connections", "5")
        b, _ = self.send(sink.address, "--messages", "500", "--connections", "10", "--bdat")
        files = sorted(os.path.join(self.tmp, f) for f in os.listdir(self.tmp))
        png = os.path.join(self.tmp, "runs.png")
        md = os.path.join(self.tmp, "runs.md")
        r = subprocess.run([BENCH, "report", "--png", png, "--markdown", md, *files],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        rows = [line for line in r.stdout.splitlines() if line.startswith("| send-")]
        self.assertEqual(len(rows), 2)
        for row, report in zip(rows, (a, b)):
            cells = [c.strip() for c in row.strip("|").split("|")]
            self.assertEqual(int(cells[4]), report["summary"]["accepted"])
            self.assertAlmostEqual(float(cells[5]), report["summary"]["messages_per_second"],
                                   delta=0.1)
        with open(md) as f:
            self.assertEqual(f.read(), r.stdout)
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"tool": "something else"}')
        r = subprocess.run([BENCH, "report", bad], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not the --json output of relais-bench send", r.stderr)


class socket_closed_port:
    """A loopback port that refuses connections while the context lasts (bound, not listening)."""

    def __enter__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


if __name__ == "__main__":
    unittest.main()
