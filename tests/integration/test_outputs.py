"""What relaisd writes where others read it: log lines, bounces, the admin socket and the
metrics endpoint, under hostile input.

- Every log line is JSON whatever bytes a client sends (EHLO, MAIL FROM, header fields).
- Log records reach a pipe whole when every shard and delivery worker writes at once.
- A sender cannot forge the structure of a bounce by predicting its MIME boundary, and queue
  IDs do not count up.
- The admin socket cannot be squatted; relaisctl talks only to our own user's daemon.
- Idle metrics clients cannot starve a scrape.
"""

import email
import email.policy
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from harness import RELAISCTL, RELAISD, Daemon, RawClient, Sink, free_port, wait_for

# Explicit local domains: the test does not rely on the built-in default.
DOMAINS = '[relay]\nlocal_domains = ["sender.test", "rej.test", "example.test"]\n'


def routes(root, refuser=None):
    """rej.test goes to `refuser` (a next hop that refuses every recipient: failures decided
    at delivery, so the delivery workers log them in batches and bounce them)."""
    text = ""
    if refuser is not None:
        text += (f'[[routes]]\ndomain = "rej.test"\ntype = "smarthost"\n'
                 f'hosts = ["{refuser.address}"]\n')
    return text + f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{root}"\n'


def refusing_sink(test):
    sink = Sink(["-f", "RCPT"])
    test.addCleanup(sink.stop)
    return sink


def strict_lines(data):
    """Every line of `data` (bytes) as a JSON object; fails on the first that is not one."""
    out = []
    for number, raw in enumerate(data.split(b"\n")):
        if not raw:
            continue
        try:
            text = raw.decode("utf-8")  # Strict: invalid UTF-8 is a failure here.
            record = json.loads(text)
        except (UnicodeDecodeError, ValueError) as e:
            raise AssertionError(f"line {number} is not JSON ({e}): {raw[:300]!r}")
        if not isinstance(record, dict):
            raise AssertionError(f"line {number} is not an object: {raw[:300]!r}")
        out.append(record)
    return out


def greet(client, name=b"client.test"):
    code, _ = client.reply()
    assert code == 220, code
    client.send(b"EHLO " + name + b"\r\n")
    return client.reply()


def send_message(client, sender, recipients, body, params=b""):
    """One pipelined transaction; returns the reply to the end of data (code, text)."""
    batch = b"MAIL FROM:<" + sender + b">" + params + b"\r\n"
    batch += b"".join(b"RCPT TO:<" + r + b">\r\n" for r in recipients)
    batch += b"DATA\r\n"
    client.send(batch)
    for _ in range(1 + len(recipients)):
        client.reply(timeout=60)
    code, text = client.reply(timeout=60)
    if code != 354:
        return code, text
    client.send(body + b"\r\n.\r\n")
    return client.reply(timeout=60)


class PipedDaemon(Daemon):
    """A Daemon whose stdout is a pipe (as under systemd or docker), read by a thread."""

    def start(self, wait=True):
        config_path = os.path.join(self.workdir, "relais.toml")
        text = self.config_text + f'\n[spool]\npath = "{self.spool}"\n'
        text += '\n[server]\nlisten = ["127.0.0.1:0"]\nhostname = "relais.test"\n'
        text += '\n[metrics]\nlisten = "127.0.0.1:0"\n'
        with open(config_path, "w") as f:
            f.write(text)
        self.piped = bytearray()
        self.lock = threading.Lock()
        self.reading = threading.Event()  # Cleared: nobody reads the pipe, it fills up.
        self.reading.set()
        self.proc = subprocess.Popen(
            [RELAISD, "--config", config_path, "--threads", str(self.threads)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.workdir)

        def drain():
            while True:
                self.reading.wait()
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    return
                with self.lock:
                    self.piped += chunk
        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        self.port = wait_for(self._port_from_pipe, 20, "relaisd to listen")
        return self

    def cleanup(self):
        super().cleanup()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def output(self):
        with self.lock:
            return bytes(self.piped)

    def _port_from_pipe(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"relaisd exited with {self.proc.returncode}")
        for m in re.finditer(rb'"event":"listening","address":"127\.0\.0\.1:(\d+)"',
                             self.output()):
            return int(m.group(1))
        return None

    def complete_lines(self):
        data = self.output()
        return data[:data.rfind(b"\n") + 1]


def dnsmasq(test, records):
    """dnsmasq on a free loopback port answering `records` (and NXDOMAIN for the rest of
    .test); returns its "127.0.0.1:PORT"."""
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon", f"--port={port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
             "--conf-file=/dev/null", "--pid-file=", "--local=/test/", *records],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        test.addCleanup(lambda p=proc: (p.kill(), p.wait()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                # A query for "test." of type SOA: any answer means dnsmasq serves.
                s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                         b"\x04test\x00\x00\x06\x00\x01", ("127.0.0.1", port))
                try:
                    if s.recv(512)[:2] == b"\x12\x34":
                        return f"127.0.0.1:{port}"
                except OSError:
                    pass
    raise AssertionError("dnsmasq did not start")


class LogLinesTest(unittest.TestCase):
    def test_every_line_is_json_whatever_bytes_clients_send(self):
        # DMARC p=reject for example.test: a From: domain below it, with bytes that are not
        # UTF-8, gets the message refused, and the refusal is logged with that domain.
        dns = dnsmasq(self, ["--txt-record=_dmarc.example.test,v=DMARC1; p=reject"])
        auth = ('[auth]\nskip_networks = []\nauthserv_id = "relais.test"\ndmarc = "reject"\n'
                f'[dns]\nservers = ["{dns}"]\ntimeout_ms = 300\ntries = 1\n')
        d = Daemon(DOMAINS + auth + routes("./var/mail"), threads=1)
        self.addCleanup(d.cleanup)
        d.start()
        hostile = [
            b"\xff\xfe.example",               # Never UTF-8.
            b"caf\xe9.example",                # Latin-1.
            b"\xc0\xafetc.example",            # Overlong '/'.
            b"\xed\xa0\x80.example",           # A surrogate.
            b"\xf4\x90\x80\x80.example",       # Past U+10FFFF.
            b"\xc3",                           # Truncated at the end.
            b"q\xc0\"x\\.example",             # An invalid byte before a quote and a backslash.
        ]
        for name in hostile:
            c = RawClient(d.connect())
            greet(c, name)  # Refused when not UTF-8; then an 8-bit name that is.
            c.send(b"EHLO caf\xc3\xa9.example\r\n")
            c.reply()
            send_message(c, b"s\xff\xc3@sender.test", [b"u@example.test"],
                         b"From: \xff\xfe Bad \xc0\xaf <a\xe9@sender.test>\r\n"
                         b"Subject: \xed\xa0\x80\r\n\r\nbody \xff\r\n",
                         params=b" SMTPUTF8")
            send_message(c, b"s@sender.test", [b"u@example.test"],
                         b"From: Joe <joe@" + name + b".example.test>\r\n"
                         b"Subject: hi\r\n\r\nbody\r\n")
            send_message(c, b"s@sender.test", [b"u\xff@example.test", b"u@example.test"],
                         b"From: \xc3\x28 <a@sender.test>\r\n\r\nbody\r\n")
            c.send(b"QUIT\r\n")
            c.closed()
        count = lambda event: sum(1 for line in d.read_log(d.log_offset).splitlines()
                                  if f'"event":"{event}"' in line)
        wait_for(lambda: count("session_end") >= len(hostile), 20, "every session to be logged")
        d.stop()
        with open(d.log_path, "rb") as f:
            records = strict_lines(f.read())
        # Each invalid byte became one U+FFFD; quotes and backslashes stay escaped.
        refusals = [r["reason"] for r in records if r.get("event") == "message_refused"]
        self.assertIn("\ufffd\ufffd.example.example.test", " ".join(refusals))
        self.assertIn("caf\ufffd.example.example.test", " ".join(refusals))
        self.assertIn("\ufffd\ufffd\ufffd\ufffd.example.example.test", " ".join(refusals))
        self.assertEqual(len([r for r in records if r.get("event") == "session_end"]),
                         len(hostile))

    def test_lines_reach_a_pipe_whole_under_load_from_every_shard(self):
        """12 messages of 1 000 refused recipients: every delivery worker writes batches of
        hundreds of KB while the shards log reception, all into one pipe."""
        d = PipedDaemon(DOMAINS + routes("./var/mail", refusing_sink(self)), threads=2)
        self.addCleanup(d.cleanup)
        d.start()
        messages, recipients = 12, 1000
        errors = []

        def client(n):
            try:
                c = RawClient(d.connect(timeout=60))
                greet(c)
                rcpts = [f"r{n}-{i}@rej.test".encode() for i in range(recipients)]
                code, text = send_message(c, b"", rcpts, b"Subject: load\r\n\r\nbody\r\n")
                if code != 250:
                    errors.append(text)
                c.send(b"QUIT\r\n")
            except Exception as e:  # Reported below, in the test's thread.
                errors.append(repr(e))
        threads = [threading.Thread(target=client, args=(n,)) for n in range(messages)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        want = messages * recipients
        wait_for(lambda: d.complete_lines().count(b'"event":"delivery_attempt"') >= want, 120,
                 "every delivery attempt to be logged")
        self.assertEqual(d.stop(), 0)
        d.reader.join(10)
        records = strict_lines(d.output())
        attempts = [r for r in records if r["event"] == "delivery_attempt"]
        self.assertEqual(len(attempts), want)  # None lost, none merged into another.
        self.assertEqual(len({r["recipient"] for r in attempts}), want)
        self.assertTrue(all(r["outcome"] == "failed" for r in attempts))
        self.assertEqual(len({r["shard"] for r in attempts}), 2, "load from every shard")
        accepted = [r for r in records if r["event"] == "message_accepted"]
        self.assertEqual(len(accepted), messages)
        self.assertFalse([r for r in records if r["event"] == "log_records_dropped"])


    def test_a_log_reader_that_stops_stalls_no_mail(self):
        """Nobody reads stdout for a while: mail is still received, delivered and bounced;
        once the reader is back every record arrives whole."""
        d = PipedDaemon(DOMAINS + routes("./var/mail", refusing_sink(self)), threads=2)
        self.addCleanup(d.cleanup)
        d.start()
        wait_for(lambda: b'"event":"ready"' in d.output(), 10, "the ready line")
        d.reading.clear()
        messages, recipients = 12, 1000
        for n in range(messages):
            c = RawClient(d.connect(timeout=60))
            greet(c)
            rcpts = [f"r{n}-{i}@rej.test".encode() for i in range(recipients)]
            code, text = send_message(c, b"a@sender.test", rcpts, b"Subject: s\r\n\r\nb\r\n")
            self.assertEqual(code, 250, text)
            c.send(b"QUIT\r\n")
        # Every refusal is decided, logged (into the queue) and bounced while the pipe is full.
        wait_for(lambda: len([m for m in d.maildir_messages()
                              if "multipart/report" in m["body"]]) == messages,
                 60, "every bounce delivered with the log reader stopped")
        c = RawClient(d.connect(timeout=5))
        self.assertEqual(c.reply(timeout=5)[0], 220)  # A new client is served at once.
        d.reading.set()
        want = messages * recipients
        wait_for(lambda: d.complete_lines().count(b'"event":"delivery_attempt"') >= want, 60,
                 "the backlog to be written")
        self.assertEqual(d.stop(), 0)
        d.reader.join(10)
        records = strict_lines(d.output())
        self.assertEqual(len([r for r in records if r["event"] == "delivery_attempt"
                              and r["route"] == "smarthost"]), want)
        self.assertFalse([r for r in records if r["event"] == "log_records_dropped"])


class BounceTest(unittest.TestCase):
    def test_a_predicted_boundary_cannot_add_parts(self):
        d = Daemon(DOMAINS + routes("./var/mail", refusing_sink(self)), threads=1)
        self.addCleanup(d.cleanup)
        d.start()
        c = RawClient(d.connect())
        greet(c)
        ids = []
        for _ in range(3):
            code, text = send_message(c, b"a@sender.test", [b"u@example.test"],
                                      b"Subject: hello\r\n\r\nhi\r\n")
            self.assertEqual(code, 250, text)
            ids.append(text.split("queued as ")[1].split()[0])
        # A counter would show: consecutive IDs differing by one in their low half.
        lows = [int(i[16:], 16) for i in ids]
        self.assertNotIn(1, [b - a for a, b in zip(lows, lows[1:])], ids)
        # The attacker's best guesses: the next counter value, and the IDs seen.
        guesses = [ids[-1][:16] + format(lows[-1] + k, "016x") for k in (1, 2)] + ids
        forged = b"".join(
            b"--=_relais_" + g.encode() + b"\r\nContent-Type: text/html\r\n\r\n"
            b"<a href='https://evil.test'>log in</a>\r\n" for g in guesses)
        # Returned whole (RET=FULL) and, by default, as its header section: try both.
        for params, where in ((b" RET=FULL", "body"), (b"", "header")):
            message = (b"Subject: bounce me\r\nX-Forged: x\r\n" + forged + b"\r\nbody\r\n"
                       if where == "header" else
                       b"Subject: bounce me\r\n\r\n" + forged)
            code, text = send_message(c, b"victim@sender.test", [b"x@rej.test"], message,
                                      params=params)
            self.assertEqual(code, 250, text)
        c.send(b"QUIT\r\n")
        bounces = lambda: [m for m in d.maildir_messages() if "multipart/report" in m["body"]]
        found = wait_for(lambda: len(bounces()) >= 2 and bounces(), 30, "two bounces")
        for m in found:
            with open(m["path"], "rb") as f:
                report = email.message_from_bytes(f.read(), policy=email.policy.compat32)
            self.assertTrue(report.is_multipart())
            parts = report.get_payload()
            self.assertEqual(len(parts), 3, [p.get_content_type() for p in parts])
            self.assertEqual([p.get_content_type() for p in parts],
                             ["text/plain", "message/delivery-status",
                              parts[2].get_content_type()])
            self.assertIn(parts[2].get_content_type(), ("message/rfc822", "text/rfc822-headers"))
            boundary = report.get_boundary()
            for i in ids:
                self.assertNotIn(i, boundary)
            self.assertGreaterEqual(len(boundary), len("=_relais_") + 24)  # >= 96 bits.
            with open(m["path"], "rb") as f:
                raw = f.read()
            self.assertEqual(raw.count(b"--" + boundary.encode() + b"\n") +
                             raw.count(b"--" + boundary.encode() + b"\r\n"), 3)


    def test_smtputf8_messages_bounce_in_rfc6533_formats(self):
        d = Daemon(DOMAINS + routes("./var/mail", refusing_sink(self)), threads=1)
        self.addCleanup(d.cleanup)
        d.start()
        c = RawClient(d.connect())
        greet(c)
        code, text = send_message(c, "jörg@sender.test".encode(), ["zoë@rej.test".encode()],
                                  "From: jörg@sender.test\r\nSubject: grüße\r\n\r\nhé\r\n"
                                  .encode(), params=b" SMTPUTF8 BODY=8BITMIME")
        self.assertEqual(code, 250, text)
        c.send(b"QUIT\r\n")
        found = wait_for(lambda: [m for m in d.maildir_messages()
                                  if "multipart/report" in m["body"]], 30, "the bounce")
        with open(found[0]["path"], "rb") as f:
            report = email.message_from_bytes(f.read(), policy=email.policy.compat32)
        self.assertEqual(report.get_param("report-type"), "global-delivery-status")
        parts = report.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/global-delivery-status",
                          "message/global-headers"])
        status = parts[1].as_bytes().decode("utf-8")
        self.assertIn("Final-Recipient: utf-8; zoë@rej.test", status)
        self.assertIn("Subject: grüße", parts[2].as_bytes().decode("utf-8"))


class MetricsTest(unittest.TestCase):
    def test_idle_clients_cannot_starve_a_scrape(self):
        d = Daemon(DOMAINS + routes("./var/mail"), threads=1)
        self.addCleanup(d.cleanup)
        d.start()
        port = wait_for(lambda: d.metrics_port, 10, "the metrics port")
        idle = []
        self.addCleanup(lambda: [s.close() for s in idle])
        for _ in range(80):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for s in idle[:16]:
            s.sendall(b"GET /metr")  # Started, never finished: just as idle.
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        took = time.monotonic() - start
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
        self.assertLess(took, 1.0)
        evicted = re.search(rb'relais_metrics_clients_dropped_total\{reason="evicted"\} (\d+)',
                            data)
        self.assertIsNotNone(evicted)
        self.assertGreater(int(evicted.group(1)), 0)
        # A client that trickles its request a byte at a time is cut at the same deadline:
        # the timeout counts from the connection, not from the last byte.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            t0 = time.monotonic()
            closed = False
            for byte in b"GET /metrics HTTP/1.1\r\nHost: a-very-slow-client\r\n":
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                s.settimeout(0.25)
                try:
                    if s.recv(1) == b"":
                        closed = True
                        break
                except socket.timeout:
                    pass
            self.assertTrue(closed)
            self.assertLess(time.monotonic() - t0, 5)
        # The idle ones are closed within the short timeout (2 s by default), not kept.
        for s in idle[-8:]:
            s.settimeout(10)
            t0 = time.monotonic()
            self.assertEqual(s.recv(1), b"")
            self.assertLess(time.monotonic() - t0, 5)


NOBODY = 65534


def as_nobody():
    os.setgid(NOBODY)
    os.setuid(NOBODY)


IMPOSTOR = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        got = c.recv(1000)
    except OSError:
        got = b""
    with open(sys.argv[2], "ab") as f:
        f.write(got)
    try:
        c.sendall(b"OK\nSHARD  everything is fine, trust me\n")
    except OSError:
        pass
    c.close()
"""


@unittest.skipUnless(os.geteuid() == 0, "needs root to act as another user")
class AdminSocketTest(unittest.TestCase):
    def impostor(self, path, directory):
        heard = os.path.join(directory, "heard")
        proc = subprocess.Popen(["python3", "-c", IMPOSTOR, path, heard], stdout=subprocess.PIPE,
                                preexec_fn=as_nobody)
        self.addCleanup(lambda: (proc.kill(), proc.wait(), proc.stdout.close()))
        self.assertEqual(proc.stdout.readline().strip(), b"ready")
        return heard

    def shared_dir(self):
        directory = tempfile.mkdtemp(prefix="relais-squat-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chmod(directory, 0o1777)  # Like /tmp: anyone may create, nobody may replace.
        return directory

    def test_default_path_is_in_a_private_directory(self):
        d = Daemon(DOMAINS + routes("./var/mail"), threads=1)
        self.addCleanup(d.cleanup)
        d.start()
        run = os.path.join(d.workdir, "var", "run")
        self.assertEqual(stat.S_IMODE(os.stat(run).st_mode), 0o700)
        self.assertTrue(stat.S_ISSOCK(os.stat(os.path.join(run, "relaisd.sock")).st_mode))
        out = subprocess.run([RELAISCTL, "status"], cwd=d.workdir, capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_relaisctl_does_not_talk_to_an_impostor(self):
        directory = self.shared_dir()
        path = os.path.join(directory, "relaisd.sock")
        heard = self.impostor(path, directory)
        out = subprocess.run([RELAISCTL, "--socket", path, "queue", "ls"], capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 1)
        self.assertIn(b"not talking to it", out.stderr)
        self.assertNotIn(b"trust me", out.stdout)
        # The impostor serves one connection at a time: once it has answered ours, it has
        # written down what relaisctl's connection carried.
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(10)
            probe.connect(path)
            probe.sendall(b"probe")
            self.assertTrue(probe.recv(100).startswith(b"OK"))
        with open(heard, "rb") as f:
            self.assertEqual(f.read(), b"probe")  # Not a byte of relaisctl's request.

    def test_relaisd_refuses_a_squatted_or_shared_path(self):
        # 1. A directory others can write: refused before anything is bound.
        shared = self.shared_dir()
        # 2. A socket another user left in a directory that is ours now.
        private = tempfile.mkdtemp(prefix="relais-own-")
        self.addCleanup(shutil.rmtree, private, True)
        os.chmod(private, 0o777)
        squatted = os.path.join(private, "relaisd.sock")
        self.impostor(squatted, private)
        os.chmod(private, 0o700)
        # 3. A file at the path: never removed.
        other = tempfile.mkdtemp(prefix="relais-file-")
        self.addCleanup(shutil.rmtree, other, True)
        plain = os.path.join(other, "relaisd.sock")
        with open(plain, "w") as f:
            f.write("precious\n")
        # 4. A symbolic link at the path (to a file of ours): not followed, not removed.
        linked = os.path.join(other, "link.sock")
        os.symlink(plain, linked)
        cases = [(os.path.join(shared, "relaisd.sock"), b"can be written by users other"),
                 (linked, b"not a socket"),
                 (squatted, b"a socket of uid 65534"),
                 (plain, b"not a socket")]
        for path, why in cases:
            d = Daemon(DOMAINS + routes("./var/mail") +
                       f'[server]\nlisten = ["127.0.0.1:0"]\nadmin_socket = "{path}"\n',
                       threads=1)
            self.addCleanup(d.cleanup)
            d.start(wait=False)
            self.assertNotEqual(d.proc.wait(timeout=30), 0, path)
            with open(d.log_path, "rb") as f:
                self.assertIn(why, f.read(), path)
        self.assertTrue(stat.S_ISSOCK(os.lstat(squatted).st_mode))  # Left alone.
        with open(plain) as f:
            self.assertEqual(f.read(), "precious\n")
        self.assertTrue(os.path.islink(linked))


if __name__ == "__main__":
    unittest.main()
