#!/usr/bin/env python3
"""Fails when an #include crosses a layer the wrong way (../shared/STYLE.md section 2).

  core/uring -> core/io -> core/{buffer,ring,timer,log,metrics,config,mail} -> core/base
  core/net   -> core/io (the socket seam) and below; never core/uring (UringNet lives there)
  protocols/* -> core/{base,buffer,mail,metrics,log}   (never core/io, never liburing)
  queue/*     -> core/* except core/uring
  queue/delivery -> also protocols/smtp/client_session.h (the outbound SMTP/LMTP session)
                    and protocols/tls/tls.h (the client TLS transport its links put under it)
                    and protocols/dns/{answer,resolver,hosts_file}.h (MX resolution on the
                    shard's resolver; route host names from the hosts file first)
  protocols/tls -> also core/net/stream_pump.h (the Transport seam it implements)
  tools/*     -> anything
The connections (ingress, the outbound pools, the request server, relais-bench) drive sockets
only through the one stream pump: no hand-written recv/send/close flags (hand_written_pumps).
Third-party libraries stay in their modules: liburing in core/uring, BoringSSL in
protocols/crypto (and the TLS transport, protocols/tls), c-ares in protocols/dns, toml++ in
core/config, libcrypt in protocols/sasl (and relaisctl); Abseil's flags only under tools/.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')

CORE_LEAVES = {"buffer", "ring", "timer", "log", "metrics", "config", "mail"}


def allowed(src_dir, target):
    """src_dir like 'core/io'; target an include path from the repository root."""
    parts = target.split("/")
    if parts[0] not in ("core", "protocols", "queue", "tools", "tests", "bench"):
        return True  # System or third-party header: checked separately.
    tgt = "/".join(parts[:2])
    if tgt == src_dir:
        return True
    top = src_dir.split("/")[0]
    if top == "tools" or top == "tests" or top == "bench":
        return parts[0] != "tests" or top == "tests"
    if top == "core":
        order = {"core/base": 0, **{f"core/{leaf}": 1 for leaf in CORE_LEAVES},
                 "core/io": 2, "core/net": 3, "core/uring": 3}
        if tgt not in order or src_dir not in order:
            return False
        return order[tgt] < order[src_dir] or (order[tgt] == 1 and order[src_dir] == 1 and
                                                tgt in ("core/mail", "core/log"))
    if top == "protocols":
        if src_dir == "protocols/tls" and target in ("core/net/stream_pump.h",
                                                     "core/net/buffer_session.h"):
            # The TLS transport plugs into the pump's seam (tls_pair.h, test support, joins two
            # over BufferSessions); never a socket.
            return True
        return tgt in ("core/base", "core/buffer", "core/mail", "core/metrics", "core/log") or \
            (parts[0] == "protocols")
    if top == "queue":
        if src_dir == "queue/delivery" and target in ("protocols/smtp/client_session.h",
                                                      "protocols/tls/tls.h",
                                                      "protocols/dns/answer.h",
                                                      "protocols/dns/hosts_file.h",
                                                      "protocols/dns/resolver.h"):
            # The room drives outbound sessions, over TLS too, and resolves MX hosts on the
            # shard's resolver (mx.h); never the engine (core/uring).
            return True
        return (parts[0] == "core" and tgt != "core/uring") or parts[0] == "queue"
    return False


# toml++ is read in core/config only (no-exceptions mode, header-only); command-line flags
# (Abseil's) belong to the programs under tools/ (tools/cli), never to a library below them.
# BoringSSL has two homes: the primitives DKIM signs and verifies with (protocols/crypto) and
# the TLS transport the stream pump will carry (protocols/tls).
THIRD_PARTY_HOME = {"liburing.h": {"core/uring"},
                    "openssl/": {"protocols/crypto", "protocols/tls"},
                    "ares.h": {"protocols/dns"}, "toml++/": {"core/config"},
                    "crypt.h": {"protocols/sasl"},
                    "absl/flags/": {"tools/cli"}}


# The one stream pump (core/net/stream_pump.h) owns the socket state of every connection: a
# unit on it must not grow its own flags again.
PUMP_STATE = re.compile(r"\bbool\s+(recv_armed|send_in_flight|close_submitted)\b")
PUMPED = ("queue/", "tools/", "core/net/request_server", "core/net/acceptor")


def hand_written_pumps():
    """Every connection outside the pump itself keeps no socket flags of its own."""
    errors = []
    for top in ("queue", "tools", "core/net"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
                if not rel.startswith(PUMPED) or not name.endswith((".h", ".cc")):
                    continue
                with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = PUMP_STATE.search(line)
                        if m:
                            errors.append(f"{rel}:{lineno}: hand-written pump state "
                                          f"'{m.group(1)}': use core/net/stream_pump.h")
    return errors


def main():
    errors = []
    for top in ("core", "protocols", "queue"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            src_dir = os.path.relpath(dirpath, ROOT)
            for name in files:
                if not name.endswith((".h", ".cc")) or name.endswith(("_test.cc", "_bench.cc")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = m.group(1)
                        for prefix, homes in THIRD_PARTY_HOME.items():
                            if target.startswith(prefix) and src_dir not in homes:
                                errors.append(f"{src_dir}/{name}:{lineno}: {target} belongs "
                                              f"in {' or '.join(sorted(homes))} only")
                        if not allowed(src_dir, target):
                            errors.append(f"{src_dir}/{name}:{lineno}: {src_dir} may not "
                                          f"include {target}")
    errors += hand_written_pumps()
    for e in errors:
        print(e)
    print(f"layering: {len(errors)} wrong edge(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
