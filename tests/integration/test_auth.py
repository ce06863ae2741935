"""Sender authentication against a real DNS server: dnsmasq on a loopback port, authoritative
for .test (unknown names there are NXDOMAIN), started and stopped by the tests. relais-auth's
spf, dmarc, dkim and check commands (DKIM cross-checked with dkimpy), and relaisd checking
SPF, DKIM and DMARC inline on its shards' own resolvers."""

import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

from harness import Daemon, free_port, wait_for

RELAIS_AUTH = os.environ.get("RELAIS_AUTH", "relais-auth")
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

RECORDS = [
    "--txt-record=pass.test,v=spf1 ip4:192.0.2.0/24 -all",
    "--txt-record=fail.test,v=spf1 -all exp=exp.fail.test",
    "--txt-record=exp.fail.test,%{i} is not allowed to send mail for %{d}",
    "--txt-record=inc.test,v=spf1 include:pass.test ~all",
    "--txt-record=mx.test,v=spf1 mx/24 -all",
    "--mx-host=mx.test,mail.mx.test,10",
    "--host-record=mail.mx.test,198.51.100.7",
    "--txt-record=helo.test,v=spf1 a -all",
    "--host-record=helo.test,203.0.113.5",
    "--txt-record=two.test,v=spf1 -all",
    "--txt-record=two.test,v=spf1 +all",
    "--txt-record=voids.test,v=spf1 a:n1.test a:n2.test a:n3.test +all",
    "--txt-record=_dmarc.example.test,v=DMARC1; p=reject; sp=none; pct=50; rua=mailto:a@example.test",
    "--txt-record=_dmarc.strict.test,v=DMARC1; p=quarantine; aspf=s",
]


class ZoneTest(unittest.TestCase):
    """Starts dnsmasq with the class's `records` for its tests and stops it after them."""

    records = RECORDS

    @classmethod
    def setUpClass(cls):
        # A port probed free can be taken by another test's server before dnsmasq binds it:
        # then dnsmasq exits, or the other server answers. Our dnsmasq is the one that knows
        # this class's probe record; otherwise start again on another port.
        token = os.urandom(6).hex()
        for _ in range(5):
            cls.port = free_port()
            cls.dns = subprocess.Popen(
                [DNSMASQ, "--no-daemon", f"--port={cls.port}", "--listen-address=127.0.0.1",
                 "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                 "--pid-file=", "--local=/test/", f"--txt-record=probe-{token}.test,v=spf1 -all",
                 *cls.records],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and cls.dns.poll() is None:
                r = subprocess.run([RELAIS_AUTH, "spf", "--ip", "192.0.2.1", "--helo", "h.test",
                                    "--sender", f"a@probe-{token}.test", "--dns",
                                    f"127.0.0.1:{cls.port}", "--timeout", "200"],
                                   capture_output=True, text=True, timeout=30)
                if r.stdout.startswith("fail"):
                    return
                time.sleep(0.05)
            if cls.dns.poll() is None:
                cls.dns.terminate()
            cls.dns.wait(timeout=10)
        raise AssertionError("dnsmasq did not answer")

    @classmethod
    def tearDownClass(cls):
        cls.dns.terminate()
        cls.dns.wait(timeout=10)

    @classmethod
    def spf(cls, ip, domain, *extra, sender=None, helo="client.test", status=0):
        sender = f"user@{domain}" if sender is None else sender
        r = subprocess.run([RELAIS_AUTH, "spf", "--ip", ip, "--helo", helo, "--sender", sender,
                            "--dns", f"127.0.0.1:{cls.port}", "--timeout", "1000", *extra],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
        return r.stdout.splitlines() or [""]


class AuthSpfTest(ZoneTest):
    def test_results(self):
        self.assertEqual(self.spf("192.0.2.77", "pass.test")[0], "pass pass.test")
        self.assertEqual(self.spf("198.51.100.1", "pass.test")[0], "fail pass.test")
        self.assertEqual(self.spf("192.0.2.77", "inc.test")[0], "pass inc.test")
        self.assertEqual(self.spf("198.51.100.1", "inc.test")[0], "softfail inc.test")
        self.assertEqual(self.spf("198.51.100.99", "mx.test")[0], "pass mx.test")
        self.assertEqual(self.spf("198.51.101.1", "mx.test")[0], "fail mx.test")
        self.assertEqual(self.spf("192.0.2.1", "nothing.test")[0], "none nothing.test")
        self.assertEqual(self.spf("192.0.2.1", "two.test")[0], "permerror two.test")
        self.assertEqual(self.spf("192.0.2.1", "voids.test")[0], "permerror voids.test")

    def test_fail_with_explanation(self):
        lines = self.spf("198.51.100.1", "fail.test")
        self.assertEqual(lines[0], "fail fail.test")
        self.assertEqual(lines[1], "explanation: 198.51.100.1 is not allowed to send mail for "
                                   "fail.test")

    def test_null_sender_and_helo_identity_check_the_helo_name(self):
        self.assertEqual(self.spf("203.0.113.5", "", sender="", helo="helo.test")[0],
                         "pass helo.test")
        self.assertEqual(self.spf("203.0.113.6", "", sender="", helo="helo.test")[0],
                         "fail helo.test")
        self.assertEqual(self.spf("203.0.113.5", "pass.test", "--helo-identity",
                                  helo="helo.test")[0], "pass helo.test")

    def test_json(self):
        out = json.loads(self.spf("198.51.100.99", "mx.test", "--json")[0])
        self.assertEqual(out["result"], "pass")
        self.assertEqual(out["mechanism"], "mx/24")
        self.assertEqual(out["dns_terms"], 1)

    def test_unreachable_dns_is_temperror(self):
        r = subprocess.run([RELAIS_AUTH, "spf", "--ip", "192.0.2.1", "--helo", "h.test",
                            "--sender", "a@pass.test", "--dns", f"127.0.0.1:{free_port()}",
                            "--timeout", "200"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("temperror pass.test"), r.stdout)

    def test_bad_usage(self):
        for args, needle in [(["spf", "--helo", "h", "--sender", "a@b.test"], "--ip is required"),
                             (["spf", "--ip", "300.1.1.1", "--helo", "h", "--sender", "a@b"],
                              "not an IP address"),
                             (["spf", "--ip", "192.0.2.1", "--helo", "h", "--sender", "a@b",
                               "--dns", "nonsense"], "DNS servers"),
                             (["dkim"], "dkim needs a command"),
                             (["dmarc", "--from-domain", "x.test", "--spf", "maybe:x.test"],
                              "expected RESULT:DOMAIN"),
                             (["dmarc", "--spf", "pass:x.test"], "--from-domain is required")]:
            r = subprocess.run([RELAIS_AUTH, *args], capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(needle, r.stderr, args)


class AuthDmarcTest(ZoneTest):
    """relais-auth dmarc against the same zone."""

    @classmethod
    def dmarc(cls, domain, *extra):
        r = subprocess.run([RELAIS_AUTH, "dmarc", "--from-domain", domain,
                            "--dns", f"127.0.0.1:{cls.port}", "--timeout", "1000", *extra],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        return r.stdout.splitlines()[0]

    def test_results_policies_and_dispositions(self):
        self.assertEqual(self.dmarc("example.test", "--spf", "pass:bounce.example.test"),
                         "pass policy=reject disposition=none")
        self.assertEqual(self.dmarc("example.test", "--spf", "pass:other.test", "--dkim",
                                    "fail:example.test", "--dkim", "pass:mail.example.test"),
                         "pass policy=reject disposition=none")
        # pct=50: a draw under 50 gets the policy, the others the next weaker one.
        self.assertEqual(self.dmarc("example.test", "--spf", "fail:example.test", "--sample",
                                    "10"), "fail policy=reject disposition=reject")
        self.assertEqual(self.dmarc("example.test", "--spf", "fail:example.test", "--sample",
                                    "70"), "fail policy=reject disposition=quarantine")
        # A subdomain without its own record: the organizational record's sp=.
        self.assertEqual(self.dmarc("news.example.test", "--sample", "0"),
                         "fail policy=none disposition=none")
        self.assertEqual(self.dmarc("strict.test", "--spf", "pass:mail.strict.test"),
                         "fail policy=quarantine disposition=quarantine")
        self.assertEqual(self.dmarc("nodmarc.test"), "none disposition=none")

    def test_json(self):
        out = json.loads(self.dmarc("example.test", "--dkim", "pass:example.test", "--json"))
        self.assertEqual(out["result"], "pass")
        self.assertEqual(out["policy"], "reject")
        self.assertEqual(out["record_domain"], "example.test")
        self.assertTrue(out["dkim_aligned"])
        self.assertEqual(out["pct"], 50)


KEYS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "dkim")
MESSAGE = ("From: Joe <joe@example.test>\nTo: Sue <sue@example.net>\nSubject: dinner  at\n"
           "\teight\nDate: Thu, 26 Nov 2026 10:00:00 +0000\nMessage-ID: <1@example.test>\n\n"
           "Hi.   \n\nWe lost the game.\n\n\n")


def key_record(name):
    r = subprocess.run([RELAIS_AUTH, "dkim", "record", "--key", os.path.join(KEYS, name)],
                       capture_output=True, text=True, timeout=10, check=True)
    return r.stdout.strip()


def txt_arg(name, text):
    """A dnsmasq --txt-record; strings over 255 bytes are split (one record, several strings)."""
    parts = [text[i:i + 250] for i in range(0, len(text), 250)]
    return f"--txt-record={name}," + ",".join(parts)


DKIM_RECORDS = [
    txt_arg("ed._domainkey.example.test", key_record("ed25519.pem")),
    txt_arg("rsa._domainkey.example.test", key_record("rsa1024.pem")),
    txt_arg("big._domainkey.example.test", key_record("rsa2048.pem")),
    "--txt-record=revoked._domainkey.example.test,v=DKIM1; k=ed25519; p=",
]

# Verifies with dkimpy (Debian python3-dkim), given the key record: an independent implementation.
DKIMPY_VERIFY = """
import sys, dkim
record = sys.argv[1].encode()
ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: record)
print("pass" if ok else "fail")
"""
DKIMPY_SIGN = """
import base64, sys, dkim
key = open(sys.argv[1], "rb").read()
algorithm = sys.argv[3].encode()
if algorithm == b"ed25519-sha256":  # dkimpy takes the raw seed: the last 32 bytes of PKCS #8.
    der = base64.b64decode(b"".join(key.split(b"\\n")[1:-2]))
    key = base64.b64encode(der[-32:])
canon = sys.argv[4].encode().split(b"/")
message = sys.stdin.buffer.read()
sig = dkim.sign(message, sys.argv[2].encode(), b"example.test", key,
                signature_algorithm=algorithm, canonicalize=tuple(canon),
                include_headers=[b"from", b"to", b"subject", b"date"])
sys.stdout.buffer.write(sig + message)
"""


class AuthDkimTest(ZoneTest):
    records = DKIM_RECORDS

    def auth(self, *args, stdin=MESSAGE, status=0):
        r = subprocess.run([RELAIS_AUTH, "dkim", *args], input=stdin.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, status, r.stderr.decode())
        return r.stdout.decode()

    def verify(self, message):
        return self.auth("verify", "--dns", f"127.0.0.1:{self.port}", stdin=message).strip()

    def sign(self, key, selector, *extra, message=MESSAGE):
        return self.auth("sign", "--domain", "example.test", "--selector", selector, "--key",
                         os.path.join(KEYS, key), *extra, stdin=message)

    def test_sign_then_verify_here_and_with_dkimpy(self):
        for key, selector in [("ed25519.pem", "ed"), ("rsa1024.pem", "rsa"),
                              ("rsa2048.pem", "big")]:
            for canon in ("relaxed/relaxed", "simple/simple", "relaxed/simple"):
                signed = self.sign(key, selector, "--canonicalization", canon)
                self.assertTrue(signed.endswith(MESSAGE))  # The input, byte for byte.
                self.assertEqual(self.verify(signed), f"pass d=example.test s={selector}",
                                 (key, canon))
                r = subprocess.run(["/usr/bin/python3", "-c", DKIMPY_VERIFY, key_record(key)],
                                   input=signed.encode(), capture_output=True, timeout=30)
                self.assertEqual(r.stdout.decode().strip(), "pass", (key, canon, r.stderr))

    def test_opendkim_verifies_ours_and_we_verify_its(self):
        tool = os.environ.get("OPENDKIM_CHECK")
        if not tool:
            self.skipTest("opendkim_check not built (libopendkim-dev missing)")
        crlf = MESSAGE.replace("\n", "\r\n")
        for key, selector, algorithm in [("ed25519.pem", "ed", "ed25519-sha256"),
                                         ("rsa1024.pem", "rsa", "rsa-sha256"),
                                         ("rsa2048.pem", "big", "rsa-sha256")]:
            tmp = tempfile.mkdtemp(prefix="relais-opendkim-")
            self.addCleanup(shutil.rmtree, tmp, True)
            keys = os.path.join(tmp, "keys")
            with open(keys, "w") as f:
                f.write(f"{selector}._domainkey.example.test {key_record(key)}\n")
            for canon in ("relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"):
                # Ours, verified by OpenDKIM.
                signed = self.sign(key, selector, "--canonicalization", canon, message=crlf)
                r = subprocess.run([tool, "verify", keys], input=signed.encode(),
                                   capture_output=True, timeout=30)
                self.assertEqual(r.stdout.decode(), f"pass d=example.test s={selector}\n",
                                 (key, canon, r.stderr))
                r = subprocess.run([tool, "verify", keys],
                                   input=signed.replace("game", "gamE").encode(),
                                   capture_output=True, timeout=30)
                self.assertTrue(r.stdout.decode().startswith("fail "), (key, canon))
                # OpenDKIM's, verified here. libopendkim 2.11 signs Ed25519 with simple header
                # canonicalization wrongly: neither it nor dkimpy verifies those signatures
                # either. There our verdict must match its own; everywhere else it must pass.
                r = subprocess.run([tool, "sign", "example.test", selector,
                                    os.path.join(KEYS, key), algorithm, *canon.split("/")],
                                   input=crlf.encode(), capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                theirs = r.stdout.decode()
                ours = self.verify(theirs).split()[0]
                if algorithm == "ed25519-sha256" and canon.startswith("simple/"):
                    own = subprocess.run([tool, "verify", keys], input=theirs.encode(),
                                         capture_output=True, timeout=30).stdout.decode()
                    self.assertEqual(ours, own.split()[0], (key, canon))
                else:
                    self.assertEqual(ours, "pass", (key, canon))

    def test_dkimpy_signatures_verify_here(self):
        for key, selector, algorithm in [("ed25519.pem", "ed", "ed25519-sha256"),
                                         ("rsa2048.pem", "big", "rsa-sha256")]:
            for canon in ("relaxed/relaxed", "simple/simple"):
                r = subprocess.run(["/usr/bin/python3", "-c", DKIMPY_SIGN, os.path.join(KEYS, key),
                                    selector, algorithm, canon], input=MESSAGE.encode(),
                                   capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr.decode())
                self.assertEqual(self.verify(r.stdout.decode()),
                                 f"pass d=example.test s={selector}", (key, canon))

    def test_failures_and_none(self):
        signed = self.sign("ed25519.pem", "ed")
        self.assertEqual(self.verify(signed.replace("We lost", "We won")),
                         "fail d=example.test s=ed body hash mismatch")
        self.assertEqual(self.verify(signed.replace("Subject: dinner", "Subject: lunch")),
                         "fail d=example.test s=ed signature does not verify")
        self.assertEqual(self.verify(MESSAGE), "none")
        revoked = self.sign("ed25519.pem", "revoked")
        self.assertEqual(self.verify(revoked), "permerror d=example.test s=revoked key revoked "
                                               "(empty p=)")
        missing = self.sign("ed25519.pem", "nokey")
        self.assertTrue(self.verify(missing).startswith("permerror d=example.test s=nokey"))
        # Two signatures: one line each, topmost first.
        both = self.sign("rsa1024.pem", "rsa", message=signed)
        self.assertEqual(self.verify(both).splitlines(),
                         ["pass d=example.test s=rsa", "pass d=example.test s=ed"])

    def test_sign_errors_write_nothing(self):
        for args, stdin in [(["--key", os.path.join(KEYS, "ed25519.pem")], "Subject: x\n\nbody\n"),
                            (["--key", os.path.join(KEYS, "README")], MESSAGE),
                            (["--key", os.path.join(KEYS, "ed25519.pem"), "--algorithm",
                              "rsa-sha256"], MESSAGE)]:
            r = subprocess.run([RELAIS_AUTH, "dkim", "sign", "--domain", "example.test",
                                "--selector", "ed", *args], input=stdin.encode(),
                               capture_output=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertEqual(r.stdout, b"", args)
            self.assertTrue(r.stderr, args)


if __name__ == "__main__":
    unittest.main()


# dkimpy's test data (Debian python3-dkim): a message signed by others with the RFC 8463
# example keys (Ed25519 with the RFC 8032 test key, and RSA), read where the package installs it.
DKIMPY_DATA = "/usr/lib/python3/dist-packages/dkim/tests/data"


def dkimpy_data(name):
    with open(os.path.join(DKIMPY_DATA, name)) as f:
        return f.read()


class DkimpyVectorsTest(ZoneTest):
    records = ["--local=/football.example.com/",
               "--txt-record=brisbane._domainkey.football.example.com,v=DKIM1; k=ed25519; "
               "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
    if os.path.exists(os.path.join(DKIMPY_DATA, "test.txt")):
        records.append(txt_arg("test._domainkey.football.example.com",
                               dkimpy_data("test.txt").strip()))

    def verify(self, message):
        r = subprocess.run([RELAIS_AUTH, "dkim", "verify", "--dns", f"127.0.0.1:{self.port}"],
                           input=message.encode(), capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode()

    def test_rfc8463_example_message_verifies(self):
        message = dkimpy_data("rfc6376.signed.msg")
        self.assertEqual(self.verify(message), "pass d=football.example.com s=brisbane\n"
                                               "pass d=football.example.com s=test\n")
        tampered = message.replace("hungry", "Hungry")
        self.assertEqual(self.verify(tampered),
                         "fail d=football.example.com s=brisbane body hash mismatch\n"
                         "fail d=football.example.com s=test body hash mismatch\n")


class AuthCheckTest(ZoneTest):
    """relais-auth check: SPF, DKIM and DMARC together, as relaisd runs them."""
    records = DKIM_RECORDS + [
        "--txt-record=example.test,v=spf1 ip4:192.0.2.0/24 -all",
        "--txt-record=_dmarc.example.test,v=DMARC1; p=reject; pct=50",
    ]

    def check(self, ip, sender, *extra, message=MESSAGE):
        r = subprocess.run([RELAIS_AUTH, "check", "--ip", ip, "--helo", "client.test",
                            "--sender", sender, "--authserv-id", "relay.test", "--dns",
                            f"127.0.0.1:{self.port}", "--timeout", "1000", *extra],
                           input=message.encode(), capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return r.stdout.decode()

    def signed(self):
        r = subprocess.run([RELAIS_AUTH, "dkim", "sign", "--domain", "example.test", "--selector",
                            "ed", "--key", os.path.join(KEYS, "ed25519.pem")],
                           input=MESSAGE.encode(), capture_output=True, timeout=30, check=True)
        return r.stdout.decode()

    def test_signed_and_aligned_passes(self):
        out = self.check("192.0.2.1", "joe@example.test", message=self.signed())
        self.assertEqual(out, "Authentication-Results: relay.test;\n"
                              "\tspf=pass smtp.mailfrom=joe@example.test;\n"
                              "\tdkim=pass header.d=example.test header.s=ed;\n"
                              "\tdmarc=pass header.from=example.test policy.dmarc=reject\n"
                              "disposition=none\nverdict: accept\n")

    def test_spf_fail_refused_at_mail_from_under_reject_policy(self):
        out = self.check("198.51.100.1", "joe@example.test", "--spf-policy", "reject",
                         "--sample", "0")
        self.assertIn("\tspf=fail smtp.mailfrom=joe@example.test;\n", out)
        self.assertIn("\tdmarc=fail header.from=example.test policy.dmarc=reject\n", out)
        self.assertTrue(out.endswith(
            "disposition=reject\nverdict: reject SPF of example.test does not permit this "
            "host\n"), out)

    def test_dmarc_reject_and_pct_sample(self):
        # SPF passes for another domain and there is no signature: DMARC fails for example.test.
        out = self.check("192.0.2.1", "joe@other.test", "--dmarc-policy", "reject", "--sample",
                         "0")
        self.assertIn("\tspf=none smtp.mailfrom=joe@other.test;\n\tdkim=none;\n", out)
        self.assertTrue(out.endswith("disposition=reject\nverdict: reject Message rejected by "
                                     "the DMARC policy of example.test\n"), out)
        # Outside the pct=50 sample the disposition is quarantine: tagged, accepted.
        out = self.check("192.0.2.1", "joe@other.test", "--dmarc-policy", "reject", "--sample",
                         "70")
        self.assertTrue(out.endswith("disposition=quarantine\nverdict: accept\n"), out)
        # The default policy tags and never refuses.
        out = self.check("192.0.2.1", "joe@other.test", "--sample", "0")
        self.assertTrue(out.endswith("disposition=reject\nverdict: accept\n"), out)

    def test_json_and_bad_usage(self):
        r = subprocess.run([RELAIS_AUTH, "check", "--ip", "192.0.2.1", "--helo", "client.test",
                            "--sender", "joe@example.test", "--json", "--dns",
                            f"127.0.0.1:{self.port}"], input=self.signed().encode(),
                           capture_output=True, timeout=30)
        out = json.loads(r.stdout)
        self.assertEqual(out["verdict"], "accept")
        self.assertIn("dmarc=pass", out["authentication_results"])
        r = subprocess.run([RELAIS_AUTH, "check", "--ip", "192.0.2.1", "--helo", "c.test",
                            "--sender", "a@b.test", "--dmarc-policy", "always"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--dmarc-policy must be off, tag or reject", r.stderr)

    def test_signature_bound_and_temperror_action_flags(self):
        # The usage text offers both; they were once refused as unknown flags.
        out = self.check("192.0.2.1", "joe@example.test", "--signatures-max", "1",
                         "--dmarc-temperror", "accept", message=self.signed())
        self.assertIn("\tdkim=pass header.d=example.test header.s=ed;\n", out)
        for flag, value, problem in (("--signatures-max", "0", "expected 1..64"),
                                     ("--dmarc-temperror", "maybe",
                                      "must be defer, accept or reject")):
            r = subprocess.run([RELAIS_AUTH, "check", "--ip", "192.0.2.1", "--helo", "c.test",
                                "--sender", "a@b.test", flag, value],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(problem, r.stderr)


# pyspf (Debian python3-spf), an independent SPF implementation, asked through dnspython to use
# the test's dnsmasq only.
PYSPF = """
import sys, spf, dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers, r.port, r.lifetime = ["127.0.0.1"], int(sys.argv[1]), 5
dns.resolver.default_resolver = r
ip, sender, helo = sys.argv[2:5]
print(spf.check2(i=ip, s=sender, h=helo)[0])
"""

INTEROP_RECORDS = [
    # Reverse names answered here too (NXDOMAIN when unknown): a DNS failure on a PTR lookup is
    # "no match" per RFC 7208 5.5, which pyspf turns into temperror; keep the table about SPF.
    "--local=/in-addr.arpa/", "--local=/ip6.arpa/",
    "--txt-record=pass.test,v=spf1 ip4:192.0.2.0/24 -all",
    "--txt-record=soft.test,v=spf1 include:pass.test ~all",
    "--txt-record=neutral.test,v=spf1 ?all",
    "--txt-record=redir.test,v=spf1 redirect=pass.test",
    "--txt-record=v6.test,v=spf1 ip6:2001:db8::/32 -all",
    "--txt-record=a.test,v=spf1 a:host.a.test/24 -all",
    "--host-record=host.a.test,198.51.100.20",
    "--txt-record=mx.test,v=spf1 mx -all",
    "--mx-host=mx.test,mail.mx.test,10",
    "--host-record=mail.mx.test,203.0.113.8",
    "--txt-record=ptr.test,v=spf1 ptr -all",
    "--ptr-record=5.2.0.192.in-addr.arpa,mail.ptr.test",
    "--host-record=mail.ptr.test,192.0.2.5",
    "--txt-record=macro.test,v=spf1 exists:%{i}.%{l}.x.macro.test -all",
    "--host-record=192.0.2.9.joe.x.macro.test,127.0.0.2",
    "--txt-record=helo.test,v=spf1 a -all",
    "--host-record=helo.test,203.0.113.5",
    "--txt-record=two.test,v=spf1 -all",
    "--txt-record=two.test,v=spf1 +all",
    "--txt-record=syntax.test,v=spf1 ip4:300.1.1.1 -all",
    "--txt-record=loop.test,v=spf1 include:loop.test -all",
    "--txt-record=voids.test,v=spf1 a:n1.test a:n2.test a:n3.test +all",
    "--txt-record=many.test,v=spf1 a:pass.test a:soft.test a:neutral.test a:redir.test "
    "a:v6.test a:a.test a:mx.test a:ptr.test a:helo.test a:two.test a:syntax.test +all",
    "--txt-record=badinc.test,v=spf1 include:nothing.test -all",
    "--txt-record=upper.test,v=spf1 IP4:192.0.2.0/24 -ALL",
]

# (client IP, MAIL FROM, HELO): both implementations must give the same result word.
INTEROP_CASES = [
    ("192.0.2.1", "a@pass.test", "h.test"), ("198.51.100.1", "a@pass.test", "h.test"),
    ("192.0.2.1", "a@soft.test", "h.test"), ("198.51.100.1", "a@soft.test", "h.test"),
    ("198.51.100.1", "a@neutral.test", "h.test"), ("192.0.2.7", "a@redir.test", "h.test"),
    ("198.51.100.1", "a@redir.test", "h.test"), ("2001:db8::1", "a@v6.test", "h.test"),
    ("2001:db9::1", "a@v6.test", "h.test"), ("198.51.100.99", "a@a.test", "h.test"),
    ("198.51.101.1", "a@a.test", "h.test"), ("203.0.113.8", "a@mx.test", "h.test"),
    ("203.0.113.9", "a@mx.test", "h.test"), ("192.0.2.5", "a@ptr.test", "h.test"),
    ("192.0.2.6", "a@ptr.test", "h.test"), ("192.0.2.9", "joe@macro.test", "h.test"),
    ("192.0.2.9", "sue@macro.test", "h.test"), ("203.0.113.5", "", "helo.test"),
    ("203.0.113.6", "", "helo.test"), ("192.0.2.1", "a@two.test", "h.test"),
    ("192.0.2.1", "a@syntax.test", "h.test"), ("192.0.2.1", "a@loop.test", "h.test"),
    ("192.0.2.1", "a@voids.test", "h.test"), ("192.0.2.1", "a@many.test", "h.test"),
    ("192.0.2.1", "a@badinc.test", "h.test"), ("192.0.2.1", "a@none.test", "h.test"),
    ("192.0.2.1", "a@upper.test", "h.test"), ("198.51.100.1", "a@upper.test", "h.test"),
]


class SpfInteropTest(ZoneTest):
    records = INTEROP_RECORDS

    def test_same_results_as_pyspf(self):
        for ip, sender, helo in INTEROP_CASES:
            ours = self.spf(ip, "", sender=sender, helo=helo)[0].split()[0]
            r = subprocess.run(["/usr/bin/python3", "-c", PYSPF, str(self.port), ip, sender, helo],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(ours, r.stdout.strip(), (ip, sender, helo))


# An SPF record of about 6 KB: its answer does not fit a UDP reply, so the shard's resolver
# must retry over TCP (c-ares asks to watch a TCP socket for writing, then reading).
BIG_SPF = "v=spf1 " + " ".join(f"ip4:10.{i // 250}.{i % 250}.0/24" for i in range(400)) + \
    " ip4:127.0.0.1 -all"
DAEMON_RECORDS = [
    txt_arg("big.test", BIG_SPF),
    txt_arg("ed._domainkey.example.test", key_record("ed25519.pem")),
    txt_arg("big._domainkey.example.test", key_record("rsa2048.pem")),
    "--txt-record=example.test,v=spf1 ip4:127.0.0.1 -all",
    "--txt-record=_dmarc.example.test,v=DMARC1; p=reject",
    "--txt-record=deny.test,v=spf1 -all exp=exp.deny.test",
    "--txt-record=exp.deny.test,%{i} may not send mail for %{d}",
]
SIGNED_PART = ("From: Joe <joe@example.test>\r\nTo: sue@example.net\r\nSubject: dinner\r\n"
               "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <2@example.test>\r\n\r\n"
               "Hungry yet?\r\n")


class DaemonAuthTest(ZoneTest):
    """relaisd checks SPF at MAIL FROM and DKIM and DMARC at the end of data, on its shards'
    own resolvers, against dnsmasq; loopback clients are checked because skip_networks is
    emptied."""
    records = DAEMON_RECORDS

    def daemon(self, auth="", dns=None):
        servers = dns or f"127.0.0.1:{self.port}"
        d = Daemon(f'[auth]\nskip_networks = []\nauthserv_id = "relais.test"\n{auth}\n'
                   f'[dns]\nservers = ["{servers}"]\ntimeout_ms = 300\ntries = 1\n')
        self.addCleanup(d.cleanup)
        return d.start()

    def signed(self):
        r = subprocess.run([RELAIS_AUTH, "dkim", "sign", "--domain", "example.test", "--selector",
                            "ed", "--key", os.path.join(KEYS, "ed25519.pem")],
                           input=SIGNED_PART.encode(), capture_output=True, timeout=30, check=True)
        return r.stdout.decode()

    def stored(self, d, count):
        """The accepted messages as relaisd stored them, once delivered: the Return-Path and
        Delivered-To that Maildir delivery adds on top are left out."""
        # Delivered to the Maildir (the default route): listing the spool and the Maildir
        # one after the other could see a message in both while it is being delivered.
        messages = wait_for(lambda: len(d.maildir_messages()) >= count and d.maildir_messages(),
                            20, f"{count} delivered messages")
        for m in messages:
            m["body"] = re.sub(r"\A(Return-Path|Delivered-To): [^\n]*\n(Delivered-To: [^\n]*\n)?",
                               "", m["body"])
        return messages

    def test_results_recorded_and_forged_fields_removed(self):
        d = self.daemon('spf = "reject"\ndmarc = "reject"')
        forged = ("Authentication-Results: relais.test; dkim=pass header.d=bank.test\r\n"
                  "Authentication-Results: other.test; spf=pass\r\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            s.sendmail("joe@example.test", ["sue@example.net"], forged + self.signed())
        body = self.stored(d, 1)[0]["body"]
        self.assertTrue(body.startswith(
            "Authentication-Results: relais.test;\n"
            "\tspf=pass smtp.mailfrom=joe@example.test;\n"
            "\tdkim=pass header.d=example.test header.s=ed;\n"
            "\tdmarc=pass header.from=example.test policy.dmarc=reject\n"
            "Received: from client.test ([127.0.0.1])\n"), body)
        self.assertNotIn("bank.test", body)  # The forged field claiming our identity is gone.
        self.assertIn("Authentication-Results: other.test; spf=pass\n", body)

    def test_spf_fail_refused_at_mail_from_and_dmarc_reject_at_end_of_data(self):
        d = self.daemon('spf = "reject"\ndmarc = "reject"')
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            code, text = s.mail("someone@deny.test")
            self.assertEqual(code, 550)
            self.assertEqual(text.decode(), "5.7.23 SPF validation failed: 127.0.0.1 may not send "
                                            "mail for deny.test")
            self.assertEqual(s.rcpt("sue@example.net")[0], 503)  # No transaction.
            # The same session goes on. Unsigned mail From example.test with an envelope
            # sender of another domain: SPF none, no DKIM, so DMARC fails and p=reject applies.
            self.assertEqual(s.mail("bounce@other.test")[0], 250)
            self.assertEqual(s.rcpt("sue@example.net")[0], 250)
            code, text = s.data(SIGNED_PART.encode())
            self.assertEqual((code, text.decode()),
                             (550, "5.7.1 Message rejected by the DMARC policy of example.test"))
            # Aligned SPF passes DMARC without a signature.
            s.rset()
            s.sendmail("joe@example.test", ["sue@example.net"], SIGNED_PART)
        messages = self.stored(d, 1)
        self.assertEqual(len(messages), 1)
        self.assertIn("\tdkim=none;\n\tdmarc=pass header.from=example.test", messages[0]["body"])
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics") as r:
            metrics = r.read().decode()
        for line in ['relais_auth_results_total{method="spf",result="fail"} 1',
                     'relais_auth_results_total{method="spf",result="pass"} 1',
                     'relais_auth_results_total{method="dmarc",result="fail"} 1',
                     'relais_auth_refusals_total{method="spf",reply="reject"} 1',
                     'relais_auth_refusals_total{method="dmarc",reply="reject"} 1']:
            self.assertIn(line + "\n", metrics)
        self.assertRegex(metrics, r"relais_dns_queries_total [1-9]")

    def test_an_answer_too_big_for_udp_comes_over_tcp(self):
        d = self.daemon('spf = "reject"')
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail("someone@big.test"), (250, b"2.1.0 Sender OK"))
            s.rcpt("sue@example.net")
            s.data(SIGNED_PART.replace("example.test", "big.test").encode())
        body = self.stored(d, 1)[0]["body"]
        self.assertIn("\tspf=pass smtp.mailfrom=someone@big.test;\n", body)

    def test_dmarc_dns_failure_deferred_at_end_of_data(self):
        # This dnsmasq answers .test only: _dmarc.elsewhere.org fails temporarily.
        d = self.daemon('dmarc = "reject"\ntemperror = "defer"')
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail("joe@example.test")[0], 250)
            self.assertEqual(s.rcpt("sue@example.net")[0], 250)
            code, text = s.data(SIGNED_PART.replace("joe@example.test", "joe@elsewhere.org"))
            self.assertEqual(code, 451, text)
            self.assertTrue(text.decode().startswith(
                "4.7.1 DMARC policy of elsewhere.org could not be looked up"), text)

    def test_default_policy_tags_and_never_refuses(self):
        d = self.daemon()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            s.sendmail("someone@deny.test", ["sue@example.net"], SIGNED_PART)
        body = self.stored(d, 1)[0]["body"]
        self.assertTrue(body.startswith(
            "Authentication-Results: relais.test;\n\tspf=fail smtp.mailfrom=someone@deny.test;\n"
            "\tdkim=none;\n\tdmarc=fail header.from=example.test policy.dmarc=reject\n"), body)

    def test_dns_failure_deferred_or_accepted_per_temperror(self):
        for temperror, code in (("defer", 451), ("accept", 250)):
            d = self.daemon(f'spf = "reject"\ntemperror = "{temperror}"',
                            dns=f"127.0.0.1:{free_port()}")  # Nothing answers there.
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
                s.ehlo("client.test")
                got, text = s.mail("joe@example.test")
                self.assertEqual(got, code, text)
                if code == 451:
                    self.assertTrue(text.decode().startswith("4.7.24 SPF validation error"), text)

    def test_client_gone_during_a_check_leaves_nothing_stored(self):
        # A DNS server that never answers: every check waits for the timeout. The client
        # pipelines a whole transaction and hangs up; when the checks end nobody can be told
        # 250, so the message, unchecked, must not be stored.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        d = self.daemon('temperror = "accept"', dns=f"127.0.0.1:{silent.getsockname()[1]}")
        sock = d.connect()
        sock.sendall(b"EHLO client.test\r\nMAIL FROM:<joe@example.test>\r\n"
                     b"RCPT TO:<sue@example.net>\r\nDATA\r\n" +
                     SIGNED_PART.encode() + b".\r\n")
        sock.close()
        wait_for(lambda: any(e.get("event") == "session_end" for e in d.events()), 20,
                 "the session to end")
        self.assertEqual(d.spool_messages(), [])
        self.assertEqual(d.maildir_messages(), [])

    def test_local_submitters_are_not_checked(self):
        d = Daemon(f'[dns]\nservers = ["127.0.0.1:{self.port}"]\n')  # Default skip_networks.
        self.addCleanup(d.cleanup)
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("someone@deny.test", ["sue@example.net"], SIGNED_PART)
        body = self.stored(d, 1)[0]["body"]
        self.assertTrue(body.startswith("Received: "), body)

    def test_trusted_clients_mail_is_signed_for_its_domain(self):
        keys = [("ed", "ed25519.pem"), ("big", "rsa2048.pem")]
        signing = "".join(f'[[dkim_sign]]\ndomain = "example.test"\nselector = "{s}"\n'
                          f'key = "{os.path.join(KEYS, k)}"\n' for s, k in keys)
        d = Daemon(f'[dns]\nservers = ["127.0.0.1:{self.port}"]\n' + signing)
        self.addCleanup(d.cleanup)
        d.start()
        other = SIGNED_PART.replace("joe@example.test", "joe@other.test")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("joe@example.test", ["sue@example.net"], SIGNED_PART)
            s.sendmail("joe@other.test", ["sue@example.net"], other)
        messages = {m["body"].count("From: Joe <joe@example.test>"): m["body"]
                    for m in self.stored(d, 2)}
        signed, unsigned = messages[1], messages[0]
        self.assertNotIn("DKIM-Signature", unsigned)
        self.assertEqual(signed.count("DKIM-Signature: "), 2)
        wire = signed.replace("\n", "\r\n")
        r = subprocess.run([RELAIS_AUTH, "dkim", "verify", "--dns", f"127.0.0.1:{self.port}"],
                           input=wire.encode(), capture_output=True, timeout=30)
        self.assertEqual(r.stdout.decode(), "pass d=example.test s=ed\npass d=example.test s=big\n")
        for selector, key in keys:  # dkimpy verifies the topmost signature it is given.
            only = re.sub(r"DKIM-Signature: [^\n]*s=(?!%s;)[^\n]*\n(\s[^\n]*\n)*" % selector, "",
                          signed)
            r = subprocess.run(["/usr/bin/python3", "-c", DKIMPY_VERIFY, key_record(key)],
                               input=only.replace("\n", "\r\n").encode(), capture_output=True,
                               timeout=30)
            self.assertEqual(r.stdout.decode().strip(), "pass", (selector, r.stderr))
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics") as resp:
            self.assertIn("relais_dkim_signed_total 1\n", resp.read().decode())

    def test_untrusted_clients_mail_is_never_signed_even_with_checks_off(self):
        # "Not checked" is not "trusted": with every check off, an outsider's mail for a domain
        # we hold a key for must not come out signed (our key would sign what anyone writes).
        d = Daemon('[auth]\nskip_networks = []\nspf = "off"\ndkim = "off"\ndmarc = "off"\n'
                   f'[dns]\nservers = ["127.0.0.1:{self.port}"]\n'
                   '[[dkim_sign]]\ndomain = "example.test"\nselector = "ed"\n'
                   f'key = "{os.path.join(KEYS, "ed25519.pem")}"\n')
        self.addCleanup(d.cleanup)
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.sendmail("joe@example.test", ["sue@example.net"], SIGNED_PART)
        body = self.stored(d, 1)[0]["body"]
        self.assertNotIn("DKIM-Signature", body)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics") as resp:
            self.assertIn("relais_dkim_signed_total 0\n", resp.read().decode())

    def test_policy_per_listener(self):
        d = Daemon('[server]\nlisten = ["127.0.0.1:0", "127.0.0.2:0"]\nhostname = "relais.test"\n'
                   '[auth]\nskip_networks = []\nauthserv_id = "relais.test"\nspf = "reject"\n'
                   '[[auth.listener]]\nlisten = "127.0.0.2:0"\nspf = "off"\n'
                   f'[dns]\nservers = ["127.0.0.1:{self.port}"]\ntimeout_ms = 300\n')
        self.addCleanup(d.cleanup)
        d.start()
        ports = {e["address"].rsplit(":", 1)[0]: int(e["address"].rsplit(":", 1)[1])
                 for e in d.events() if e.get("event") == "listening"}
        with smtplib.SMTP("127.0.0.1", ports["127.0.0.1"], timeout=10) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail("someone@deny.test")[0], 550)
        with smtplib.SMTP("127.0.0.2", ports["127.0.0.2"], timeout=10) as s:
            s.ehlo("client.test")
            s.sendmail("someone@deny.test", ["sue@example.net"], SIGNED_PART)
        body = self.stored(d, 1)[0]["body"]
        self.assertTrue(body.startswith(
            "Authentication-Results: relais.test;\n\tdkim=none;\n\tdmarc=fail "), body)

    def test_unreadable_signing_key_stops_the_start(self):
        d = Daemon('[[dkim_sign]]\ndomain = "example.test"\nselector = "s"\n'
                   'key = "/nonexistent/key.pem"\n')
        self.addCleanup(d.cleanup)
        with self.assertRaises(AssertionError) as e:
            d.start()
        self.assertIn("dkim_sign: cannot read key /nonexistent/key.pem", str(e.exception))
