// tools/relaisd/egress.h — wiring for the outbound pools (queue/delivery/pools.h): the route
// table's next hops resolved to addresses once at startup, and the names the daemon's config
// and shard use for the pools. The pools themselves (links, queues, dispatch, failover) live
// in the delivery room; a shard constructs them over its engine's io::Net.
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/config/config.h"
#include "queue/delivery/pools.h"

namespace relais::relaisd {

using Endpoint = delivery::Endpoint;
using Destination = delivery::Destination;
using EgressOptions = delivery::PoolOptions;

// The destination of every route, by route index; nullopt for maildir and reject routes. Host
// names are resolved here, once, on the startup thread (getaddrinfo blocks): the shard's own
// resolver (tools/relaisd/shard_resolver) serves the sender checks only so far; MX delivery
// will resolve next hops with it. Each route's outbound TLS and AUTH settings come along: its
// auth_password_file is read here (a regular file others cannot read, first line), and the TLS
// client contexts are numbered (delivery::NumberClientContexts; each shard makes its own with
// delivery::MakeClientContexts). An error names the route and the host or file.
[[nodiscard]] absl::StatusOr<std::vector<std::optional<Destination>>> ResolveDestinations(
    const std::vector<config::Route>& routes);

}  // namespace relais::relaisd
