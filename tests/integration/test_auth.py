"""relais-auth spf against a real DNS server: dnsmasq on a loopback port, authoritative for
.test (unknown names there are NXDOMAIN), started and stopped by the test."""

import json
import os
import shutil
import subprocess
import time
import unittest

from harness import free_port

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
    """Starts dnsmasq with RECORDS for the class's tests and stops it after them."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.dns = subprocess.Popen(
            [DNSMASQ, "--no-daemon", f"--port={cls.port}", "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             "--pid-file=", "--local=/test/", *RECORDS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # Until it answers.
            if cls.spf("192.0.2.1", "pass.test")[0].startswith("pass"):
                return
            time.sleep(0.05)
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
                             (["dkim", "verify"], "not built yet"),
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


if __name__ == "__main__":
    unittest.main()
