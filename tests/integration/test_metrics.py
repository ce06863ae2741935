"""relaisd's Prometheus endpoint: content checked by promtool, scraped by a real Prometheus on
loopback, and the HTTP edges (health, readiness during a graceful stop, bad requests)."""

import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

from harness import Daemon, free_port, wait_for

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out.decode()


def read_text(path):
    with open(path) as f:
        return f.read()


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def send(port, count, rcpt="bob@example.com"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        for i in range(count):
            s.sendmail("a@sender.test", [rcpt], f"Subject: m{i}\r\n\r\nhello\r\n".encode())


class MetricsTest(unittest.TestCase):
    def daemon(self, config=""):
        d = Daemon(config)
        self.addCleanup(d.cleanup)
        return d.start()

    def test_counters_move_and_promtool_accepts_the_output(self):
        d = self.daemon()
        port = d.metrics_port
        status, before = get(port, "/metrics")
        self.assertEqual(status, 200)
        send(d.port, 3)
        wait_for(lambda: samples(get(port, "/metrics")[1])[
            'relais_delivery_attempts_total{route="maildir",outcome="delivered"}'] == 3, 20,
            "three Maildir deliveries counted")
        text = get(port, "/metrics")[1]
        m = samples(text)
        self.assertEqual(samples(before)["relais_messages_accepted_total"], 0)
        self.assertEqual(m["relais_messages_accepted_total"], 3)
        self.assertGreater(m["relais_accepted_message_bytes_total"], 3 * len("Subject: m0"))
        self.assertEqual(m["relais_connections_accepted_total"], 1)
        self.assertGreaterEqual(m['relais_smtp_replies_total{class="2xx"}'], 3 * 4)
        self.assertEqual(m['relais_message_durable_seconds_bucket{le="+Inf"}'], 3)
        self.assertEqual(m["relais_message_durable_seconds_count"], 3)
        self.assertGreaterEqual(m["relais_spool_fsyncs_total"], 1)
        self.assertEqual(m["relais_delivery_seconds_count"], 3)
        self.assertIn('relais_connections_active{core="1"}', m)
        # Label cardinality is fixed: no series names a recipient or a client.
        self.assertNotIn("bob@", text)
        self.assertNotIn("127.0.0.1", text)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(d.stop(), 0)

    def test_health_readiness_and_bad_requests(self):
        d = self.daemon("[timeouts]\nshutdown_grace_ms = 5000\n")
        port = d.metrics_port
        self.assertEqual(get(port, "/healthz"), (200, "ok\n"))
        self.assertEqual(get(port, "/readyz"), (200, "ready\n"))
        self.assertEqual(get(port, "/nothing")[0], 404)
        self.assertTrue(raw(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(
            "HTTP/1.1 405 "))
        self.assertTrue(raw(port, b"GARBAGE\r\n\r\n").startswith("HTTP/1.1 400 "))
        self.assertTrue(raw(port, b"GET /" + b"x" * 9000).startswith("HTTP/1.1 431 "))
        head = raw(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        self.assertTrue(head.startswith("HTTP/1.1 200 ") and head.endswith("\r\n\r\n"), head)
        # A client in the middle of a transaction holds the graceful stop open: meanwhile the
        # endpoint still answers, and /readyz says the daemon no longer takes mail.
        s = smtplib.SMTP("127.0.0.1", d.port, timeout=10)
        self.addCleanup(s.close)
        s.ehlo("c")
        s.mail("a@sender.test")
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: get(port, "/readyz")[0] == 503, 10, "/readyz to say 503")
        self.assertEqual(get(port, "/healthz")[0], 200)
        s.close()
        self.assertEqual(d.proc.wait(timeout=30), 0)

    def test_reception_and_session_log_lines(self):
        d = self.daemon()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.example")
            s.sendmail("a@sender.test", ["b@example.com", "c@example.com"],
                       b"Subject: logged\r\n\r\nhello\r\n")
            self.assertEqual(s.docmd("RCPT TO:<x@example.com>")[0], 503)  # An error, counted.

        def events(name):
            return [e for e in d.events(d.log_offset) if e.get("event") == name]
        [accepted] = wait_for(lambda: events("message_accepted"), 10, "a reception line")
        self.assertEqual(len(accepted["id"]), 32)
        self.assertEqual(accepted["client"], "127.0.0.1")
        self.assertEqual(accepted["helo"], "client.example")
        self.assertEqual(accepted["sender"], "a@sender.test")
        self.assertEqual(accepted["recipients"], 2)
        self.assertEqual(accepted["size"], len(b"Subject: logged\r\n\r\nhello\r\n"))
        self.assertGreater(accepted["durable_us"], 0)
        for key in ("ts", "level", "shard"):
            self.assertIn(key, accepted)
        [session] = wait_for(lambda: events("session_end"), 10, "a session line")
        self.assertEqual((session["client"], session["helo"], session["messages"],
                          session["errors"]), ("127.0.0.1", "client.example", 1, 1))
        self.assertGreaterEqual(session["duration_ms"], 0)
        self.assertEqual(samples(get(d.metrics_port, "/metrics")[1])[
            "relais_log_lines_dropped_total"], 0)
        self.assertEqual(d.stop(), 0)

    def test_log_file_is_reopened_on_sigusr1(self):
        d = Daemon("")
        self.addCleanup(d.cleanup)
        path = os.path.join(d.workdir, "relais.jsonl")
        d.config_text = f'[log]\nfile = "{path}"\n'
        d.log_path = path  # The harness reads the daemon's events where it writes them.
        port = d.start().port
        send(port, 1)
        wait_for(lambda: "message_accepted" in read_text(path), 10, "the first line")
        os.rename(path, path + ".1")  # What logrotate does...
        d.proc.send_signal(signal.SIGUSR1)  # ...and then this.
        wait_for(lambda: os.path.exists(path), 10, "the file to be opened again")
        send(port, 1)
        wait_for(lambda: "message_accepted" in read_text(path), 10, "a line in the new file")
        self.assertEqual(read_text(path + ".1").count("message_accepted"), 1)
        self.assertIn("log_reopened", read_text(path))
        self.assertEqual(d.stop(), 0)

    def test_prometheus_scrapes_it(self):
        d = self.daemon()
        work = tempfile.mkdtemp(prefix="relais-prom-")
        self.addCleanup(shutil.rmtree, work, True)
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: relais\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{d.metrics_port}']\n")
        prom_port = free_port()
        prom_log = open(os.path.join(work, "prom.log"), "wb")
        self.addCleanup(prom_log.close)
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=prom_log)

        def stop_prometheus():
            if prom.poll() is None:
                prom.terminate()
                try:
                    prom.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    prom.kill()
                    prom.wait()
        self.addCleanup(stop_prometheus)

        def query(expr):
            try:
                url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={expr}"
                with urllib.request.urlopen(url, timeout=5) as r:
                    result = json.load(r)["data"]["result"]
            except (OSError, KeyError, ValueError):
                return None
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: query('up{job="relais"}') == 1, 60, "Prometheus to scrape relaisd")
        self.assertEqual(query("relais_messages_accepted_total"), 0)
        send(d.port, 2)
        wait_for(lambda: query("relais_messages_accepted_total") == 2, 30,
                 "Prometheus to see the counter move")
        stop_prometheus()
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
