// tools/relaisd/egress.h — wiring for the outbound pools (queue/delivery/pools.h): the route
// table's destination templates made once at startup, and the names the daemon's config
// and shard use for the pools. The pools themselves (links, queues, dispatch, failover) live
// in the delivery room; a shard constructs them over its engine's io::Net.
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/config/config.h"
#include "queue/delivery/pools.h"
#include "queue/delivery/sources.h"

namespace relais::relaisd {

using Endpoint = delivery::Endpoint;
using Destination = delivery::Destination;
using EgressOptions = delivery::PoolOptions;

// The template of every route's destinations, by route index; nullopt for maildir and reject
// routes. Nothing is resolved here (no blocking lookup at start): smarthost and lmtp templates
// carry their hosts as written (`names`: host and port, or an lmtp unix socket's path), which
// the shard resolves on its own resolver (delivery::NextHopResolver::ResolveHost); a host
// written as an address literal, and a unix socket, are filled in as endpoints at once too.
// An mx route's template has no hosts: each recipient domain's MX hosts make its
// destinations on the shard; it carries hosts_per_attempt_max ([mx]). Every template carries
// its route's outbound TLS and AUTH (the auth_password_file is read here: a regular file
// others cannot read, first line) and its source pool (an index into `sources`' pools); the
// TLS client contexts are numbered (delivery::NumberClientContexts; each shard makes its own
// with delivery::MakeClientContexts). An error names the route and the host or file.
[[nodiscard]] absl::StatusOr<std::vector<std::optional<Destination>>> MakeRouteTemplates(
    const std::vector<config::Route>& routes, uint32_t hosts_per_attempt_max,
    const delivery::SourceOptions& sources);

// True when a shard needs a DNS resolver for its next hops: an mx route, or a smarthost or
// lmtp route that names a host (not an address literal, not a unix socket).
[[nodiscard]] bool NeedsDns(const std::vector<std::optional<Destination>>& templates);

}  // namespace relais::relaisd
