"""Outbound behaviour of relaisd towards next hops: connections opened only when a message
needs one, SMTPUTF8 left off when the message does not need it, and 8-bit mail converted to
quoted-printable for a next hop without 8BITMIME (issue 18, items 11 to 13).

The next hop is a small scripted SMTP server of this file (loopback, port 0, one thread per
connection) that offers exactly the extensions a test asks for, refuses what a strict server
without them would refuse, and records every connection with the messages it carried.
Postfix's smtp-sink, with 8BITMIME switched off, checks the conversion against a real peer."""

import email
import email.policy
import os
import smtplib
import socketserver
import threading
import unittest
import urllib.request

from harness import SMTP_SINK, Daemon, Sink, wait_for


class NextHop:
    """A next hop on 127.0.0.1:port. `extensions`: the EHLO keywords it offers."""

    def __init__(self, extensions=("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"),
                 hold_first_reply=False):
        """hold_first_reply: the first connection holds its first end-of-data reply until a
        second connection arrives, and later connections hold their greeting until that reply
        is out (at most 10 s each): a connection opened while the first was busy comes up
        only after the first is free again, as with a next hop slow to greet."""
        self.extensions = [e.upper() for e in extensions]
        self.hold_first_reply = hold_first_reply
        self.second_connection = threading.Event()
        self.first_reply_sent = threading.Event()
        self.lock = threading.Lock()
        self.connections = []  # {"commands": [...], "messages": [(mail_line, bytes)], "open"}
        hop = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                hop.serve(self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, rfile, wfile):
        conn = {"commands": [], "messages": [], "open": True}
        with self.lock:
            self.connections.append(conn)
            index = len(self.connections) - 1
        if self.hold_first_reply and index > 0:
            self.second_connection.set()
            self.first_reply_sent.wait(10)

        def reply(text):
            wfile.write(text.encode() + b"\r\n")
            wfile.flush()
        try:
            reply("220 hop.test ESMTP")
            mail = None
            rcpts = 0
            while True:
                line = rfile.readline(4096)
                if not line:
                    return
                command = line.rstrip(b"\r\n")
                conn["commands"].append(command.decode("utf-8", "replace"))
                verb = command[:4].upper()
                utf8_param = b" SMTPUTF8" in command.upper()
                if verb == b"EHLO":
                    lines = ["hop.test", *self.extensions]
                    for text in lines[:-1]:
                        reply(f"250-{text}")
                    reply(f"250 {lines[-1]}")
                elif verb == b"HELO":
                    reply("250 hop.test")
                elif verb == b"MAIL":
                    if utf8_param and "SMTPUTF8" not in self.extensions:
                        reply("555 5.5.4 SMTPUTF8 not offered")
                    elif b"BODY=8BITMIME" in command.upper() and "8BITMIME" not in self.extensions:
                        reply("555 5.5.4 8BITMIME not offered")
                    elif not command.isascii() and not utf8_param:
                        reply("553 5.6.7 non-ASCII address without SMTPUTF8")
                    else:
                        mail = command.decode("utf-8", "replace")
                        rcpts = 0
                        reply("250 2.1.0 ok")
                elif verb == b"RCPT":
                    if mail is None:
                        reply("503 5.5.1 MAIL first")
                    elif not command.isascii() and " SMTPUTF8" not in mail.upper():
                        reply("553 5.6.7 non-ASCII address without SMTPUTF8")
                    else:
                        rcpts += 1
                        reply("250 2.1.5 ok")
                elif verb == b"DATA":
                    if mail is None or rcpts == 0:
                        reply("503 5.5.1 no valid recipients")
                        continue
                    reply("354 go")
                    data = bytearray()
                    while True:
                        chunk = rfile.readline(1 << 20)
                        if not chunk or chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    eight_bit_allowed = ("8BITMIME" in self.extensions and
                                         "BODY=8BITMIME" in mail.upper())
                    if not data.isascii() and not eight_bit_allowed and \
                            " SMTPUTF8" not in mail.upper():
                        reply("554 5.6.0 8-bit data without 8BITMIME")
                    else:
                        conn["messages"].append((mail, bytes(data)))
                        hold = self.hold_first_reply and index == 0 and \
                            not self.first_reply_sent.is_set()
                        if hold:
                            self.second_connection.wait(10)
                        reply("250 2.0.0 queued")
                        if hold:
                            self.first_reply_sent.set()
                    mail = None
                elif verb in (b"RSET", b"NOOP"):
                    mail = None
                    reply("250 2.0.0 ok")
                elif verb == b"QUIT":
                    reply("221 2.0.0 bye")
                    return
                else:
                    reply("502 5.5.2 unknown command")
        except OSError:
            pass
        finally:
            conn["open"] = False

    def messages(self):
        with self.lock:
            return [m for c in self.connections for m in c["messages"]]

    def snapshot(self):
        with self.lock:
            return [dict(c, messages=list(c["messages"])) for c in self.connections]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def smarthost(port, extra=""):
    # The clients are on loopback and trusted (relay.networks), so mail to any other domain
    # goes to the smarthost; only local.test is ours.
    return (f"{extra}[relay]\nlocal_domains = [\"local.test\"]\nnetworks = [\"127.0.0.0/8\"]\n"
            f"[[routes]]\ndomain = \"local.test\"\ntype = \"maildir\"\n"
            f"path = \"LOCAL_ROOT\"\n"
            f"[[routes]]\ndomain = \"*\"\ntype = \"smarthost\"\nhosts = [\"127.0.0.1:{port}\"]\n")


class EgressTest(unittest.TestCase):
    def hop(self, *args, **kwargs):
        h = NextHop(*args, **kwargs)
        self.addCleanup(h.stop)
        return h

    def daemon(self, port, extra=""):
        d = Daemon("")
        self.addCleanup(d.cleanup)
        self.local_root = os.path.join(d.workdir, "mailroot")
        d.config_text = smarthost(port, extra).replace("LOCAL_ROOT", self.local_root)
        return d.start()

    def attempts(self, d, outcome=None):
        return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                and (outcome is None or e.get("outcome") == outcome)]

    def metric(self, d, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics",
                                    timeout=10) as r:
            total = None
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total = (total or 0) + float(line.rsplit(" ", 1)[1])
        return total  # Summed over labels (a per-core gauge); None when absent.

    def bounces(self, user):
        inbox = os.path.join(self.local_root, "local.test", user, "new")
        if not os.path.isdir(inbox):
            return []
        out = []
        for name in sorted(os.listdir(inbox)):
            with open(os.path.join(inbox, name), "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
        return out

    # ---- 18.11 ----

    def test_a_connection_opened_for_a_message_carries_it(self):
        # Message 2 arrives while the only connection is busy with message 1: a second
        # connection is opened for it, and comes up after the first is free again. Before
        # the fix the first took message 2, and the second said only EHLO and QUIT.
        hop = self.hop(hold_first_reply=True)
        d = self.daemon(hop.port, "[delivery]\nidle_timeout_ms = 300\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("a@src.test", ["b@dst.test"], b"Subject: one\r\n\r\nx\r\n")
            wait_for(lambda: hop.messages(), 10, "message 1 at the next hop")
            s.sendmail("a@src.test", ["c@dst.test"], b"Subject: two\r\n\r\nx\r\n")
        wait_for(lambda: len(hop.messages()) == 2, 20, "both messages at the next hop")
        wait_for(lambda: not any(c["open"] for c in hop.snapshot()), 20,
                 "every outbound connection to close")
        carried = [len(c["messages"]) for c in hop.snapshot()]
        self.assertEqual(carried, [1, 1], [c["commands"] for c in hop.snapshot()])
        wait_for(lambda: self.metric(d, "relais_egress_connections") == 0, 10,
                 "the gauges to catch up")
        self.assertEqual(self.metric(d, "relais_egress_connections_unused_total"), 0)
        self.assertEqual(d.stop(), 0)

    def test_five_clients_open_no_connection_that_carries_nothing(self):
        hop = self.hop()
        d = self.daemon(hop.port, "[delivery]\nidle_timeout_ms = 500\n")
        errors = []

        def client(k):
            try:
                with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
                    for i in range(10):
                        s.sendmail("a@src.test", [f"r{k}-{i}@dst.test"],
                                   f"Subject: storm {k} {i}\r\n\r\nhello\r\n".encode())
            except Exception as e:  # Reported below, in the test's own thread.
                errors.append(e)
        clients = [threading.Thread(target=client, args=(k,)) for k in range(5)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        self.assertEqual(errors, [])
        wait_for(lambda: len(hop.messages()) == 50, 30, "50 messages at the next hop")
        # Idle connections say QUIT after idle_timeout_ms: then each one's count is final.
        wait_for(lambda: not any(c["open"] for c in hop.snapshot()), 30,
                 "every outbound connection to close")
        connections = hop.snapshot()
        carried = [len(c["messages"]) for c in connections]
        print(f"\n5 clients x 10 messages: {len(connections)} connections to the next hop, "
              f"messages per connection {sorted(carried)}")
        empty = [c["commands"] for c in connections if not c["messages"]]
        self.assertEqual(empty, [], "connections that carried no message")
        wait_for(lambda: self.metric(d, "relais_egress_connections") == 0, 10,
                 "the gauges to catch up")
        self.assertEqual(self.metric(d, "relais_egress_connections_unused_total"), 0)
        seen = sorted(m[1].split(b"Subject: storm ")[1].split(b"\r\n")[0].decode()
                      for m in hop.messages())
        self.assertEqual(seen, sorted(f"{k} {i}" for k in range(5) for i in range(10)))
        self.assertEqual(d.stop(), 0)

    # ---- 18.12 ----

    def test_smtputf8_left_off_when_the_message_does_not_need_it(self):
        hop = self.hop(("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"))  # No SMTPUTF8.
        d = self.daemon(hop.port, "[queue]\nretry_first_ms = 300\nretry_max_ms = 600\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            # ASCII envelope and header: relayed without SMTPUTF8 (RFC 6531 3.4).
            s.sendmail("alice@local.test", ["bob@dst.test"],
                       b"Subject: ascii\r\n\r\nplain\r\n", mail_options=["SMTPUTF8"])
            # Also with UTF-8 in the body only (8BITMIME's business, which the hop offers).
            s.sendmail("alice@local.test", ["carol@dst.test"],
                       "Subject: ascii head\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: 8bit\r\n\r\ncafé\r\n".encode(),
                       mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            # A UTF-8 header needs SMTPUTF8, also when folded: bounced with 5.6.9.
            s.sendmail("alice@local.test", ["dave@dst.test"],
                       "Subject: plain\r\n  continued, café\r\n\r\nx\r\n".encode(),
                       mail_options=["SMTPUTF8"])
            # So does a non-ASCII address: 5.6.7.
            s.sendmail("alice@local.test", ["évé@dst.test"],
                       b"Subject: ascii\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
        wait_for(lambda: len(hop.messages()) == 2, 20, "two messages at the next hop")
        for mail, data in hop.messages():
            self.assertNotIn("SMTPUTF8", mail.upper())
        self.assertIn("BODY=8BITMIME", hop.messages()[1][0])
        self.assertIn("café".encode(), hop.messages()[1][1])
        failed = {e["recipient"]: e["reply"] for e in
                  wait_for(lambda: len(self.attempts(d, "failed")) == 2 and
                           self.attempts(d, "failed"), 20, "two failures")}
        self.assertTrue(failed["dave@dst.test"].startswith("550 5.6.9 "), failed)
        self.assertTrue(failed["évé@dst.test"].startswith("553 5.6.7 "), failed)
        relayed = [e for e in self.attempts(d, "delivered") if e["route"] == "smarthost"]
        self.assertEqual(sorted(e["recipient"] for e in relayed), ["bob@dst.test", "carol@dst.test"])
        wait_for(lambda: len(self.bounces("alice")) == 2, 20, "two bounces to the sender")
        self.assertEqual(self.metric(d, "relais_egress_smtputf8_not_needed_total"), 2)
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(d.stop(), 0)

    # ---- 18.13 ----

    MULTIPART = (
        "Subject: converted\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
        "--outer\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "Grüße, naïve café = 3 € \r\n" + "ü" * 120 + "\r\n.leading dot\r\n"
        "--outer\r\nContent-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n"
        "--outer\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Subject: inner\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nÄrger im Anhang\r\n"
        "--outer--\r\n").encode()

    def check_converted(self, original, delivered):
        """`delivered` is 7-bit and decodes to the same parts as `original`."""
        self.assertTrue(delivered.isascii(), delivered)
        for line in delivered.split(b"\r\n"):
            self.assertLessEqual(len(line), 998)
        want = email.message_from_bytes(original, policy=email.policy.default)
        got = email.message_from_bytes(delivered, policy=email.policy.default)
        want_parts = [p for p in want.walk() if not p.is_multipart()]
        got_parts = [p for p in got.walk() if not p.is_multipart()]
        self.assertEqual(len(want_parts), len(got_parts))
        for w, g in zip(want_parts, got_parts):
            self.assertEqual(w.get_content_type(), g.get_content_type())
            self.assertEqual(w.get_payload(decode=True), g.get_payload(decode=True))

    def test_eight_bit_mail_is_converted_for_a_next_hop_without_8bitmime(self):
        hop = self.hop(("PIPELINING", "ENHANCEDSTATUSCODES"))  # No 8BITMIME.
        d = self.daemon(hop.port, "[queue]\nretry_first_ms = 300\nretry_max_ms = 600\n")
        plain = ("Subject: plain 8bit\r\n\r\nnon-MIME caf\xe9 text\r\n").encode("latin-1")
        refused = "Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\nnot base64: é\r\n"
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            s.sendmail("alice@local.test", ["b@dst.test"], self.MULTIPART,
                       mail_options=["BODY=8BITMIME"])
            s.sendmail("alice@local.test", ["c@dst.test"], plain, mail_options=["BODY=8BITMIME"])
            # What cannot be converted faithfully is still returned, with the reason.
            s.sendmail("alice@local.test", ["d@dst.test"], refused.encode(),
                       mail_options=["BODY=8BITMIME"])
        wait_for(lambda: len(hop.messages()) == 2, 20, "two messages at the next hop")
        by_subject = {data.split(b"Subject: ")[1].split(b"\r\n")[0]: (mail, data)
                      for mail, data in hop.messages()}
        mail, data = by_subject[b"converted"]
        self.assertNotIn("BODY=", mail.upper())
        # Our trace header comes first: compare from the original's first line on.
        self.check_converted(self.MULTIPART, data[data.index(b"Subject: converted"):])
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable", data)
        mail, data = by_subject[b"plain 8bit"]
        self.assertTrue(data.isascii())
        self.assertIn(b"Content-Type: text/plain; charset=unknown-8bit", data)
        self.assertIn(b"non-MIME caf=E9 text", data)
        [failed] = wait_for(lambda: self.attempts(d, "failed"), 20, "the refusal")
        self.assertTrue(failed["reply"].startswith("554 5.6.3 8-bit message not convertible"),
                        failed)
        self.assertEqual(self.metric(d, "relais_egress_converted_7bit_total"), 2)
        self.assertEqual(self.metric(d, "relais_egress_not_convertible_total"), 1)
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(d.stop(), 0)

    @unittest.skipUnless(os.path.exists(SMTP_SINK), "Postfix's smtp-sink is not installed")
    def test_postfix_smtp_sink_without_8bitmime_gets_7bit_mail(self):
        sink = Sink(["-8"])  # Do not announce 8BITMIME.
        self.addCleanup(sink.cleanup)
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as probe:
            probe.ehlo()
            self.assertFalse(probe.has_extn("8bitmime"))
        d = self.daemon(sink.port)
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("alice@local.test", ["b@dst.test"], self.MULTIPART,
                       mail_options=["BODY=8BITMIME"])
        [dump] = wait_for(lambda: sink.messages(), 20, "the message at smtp-sink")
        raw = dump.encode("utf-8")
        self.check_converted(self.MULTIPART, raw[raw.index(b"Subject: converted"):]
                             .replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        self.assertEqual(self.attempts(d, "failed"), [])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
