"""Hostile messages against relaisd's message checks: junk DKIM signatures that try to hide a
forgery or multiply DNS lookups, a check that cannot decide (fail closed), forged
Authentication-Results from clients Relais does not check, bytes that are not UTF-8 in what
Relais writes, oversized header sections, and a real mail loop (a route pointing back at the
relay). DNS is dnsmasq on loopback (test_auth.ZoneTest)."""

import os
import re
import smtplib
import socket
import subprocess
import time
import unittest
import urllib.request

from harness import Daemon, free_port, wait_for
from test_auth import KEYS, RELAIS_AUTH, ZoneTest, key_record, txt_arg

# A dead DNS server for the key of tf.test: its lookups fail temporarily while its DMARC
# policy (p=reject) is known.
DEAD_DNS_PORT = free_port()
# A DNS server that never answers, for hang.test: each lookup there waits for relaisd's
# timeout. Open for as long as the module is loaded.
SILENT_DNS = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
SILENT_DNS.bind(("127.0.0.1", 0))

RECORDS = [
    txt_arg("ed._domainkey.example.test", key_record("ed25519.pem")),
    "--txt-record=_dmarc.example.test,v=DMARC1; p=reject",
    "--txt-record=_dmarc.tf.test,v=DMARC1; p=reject",
    f"--server=/ed._domainkey.tf.test/127.0.0.1#{DEAD_DNS_PORT}",
    "--txt-record=_dmarc.q.test,v=DMARC1; p=quarantine",
    f"--server=/ed._domainkey.q.test/127.0.0.1#{DEAD_DNS_PORT}",
    f"--server=/hang.test/127.0.0.1#{SILENT_DNS.getsockname()[1]}",
]

PART = ("From: Joe <joe@{domain}>\r\nTo: sue@example.net\r\nSubject: dinner\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <3@{domain}>\r\n\r\n"
        "Hungry yet?\r\n")


def junk(count):
    """DKIM-Signature fields of `count` different domains, none of which has a key."""
    return "".join(f"DKIM-Signature: v=1; a=rsa-sha256; d=junk{i}.test; s=s; h=from; "
                   f"bh=YQ==; b=YQ==\r\n" for i in range(count))


def sign(message, domain):
    r = subprocess.run([RELAIS_AUTH, "dkim", "sign", "--domain", domain, "--selector", "ed",
                        "--key", os.path.join(KEYS, "ed25519.pem")],
                       input=message.encode(), capture_output=True, timeout=30, check=True)
    return r.stdout.decode()


def metrics(d):
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


class CheckedDaemonTest(ZoneTest):
    records = RECORDS

    def daemon(self, extra="", auth='dmarc = "reject"\n', dns_timeout_ms=300):
        d = Daemon(f'[auth]\nskip_networks = []\nauthserv_id = "relais.test"\n{auth}'
                   f'[dns]\nservers = ["127.0.0.1:{self.port}"]\ntimeout_ms = {dns_timeout_ms}\n'
                   f'tries = 1\n{extra}')
        self.addCleanup(d.cleanup)
        return d.start()

    def send(self, d, message, sender="bounce@other.test"):
        """(code, text) of the reply to the end of data."""
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail(sender)[0], 250)
            self.assertEqual(s.rcpt("sue@example.net")[0], 250)
            code, text = s.data(message.encode() if isinstance(message, str) else message)
            return code, text.decode("utf-8", "replace")

    def delivered(self, d, count=1):
        return wait_for(lambda: len(d.maildir_messages()) >= count and d.maildir_messages(),
                        20, f"{count} delivered messages")

    # Issue 24.1: junk signatures can neither hide the forgery nor multiply lookups.
    def test_spoof_with_junk_signatures_is_refused_and_lookups_stay_few(self):
        d = self.daemon()
        spoof = PART.format(domain="example.test")
        before = metric(metrics(d), "relais_dns_lookups_total")
        code, text = self.send(d, junk(300) + spoof)
        self.assertEqual((code, text), (550, "5.7.1 Message rejected by the DMARC policy of "
                                             "example.test"))
        lookups = metric(metrics(d), "relais_dns_lookups_total") - before
        # SPF of other.test, at most 8 keys, DMARC at the From domain: far under the cap (256).
        self.assertLessEqual(lookups, 12, lookups)
        # 3 000 junk signatures: over the header section's bounds (1 000 fields, 100 KiB).
        code, text = self.send(d, junk(3000) + spoof)
        self.assertEqual((code, text), (552, "5.3.4 Too many header fields"))
        self.assertIn('relais_messages_refused_header_total{limit="header_fields_max"} 1\n',
                      metrics(d))
        code, text = self.send(d, junk(900) + ("X-Pad: " + "p" * 980 + "\r\n") * 30 + spoof)
        self.assertEqual((code, text), (552, "5.3.4 Message header section exceeds the limit"))
        self.assertEqual(d.maildir_messages(), [])

    def test_spoof_with_3000_junk_signatures_under_raised_limits_is_refused(self):
        d = self.daemon("[limits]\nheader_bytes_max = 2097152\nheader_fields_max = 10000\n")
        before = metric(metrics(d), "relais_dns_lookups_total")
        code, text = self.send(d, junk(3000) + PART.format(domain="example.test"))
        self.assertEqual(code, 550, text)
        self.assertLessEqual(metric(metrics(d), "relais_dns_lookups_total") - before, 12)
        self.assertIn("relais_auth_dkim_signatures_skipped_total 2992\n", metrics(d))

    def test_key_lookups_run_at_once(self):
        # Eight signatures whose key lookups all hang until relaisd's DNS timeout (1 s): one
        # after another they would hold the message 8 s; at once, about 1 s.
        d = self.daemon(dns_timeout_ms=1000)
        hanging = "".join(f"DKIM-Signature: v=1; a=rsa-sha256; d=k{i}.hang.test; s=s; h=from; "
                          f"bh=YQ==; b=YQ==\r\n" for i in range(8))
        started = time.monotonic()
        code, text = self.send(d, hanging + PART.format(domain="example.test"))
        elapsed = time.monotonic() - started
        self.assertEqual(code, 550, text)  # Unaligned temperrors change nothing: DMARC fails.
        self.assertLess(elapsed, 4.0)
        self.assertGreater(elapsed, 0.9)

    def test_valid_aligned_signature_among_junk_passes(self):
        d = self.daemon()
        message = junk(300) + sign(PART.format(domain="example.test"), "example.test")
        self.assertEqual(self.send(d, message)[0], 250)
        body = self.delivered(d)[0]["body"]
        self.assertIn("\tdkim=pass header.d=example.test header.s=ed;\n", body)
        self.assertIn("\tdkim=policy reason=\"293 more signatures not evaluated (at most 8 per "
                      "message)\";\n", body)
        self.assertIn("\tdmarc=pass header.from=example.test policy.dmarc=reject\n", body)
        self.assertEqual(body.count("dkim=permerror"), 7)

    # Fail closed: the aligned key cannot be looked up, the policy is reject or quarantine.
    def test_undecidable_check_is_deferred_by_default(self):
        d = self.daemon()
        for domain in ("tf.test", "q.test"):
            code, text = self.send(d, sign(PART.format(domain=domain), domain))
            self.assertEqual(code, 451, (domain, text))
            self.assertEqual(text, f"4.7.5 Message from {domain} could not be verified (DMARC "
                                   f"temperror); try again later")
        self.assertIn('relais_auth_temperror_actions_total{action="defer"} 2\n', metrics(d))
        self.assertEqual(d.maildir_messages(), [])

    def test_undecidable_check_accepted_or_refused_as_configured(self):
        for action, code in (("accept", 250), ("reject", 550)):
            d = self.daemon(auth=f'dmarc = "reject"\ndmarc_temperror = "{action}"\n')
            got, text = self.send(d, sign(PART.format(domain="tf.test"), "tf.test"))
            self.assertEqual(got, code, text)
            self.assertIn(f'relais_auth_temperror_actions_total{{action="{action}"}} 1\n',
                          metrics(d))
            if action == "accept":
                body = self.delivered(d)[0]["body"]
                self.assertIn("\tdkim=temperror reason=", body)
                self.assertIn("\tdmarc=temperror reason=", body)

    # Issue 18.8: bytes that are not UTF-8 in the From domain do not reach our field raw.
    def test_field_we_write_is_valid_whatever_the_from_bytes(self):
        d = self.daemon(auth="")
        message = ("From: Joe <joe@b\xffd.test>\r\nSubject: x\r\n\r\nhi\r\n").encode("latin-1")
        self.assertEqual(self.send(d, message)[0], 250)
        [m] = self.delivered(d)
        with open(m["path"], "rb") as f:
            raw = f.read()
        field = re.search(rb"^Authentication-Results:.*?\n(?=\S)", raw, re.M | re.S).group(0)
        field.decode("ascii")  # Only ASCII: the 0xFF byte is not copied.
        self.assertIn(b'header.from="b?d.test"', field)

    # Issue 18.7: forged fields claiming our identity go whether or not we checked the mail.
    def test_forged_results_removed_from_mail_we_did_not_check(self):
        forged = ("Authentication-Results: relais.test; dkim=pass header.d=bank.test\r\n"
                  "Authentication-Results: RELAIS.TEST. (x); dmarc=pass\r\n"
                  "Authentication-Results: other.test; spf=pass\r\n")
        for config in ('[auth]\nauthserv_id = "relais.test"\n',  # Loopback: skip_networks.
                       '[auth]\nauthserv_id = "relais.test"\nskip_networks = []\nspf = "off"\n'
                       'dkim = "off"\ndmarc = "off"\n'):
            d = Daemon(config)
            self.addCleanup(d.cleanup)
            d.start()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
                s.sendmail("joe@example.test", ["sue@example.net"],
                           forged + PART.format(domain="example.test"))
            body = self.delivered(d)[0]["body"]
            self.assertNotIn("bank.test", body, config)
            self.assertNotIn("dmarc=pass", body, config)
            self.assertIn("Authentication-Results: other.test; spf=pass\n", body)


class HeaderLimitsTest(unittest.TestCase):
    """The header section's bounds hold for every client, trusted ones included."""

    def daemon(self, config=""):
        d = Daemon(config)
        self.addCleanup(d.cleanup)
        return d.start()

    def data(self, d, message):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.ehlo("client.test")
            s.mail("a@example.test")
            s.rcpt("b@example.test")
            code, text = s.data(message.encode())
            return code, text.decode()

    def test_limits_and_their_replies(self):
        d = self.daemon('[limits]\nheader_fields_max = 200\n')
        received = "".join(f"Received: from h{i}.test by relais.test; Thu, 26 Nov 2026 "
                           f"10:00:00 +0000\r\n" for i in range(51))
        self.assertEqual(self.data(d, received + "Subject: loop\r\n\r\nx\r\n"),
                         (554, "5.4.6 Too many hops (Received fields): mail loop?"))
        # Spelled otherwise, still Received fields.
        spelled = received.replace("Received:", "received :", 10)
        self.assertEqual(self.data(d, spelled + "\r\nx\r\n")[0], 554)
        # 50 is allowed (RFC 5321 6.3: at least 100 would be the rule, Postfix uses 50).
        self.assertEqual(self.data(d, received[received.index("\n") + 1:] + "\r\nx\r\n")[0], 250)
        fields = "".join(f"X-F{i}: y\r\n" for i in range(201))
        self.assertEqual(self.data(d, fields + "\r\nx\r\n"),
                         (552, "5.3.4 Too many header fields"))
        big = "Subject: " + "a" * 900 + "\r\n"
        self.assertEqual(self.data(d, big * 90 + "\r\nx\r\n")[0], 250)  # About 81 KiB.
        self.assertEqual(self.data(d, big * 120 + "\r\nx\r\n")[0], 552)  # About 108 KiB.
        # A folded field that never ends the header: the bound holds too.
        self.assertEqual(self.data(d, "Subject: a\r\n" + " b\r\n" * 40000 + "\r\nx\r\n")[0], 552)
        # A large body under a small header is fine.
        self.assertEqual(self.data(d, "Subject: s\r\n\r\n" + "b" * 998 + "\r\n" * 1 +
                                   ("c" * 998 + "\r\n") * 500)[0], 250)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics") as r:
            text = r.read().decode()
        self.assertIn('relais_messages_refused_header_total{limit="received_max"} 2\n', text)
        self.assertIn('relais_messages_refused_header_total{limit="header_fields_max"} 1\n', text)
        self.assertIn('relais_messages_refused_header_total{limit="header_bytes_max"} 2\n', text)


class MailLoopTest(unittest.TestCase):
    """A route pointing back at the relay itself: the message goes round until it carries more
    Received fields than limits.received_max, is refused with 554 5.4.6, and bounces to its
    sender; the loop ends by itself."""

    def test_a_real_loop_ends_in_a_bounce(self):
        port = free_port()
        d = Daemon(f'[server]\nlisten = ["127.0.0.1:{port}"]\nhostname = "relais.test"\n'
                   f'[relay]\nlocal_domains = ["local.test"]\nnetworks = ["127.0.0.0/8"]\n'
                   f'[limits]\nreceived_max = 10\n'
                   f'[queue]\nretry_first_ms = 300\nretry_max_ms = 600\n'
                   f'[[routes]]\ndomain = "local.test"\ntype = "maildir"\n'
                   f'path = "{{root}}"\n'
                   f'[[routes]]\ndomain = "loop.test"\ntype = "smarthost"\n'
                   f'hosts = ["127.0.0.1:{port}"]\n')
        self.addCleanup(d.cleanup)
        root = os.path.join(d.workdir, "mailroot")
        d.config_text = d.config_text.replace("{root}", root)
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("alice@local.test", ["bob@loop.test"],
                       "From: alice@local.test\r\nSubject: round and round\r\n\r\nhi\r\n")
        inbox = os.path.join(root, "local.test", "alice", "new")
        [name] = wait_for(lambda: os.path.isdir(inbox) and os.listdir(inbox), 60, "a bounce")
        with open(os.path.join(inbox, name)) as f:
            bounce = f.read()
        self.assertIn("Final-Recipient: rfc822; bob@loop.test", bounce)
        self.assertIn("Status: 5.4.6", bounce)
        self.assertIn("Too many hops", bounce)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics") as r:
            text = r.read().decode()
        self.assertIn('relais_messages_refused_header_total{limit="received_max"} 1\n', text)
        # It went round: the client's copy, then each hop that arrived with 1 to 10 Received
        # fields; the one with 11 was refused.
        accepted = int(re.search(r"^relais_messages_accepted_total (\d+)$", text, re.M).group(1))
        self.assertEqual(accepted, 11)
        # The loop is over: nothing is left to deliver (one message per hop was accepted).
        wait_for(lambda: d.spool_messages() == [] or all(
            m.get("pending", 1) == 0 for m in d.spool_messages()), 30, "an empty queue")


if __name__ == "__main__":
    unittest.main()
