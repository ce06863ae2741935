"""Durability of directories, checked on the real file system with the real relaisd.

relaisd runs under strace (one shard, so one delivery worker) over directories that already
exist: the spool, the shard's spool directory, a Maildir. A directory that exists is not yet
durable (a kill between someone's mkdir and the parent's fsync leaves exactly that), so the
daemon must fsync the parent of each before it acknowledges anything stored in it, and then,
in the steady state, deliver into a known mailbox with no mkdir and no directory fsync but
the one of new/ that makes the rename durable.

Run as a script, it prints the directory syscalls per delivered message (bench/RESULTS.md):
    python3 test_durability.py --measure RELAISD MESSAGES
"""

import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import harness
from harness import Daemon, wait_for

STRACE = shutil.which("strace") or "/usr/bin/strace"
SYSCALLS = "mkdir,mkdirat,fsync,fdatasync,openat,openat2,rename,renameat,renameat2"
LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD_PATH = re.compile(r"^-?\d+<([^>]*)>")


class Traced:
    """relaisd under strace -f: the daemon's own PID is read from strace's children."""

    def __init__(self, relaisd, workdir, config, threads=1):
        self.trace = os.path.join(workdir, "strace.txt")
        wrapper = os.path.join(workdir, "traced-relaisd")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec "{STRACE}" -f -y -qq -o "{self.trace}" '
                    f'-e trace={SYSCALLS} "{relaisd}" "$@"\n')
        os.chmod(wrapper, 0o755)
        self.saved = harness.RELAISD
        harness.RELAISD = wrapper
        self.daemon = Daemon(config, threads=threads, workdir=workdir)
        try:
            self.daemon.start()
        finally:
            harness.RELAISD = self.saved

    def relaisd_pid(self):
        with open(f"/proc/{self.daemon.proc.pid}/task/{self.daemon.proc.pid}/children") as f:
            children = f.read().split()
        return int(children[0]) if children else None

    def stop(self):
        """SIGTERM to relaisd itself (a child of strace, started by us); strace then ends."""
        pid = self.relaisd_pid()
        if pid is not None:
            os.kill(pid, 15)
        self.daemon.proc.wait(timeout=60)
        return self.calls()

    def calls(self):
        """[(tid, name, args, result)]; results of fd-returning calls keep their <path>."""
        out = []
        with open(self.trace) as f:
            for line in f:
                m = LINE.match(line)
                if m:
                    result = line.rsplit("= ", 1)[1].strip()
                    out.append((int(m.group(1)), m.group(2), m.group(3), result))
        return out


def fsync_path(call):
    m = FD_PATH.match(call[2])
    return m.group(1) if m else None


def directory_syncs(calls):
    return [fsync_path(c) for c in calls
            if c[1] in ("fsync", "fdatasync") and fsync_path(c) and os.path.isdir(fsync_path(c))]


def mkdirs(calls):
    return [c for c in calls if c[1] in ("mkdir", "mkdirat")]


def is_new_sync(call):
    return call[1] in ("fsync", "fdatasync") and (fsync_path(call) or "").endswith("/new")


def per_message(calls):
    """The delivery worker's calls, cut after each fsync of new/ (the last step of a Maildir
    delivery): [calls of message k]."""
    renames = [c for c in calls if c[1].startswith("rename") and "/new" in c[2]]
    if not renames:
        return []
    worker = renames[0][0]
    messages, current = [], []
    for c in calls:
        if c[0] != worker:
            continue
        current.append(c)
        if is_new_sync(c):
            messages.append(current)
            current = []
    return messages


def after_first_delivery(calls):
    """Every thread's calls after the first message's fsync of new/."""
    first = next(i for i, c in enumerate(calls) if is_new_sync(c))
    return calls[first + 1:]


def send(daemon, count, first=0):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as s:
        for i in range(first, first + count):
            s.sendmail("a@sender.test", ["rcpt@example.com"],
                       f"Subject: durable {i}\r\n\r\nbody {i}\r\n".encode())


def delivered(daemon):
    return [e for e in daemon.events(daemon.log_offset)
            if e.get("event") == "delivery_attempt" and e.get("outcome") == "delivered"]


def run_traced(relaisd, workdir, messages):
    """Pre-made spool and mailbox; one message, then `messages` more. Returns the calls and
    the mail root."""
    mail = os.path.join(workdir, "mail")
    for d in ("spool/shard-0", "mail/example.com/rcpt/tmp", "mail/example.com/rcpt/new",
              "mail/example.com/rcpt/cur"):
        os.makedirs(os.path.join(workdir, d), mode=0o700)
    config = f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{mail}"\n'
    traced = Traced(relaisd, workdir, config)
    try:
        send(traced.daemon, 1)
        wait_for(lambda: len(delivered(traced.daemon)) >= 1, 30, "the first delivery")
        send(traced.daemon, messages, first=1)
        wait_for(lambda: len(delivered(traced.daemon)) >= 1 + messages, 60, "every delivery")
        calls = traced.stop()
    finally:
        traced.daemon.cleanup()
    return calls, mail


class DurabilityTest(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="relais-it-")
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)

    def test_existing_directories_are_synced_before_use_and_never_again(self):
        calls, mail = run_traced(harness.RELAISD, self.workdir, 5)
        syncs = directory_syncs(calls)
        spool = os.path.join(self.workdir, "spool")
        # Spool: the parents of the spool directory and of the shard directory are synced
        # (both existed), and before the first segment is created in the shard directory.
        first_segment = next(i for i, c in enumerate(calls)
                             if c[1] in ("openat", "openat2") and ".rls" in c[2] and "O_CREAT" in c[2])
        synced_before = directory_syncs(calls[:first_segment])
        for parent in (self.workdir, spool, "/"):
            self.assertIn(parent, synced_before, f"{parent} not synced before the first segment")
        # Maildir: every directory from the mail root's parent down to the mailbox is synced
        # (as the parent of the next one) before the first message is renamed into new/.
        first = per_message(calls)[0]
        rename = next(i for i, c in enumerate(first) if c[1].startswith("rename"))
        first_syncs = directory_syncs(first[:rename])
        for parent in (self.workdir, mail, f"{mail}/example.com", f"{mail}/example.com/rcpt"):
            self.assertIn(parent, first_syncs, f"{parent} not synced before the first delivery")
        # Steady state: the later messages do no mkdir and sync only new/ (the rename's), in
        # the worker and in every other thread.
        later = per_message(calls)[1:]
        self.assertEqual(len(later), 5)
        for k, message in enumerate(later):
            self.assertEqual(mkdirs(message), [], f"message {k + 1}")
            self.assertEqual(directory_syncs(message), [f"{mail}/example.com/rcpt/new"])
        rest = after_first_delivery(calls)
        self.assertEqual(mkdirs(rest), [])
        self.assertEqual(directory_syncs(rest), [f"{mail}/example.com/rcpt/new"] * 5)
        self.assertIn(f"{mail}/example.com/rcpt/new", syncs)
        # Nothing escaped: every mkdir was at or below the work directory.
        for c in mkdirs(calls):
            self.assertIn(self.workdir, c[2] + c[3], c)


def metric(daemon, name):
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


class MailboxMemoryTest(unittest.TestCase):
    """Without strace: the known-mailbox memory, its bound and a mailbox removed meanwhile."""

    def start(self, extra=""):
        self.workdir = tempfile.mkdtemp(prefix="relais-it-")
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)
        self.mail = os.path.join(self.workdir, "mail")
        d = Daemon(f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{self.mail}"\n'
                   + extra, threads=1, workdir=self.workdir)
        self.addCleanup(d.cleanup)
        return d.start()

    def test_mailbox_removed_while_running_is_made_again_and_logged(self):
        d = self.start()
        send(d, 1)
        wait_for(lambda: len(delivered(d)) == 1, 30, "the first delivery")
        shutil.rmtree(os.path.join(self.mail, "example.com"))
        send(d, 1, first=1)
        wait_for(lambda: len(delivered(d)) == 2, 30, "the second delivery")
        [line] = [e for e in d.events(d.log_offset) if e.get("event") == "maildir_recreated"]
        self.assertEqual(line["mailbox"], os.path.join(self.mail, "example.com", "rcpt"))
        [name] = os.listdir(os.path.join(self.mail, "example.com", "rcpt", "new"))
        with open(os.path.join(self.mail, "example.com", "rcpt", "new", name)) as f:
            self.assertIn("durable 1", f.read())
        self.assertEqual(metric(d, "relais_maildir_mailboxes_recreated_total"), 1)
        self.assertEqual(metric(d, "relais_maildir_directories_forgotten_total"), 0)
        self.assertEqual(d.stop(), 0)

    def test_known_directories_are_bounded(self):
        d = self.start("[delivery]\nmaildir_directories_known_max = 16\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            for i in range(8):  # Four directories or more each: past 16.
                s.sendmail("a@sender.test", [f"user{i}@example.com"], b"Subject: b\r\n\r\nx\r\n")
        wait_for(lambda: len(delivered(d)) == 8, 30, "eight deliveries")
        self.assertGreaterEqual(metric(d, "relais_maildir_directories_forgotten_total"), 1)
        for i in range(8):
            self.assertEqual(len(os.listdir(os.path.join(self.mail, "example.com", f"user{i}",
                                                         "new"))), 1)
        self.assertEqual(d.stop(), 0)


class ContainmentTest(unittest.TestCase):
    """Issue 18 item 1 against the real daemon: whatever a recipient makes of the mailbox
    path, the delivery stays below the route's root. The address check may refuse such a
    recipient first (501); if it does not, the delivery must bounce and write nothing."""

    def test_escaping_recipients_never_write_outside_the_root(self):
        workdir = tempfile.mkdtemp(prefix="relais-it-")
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        mail = os.path.join(workdir, "mail")
        marker = f"re-{os.urandom(4).hex()}"
        outside = os.path.join(tempfile.gettempdir(), marker)
        self.addCleanup(shutil.rmtree, outside + "]", ignore_errors=True)
        d = Daemon(f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{mail}/{{domain}}/{{local}}"\n',
                   threads=1, workdir=workdir)
        self.addCleanup(d.cleanup)
        d.start()
        # From mail/[x: one ".." per level up to "/", then the temporary directory's path.
        ups = "/.." * (len(mail.strip("/").split("/")) + 1)
        target = outside.lstrip("/")
        recipients = [f"x@[x:{ups}/{target}]", f"x@[x:{ups}/../../{target}]",
                      "x@[x:/../..]", "../../x@example.com", '"../../x"@example.com',
                      "x@..", "x@[..]"]
        accepted = []
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            for rcpt in recipients:
                s.mail("a@sender.test")
                code, _ = s.rcpt(rcpt)
                if code == 250:
                    code, _ = s.data(b"Subject: escape\r\n\r\nx\r\n")
                    self.assertEqual(code, 250)
                    accepted.append(rcpt)
                else:
                    self.assertGreaterEqual(code, 500, rcpt)
                    s.rset()

        def attempts():
            return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                    and e.get("recipient") in accepted]
        wait_for(lambda: len(attempts()) >= len(accepted), 30, "an attempt per accepted one")
        for e in attempts():  # Each bounces (the bounces themselves go to a@sender.test).
            self.assertEqual(e["outcome"], "failed", e)
            self.assertTrue(e["reply"].startswith("550 5.1.3"), e)
        self.assertFalse(os.path.exists(outside + "]"), outside)
        self.assertFalse(os.path.exists(outside))
        for name in os.listdir(workdir):  # Only what relaisd keeps in its work directory.
            self.assertIn(name, ("mail", "spool", "var", "relais.toml", "relaisd.log"), name)
        self.assertEqual(d.stop(), 0)


def measure(relaisd, messages):
    workdir = tempfile.mkdtemp(prefix="relais-measure-")
    try:
        calls, _ = run_traced(os.path.abspath(relaisd), workdir, messages)
        report(relaisd, calls, messages)  # While the directories exist: fsync targets are checked.
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(relaisd, calls, messages):
    segment = next(i for i, c in enumerate(calls)
                   if c[1] in ("openat", "openat2") and ".rls" in c[2] and "O_CREAT" in c[2])
    start = calls[:segment]
    print(f"{relaisd}\n  start, before the first segment: mkdir {len(mkdirs(start))}, "
          f"directory fsyncs {len(directory_syncs(start))}")
    first = per_message(calls)[0]
    rest = after_first_delivery(calls)
    n = messages
    made = mkdirs(rest)
    syncs = directory_syncs(rest)
    new_syncs = [p for p in syncs if p.endswith("/new")]
    print(f"  first message into the existing mailbox: mkdir {len(mkdirs(first))}, "
          f"directory fsyncs {len(directory_syncs(first))}")
    print(f"  next {n} messages, whole process: mkdir {len(made) / n:.2f}/message, directory "
          f"fsyncs {len(syncs) / n:.2f}/message (new/ after the rename: "
          f"{len(new_syncs) / n:.2f}, any other: {(len(syncs) - len(new_syncs)) / n:.2f})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        measure(sys.argv[2], int(sys.argv[3]))
    else:
        unittest.main()
