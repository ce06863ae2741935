"""A private Postfix instance as a real TLS/AUTH peer, on loopback, in a temporary directory.

Its own config, queue and data directories and log file (maillog_file); its smtpd listens on
one free loopback port; nothing is chrooted and nothing touches the system's Postfix. Started
with `postfix -c DIR start` and stopped with `postfix -c DIR stop` (which signals only this
instance's master, by the PID file in its own queue directory); cleanup kills that PID if the
stop did not take. Postfix's daemons drop to the `postfix` user, so the instance needs root
(as CI runs); tests skip otherwise.

Cyrus SASL: Postfix(users={...}) writes a sasldb (saslpasswd2) and an smtpd.conf into the
instance's directory, so its smtpd offers AUTH PLAIN LOGIN checked against them.
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

from harness import free_port, wait_for

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
SASLPASSWD2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
SYSTEM_MASTER_CF = "/etc/postfix/master.cf"


def available():
    """Why a private Postfix cannot run here, or "" when it can."""
    if not os.path.exists(POSTFIX) or not os.path.exists(SYSTEM_MASTER_CF):
        return "Postfix is not installed"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its daemons drop to the postfix user)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return ""


def sasl_available():
    """saslpasswd2 (sasl2-bin) and the PLAIN and sasldb plugins (libsasl2-modules[-db])."""
    return os.path.exists(SASLPASSWD2) and all(
        glob.glob(f"/usr/lib/*/sasl2/{name}.so*") for name in ("libplain", "libsasldb"))


class Postfix:
    """main: extra main.cf settings ({name: value}). users: {"user@realm": password} for
    AUTH (realm = the part after @; the SASL login name is the whole string)."""

    def __init__(self, main=None, users=None, hostname="postfix.test"):
        self.dir = tempfile.mkdtemp(prefix="relais-postfix-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        for d in (self.conf, self.queue, self.data):
            os.makedirs(d)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        self.port = free_port()
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": hostname,
            "mydomain": "test",
            "myorigin": hostname,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtputf8_enable": "no",
            "biff": "no",
            # Loopback peers: no DNS anywhere.
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "smtp_dns_support_level": "disabled",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
        }
        if users:
            self._write_sasl(users, postfix_user)
            settings.update({"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "cyrus",
                             "smtpd_sasl_path": "smtpd",
                             "cyrus_sasl_config_path": os.path.join(self.conf, "sasl"),
                             "smtpd_sasl_security_options": "noanonymous"})
        settings.update(main or {})
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for name, value in settings.items():
                f.write(f"{name} = {value}\n")
        # The system's master.cf with our smtpd on its own port and nothing chrooted.
        lines = []
        with open(SYSTEM_MASTER_CF) as f:
            for line in f:
                fields = line.split()
                if fields[:2] == ["smtp", "inet"]:
                    line = f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
                elif len(fields) >= 8 and not line[0].isspace() and line[0] != "#":
                    fields[4] = "n"
                    line = " ".join(fields) + "\n"
                lines.append(line)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.writelines(lines)
        self.started = False
        self.watchdog = None

    def _write_sasl(self, users, postfix_user):
        sasldb = os.path.join(self.conf, "sasldb2")
        for login, password in users.items():
            user, _, realm = login.partition("@")
            args = [SASLPASSWD2, "-f", sasldb, "-c", "-p"]
            if realm:
                args += ["-u", realm]
            subprocess.run(args + [user], input=password.encode(), check=True, timeout=30,
                           capture_output=True)
        os.chown(sasldb, postfix_user.pw_uid, postfix_user.pw_gid)
        # Debian's Postfix reads $config_directory/sasl/smtpd.conf (and the path below).
        os.makedirs(os.path.join(self.conf, "sasl"))
        with open(os.path.join(self.conf, "sasl", "smtpd.conf"), "w") as f:
            f.write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                    f"mech_list: PLAIN LOGIN\nsasldb_path: {sasldb}\n")

    def postfix(self, *args, timeout=60):
        return subprocess.run([POSTFIX, "-c", self.conf, *args], capture_output=True,
                              timeout=timeout)

    def start(self):
        result = self.postfix("start")
        if result.returncode != 0:
            raise AssertionError(f"postfix start failed: {result.stderr.decode()}\n{self.log()}")
        self.started = True
        # Should this test process die without cleaning up (a CTest timeout kills it), a
        # watchdog stops this instance's master, by its PID, so no Postfix outlives the test.
        pid = self.master_pid()
        if pid is not None:
            self.watchdog = subprocess.Popen(
                ["sh", "-c", 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; '
                 '"$2" -c "$3" stop >/dev/null 2>&1; sleep 5; '
                 'if grep -q master "/proc/$4/cmdline" 2>/dev/null; then kill -9 "$4"; fi',
                 "watchdog", str(os.getpid()), POSTFIX, self.conf, str(pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        wait_for(self._accepts, 30, "Postfix's smtpd to answer")
        return self

    def _accepts(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def log(self):
        try:
            with open(self.maillog, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def queue_ids(self):
        """IDs of the messages still in this instance's queue (postqueue -j)."""
        out = subprocess.run([shutil.which("postqueue") or "/usr/sbin/postqueue", "-c",
                              self.conf, "-j"], capture_output=True, timeout=30)
        return [line for line in out.stdout.decode().splitlines() if line.strip()]

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        self.postfix("stop")
        if pid is not None:
            def gone():
                try:
                    os.kill(pid, 0)
                    return False
                except ProcessLookupError:
                    return True
            try:
                wait_for(gone, 20, "Postfix's master to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait()
        self.started = False

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
