"""Relaying by relaisd to real next hops on loopback: Postfix's smtp-sink over SMTP and LMTP.

Covers the smarthost and lmtp routes end to end: delivery with connection reuse, failover,
a next hop that is down and comes back, soft failures retried, hard failures bounced into the
sender's Maildir, a next hop that hangs up mid-DATA, and kill -9 while delivering."""

import os
import random
import smtplib
import time
import unittest

from harness import Daemon, Sink, free_port, wait_for

FAST_RETRY = "[queue]\nretry_first_ms = 300\nretry_max_ms = 600\n"


def smarthost_config(hosts, extra="", local_root=None):
    hosts_toml = ", ".join(f'"{h}"' for h in hosts)
    # The test clients are local submitters: a "*" smarthost route for anyone is an open relay.
    text = '[relay]\nnetworks = ["127.0.0.0/8"]\n' + extra
    if local_root:
        # Mail for local.test stays here: that is where bounces to local senders land.
        text += f'[[routes]]\ndomain = "local.test"\ntype = "maildir"\npath = "{local_root}"\n'
    text += f'[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = [{hosts_toml}]\n'
    return text


def send(port, sender, rcpts, subject, body="hello\r\n"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail(sender, rcpts, f"Subject: {subject}\r\n\r\n{body}".encode())


class RelayTest(unittest.TestCase):
    def daemon(self, config, threads=2):
        d = Daemon(config, threads=threads)
        self.addCleanup(d.cleanup)
        return d

    def sink(self, *args, **kwargs):
        s = Sink(*args, **kwargs)
        self.addCleanup(s.cleanup)
        return s

    def attempts(self, d, outcome=None):
        return [e for e in d.events(d.log_offset) if e.get("event") == "delivery_attempt"
                and (outcome is None or e.get("outcome") == outcome)]

    def test_smarthost_delivers_every_message_over_reused_connections(self):
        sink = self.sink()
        d = self.daemon(smarthost_config([f"127.0.0.1:{sink.port}"])).start()
        for i in range(30):
            send(d.port, "a@src.test", [f"r{i}@dst.test", f"s{i}@dst.test"], f"relay {i}")
        wait_for(lambda: len(sink.messages()) == 30, 30, "30 messages at the sink")
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        subjects = sorted(int(m.split("Subject: relay ")[1].split("\n")[0])
                          for m in sink.messages())
        self.assertEqual(subjects, list(range(30)))
        for m in sink.messages():
            self.assertIn("X-Rcpt-Args: <r", m)
            self.assertIn("by relais.test", m)  # Our trace header went along.
        delivered = self.attempts(d, "delivered")
        self.assertEqual(len(delivered), 60)
        self.assertTrue(all(e["route"] == "smarthost" and e["next_hop"] == f"127.0.0.1:{sink.port}"
                            for e in delivered), delivered[0])
        self.assertEqual(d.stop(), 0)

    def test_lmtp_over_tcp_and_unix_socket(self):
        tcp = self.sink(lmtp=True)
        path = os.path.join(tcp.dir, "lmtp.sock")
        unix = self.sink(lmtp=True, address=f"unix:{path}")
        d = self.daemon(
            f'[[routes]]\ndomain = "tcp.test"\ntype = "lmtp"\naddress = "127.0.0.1:{tcp.port}"\n'
            f'[[routes]]\ndomain = "unix.test"\ntype = "lmtp"\naddress = "{path}"\n').start()
        send(d.port, "a@src.test", ["x@tcp.test", "y@tcp.test", "z@unix.test"], "lmtp")
        wait_for(lambda: len(tcp.messages()) == 1 and len(unix.messages()) == 1, 20,
                 "one message at each LMTP server")
        self.assertIn("X-Client-Proto: LMTP", tcp.messages()[0])
        wait_for(lambda: len(self.attempts(d, "delivered")) == 3, 20, "three recipients done")
        routes = {e["recipient"]: e for e in self.attempts(d, "delivered")}
        self.assertEqual(routes["z@unix.test"]["next_hop"], path)
        self.assertEqual(routes["x@tcp.test"]["route"], "lmtp")
        self.assertEqual(d.stop(), 0)

    def test_hard_failure_bounces_into_the_senders_maildir(self):
        sink = self.sink(["-f", "RCPT"])
        d = self.daemon("")
        root = os.path.join(d.workdir, "mailroot")
        d.config_text = smarthost_config([f"127.0.0.1:{sink.port}"], local_root=root)
        d.start()
        send(d.port, "alice@local.test", ["bob@remote.test"], "will bounce")
        inbox = os.path.join(root, "local.test", "alice", "new")
        [name] = wait_for(lambda: os.path.isdir(inbox) and os.listdir(inbox), 20, "a bounce")
        with open(os.path.join(inbox, name)) as f:
            bounce = f.read()
        self.assertIn("Content-Type: multipart/report; report-type=delivery-status", bounce)
        self.assertIn("Final-Recipient: rfc822; bob@remote.test", bounce)
        self.assertIn("Action: failed", bounce)
        self.assertIn("Status: 5.", bounce)
        self.assertIn(f"Diagnostic-Code: smtp; 5", bounce)
        self.assertIn(f"in reply to RCPT TO at 127.0.0.1:{sink.port}", bounce)
        self.assertIn("Subject: will bounce", bounce)  # The original's headers.
        self.assertEqual(sink.messages(), [])
        [failed] = self.attempts(d, "failed")
        self.assertEqual(failed["recipient"], "bob@remote.test")
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(d.stop(), 0)

    def test_soft_failure_is_retried_until_it_succeeds(self):
        port = free_port()
        soft = self.sink(["-r", "RCPT"], address=f"127.0.0.1:{port}")
        d = self.daemon(smarthost_config([f"127.0.0.1:{port}"], FAST_RETRY)).start()
        send(d.port, "a@src.test", ["b@dst.test"], "try again")
        deferred = wait_for(lambda: self.attempts(d, "deferred"), 20, "a deferral")
        self.assertTrue(deferred[0]["reply"].startswith("4"), deferred[0])
        self.assertIn("in reply to RCPT TO", deferred[0]["reply"])
        soft.stop()
        good = self.sink(address=f"127.0.0.1:{port}")
        wait_for(lambda: len(good.messages()) == 1, 20, "the retry to arrive")
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(self.attempts(d, "failed"), [])
        self.assertEqual(d.stop(), 0)

    def test_next_hop_down_then_back_and_failover(self):
        port = free_port()
        d = self.daemon(smarthost_config([f"127.0.0.1:{port}"], FAST_RETRY)).start()
        send(d.port, "a@src.test", ["b@dst.test"], "waits for the next hop")
        deferred = wait_for(lambda: self.attempts(d, "deferred"), 20, "a deferral")
        self.assertTrue(deferred[0]["reply"].startswith("451 4.4.1 no next hop"), deferred[0])
        self.assertEqual(len(d.spool_messages()), 1)
        sink = self.sink(address=f"127.0.0.1:{port}")  # The next hop comes back.
        wait_for(lambda: len(sink.messages()) == 1, 20, "delivery once it is back")
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(d.stop(), 0)

        # Two next hops, the first down: the second takes the mail at the first try.
        d2 = self.daemon(smarthost_config([f"127.0.0.1:{free_port()}",
                                           f"127.0.0.1:{sink.port}"])).start()
        send(d2.port, "a@src.test", ["c@dst.test"], "failover")
        wait_for(lambda: len(sink.messages()) == 2, 20, "delivery through the second hop")
        self.assertEqual(self.attempts(d2, "deferred"), [])
        # The log writer is a thread of its own: the line may follow the delivery by a moment.
        wait_for(lambda: [e for e in d2.events(d2.log_offset) if e.get("event") == "next_hop_failed"],
                 10, "the failed first hop in the log")
        self.assertEqual(d2.stop(), 0)

    def test_hangup_after_the_data_is_not_counted_as_delivered(self):
        port = free_port()
        rude = self.sink(["-q", "."], address=f"127.0.0.1:{port}")
        d = self.daemon(smarthost_config([f"127.0.0.1:{port}"], FAST_RETRY)).start()
        send(d.port, "a@src.test", ["b@dst.test"], "cut off")
        deferred = wait_for(lambda: self.attempts(d, "deferred"), 20, "a deferral")
        self.assertTrue(deferred[0]["reply"].startswith("451 4.4.2 "), deferred[0])
        self.assertEqual(self.attempts(d, "delivered"), [])
        self.assertEqual(len(d.spool_messages()), 1)  # Still ours to deliver.
        rude.stop()
        good = self.sink(address=f"127.0.0.1:{port}")
        wait_for(lambda: len(good.messages()) == 1, 20, "the retry to arrive")
        wait_for(lambda: not d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(d.stop(), 0)

    def test_kill9_while_delivering_loses_nothing(self):
        sink = self.sink()
        d = self.daemon(smarthost_config([f"127.0.0.1:{sink.port}"], FAST_RETRY)).start()
        total = 300
        rng = random.Random(7)
        kills = 0
        for i in range(total):
            send(d.port, "a@src.test", [f"r{i}@dst.test"], f"crash {i}")
            if i % 100 == 50:
                time.sleep(rng.uniform(0, 0.05))
                d.kill9()
                kills += 1
                d.start()

        def seen():
            return {int(m.split("Subject: crash ")[1].split("\n")[0]) for m in sink.messages()}
        wait_for(lambda: len(seen()) == total, 60, "every acknowledged message at the sink")
        wait_for(lambda: not d.spool_messages(), 30, "the spool to drain")
        duplicates = len(sink.messages()) - total
        print(f"\nkill -9 during delivery: {kills} kills, {total} acknowledged, "
              f"{len(seen())} delivered, 0 lost, {duplicates} duplicates")
        self.assertEqual(d.stop(), 0)


class DsnTest(unittest.TestCase):
    """RFC 3461 on ingress: NOTIFY, RET, ENVID and ORCPT honoured and passed on."""

    def setUp(self):
        self.d = Daemon("")
        self.addCleanup(self.d.cleanup)
        self.root = os.path.join(self.d.workdir, "mailroot")

    def sink(self, *args, **kwargs):
        s = Sink(*args, **kwargs)
        self.addCleanup(s.cleanup)
        return s

    def start(self, hosts, extra=""):
        self.d.config_text = smarthost_config(hosts, FAST_RETRY + extra, local_root=self.root)
        self.d.start()

    def send(self, rcpt, subject, mail_options=(), rcpt_options=()):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertIn("dsn", s.esmtp_features)
            s.sendmail("alice@local.test", [rcpt], f"Subject: {subject}\r\n\r\nsecret body\r\n",
                       mail_options=list(mail_options), rcpt_options=list(rcpt_options))

    def reports(self, count, timeout=20):
        inbox = os.path.join(self.root, "local.test", "alice", "new")

        def read():
            if not os.path.isdir(inbox):
                return []
            out = []
            for name in sorted(os.listdir(inbox)):
                with open(os.path.join(inbox, name)) as f:
                    out.append(f.read())
            return out
        if count == 0:
            return read()
        return wait_for(lambda: len(read()) >= count and read(), timeout, f"{count} report(s)")

    def test_success_report_for_local_delivery_and_passing_on(self):
        sink = self.sink()  # smtp-sink offers DSN: the parameters go on, it reports from there.
        self.start([f"127.0.0.1:{sink.port}"])
        self.send("bob@local.test", "local", rcpt_options=["NOTIFY=SUCCESS",
                                                          "ORCPT=rfc822;Bob+2Bx@local.test"])
        [report] = self.reports(1)
        self.assertIn("Subject: Successful Mail Delivery Report", report)
        self.assertIn("Original-Recipient: rfc822; Bob+x@local.test", report)
        self.assertIn("Action: delivered", report)
        self.send("carol@remote.test", "relayed", mail_options=["RET=HDRS", "ENVID=E+2B1"],
                  rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        [relayed] = wait_for(sink.messages, 20, "the relayed message")
        self.assertIn("X-Mail-Args: <alice@local.test> RET=HDRS ENVID=E+2B1", relayed)
        self.assertIn("X-Rcpt-Args: <carol@remote.test> NOTIFY=SUCCESS,FAILURE", relayed)
        wait_for(lambda: not self.d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(len(self.reports(0)), 1)  # The next hop took over; no second report.
        self.assertEqual(self.d.stop(), 0)

    def test_relayed_report_when_the_next_hop_lacks_dsn(self):
        sink = self.sink(["-N"])
        self.start([f"127.0.0.1:{sink.port}"])
        self.send("carol@remote.test", "relayed", rcpt_options=["NOTIFY=SUCCESS"])
        [report] = self.reports(1)
        self.assertIn("Action: relayed", report)
        self.assertNotIn("NOTIFY", wait_for(sink.messages, 20, "the message")[0])
        self.assertEqual(self.d.stop(), 0)

    def test_never_suppresses_the_bounce_and_ret_full_returns_the_body(self):
        sink = self.sink(["-f", "RCPT"])
        self.start([f"127.0.0.1:{sink.port}"])
        self.send("quiet@remote.test", "never", rcpt_options=["NOTIFY=NEVER"])
        self.send("loud@remote.test", "full", mail_options=["RET=FULL", "ENVID=QQ1"])
        [bounce] = self.reports(1)
        self.assertIn("Final-Recipient: rfc822; loud@remote.test", bounce)
        self.assertIn("Original-Envelope-Id: QQ1", bounce)
        self.assertIn("Content-Type: message/rfc822", bounce)
        self.assertIn("secret body", bounce)
        wait_for(lambda: not self.d.spool_messages(), 20, "the spool to drain")
        self.assertEqual(len(self.reports(0)), 1)  # Nothing for NOTIFY=NEVER.
        failed = [e for e in self.d.events(self.d.log_offset)
                  if e.get("event") == "delivery_attempt" and e.get("outcome") == "failed"]
        self.assertEqual(sorted(e["recipient"] for e in failed),
                         ["loud@remote.test", "quiet@remote.test"])
        self.assertEqual(self.d.stop(), 0)

    def test_delay_report_once_when_asked(self):
        self.start([f"127.0.0.1:{free_port()}"], "delay_warning_ms = 500\n")
        self.send("late@remote.test", "slow", rcpt_options=["NOTIFY=DELAY,FAILURE"])
        self.send("other@remote.test", "slow too")  # NOTIFY not given: failures only.
        [report] = self.reports(1)
        self.assertIn("Subject: Delayed Mail (still being retried)", report)
        self.assertIn("Final-Recipient: rfc822; late@remote.test", report)
        self.assertIn("Action: delayed", report)
        self.assertIn("Status: 4.4.1", report)
        self.assertNotIn("other@remote.test", report)
        wait_for(lambda: len([e for e in self.d.events(self.d.log_offset)
                              if e.get("event") == "delivery_attempt"]) >= 6, 20, "more retries")
        self.assertEqual(len(self.reports(0)), 1)  # Once, not at every retry.
        self.assertEqual(self.d.stop(), 0)

    def test_bad_dsn_parameters_get_501(self):
        self.start([f"127.0.0.1:{free_port()}"])
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10) as s:
            s.ehlo("client.test")
            code, text = s.docmd("MAIL FROM:<alice@local.test> RET=SOME")
            self.assertEqual((code, text), (501, b"5.5.4 Invalid DSN parameter: RET must be FULL or HDRS"))
            self.assertEqual(s.docmd("MAIL FROM:<alice@local.test>")[0], 250)
            self.assertEqual(s.docmd("RCPT TO:<b@remote.test> NOTIFY=NEVER,DELAY")[0], 501)
            self.assertEqual(s.docmd("RCPT TO:<b@remote.test> ORCPT=rfc822")[0], 501)
        self.assertEqual(self.d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
