// core/config/route.h — a route as the config file declares it: recipient domain → where its
// mail goes. Parsed and validated by the daemon's schema (tools/relaisd/config_schema.cc) so a
// bad file fails at start, not at first delivery; queue/routing's Router matches and uses them.
// TODO(#14): this vocabulary type moves to queue/routing (routing::Route) in a change that may
// also edit its users in queue/delivery (status.h includes core/config/config.h for it) and
// tools/relaisd/egress; core/config itself does not use it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace relais::config {

// kMx: the recipient domain's mail exchangers (RFC 5321 5.1, RFC 7505), found on the shard's
// resolver (queue/delivery/mx.h); relayed domains no route matches are delivered this way too.
enum class RouteType : uint8_t { kMaildir, kSmarthost, kLmtp, kReject, kMx };

// Outbound TLS of a smarthost or lmtp route (RFC 3207 STARTTLS):
//   kNone     never STARTTLS;
//   kMay      STARTTLS when offered; a next hop whose handshake fails gets plaintext for a
//             while (the daemon's tls.fallback_ttl);
//   kEncrypt  STARTTLS or nothing: a next hop without it, or whose handshake fails, defers;
//   kVerify   as kEncrypt, and the chain must verify against tls_ca_file and name the host
//             as the route writes it (so its hosts must be names, not address literals).
enum class RouteTls : uint8_t { kNone, kMay, kEncrypt, kVerify };

struct Route {
  std::string domain;  // "example.com", "*.example.com" or "*".
  RouteType type = RouteType::kMaildir;
  std::string path;                // maildir: root directory.
  std::vector<std::string> hosts;  // smarthost: host:port list, tried in order.
  std::string address;             // lmtp: host:port or unix socket path.
  // smarthost, lmtp (TCP) and mx. Default: kMay for smarthost and mx, kNone for lmtp.
  RouteTls tls = RouteTls::kNone;
  std::string tls_ca_file;       // PEM CA bundle for kVerify; empty: the system store.
  std::string tls_client_chain;  // Optional client certificate (PEM chain, leaf first)...
  std::string tls_client_key;    // ...and its key; both or neither.
  // Outbound AUTH (RFC 4954), only over TLS (tls kEncrypt or kVerify). The password file is
  // read at start by the egress wiring (one line; not readable by others).
  std::string auth_user;
  std::string auth_password_file;
  // smarthost and mx: the [[source_pool]] whose addresses and EHLO names this route's
  // connections use (queue/delivery/sources.h); empty: the shaping rules' pool, else the
  // system's choice of source address and [server] hostname.
  std::string source_pool;
};

}  // namespace relais::config
