"""Delivery by relaisd on loopback: Maildir, deferral and retry, shutdown with work in flight."""

import json
import os
import smtplib
import subprocess
import unittest

from harness import RELAISCTL, Daemon, wait_for


class DeliveryTest(unittest.TestCase):
    def start(self, config="", threads=2):
        d = Daemon(config, threads=threads)
        self.addCleanup(d.cleanup)
        return d

    def test_blocked_maildir_defers_then_retry_delivers(self):
        d = self.start()
        root = os.path.join(d.workdir, "mailroot")
        d.config_text = ('[queue]\nretry_first_ms = 300\nretry_max_ms = 600\n'
                         f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{root}"\n')
        with open(root, "w") as f:
            f.write("a file where the mail root should be\n")
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("a@sender.test", ["bob@example.com"], b"Subject: retry me\r\n\r\nx\r\n")

        def attempts(outcome):
            return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                    and e.get("outcome") == outcome]
        deferred = wait_for(lambda: attempts("deferred"), 20, "a deferred attempt")
        self.assertTrue(deferred[0]["reply"].startswith("451 4.3.0"), deferred[0])
        [queued] = d.spool_messages()
        self.assertEqual(queued["recipients"][0]["state"], "pending")
        wait_for(lambda: len(attempts("deferred")) >= 2, 20, "a second try")  # It retries.
        os.remove(root)  # The operator fixes the mail root.
        wait_for(lambda: attempts("delivered"), 20, "the retry to deliver")
        new = os.path.join(root, "example.com", "bob", "new")
        [name] = os.listdir(new)
        with open(os.path.join(new, name)) as f:
            self.assertIn("Subject: retry me", f.read())
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(d.stop(), 0)

    def test_relaisctl_shows_and_steers_the_queue(self):
        d = self.start()
        root = os.path.join(d.workdir, "mailroot")
        d.config_text = (f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{root}"\n')
        with open(root, "w") as f:
            f.write("blocks delivery\n")
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            for rcpt in ("a@one.example", "b@two.example", "c@three.example"):
                s.sendmail("sender@src.example", [rcpt], b"Subject: q\r\n\r\nx\r\n")
        socket_path = os.path.join(d.workdir, "var", "run", "relaisd.sock")
        self.assertEqual(os.stat(socket_path).st_mode & 0o777, 0o600)

        def ctl(*args, ok=True):
            out = subprocess.run([RELAISCTL, "--socket", socket_path, *args],
                                 capture_output=True, text=True, timeout=30)
            if ok:
                self.assertEqual(out.returncode, 0, out.stderr)
            return out

        def ls(*args):
            return json.loads(ctl("queue", "ls", "--json", *args).stdout)
        wait_for(lambda: len(ls("--state", "deferred")) == 3, 20, "three deferred messages")
        deferred = ls()
        self.assertTrue(all(m["last_reply"].startswith("451 4.3.0") for m in deferred))
        self.assertEqual(len(ls("--domain", "two.example")), 1)
        status = json.loads(ctl("status", "--json").stdout)
        self.assertEqual(sum(s["messages"] for s in status), 3)
        self.assertEqual(sum(s["deferred"] for s in status), 3)

        by_rcpt = {m["recipients"][0]["address"]: m["id"] for m in deferred}
        self.assertEqual(ctl("queue", "hold", by_rcpt["a@one.example"]).stdout, "1 message(s)\n")
        self.assertEqual(ls("--state", "held")[0]["id"], by_rcpt["a@one.example"])
        ctl("queue", "delete", by_rcpt["c@three.example"])
        os.remove(root)  # Fixed: now a flush delivers what is not held.
        ctl("queue", "flush")
        wait_for(lambda: [m["id"] for m in ls()] == [by_rcpt["a@one.example"]], 20,
                 "only the held message to remain")
        self.assertTrue(os.listdir(os.path.join(root, "two.example", "b", "new")))
        ctl("queue", "release", by_rcpt["a@one.example"])
        wait_for(lambda: not ls(), 20, "the released message to be delivered")
        self.assertFalse(os.path.exists(os.path.join(root, "three.example")))  # Deleted.

        bad = ctl("queue", "show", "0" * 32, ok=False)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("no message", bad.stderr)
        # A second daemon must not share this spool and socket.
        twin = Daemon(d.config_text, threads=1, workdir=d.workdir)
        self.addCleanup(twin.cleanup)
        with self.assertRaises(AssertionError) as ctx:
            twin.start()
        self.assertIn(f"spool {d.spool} is in use by another relaisd", str(ctx.exception))
        # Nor its admin socket, even with a spool of its own.
        other = Daemon(d.config_text + '\n[server]\nlisten = ["127.0.0.1:0"]\n'
                       f'admin_socket = "{socket_path}"\n', threads=1)
        self.addCleanup(other.cleanup)
        with self.assertRaises(AssertionError) as ctx:
            other.start()
        self.assertIn("another relaisd is running", str(ctx.exception))
        self.assertEqual(d.stop(), 0)
        self.assertFalse(os.path.exists(socket_path))

    def test_bodies_beyond_the_memory_budget_are_read_back_from_disk(self):
        d = self.start("[spool]\nbody_memory_bytes_max = 0\n").start()
        bodies = {}
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            for i in range(20):
                body = f"Subject: disk {i}\r\nX-Test-Id: disk-{i}\r\n\r\n" + \
                    f"line {i}\r\n" * (50 * i + 1)
                s.sendmail("a@sender.test", [f"u{i}@example.com"], body.encode())
                bodies[f"disk-{i}"] = body.replace("\r\n", "\n")
        wait_for(lambda: len(d.maildir_messages()) == 20, 20, "twenty deliveries")
        for m in d.maildir_messages():
            test_id = next(l for l in m["body"].split("\n") if l.startswith("X-Test-Id: "))[11:]
            self.assertTrue(m["body"].endswith(bodies[test_id].split("\n\n", 1)[1]), test_id)
        self.assertEqual(d.stop(), 0)

    def test_permanent_failure_bounces_to_the_sender_but_never_to_null(self):
        d = self.start()
        root = os.path.join(d.workdir, "mailroot")
        routes = f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{root}"\n'
        d.config_text = '[queue]\nretry_first_ms = 300\nretry_max_ms = 300\n' + routes
        with open(root, "w") as f:
            f.write("blocks delivery in the first run\n")
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("alice@sender.test", ["bob@example.com"],
                       b"Subject: will bounce\r\nX-Test-Id: bounce\r\n\r\nbody\r\n")
            s.sendmail("", ["carol@example.com"], b"Subject: null sender\r\n\r\nbody\r\n")
        wait_for(lambda: len(d.spool_messages()) == 2, 10, "both messages spooled")
        self.assertEqual(d.stop(), 0)
        # Second run: example.com is now refused by route; the sender's domain still delivers.
        os.remove(root)
        d.config_text = ('[queue]\nretry_first_ms = 300\nretry_max_ms = 300\n'
                         '[[routes]]\ndomain = "example.com"\ntype = "reject"\n' + routes)
        d.start()
        alice_new = os.path.join(root, "sender.test", "alice", "new")
        wait_for(lambda: os.path.isdir(alice_new) and os.listdir(alice_new), 20, "the bounce")
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        [name] = os.listdir(alice_new)
        with open(os.path.join(alice_new, name)) as f:
            bounce = f.read()
        self.assertTrue(bounce.startswith("Return-Path: <>\nDelivered-To: alice@sender.test\n"))
        for needle in ("Content-Type: multipart/report; report-type=delivery-status",
                       "Final-Recipient: rfc822; bob@example.com", "Action: failed",
                       "Status: 5.7.1", "Subject: will bounce", "X-Test-Id: bounce"):
            self.assertIn(needle, bounce)
        self.assertNotIn("\nbody\n", bounce)  # Headers only.
        self.assertFalse(os.path.exists(os.path.join(root, "example.com")))
        # The message from <> failed too, and nobody was told: there is no one to tell.
        self.assertEqual(len(os.listdir(os.path.join(root, "sender.test"))), 1)
        events = d.events(d.log_offset)
        self.assertEqual(len([e for e in events if e.get("event") == "bounce_queued"]), 1)
        [carol] = [e for e in events if e.get("event") == "delivery_attempt"
                   and e.get("recipient") == "carol@example.com"]
        self.assertEqual((carol["outcome"], carol["route"]), ("failed", "reject"))
        self.assertEqual(d.stop(), 0)

    def test_operator_bounce_returns_a_stuck_message(self):
        d = self.start()
        blocked = os.path.join(d.workdir, "blocked")
        good = os.path.join(d.workdir, "good")
        d.config_text = (f'[[routes]]\ndomain = "example.com"\ntype = "maildir"\n'
                         f'path = "{blocked}"\n'
                         f'[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "{good}/{{domain}}/{{local}}"\n')
        with open(blocked, "w") as f:
            f.write("never writable\n")
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("alice@src.example", ["bob@example.com"], b"Subject: stuck\r\n\r\nx\r\n")
        socket_path = os.path.join(d.workdir, "var", "run", "relaisd.sock")

        def ls():
            out = subprocess.run([RELAISCTL, "--socket", socket_path, "queue", "ls", "--json"],
                                 capture_output=True, text=True, timeout=30, check=True)
            return json.loads(out.stdout)
        [stuck] = wait_for(lambda: [m for m in ls() if m["state"] == "deferred"], 20, "deferral")
        out = subprocess.run([RELAISCTL, "--socket", socket_path, "queue", "bounce", stuck["id"]],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        alice = os.path.join(good, "src.example", "alice", "new")  # Through the template.
        wait_for(lambda: os.path.isdir(alice) and os.listdir(alice), 20, "the bounce")
        wait_for(lambda: not ls(), 20, "the queue to empty")
        [name] = os.listdir(alice)
        with open(os.path.join(alice, name)) as f:
            report = f.read()
        self.assertIn("Final-Recipient: rfc822; bob@example.com", report)
        self.assertIn("returned to sender by the postmaster", report)
        self.assertIn("last reply: 451 4.3.0", report)
        self.assertEqual(d.stop(), 0)

    def test_stop_waits_for_deliveries_in_flight(self):
        d = self.start().start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            for i in range(50):
                s.sendmail("a@sender.test", [f"u{i}@example.com"], b"Subject: x\r\n\r\ny\r\n")
        self.assertEqual(d.stop(), 0)
        # Every accepted message is delivered, or still spooled for the next start.
        ids = {m["id"] for m in d.all_messages()}
        self.assertEqual(len(ids), 50)


if __name__ == "__main__":
    unittest.main()
