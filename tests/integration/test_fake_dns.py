"""fake_dns.py answers as the MX delivery tests need it to: checked over UDP and TCP with
dnslib's own parser, before any daemon relies on it."""

import socket
import time
import unittest

from fake_dns import FakeDns, _import_dnslib

dnslib = _import_dnslib()

ZONE = {
    "example.test": {"MX": [[20, "mx2.example.test"], [10, "mx1.example.test"]],
                     "A": ["127.0.1.1"]},
    "mx1.example.test": {"A": ["127.0.1.1"], "AAAA": ["::1"]},
    "www.example.test": {"CNAME": "mx1.example.test"},
    "null.test": {"MX": [[0, "."]]},
    "gone.test": "NXDOMAIN",
    "broken.test": "SERVFAIL",
    "silent.test": "TIMEOUT",
}


class FakeDnsTest(unittest.TestCase):
    def setUp(self):
        self.dns = FakeDns(ZONE)
        self.addCleanup(self.dns.cleanup)

    def ask(self, name, qtype, tcp=False, timeout=2):
        q = dnslib.DNSRecord.question(name, qtype)
        return dnslib.DNSRecord.parse(
            q.send(self.dns.host, self.dns.port, tcp=tcp, timeout=timeout))

    def test_records(self):
        for tcp in (False, True):
            r = self.ask("Example.TEST.", "MX", tcp)
            self.assertEqual(r.header.rcode, dnslib.RCODE.NOERROR)
            self.assertTrue(r.header.aa)
            self.assertEqual(sorted((rr.rdata.preference, str(rr.rdata.label)) for rr in r.rr),
                             [(10, "mx1.example.test."), (20, "mx2.example.test.")])
            r = self.ask("mx1.example.test", "AAAA", tcp)
            self.assertEqual([str(rr.rdata) for rr in r.rr], ["::1"])

    def test_cname_is_followed(self):
        r = self.ask("www.example.test", "A")
        self.assertEqual([(dnslib.QTYPE[rr.rtype], str(rr.rdata)) for rr in r.rr],
                         [("CNAME", "mx1.example.test."), ("A", "127.0.1.1")])

    def test_null_mx(self):
        r = self.ask("null.test", "MX")
        self.assertEqual([(rr.rdata.preference, str(rr.rdata.label)) for rr in r.rr], [(0, ".")])

    def test_no_data_and_failures(self):
        r = self.ask("mx1.example.test", "MX")  # The name exists, no MX: NOERROR, no data.
        self.assertEqual((r.header.rcode, r.rr), (dnslib.RCODE.NOERROR, []))
        self.assertEqual(dnslib.QTYPE[r.auth[0].rtype], "SOA")  # RFC 2308 negative TTL.
        for name in ("gone.test", "not-in-the-zone.test"):
            self.assertEqual(self.ask(name, "A").header.rcode, dnslib.RCODE.NXDOMAIN)
        self.assertEqual(self.ask("broken.test", "MX").header.rcode, dnslib.RCODE.SERVFAIL)

    def test_silent_name_gets_no_answer(self):
        for tcp in (False, True):
            start = time.monotonic()
            with self.assertRaises((socket.timeout, TimeoutError, OSError)):
                self.ask("silent.test", "MX", tcp, timeout=0.5)
            self.assertGreaterEqual(time.monotonic() - start, 0.4)
        # The server still answers others afterwards.
        self.assertEqual(self.ask("example.test", "A").header.rcode, dnslib.RCODE.NOERROR)

    def test_zone_change_and_query_log(self):
        self.assertEqual(self.ask("broken.test", "MX").header.rcode, dnslib.RCODE.SERVFAIL)
        self.dns.set_zone({"broken.test": {"MX": [[10, "mx.broken.test"]]}})
        r = self.ask("broken.test", "MX")
        self.assertEqual([str(rr.rdata.label) for rr in r.rr], ["mx.broken.test."])
        self.assertEqual(self.dns.queries(), [("broken.test", "MX", "SERVFAIL"),
                                              ("broken.test", "MX", "NOERROR")])


if __name__ == "__main__":
    unittest.main()
