"""relaisctl passwd: writes the SMTP AUTH credentials file relaisd reads ([smtp_auth] credentials).
relaisctl make-cert: a self-signed certificate and key for [[tls.certificate]] (read back with
the openssl command line tool, an independent implementation).

Checks the file's lines with plain string means (the format of a yescrypt entry, the other lines
kept, a second run replacing the line in place, mode 0640), then that the same code relaisd
uses (protocols/sasl Credentials::Load and Verify, through `relaisctl passwd --check`) accepts
the password and refuses a wrong one. A pseudo-terminal checks the interactive path: no echo,
asked twice.
"""

import os
import re
import select
import shutil
import stat
import subprocess
import tempfile
import time
import unittest

from harness import RELAISCTL

# yescrypt: $y$ params $ salt $ 43 characters of hash, in crypt's base64 alphabet.
ENTRY = re.compile(r"^([A-Za-z0-9._%+@-]+):(\$y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{43})"
                   r"(?::([a-z0-9.,-]+))?$")


def passwd(path, *args, password=None):
    return subprocess.run([RELAISCTL, "passwd", "--file", path, *args],
                          input=None if password is None else password + "\n",
                          capture_output=True, text=True, timeout=60)


class RelaisctlPasswdTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="relais-passwd-")
        self.path = os.path.join(self.dir, "passwd")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def lines(self):
        with open(self.path, encoding="ascii") as f:
            return f.read().splitlines()

    def test_adds_then_replaces_in_place_keeping_other_lines(self):
        with open(self.path, "w", encoding="ascii") as f:
            f.write("# the submission users\n\n")
        os.chmod(self.path, 0o600)
        r = passwd(self.path, "alice@Example.COM", password="first secret")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = passwd(self.path, "--domains", "Other.example,third.example", "bob",
                   password="bob's secret")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = self.lines()
        self.assertEqual(lines[:2], ["# the submission users", ""])
        self.assertEqual(len(lines), 4)
        alice = ENTRY.match(lines[2])
        self.assertIsNotNone(alice, lines[2])
        self.assertEqual(alice.group(1), "alice@Example.COM")
        self.assertIsNone(alice.group(3))
        bob = ENTRY.match(lines[3])
        self.assertIsNotNone(bob, lines[3])
        self.assertEqual(bob.group(3), "other.example,third.example")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

        # A second run for the same user (its domain part in another case) replaces its line
        # where it is, with a new salt, and keeps bob's domains when he changes his password.
        r = passwd(self.path, "alice@example.com", password="second secret")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = passwd(self.path, "bob", password="new bob")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.lines()
        self.assertEqual(len(after), 4)
        self.assertEqual(after[:2], lines[:2])
        alice2 = ENTRY.match(after[2])
        self.assertIsNotNone(alice2, after[2])
        self.assertEqual(alice2.group(1), "alice@example.com")
        self.assertNotEqual(alice2.group(2), alice.group(2))
        self.assertEqual(ENTRY.match(after[3]).group(3), "other.example,third.example")
        # No temporary file is left next to it.
        self.assertEqual(sorted(os.listdir(self.dir)), ["passwd"])

        # What relaisd's own check (Credentials::Load + Verify) says about the file.
        self.assertEqual(passwd(self.path, "--check", "alice@EXAMPLE.com",
                                password="second secret").returncode, 0)
        self.assertEqual(passwd(self.path, "--check", "alice@example.com",
                                password="first secret").returncode, 1)
        self.assertEqual(passwd(self.path, "--check", "bob", password="new bob").returncode, 0)
        self.assertEqual(passwd(self.path, "--check", "carol", password="new bob").returncode, 1)

    def test_delete_removes_only_that_user(self):
        for user in ("alice", "bob"):
            self.assertEqual(passwd(self.path, user, password="pw " + user).returncode, 0)
        r = passwd(self.path, "--delete", "alice")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = self.lines()
        self.assertEqual([ENTRY.match(l).group(1) for l in lines], ["bob"])
        r = passwd(self.path, "--delete", "alice")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no user alice", r.stderr)
        self.assertEqual(passwd(self.path, "--check", "bob", password="pw bob").returncode, 0)

    def test_concurrent_runs_lose_no_user(self):
        # Each run reads, changes and replaces the whole file: without the lock, one rename
        # would drop another run's user.
        procs = [subprocess.Popen([RELAISCTL, "passwd", "--file", self.path, f"user{i}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(8)]
        for i, p in enumerate(procs):
            p.stdin.write(f"pw{i}\n")
            p.stdin.close()
        for p in procs:
            self.assertEqual(p.wait(timeout=120), 0, p.stderr.read())
        users = sorted(ENTRY.match(l).group(1) for l in self.lines())
        self.assertEqual(users, sorted(f"user{i}" for i in range(8)))

    def test_refuses_bad_names_empty_passwords_and_open_files(self):
        for name in ("bad name", "a:b", "x" * 256, ""):
            r = passwd(self.path, name, password="pw")
            self.assertEqual(r.returncode, 2, name)
        self.assertFalse(os.path.exists(self.path))
        r = passwd(self.path, "alice", password="")
        self.assertEqual(r.returncode, 1)
        self.assertIn("empty password", r.stderr)
        r = passwd(self.path, "--domains", "not..a.domain", "alice", password="pw")
        self.assertEqual(r.returncode, 2)
        self.assertFalse(os.path.exists(self.path))
        # A file others may read is refused by relaisd; passwd rewrites it 0640.
        self.assertEqual(passwd(self.path, "alice", password="pw").returncode, 0)
        os.chmod(self.path, 0o644)
        r = passwd(self.path, "--check", "alice", password="pw")
        self.assertEqual(r.returncode, 1)
        self.assertIn("chmod o-rwx", r.stderr)
        self.assertEqual(passwd(self.path, "alice", password="pw2").returncode, 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)
        self.assertEqual(passwd(self.path, "--check", "alice", password="pw2").returncode, 0)

    def test_terminal_asks_twice_without_echo(self):
        def run(first, second):
            master, slave = os.openpty()
            proc = subprocess.Popen([RELAISCTL, "passwd", "--file", self.path, "alice"],
                                    stdin=slave, stdout=slave, stderr=slave, close_fds=True)
            os.close(slave)
            seen = b""
            deadline = time.monotonic() + 30

            def wait_for(text):
                nonlocal seen
                while text not in seen:
                    self.assertLess(time.monotonic(), deadline, seen)
                    ready, _, _ = select.select([master], [], [], 0.5)
                    if ready:
                        try:
                            seen += os.read(master, 4096)
                        except OSError:  # EIO: the child closed the terminal.
                            break

            wait_for(b"Password: ")
            os.write(master, first.encode() + b"\n")
            wait_for(b"Again: ")
            os.write(master, second.encode() + b"\n")
            code = proc.wait(timeout=30)
            while select.select([master], [], [], 0.2)[0]:  # What the child wrote last.
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child's side is closed.
                    break
                if not chunk:
                    break
                seen += chunk
            os.close(master)
            return code, seen

        code, seen = run("tty secret", "tty secret")
        self.assertEqual(code, 0, seen)
        self.assertNotIn(b"tty secret", seen)
        self.assertEqual(passwd(self.path, "--check", "alice",
                                password="tty secret").returncode, 0)
        code, seen = run("one", "two")
        self.assertEqual(code, 1, seen)
        self.assertIn(b"differ", seen)
        self.assertEqual(passwd(self.path, "--check", "alice",
                                password="tty secret").returncode, 0)


class RelaisctlMakeCertTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="relais-cert-")
        self.chain = os.path.join(self.dir, "chain.pem")
        self.key = os.path.join(self.dir, "key.pem")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def make(self, *args):
        return subprocess.run([RELAISCTL, "make-cert", "--chain", self.chain, "--key", self.key,
                               *args], capture_output=True, text=True, timeout=120)

    def openssl(self, *args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    @unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
    def test_ecdsa_by_default_with_every_name_and_a_matching_key(self):
        r = self.make("--names", "Mail.example,submit.example")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(self.key).st_mode), 0o600)
        text = self.openssl("x509", "-in", self.chain, "-noout", "-text")
        self.assertIn("CN = mail.example", text)
        self.assertIn("DNS:mail.example, DNS:submit.example", text)
        self.assertIn("prime256v1", text)
        self.assertEqual(self.openssl("x509", "-in", self.chain, "-noout", "-pubkey"),
                         self.openssl("pkey", "-in", self.key, "-pubout"))
        # Valid now and for about a year (the default), not for two.
        self.openssl("x509", "-in", self.chain, "-noout", "-checkend", str(364 * 86400))
        r = subprocess.run(["openssl", "x509", "-in", self.chain, "-noout", "-checkend",
                            str(366 * 86400)], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        # An existing key is never overwritten by accident.
        r = self.make("--names", "other.example")
        self.assertEqual(r.returncode, 1)
        self.assertIn("--force", r.stderr)
        self.assertIn("CN = mail.example", self.openssl("x509", "-in", self.chain, "-noout",
                                                        "-subject"))

    @unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
    def test_rsa_and_days(self):
        r = self.make("--names", "mx.example", "--key-type", "rsa", "--days", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        text = self.openssl("x509", "-in", self.chain, "-noout", "-text")
        self.assertIn("Public-Key: (2048 bit)", text)
        self.openssl("x509", "-in", self.chain, "-noout", "-checkend", str(2 * 86400))
        self.assertEqual(self.openssl("x509", "-in", self.chain, "-noout", "-pubkey"),
                         self.openssl("pkey", "-in", self.key, "-pubout"))

    def test_refuses_bad_usage(self):
        for args in (["--names", "bad name"], ["--names", ""], ["--names", "a.example",
                     "--key-type", "dsa"], ["--names", "a.example", "--days", "0"], []):
            r = self.make(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
        self.assertFalse(os.path.exists(self.key))


if __name__ == "__main__":
    unittest.main()
