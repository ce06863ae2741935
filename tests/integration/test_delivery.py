"""Delivery by relaisd on loopback: Maildir, deferral and retry, shutdown with work in flight."""

import os
import smtplib
import unittest

from harness import Daemon, wait_for


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
