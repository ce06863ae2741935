"""testssl.sh (the Debian package) scans relaisd's inbound STARTTLS port on loopback.

One scan of protocols (-p), standard cipher categories (-s), forward secrecy (-f),
renegotiation (-R) and the known vulnerabilities (-U), about a minute; its JSON findings must
show: no SSLv2, SSLv3, TLS 1.0 or TLS 1.1; TLS 1.2 or 1.3 offered; no NULL, anonymous, export,
low, RC4, 3DES/IDEA or CBC-only (obsoleted) cipher; forward secrecy offered; no client-initiated
renegotiation; and no finding at all rated MEDIUM or worse.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import Daemon, free_port
from tls_certs import TestCerts, tls_section

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh") or "/usr/bin/testssl"
BAD = ("MEDIUM", "HIGH", "CRITICAL")
# Findings that say nothing about the server: the scanner's own openssl, the scan itself.
SCANNER_NOTES = {"engine_problem", "scanProblem", "scanTime", "service", "pre_128cipher"}


@unittest.skipUnless(os.path.exists(TESTSSL), "testssl.sh is not installed")
class TestsslScanTest(unittest.TestCase):
    def test_starttls_port_has_no_protocol_cipher_or_renegotiation_weakness(self):
        certs = TestCerts()
        self.addCleanup(certs.cleanup)
        port = free_port()
        d = Daemon(f'[server]\nlisten = ["127.0.0.1:{port}"]\nhostname = "relais.test"\n'
                   + tls_section(certs))
        self.addCleanup(d.cleanup)
        d.start()
        work = tempfile.mkdtemp(prefix="relais-testssl-")
        self.addCleanup(shutil.rmtree, work, True)
        report = os.path.join(work, "scan.json")
        result = subprocess.run(
            [TESTSSL, "--starttls", "smtp", "-p", "-s", "-f", "-R", "-U", "--quiet",
             "--warnings", "batch", "--color", "0", "--connect-timeout", "10",
             "--openssl-timeout", "10", "--jsonfile", report, f"127.0.0.1:{port}"],
            capture_output=True, timeout=400, cwd=work, stdin=subprocess.DEVNULL)
        output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        self.assertTrue(os.path.exists(report), output[-3000:])
        with open(report) as f:
            findings = {e["id"]: e for e in json.load(f)}

        def finding(name):
            self.assertIn(name, findings, f"testssl.sh did not report {name}: {output[-3000:]}")
            return findings[name]["finding"].lower()

        for protocol in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            self.assertTrue(finding(protocol).startswith("not offered"), findings[protocol])
        self.assertTrue(finding("TLS1_2").startswith("offered")
                        or finding("TLS1_3").startswith("offered"))
        self.assertTrue(finding("TLS1_3").startswith("offered"), findings["TLS1_3"])
        for category in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT",
                         "cipherlist_LOW", "cipherlist_3DES_IDEA"):
            self.assertTrue(finding(category).startswith("not offered"), findings[category])
        # CBC without AEAD ("average"/"obsoleted", by testssl.sh version): not offered.
        for category in ("cipherlist_AVERAGE", "cipherlist_OBSOLETED"):
            if category in findings:
                self.assertTrue(finding(category).startswith("not offered"), findings[category])
        fs = "FS" if "FS" in findings else "PFS"
        self.assertTrue(finding(fs).startswith("offered"), findings.get(fs))
        self.assertEqual(findings["secure_client_renego"]["severity"], "OK",
                         findings["secure_client_renego"])
        self.assertIn("not vulnerable", finding("secure_client_renego"))
        for name in ("RC4", "SWEET32", "FREAK", "LOGJAM", "POODLE_SSL", "heartbleed", "CCS",
                     "ROBOT", "DROWN", "LUCKY13", "BEAST"):
            if name in findings:
                self.assertNotIn(findings[name]["severity"], BAD + ("LOW",), findings[name])
        bad = [e for e in findings.values()
               if e["severity"] in BAD and e["id"] not in SCANNER_NOTES]
        self.assertEqual(bad, [])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
