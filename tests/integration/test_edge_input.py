"""Hostile input at the edge, against the real daemon: addresses that try to leave the mail root,
relay rules that would make an open relay, sender-specified routing, duplicate recipients and
the per-address connection cap for trusted networks.

The path-traversal tests run the built-in quick-start configuration (what `relaisd` runs
without --config, as `--print-default-config` prints it, with ports 0) from a working directory
nested deep in a sandbox, so that any escape from var/mail lands inside the sandbox, where the
test finds it.
"""

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import unittest

from harness import RELAISD, Daemon, RawClient, wait_for

SMARTHOST_ANY = '[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = ["127.0.0.1:9"]\n'


def quick_start_config():
    """The built-in quick-start config, listening on port 0 (the harness sets the spool)."""
    text = subprocess.run([RELAISD, "--print-default-config"], check=True, capture_output=True,
                          timeout=30).stdout.decode()
    assert 'local_domains = ["*"]' in text, text
    assert 'path = "./var/mail"' in text, text
    lines = []
    for line in text.splitlines():
        if line == 'listen = ["127.0.0.1:2525"]':
            line = 'listen = ["127.0.0.1:0"]'
        elif line == 'listen = "127.0.0.1:9025"':
            line = 'listen = "127.0.0.1:0"'
        elif line == 'path = "./var/spool"':
            continue  # The harness puts the spool in the work directory.
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_config(text):
    """relaisd --check-config on `text`: (exit code, stdout + stderr)."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([RELAISD, "--config", f.name, "--check-config"], capture_output=True,
                           timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode()


class EdgeTest(unittest.TestCase):
    def daemon(self, config, **kwargs):
        d = Daemon(config, **kwargs)
        self.addCleanup(d.cleanup)
        return d.start()

    def rcpt(self, d, address, smtputf8=False):
        """One fresh session (so refusals never add up to errors_max): the reply to RCPT."""
        c = RawClient(d.connect())
        self.assertEqual(c.reply()[0], 220)
        c.send(b"EHLO client.test\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.send(b"MAIL FROM:<a@sender.test>" + (b" SMTPUTF8" if smtputf8 else b"") + b"\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.send(b"RCPT TO:<" + address + b">\r\n")
        return c.reply()

    def delivered(self, d):
        return [e for e in d.events(d.log_offset)
                if e.get("event") == "delivery_attempt" and e.get("outcome") == "delivered"]


class PathTraversalTest(EdgeTest):
    def setUp(self):
        self.sandbox = tempfile.mkdtemp(prefix="relais-edge-")
        self.addCleanup(shutil.rmtree, self.sandbox, True)
        # Eight levels: every attack below climbs at most six, so it stays in the sandbox.
        self.chain = os.path.join(self.sandbox, *[f"d{i}" for i in range(8)])
        self.work = os.path.join(self.chain, "work")
        os.makedirs(self.work)

    def outside_of_var_mail(self):
        """Everything in the sandbox that relaisd wrote outside var/mail (and its own spool,
        admin socket in var/run, config and log)."""
        ours = {os.path.join(self.work, p) for p in
                ("relais.toml", "relaisd.log", "spool", "var", "var/mail", "var/run", "var/run/relaisd.sock")}
        found = []
        for dirpath, dirs, files in os.walk(self.sandbox):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                if self.work.startswith(path + os.sep) or path == self.work:
                    continue  # The directories leading to the work directory.
                if path in ours or path.startswith(os.path.join(self.work, "spool") + os.sep):
                    continue
                if path.startswith(os.path.join(self.work, "var", "mail") + os.sep):
                    continue
                found.append(path)
        return found

    def test_no_address_leaves_the_mail_root_under_the_quick_start_config(self):
        d = self.daemon(quick_start_config(), workdir=self.work)
        refused = {
            # General address literals: only IPv4 and IPv6 are addresses (501 5.1.3).
            b"x@[x:/../../../../srv/escaped]": (501, "5.1.3"),
            b"x@[tag:..]": (501, "5.1.3"),
            b"x@[x-tag:stuff]": (501, "5.1.3"),
            b"x@[IPv6:::1/../../../../srv/escaped]": (501, "5.1.3"),
            b"x@[192.0.2.1/../../../../srv/escaped]": (501, "5.1.3"),
            b"x@[192.0.2.1\x00/../../../../srv/escaped]": (501, None),
            b"x@[IPv6:::1%25eth0]": (501, "5.1.3"),
            b"@hop.test:x@[x:/../../../srv/escaped]": (501, "5.1.3"),
            # Local parts that are not one safe file name (550 5.1.3), or no local part at all.
            b"..@example.com": (501, "5.1.3"),
            b'".."@example.com': (550, "5.1.3"),
            b'"."@example.com': (550, "5.1.3"),
            b'"a/b"@example.com': (550, "5.1.3"),
            b"a/b@example.com": (550, "5.1.3"),
            b'"../x"@d.test': (550, "5.1.3"),
            b'"../../../../../../srv/escaped"@example.com': (550, "5.1.3"),
            b'".hidden"@example.com': (550, "5.1.3"),
            b'"a\\/b"@example.com': (550, "5.1.3"),
            b'"a\\\\b"@example.com': (550, "5.1.3"),
            b'""@example.com': (550, "5.1.3"),
            b'"\x01"@example.com': (501, "5.1.3"),
            b'"a\x00b"@example.com': (501, None),
            b'"\x7f"@example.com': (501, "5.1.3"),
            # Percent-encoding is no path syntax, but it is sender-specified routing.
            b"%2e%2e@example.com": (550, "5.7.1"),
            b'"%2e%2e%2f"@example.com': (550, "5.7.1"),
        }
        for address, (code, enhanced) in refused.items():
            got, text = self.rcpt(d, address)
            self.assertEqual(got, code, (address, text))
            if enhanced:
                self.assertEqual(text[4:9], enhanced, (address, text))
        # What is fine stays fine, one directory each, under var/mail.
        accepted = [b"x@[IPV6:2001:db8::1]", b"x@[ipv6:::1]", b"x@[192.0.2.1]",
                    "u@b\u00fccher.example".encode(), "u@example\u3002com".encode(),
                    "u@a\uff0fb.example".encode(), "\u2024\u2024@example.com".encode()]
        for address in accepted:
            self.assertEqual(self.rcpt(d, address, smtputf8=True)[0], 250, address)
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo()
            s.mail("a@sender.test", ["SMTPUTF8"])
            for address in accepted:
                self.assertEqual(s.rcpt(address.decode())[0], 250)
            s.data(b"Subject: edge\r\n\r\nhello\r\n")
        wait_for(lambda: len(self.delivered(d)) >= len(accepted), 20, "the deliveries")
        self.assertEqual(d.stop(), 0)
        self.assertEqual(self.outside_of_var_mail(), [])
        root = os.path.join(self.work, "var", "mail")
        self.assertEqual(sorted(os.listdir(root)), sorted([
            "[ipv6:2001:db8::1]", "[ipv6:::1]", "[192.0.2.1]", "b\u00fccher.example",
            "example\u3002com", "a\uff0fb.example", "example.com"]))
        self.assertEqual(len(d.maildir_messages()), len(accepted))


class OpenRelayTest(EdgeTest):
    def test_quick_start_is_no_relay_and_its_key_default_takes_no_domain(self):
        r = subprocess.run([RELAISD, "--check-config"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"built-in quick-start config: configuration OK", r.stdout)
        # The reported exploit: one "*" smarthost route in the file otherwise as printed.
        default = quick_start_config()
        head, _, _ = default.partition("[[routes]]")
        code, text = check_config(head + SMARTHOST_ANY)
        self.assertEqual(code, 2, text)
        self.assertIn("relay.local_domains", text)
        self.assertIn("routes[0]", text)
        self.assertIn("relay.open_relay_acknowledged", text)
        # The same route alone (an empty [relay] keeps the harness from adding local_domains):
        # no domain is local, so nobody outside relays through it.
        d = self.daemon("[relay]\n" + SMARTHOST_ANY)
        self.assertEqual(self.rcpt(d, b"victim@elsewhere.test")[0], 554)

    def test_every_open_combination_is_refused_naming_its_keys(self):
        cases = {
            '[relay]\nrelay_domains = ["*"]\n': "relay.relay_domains",
            '[relay]\nnetworks = ["0.0.0.0/0"]\n': "relay.networks (0.0.0.0/0)",
            '[relay]\nnetworks = ["::/0"]\n': "relay.networks (::/0)",
            '[relay]\nnetworks = ["0.0.0.0/1", "128.0.0.0/1"]\n': "relay.networks",
            '[relay]\nnetworks = ["2000::/3"]\n': "relay.networks",
            '[relay]\nlocal_domains = ["*"]\n' + SMARTHOST_ANY: "relay.local_domains",
            '[relay]\nlocal_domains = ["*"]\n[[routes]]\ndomain = "*"\ntype = "lmtp"\n'
            'address = "/run/lmtp"\n': "relay.local_domains",
            # Patterns for a whole TLD or public suffix are "anywhere" too, wherever the route
            # that sends them on stands before the one that keeps them all.
            '[relay]\nlocal_domains = ["*"]\n' + SMARTHOST_ANY.replace('"*"', '"*.com"')
            + '[[routes]]\ndomain = "*"\ntype = "maildir"\npath = "/m"\n': 'routes[0] (domain "*.com")',
            '[relay]\nlocal_domains = ["*.com", "*.net", "*.org"]\n' + SMARTHOST_ANY:
                'relay.local_domains holds "*.com"',
            '[relay]\nrelay_domains = ["*.com", "*.net"]\n': 'relay.relay_domains holds "*.com"',
            '[relay]\nrelay_domains = ["*.co.uk"]\n': 'relay.relay_domains holds "*.co.uk"',
            '[relay]\nnetworks = ["0.0.0.0/2", "64.0.0.0/3", "96.0.0.0/4"]\n': "relay.networks",
            '[relay]\nnetworks = ["1.0.0.0/8", "2.0.0.0/16"]\n': "relay.networks",
            '[relay]\nnetworks = ["2001::/31"]\n': "relay.networks (2001::/31)",
        }
        for text, key in cases.items():
            code, out = check_config(text)
            self.assertEqual(code, 2, (text, out))
            self.assertIn("open relay", out)
            self.assertIn(key, out)
            acknowledged = text.replace("[relay]\n",
                                        "[relay]\nopen_relay_acknowledged = true\n", 1)
            self.assertEqual(check_config(acknowledged)[0], 0, acknowledged)
        # Closed: "anywhere" domains kept first, one domain's subdomains, private networks.
        for text in ['[relay]\nlocal_domains = ["*"]\n[[routes]]\ndomain = "*.com"\n'
                     'type = "maildir"\npath = "/m"\n[[routes]]\ndomain = "*"\ntype = "reject"\n'
                     + SMARTHOST_ANY,
                     '[relay]\nlocal_domains = ["*.example.com"]\n' + SMARTHOST_ANY,
                     '[relay]\nnetworks = ["10.0.0.0/8", "127.0.0.0/8", "172.16.0.0/12", '
                     '"192.168.0.0/16", "11.0.0.0/8", "fc00::/7", "2001:db8::/32"]\n']:
            code, out = check_config(text)
            self.assertEqual(code, 0, (text, out))
        # And the daemon itself will not start on one.
        d = Daemon('[relay]\nnetworks = ["0.0.0.0/0"]\n')
        self.addCleanup(d.cleanup)
        d.start(wait=False)
        self.assertEqual(d.proc.wait(timeout=30), 2)
        self.assertIn("open relay", d.read_log())


class SenderRoutingTest(EdgeTest):
    ROUTED = [b"user%evil@example.net", b'"u@evil"@example.net', b"evil!u@example.net",
              b'"u%evil"@example.net', b'"evil!u"@example.net', b"@hop.test:user%evil@example.net"]

    def test_refused_from_untrusted_clients_only(self):
        d = self.daemon('[relay]\nlocal_domains = ["example.net"]\n')
        for address in self.ROUTED:
            code, text = self.rcpt(d, address)
            self.assertEqual((code, text[4:9]), (550, "5.7.1"), address)
        self.assertEqual(self.rcpt(d, b"user@example.net")[0], 250)
        trusted = self.daemon('[relay]\nlocal_domains = ["example.net"]\n'
                              'networks = ["127.0.0.0/8"]\n')
        allowed = self.daemon('[relay]\nlocal_domains = ["example.net"]\n'
                              'allow_untrusted_routing = true\n')
        for address in self.ROUTED:
            self.assertEqual(self.rcpt(trusted, address)[0], 250, address)
            self.assertEqual(self.rcpt(allowed, address)[0], 250, address)


class ConnectionCapTest(EdgeTest):
    def sessions(self, d, n):
        """Opens n sessions; returns the first reply code of each."""
        codes = []
        for _ in range(n):
            codes.append(RawClient(d.connect()).reply()[0])
        return codes

    def test_relay_networks_are_exempt_from_the_per_address_cap(self):
        cap = '[limits]\nconnections_per_ip_max = 3\n'
        trusted = self.daemon(cap + '[relay]\nnetworks = ["127.0.0.0/8"]\n')
        self.assertEqual(self.sessions(trusted, 12), [220] * 12)
        limited = self.daemon(cap + 'connections_per_ip_exempt_relay_networks = false\n'
                              '[relay]\nnetworks = ["127.0.0.0/8"]\n')
        self.assertEqual(self.sessions(limited, 5), [220] * 3 + [421] * 2)
        untrusted = self.daemon(cap)
        self.assertEqual(self.sessions(untrusted, 5), [220] * 3 + [421] * 2)


class DuplicateRecipientTest(EdgeTest):
    def test_one_recipient_named_200_times_is_delivered_once(self):
        d = self.daemon("")
        c = RawClient(d.connect())
        self.assertEqual(c.reply()[0], 220)
        spellings = [b"bob@example.com", b"BOB@Example.COM", b'"bob"@example.com']
        batch = b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n" + b"".join(
            b"RCPT TO:<" + spellings[i % 3] + b">\r\n" for i in range(200)) + \
            b"RCPT TO:<carol@example.com>\r\nDATA\r\n"
        c.send(batch)  # PIPELINING
        codes = [c.reply()[0] for _ in range(2 + 201 + 1)]
        self.assertEqual(codes, [250, 250] + [250] * 201 + [354])
        c.send(b"Subject: dup\r\n\r\nonce\r\n.\r\nQUIT\r\n")
        self.assertEqual(c.reply()[0], 250)
        wait_for(lambda: len(self.delivered(d)) >= 2, 20, "the deliveries")
        self.assertEqual(d.stop(), 0)
        delivered = self.delivered(d)
        self.assertEqual(sorted(e["recipient"] for e in delivered),
                         ["bob@example.com", "carol@example.com"])
        paths = sorted(os.path.relpath(m["path"], d.mail_root).split(os.sep)[:2]
                       for m in d.maildir_messages())
        self.assertEqual(paths, [["example.com", "bob"], ["example.com", "carol"]])


if __name__ == "__main__":
    unittest.main()
