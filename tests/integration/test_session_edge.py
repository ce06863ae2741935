"""The SMTP session at its edges, against a real relaisd on loopback: clients that half-close
their connection (and Exim, which does), hostile trace-field input, the per-message deadline and
minimum data rate, and the per-shard receive budget measured as resident memory."""

import os
import socket
import unittest

import exim_client
from harness import Daemon, RawClient, wait_for

ENVELOPE = (b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\n"
            b"RCPT TO:<bob@example.com>\r\n")


def read_to_eof(sock, timeout=20):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def codes(data):
    return [int(line[:3]) for line in data.split(b"\r\n") if len(line) >= 4 and line[3:4] == b" "]


class HalfCloseTest(unittest.TestCase):
    """RFC 2920 3.1, RFC 5321 4.1.1.10: a client that shuts down its sending side after its last
    command still gets every reply. Losing the 250 after end of data made Exim send each
    message twice."""

    def setUp(self):
        self.d = Daemon("", threads=1).start()
        self.addCleanup(self.d.cleanup)

    def half_close(self, payload):
        sock = self.d.connect()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)

    def test_bdat_last_and_quit_then_shutdown(self):
        body = b"Subject: half-close bdat\r\n\r\nbody\r\n"
        out = self.half_close(ENVELOPE + b"BDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n")
        self.assertEqual(codes(out), [220, 250, 250, 250, 250, 221], out)
        self.assertIn(b"250 2.0.0 OK: queued as", out)
        wait_for(lambda: len(self.d.maildir_messages()) == 1, 20, "one delivery")

    def test_data_and_quit_then_shutdown(self):
        out = self.half_close(ENVELOPE + b"DATA\r\nSubject: half-close data\r\n\r\nbody\r\n"
                              b".\r\nQUIT\r\n")
        self.assertEqual(codes(out), [220, 250, 250, 250, 354, 250, 221], out)
        wait_for(lambda: len(self.d.maildir_messages()) == 1, 20, "one delivery")

    def test_several_messages_without_quit_then_shutdown(self):
        payload = ENVELOPE
        for i in range(3):
            if i:
                payload += b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.com>\r\n"
            body = b"Subject: %d\r\n\r\nbody\r\n" % i
            payload += b"BDAT %d\r\n" % 5 + body[:5] + b"BDAT %d LAST\r\n" % (len(body) - 5)
            payload += body[5:]
        out = self.half_close(payload)
        self.assertEqual(out.count(b"250 2.0.0 OK: queued as"), 3, out)
        wait_for(lambda: len(self.d.maildir_messages()) == 3, 20, "three deliveries")

    def test_unfinished_message_then_shutdown_stores_nothing(self):
        out = self.half_close(ENVELOPE + b"DATA\r\nSubject: cut\r\n\r\nno end")
        self.assertEqual(codes(out), [220, 250, 250, 250, 354], out)
        out = self.half_close(ENVELOPE + b"BDAT 100 LAST\r\nshort")
        self.assertEqual(codes(out), [220, 250, 250, 250], out)
        self.assertEqual(self.d.spool_messages(), [])


@unittest.skipUnless(exim_client.available(),
                     "Exim is not unpacked (tools/fetch-exim.sh build/peers/exim)")
class EximInteropTest(unittest.TestCase):
    """Exim 4.96 as the client: it pipelines `BDAT n LAST`, the data and `QUIT` in one write
    and shuts its sending side down. Expected: Exim sees the 250 and the message arrives
    exactly once (before the fix: "Remote host closed connection in response to pipelined end
    of data", a deferral, and a second copy on the retry)."""

    def check(self, chunking):
        d = Daemon("", threads=1).start()
        self.addCleanup(d.cleanup)
        exim = exim_client.EximClient(d.port, chunking=chunking)
        tag = b"chunking" if chunking else b"data"
        result = exim.send("alice@sender.test", ["bob@example.com"],
                           b"Subject: from exim " + tag + b"\n\nhello\n")
        log = exim.main_log()
        self.assertIn("=> bob@example.com", log, log + result.stderr.decode(errors="replace"))
        self.assertIn("Completed", log, log)
        self.assertNotIn("defer", log, log)
        self.assertIn(b"250 2.0.0 OK: queued as", result.stderr)
        self.assertIn(b"221", result.stderr)
        if chunking:
            self.assertIn(b"BDAT", result.stderr)  # The case that lost its replies.
        wait_for(lambda: len(d.maildir_messages()) == 1, 20, "the delivery")
        # Nothing left for Exim to retry: a forced queue run sends no second copy.
        self.assertEqual(exim.queue_count(), 0)
        exim.run("-qff")
        self.assertEqual(len(d.maildir_messages()), 1)
        d.stop()
        self.assertEqual(len(d.maildir_messages()), 1)

    def test_exim_with_chunking_gets_its_replies_and_delivers_once(self):
        self.check(chunking=True)

    def test_exim_with_data_gets_its_replies_and_delivers_once(self):
        self.check(chunking=False)


if __name__ == "__main__":
    unittest.main()
