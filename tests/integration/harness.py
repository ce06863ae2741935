"""Starts and stops a real relaisd for integration tests, on loopback only.

Each Daemon gets its own temporary directory (config, spool), binds port 0 and reads the real
port back from its "listening" log line, and is stopped by PID: only processes the test
started are ever signalled. Every wait polls a condition with a deadline; nothing sleeps to
synchronise.
"""

import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

RELAISD = os.environ.get("RELAISD", "relaisd")
RELAISCTL = os.environ.get("RELAISCTL", "relaisctl")
RELAIS_BENCH = os.environ.get("RELAIS_BENCH", "relais-bench")


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    def __init__(self, config="", threads=2, workdir=None, descriptor_limit=None):
        """descriptor_limit: RLIMIT_NOFILE (soft and hard) of the daemon, if given."""
        self.descriptor_limit = descriptor_limit
        self.workdir = workdir or tempfile.mkdtemp(prefix="relais-it-")
        self.owns_workdir = workdir is None
        self.config_text = config
        self.threads = threads
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.workdir, "relaisd.log")
        self.log = None
        self.log_offset = 0
        self.sockets = []

    @property
    def spool(self):
        return os.path.join(self.workdir, "spool")

    def start(self, wait=True):
        """Starts relaisd; with wait=False returns at once (the crash loop kills it while it
        recovers)."""
        config_path = os.path.join(self.workdir, "relais.toml")
        text = self.config_text
        # Every daemon spools inside its own work directory.
        if "[spool]" in text:
            text = text.replace("[spool]\n", f'[spool]\npath = "{self.spool}"\n', 1)
        else:
            text += f'\n[spool]\npath = "{self.spool}"\n'
        if "[server]" not in text:
            text += '\n[server]\nlisten = ["127.0.0.1:0"]\nhostname = "relais.test"\n'
        if "[relay]" not in text:
            # relay.local_domains defaults to [] in a file; the tests that say nothing about
            # relaying mean the quick start's "every domain is local" (into Maildir).
            text += '\n[relay]\nlocal_domains = ["*"]\n'
        if "[metrics]" not in text:
            text += '\n[metrics]\nlisten = "127.0.0.1:0"\n'  # Never the shared default port.
        with open(config_path, "w") as f:
            f.write(text)
        if self.log is not None:
            self.log.close()
        self.log = open(self.log_path, "ab")
        self.log_offset = self.log.tell()  # This run's lines start here.
        limit = self.descriptor_limit

        def lower_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        self.proc = subprocess.Popen(
            [RELAISD, "--config", config_path, "--threads", str(self.threads)],
            stdout=self.log, stderr=self.log, cwd=self.workdir,
            preexec_fn=lower_limit if limit is not None else None)
        if wait:
            self.port = wait_for(self._listening_port, 20, "relaisd to listen")
        return self

    @property
    def metrics_port(self):
        for event in self.events(self.log_offset):
            if event.get("event") == "metrics_listening":
                return int(event["address"].rsplit(":", 1)[1])
        return None

    def _listening_port(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"relaisd exited with {self.proc.returncode}: {self.read_log()}")
        for event in self.events(self.log_offset):
            if event.get("event") == "listening" and event.get("address", "").startswith("127."):
                return int(event["address"].rsplit(":", 1)[1])
        return None

    def read_log(self, offset=0):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def events(self, offset=0):
        out = []
        for line in self.read_log(offset).splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("relaisd did not stop in time")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self):
        for sock in self.sockets:
            sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log is not None:
            self.log.close()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def connect(self, timeout=10):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.sockets.append(sock)
        return sock

    def spool_messages(self, body=False):
        args = [RELAISCTL, "spool", "ls", "--spool", self.spool, "--json"]
        if body:
            args.append("--body")
        out = subprocess.run(args, check=True, capture_output=True, timeout=120)
        return json.loads(out.stdout)


    @property
    def mail_root(self):
        return os.path.join(self.workdir, "var", "mail")  # The default route's ./var/mail.

    def maildir_messages(self):
        """Every delivered file under the mail root, as {"id", "body", "path"}."""
        out = []
        for dirpath, _, files in os.walk(self.mail_root):
            if os.path.basename(dirpath) != "new":
                continue
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    body = f.read().decode("utf-8", "replace")
                out.append({"id": queue_id(body), "body": body, "path": path})
        return out

    def all_messages(self):
        """Every accepted message, wherever it is now: still spooled or delivered.

        Bodies use LF line endings (as Maildir stores them) so tests can check either."""
        out = [{"id": m["id"], "body": m["body"].replace("\r\n", "\n"), "where": "spool",
                "recipients": [r["address"] for r in m["recipients"]], "sender": m["sender"]}
               for m in self.spool_messages(body=True)]
        for m in self.maildir_messages():
            m["where"] = "maildir"
            out.append(m)
        return out


def queue_id(body):
    """The queue ID from the Received: header Relais wrote ("\tid <ID>")."""
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("id "):
            return line.split()[1].rstrip(";")
    return None


class RawClient:
    """A byte-exact SMTP client for what smtplib will not send (smuggling, bare LF, floods)."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self, timeout=10):
        """Reads one (possibly multi-line) reply; returns (code, text)."""
        self.sock.settimeout(timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed after {lines!r}; buffered {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def closed(self, timeout=10):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def free_port():
    """A loopback port nobody uses right now, from below the kernel's ephemeral range: a socket
    bound to port 0 or connecting out (this test's or a parallel one's) never gets such a port,
    so a test can leave it dead on purpose or bind it again after a restart."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    pick = random.SystemRandom()
    for _ in range(1000):
        port = pick.randrange(max(1024, low // 2), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free loopback port below {low}")


class Sink:
    """Postfix's smtp-sink as a next hop (SMTP, or LMTP with lmtp=True) on loopback, dumping
    every message it accepts into its own directory. `args` are extra smtp-sink options, e.g.
    ["-f", "RCPT"] to refuse every recipient with a 5xx. `address` is "127.0.0.1:PORT" or
    "unix:/path"; by default a free loopback port."""

    def __init__(self, args=(), lmtp=False, address=None):
        # smtp-sink drops root privileges to nobody, who must be able to write the dumps.
        self.dir = tempfile.mkdtemp(prefix="relais-sink-")
        os.chmod(self.dir, 0o777)
        self.port = None
        if address is None:
            self.port = free_port()
            address = f"127.0.0.1:{self.port}"
        elif not address.startswith("unix:"):
            self.port = int(address.rsplit(":", 1)[1])
        self.address = address
        cmd = [SMTP_SINK]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        if lmtp:
            cmd.append("-L")
        cmd += ["-d", os.path.join(self.dir, "msg."), *args, address, "100"]
        self.log = open(os.path.join(tempfile.gettempdir(), f"sink-{os.getpid()}.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        if address.startswith("unix:"):
            wait_for(lambda: os.path.exists(address[5:]), 10, "smtp-sink to listen")
        else:
            wait_for(self._accepts, 10, "smtp-sink to listen")

    def _accepts(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"smtp-sink exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.recv(100)  # The greeting, so the probe is a whole (if empty) session.
            return True
        except OSError:
            return False

    def messages(self):
        """Every dumped message, as text (the dump's X- lines, then the message)."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            if not name.startswith("msg."):
                continue
            with open(os.path.join(self.dir, name), "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if text:  # A transaction without a message (every RCPT refused) leaves an empty dump.
                out.append(text)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class BenchSink:
    """`relais-bench sink` on a free loopback port, stopped by PID. `args` are extra sink flags
    (--reply, --delay, --lmtp...)."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="relais-bench-sink-")
        self.json_path = os.path.join(self.dir, "sink.json")
        self.out_path = os.path.join(self.dir, "sink.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [RELAIS_BENCH, "sink", "--listen", "127.0.0.1:0", "--json", self.json_path, *args],
            stdout=self.out, stderr=subprocess.STDOUT)
        self.address = wait_for(self._address, 10, "the sink to listen")

    def _address(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"sink exited with {self.proc.returncode}: {self.text()}")
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", self.text())
        return m.group(1) if m else None

    def text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode()

    def stop(self):
        """Stops the sink and returns its summary."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.out.close()
        with open(self.json_path) as f:
            return json.load(f)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.out.closed:
            self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)
