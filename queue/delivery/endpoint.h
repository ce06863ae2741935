// queue/delivery/endpoint.h — where one destination's connections go: its next hops
// (addresses, with the names TLS checks), its TLS and AUTH, its shaping id and source pool.
// The vocabulary the pools (pools.h), the delivery unit and the egress wiring share.
//
// A route template (tools/relaisd/egress: one per smarthost, lmtp or mx route, by route index)
// carries the route's TLS, AUTH and source pool, and for smarthost/lmtp the hosts as written
// (`names`); the shard resolves those names, or the recipient domain's MX hosts, on its own
// resolver (mx.h) and makes one Destination per DestinationId (destinations.h) with the
// endpoints filled in, in the order to try them. Plain values; no I/O.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/config/route.h"
#include "protocols/tls/tls.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

struct Endpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  std::string name;  // "192.0.2.1:25", "[2001:db8::1]:25" or "/run/lmtp.sock".
  // The next hop as the route writes it: the host (SNI and the name verified; an address
  // literal sends no SNI) and "host:port" (whose TLS session is resumed, and which a failed
  // handshake under tls = "may" sends plaintext for a while).
  std::string host;
  std::string hop;
  uint32_t host_index = 0;  // Which host of the destination (MX host, route host) it is.
};

// The TLS and AUTH of one destination (its route's keys).
struct DestinationTls {
  config::RouteTls policy = config::RouteTls::kNone;
  // Index into the shard's client contexts (MakeClientContexts): one per distinct
  // (CA file, client certificate) among the destinations.
  uint32_t context = 0;
  tls::ClientOptions client;  // What that context is made of.
  std::string auth_user;      // Empty: no AUTH.
  std::string auth_password;  // Read from the route's auth_password_file at start.
};

// A host as a smarthost or lmtp route writes it, before resolution.
struct HostPort {
  std::string host;  // A name, or an address literal; empty for a unix socket (path).
  uint16_t port = 25;
  std::string path;  // lmtp over a unix socket: its path (no resolution).
};

// Where one destination sends its mail: an mx destination (one per DestinationId), a
// smarthost or an lmtp route.
struct Destination {
  Route route = Route::kSmarthost;  // kSmarthost, kLmtp or kMx.
  bool lmtp = false;
  // In the order to try them: MX hosts by preference (equal ones shuffled), each host's
  // addresses as the ip_family orders them; a route's hosts in the order it lists them.
  std::vector<Endpoint> endpoints;
  DestinationTls tls;
  uint32_t id = 0;  // Its DestinationId (shaping); 0 in a route template.
  // Distinct hosts (Endpoint::host_index) tried for one task before it is deferred; 0: all.
  uint32_t hosts_per_attempt_max = 0;
  int32_t source_pool = -1;  // Index into SourceOptions::pools; -1: none.
  // Route templates of smarthost/lmtp routes: the hosts as written, resolved on the shard.
  std::vector<HostPort> names;
};

}  // namespace relais::delivery
