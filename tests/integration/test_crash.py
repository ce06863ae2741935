"""kill -9 under load: every message answered 250 must be delivered or still spooled.

Client threads send messages as fast as relaisd accepts them, each with a unique X-Test-Id
header, and record the queue ID of every 250. The daemon is killed with SIGKILL at a random
moment (mid-DATA, mid-commit, mid-delivery, anywhere), restarted on the same spool (recovery
runs and cuts torn tails) and given time to deliver; then every acknowledged message must be
in the Maildir or still in the spool, intact. Duplicates (delivered twice because the kill
came between the Maildir rename and the outcome record) are allowed and counted. Rounds accumulate in one spool, so later recoveries also walk the
segments of earlier crashes. Bounded: ROUNDS kills, at most SECONDS of load each.
"""

import os
import random
import socket
import threading
import time
import unittest

from harness import Daemon, RawClient, wait_for

ROUNDS = int(os.environ.get("RELAIS_CRASH_ROUNDS", "5"))
SECONDS = float(os.environ.get("RELAIS_CRASH_SECONDS", "1.5"))
CLIENTS = 8


class LoadClient(threading.Thread):
    def __init__(self, port, tag, stop):
        super().__init__(daemon=True)
        self.port, self.tag, self.stop = port, tag, stop
        self.acked = {}  # X-Test-Id -> queue ID
        self.sent = 0

    def run(self):
        sock = None
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            c = RawClient(sock)
            c.reply()
            c.send(b"EHLO load.test\r\n")
            c.reply()
            n = 0
            while not self.stop.is_set():
                test_id = f"{self.tag}-{n}"
                n += 1
                body = (f"Subject: crash {test_id}\r\nX-Test-Id: {test_id}\r\n\r\n" +
                        "payload line\r\n" * random.randint(1, 60)).encode()
                # The envelope and the body pipelined in one write, as real senders do.
                c.send(b"MAIL FROM:<load@sender.test>\r\nRCPT TO:<sink@example.com>\r\n"
                       b"DATA\r\n" + body + b".\r\n")
                codes = [c.reply()[0] for _ in range(3)]
                code, text = c.reply()
                self.sent += 1
                if codes == [250, 250, 354] and code == 250:
                    self.acked[test_id] = text.rsplit(" ", 1)[1]
        except (OSError, ConnectionError):
            pass  # The daemon died under us: expected.
        finally:
            if sock is not None:
                sock.close()


class CrashTest(unittest.TestCase):
    def test_acknowledged_messages_survive_kill9(self):
        d = Daemon()
        self.addCleanup(d.cleanup)
        acked = {}
        random.seed(os.environ.get("RELAIS_CRASH_SEED", str(time.time_ns())))
        for round_ in range(ROUNDS):
            d.start()
            stop = threading.Event()
            clients = [LoadClient(d.port, f"r{round_}c{i}", stop) for i in range(CLIENTS)]
            for c in clients:
                c.start()
            time.sleep(random.uniform(0.2, SECONDS))  # The load runs; the kill comes at random.
            d.kill9()
            stop.set()
            for c in clients:
                c.join(timeout=10)
                acked.update(c.acked)
            self.assertGreater(sum(len(c.acked) for c in clients), 0, "no load got through")
        # One more start recovers the last crash and delivers what is pending.
        d.start()
        wait_for(lambda: not d.spool_messages(), 120, "the spool to drain")
        self.assertEqual(d.stop(), 0)
        stored = {}
        delivered_copies = {}
        for m in d.all_messages():
            for line in m["body"].split("\n"):
                if line.startswith("X-Test-Id: "):
                    test_id = line[len("X-Test-Id: "):]
                    stored.setdefault(test_id, set()).add(m["id"])
                    if m["where"] == "maildir":
                        delivered_copies[test_id] = delivered_copies.get(test_id, 0) + 1
        lost = [t for t in acked if t not in stored]
        wrong_id = [t for t, qid in acked.items() if t in stored and qid not in stored[t]]
        duplicated = sum(n - 1 for n in delivered_copies.values() if n > 1)
        undelivered = [t for t in acked if t not in delivered_copies]
        print(f"\ncrash loop: {ROUNDS} kills, {len(acked)} acknowledged, "
              f"{len(stored)} stored, {len(delivered_copies)} delivered, {len(lost)} lost, "
              f"{duplicated} duplicated")
        self.assertEqual(lost, [], "acknowledged messages lost")
        self.assertEqual(wrong_id, [], "stored under another ID than acknowledged")
        self.assertEqual(undelivered, [], "acknowledged but never delivered")
        recoveries = [e for e in d.events() if e.get("event") == "spool_recovered"]
        self.assertEqual(len(recoveries), 2 * (ROUNDS + 1))  # Two shards, every start.


if __name__ == "__main__":
    unittest.main()
