"""A small authoritative DNS server for tests: the fake internet's DNS, on loopback.

It answers from a zone given as a dict (or a JSON file of the same shape), over UDP and TCP on
one port of a 127.x address, and is a process of its own, started by the test and stopped by
its PID (FakeDns below). The zone maps a name to its records, or to a word that says how the
name fails:

    {
      "example.test": {"MX": [[10, "mx1.example.test"], [20, "mx2.example.test"]]},
      "mx1.example.test": {"A": ["127.0.1.1"], "AAAA": ["::1"]},
      "www.example.test": {"CNAME": "mx1.example.test"},
      "null.test": {"MX": [[0, "."]]},              # RFC 7505 null MX
      "gone.test": "NXDOMAIN",                      # also every name not in the zone
      "broken.test": "SERVFAIL",
      "silent.test": "TIMEOUT",                     # never answered (UDP nor TCP)
    }

A name in the zone without records of the asked type answers NOERROR with no data (and an SOA
in the authority section, RFC 2308), as a real zone does; CNAMEs are followed inside the zone.
Names match case-insensitively, with or without the final dot. The zone file is read again
when it changes, so a test can change the world while a daemon runs. Every question goes to
the query log ("name TYPE -> RCODE" per line), so a test can count lookups.

Run as a script: fake_dns.py --zone FILE [--address 127.0.0.53] [--port 0] [--log FILE];
it prints "fake_dns: listening on ADDRESS:PORT" once both sockets are bound.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

TTL = 5  # Short: a test that changes the zone does not wait long for caches.


class FakeDns:
    """fake_dns.py as a child process of the test. `zone`: the dict above. Stopped by PID."""

    def __init__(self, zone, address="127.0.0.53"):
        self.dir = tempfile.mkdtemp(prefix="relais-fake-dns-")
        self.zone_path = os.path.join(self.dir, "zone.json")
        self.log_path = os.path.join(self.dir, "queries.log")
        self.out_path = os.path.join(self.dir, "out.log")
        self.set_zone(zone)
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--zone", self.zone_path,
             "--address", address, "--port", "0", "--log", self.log_path],
            stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        self.address = None
        while self.address is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"fake_dns exited with {self.proc.returncode}: "
                                     f"{self.text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"fake_dns did not start: {self.text()}")
            for line in self.text().splitlines():
                if line.startswith("fake_dns: listening on "):
                    self.address = line.split()[-1]
            time.sleep(0.02)
        self.host, port = self.address.rsplit(":", 1)
        self.port = int(port)

    def text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def set_zone(self, zone):
        """Replaces the zone; the server reads it before its next answer."""
        tmp = self.zone_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(zone, f)
        os.replace(tmp, self.zone_path)

    def queries(self):
        """[(name, type, rcode)] asked so far."""
        if not os.path.exists(self.log_path):
            return []
        out = []
        with open(self.log_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4:
                    out.append((parts[0], parts[1], parts[3]))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.out.closed:
            self.out.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the server (only the child process imports dnslib) ----

def _import_dnslib():
    try:
        import dnslib
    except ImportError:
        # Debian's python3-dnslib installs for the system interpreter; a pyenv or venv
        # interpreter running the tests does not see it, but the module is pure Python.
        sys.path.append("/usr/lib/python3/dist-packages")
        import dnslib
    return dnslib


class Zone:
    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.names = {}
        self.lock = threading.Lock()

    def current(self):
        with self.lock:
            try:
                st = os.stat(self.path)
                mtime = (st.st_ino, st.st_mtime_ns)  # set_zone renames a new file over it.
            except OSError:
                return self.names
            if mtime != self.mtime:
                with open(self.path) as f:
                    raw = json.load(f)
                self.names = {k.lower().rstrip("."): v for k, v in raw.items()}
                self.mtime = mtime
            return self.names


def answer(dnslib, zone, data):
    """The reply to one query (bytes), or None: no answer at all."""
    try:
        request = dnslib.DNSRecord.parse(data)
    except Exception:  # A test server: a malformed question is dropped, not fatal.
        return None, "?", "?", "DROP"
    q = request.q
    qname = str(q.qname).lower().rstrip(".")
    qtype = dnslib.QTYPE.get(q.qtype, str(q.qtype))
    reply = request.reply()  # QR, AA, RD copied, the question echoed.
    reply.header.ra = 1
    names = zone.current()
    name = qname
    for _ in range(8):  # CNAME chains inside the zone, bounded.
        entry = names.get(name)
        if entry is None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            break
        if isinstance(entry, str):
            word = entry.upper()
            if word == "TIMEOUT":
                return None, qname, qtype, "TIMEOUT"
            reply.header.rcode = getattr(dnslib.RCODE, word)
            break
        if "CNAME" in entry and qtype != "CNAME":
            target = entry["CNAME"].lower().rstrip(".")
            reply.add_answer(dnslib.RR(name, dnslib.QTYPE.CNAME, ttl=TTL,
                                       rdata=dnslib.CNAME(target + ".")))
            name = target
            continue
        for value in entry.get(qtype, []):
            if qtype == "A":
                rdata = dnslib.A(value)
            elif qtype == "AAAA":
                rdata = dnslib.AAAA(value)
            elif qtype == "MX":
                preference, exchange = value
                exchange = exchange.rstrip(".") + "." if exchange != "." else "."
                rdata = dnslib.MX(exchange, preference)
            elif qtype == "CNAME":
                rdata = dnslib.CNAME(value.rstrip(".") + ".")
            elif qtype == "TXT":
                rdata = dnslib.TXT(value)
            else:
                continue
            reply.add_answer(dnslib.RR(name, q.qtype, ttl=TTL, rdata=rdata))
        break
    if reply.header.rcode in (dnslib.RCODE.NOERROR, dnslib.RCODE.NXDOMAIN) and not reply.rr:
        apex = name.split(".", 1)[-1] if "." in name else name
        reply.add_auth(dnslib.RR(apex, dnslib.QTYPE.SOA, ttl=TTL, rdata=dnslib.SOA(
            "ns.fake.", "hostmaster.fake.", (1, 60, 60, 60, TTL))))
    return reply.pack(), qname, qtype, dnslib.RCODE.get(reply.header.rcode)


def serve(args):
    dnslib = _import_dnslib()
    zone = Zone(args.zone)
    zone.current()
    log = open(args.log, "a", buffering=1) if args.log else None
    log_lock = threading.Lock()

    def record(qname, qtype, rcode):
        if log is not None:
            with log_lock:
                log.write(f"{qname or '.'} {qtype} -> {rcode}\n")

    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    # One port for UDP and TCP: bind UDP first (port 0 picks one), then TCP on the same.
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((args.address, args.port))
        port = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((args.address, port))
            break
        except OSError:
            tcp.close()
            udp.close()
            if args.port != 0:
                raise
    else:
        raise SystemExit("fake_dns: no port free for both UDP and TCP")
    tcp.listen(64)

    def udp_loop():
        while True:
            data, peer = udp.recvfrom(65535)
            out, qname, qtype, rcode = answer(dnslib, zone, data)
            record(qname, qtype, rcode)
            if out is None:
                continue
            if len(out) > 512:  # RFC 1035 4.2.1: truncate, the client asks again over TCP.
                request = dnslib.DNSRecord.parse(data)
                short = request.reply()
                short.header.tc = 1
                out = short.pack()
            udp.sendto(out, peer)

    def tcp_conn(conn):
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    head = conn.recv(2, socket.MSG_WAITALL)
                    if len(head) < 2:
                        return
                    data = conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
                    out, qname, qtype, rcode = answer(dnslib, zone, data)
                    record(qname, qtype, rcode)
                    if out is None:
                        continue  # The question stays unanswered until the client gives up.
                    conn.sendall(len(out).to_bytes(2, "big") + out)
            except OSError:
                return

    def tcp_loop():
        while True:
            conn, _ = tcp.accept()
            threading.Thread(target=tcp_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=tcp_loop, daemon=True).start()
    shown = f"[{args.address}]" if family == socket.AF_INET6 else args.address
    print(f"fake_dns: listening on {shown}:{port}", flush=True)
    udp_loop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zone", required=True, help="JSON file: name -> records or failure")
    parser.add_argument("--address", default="127.0.0.53")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", default="", help="query log file")
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
