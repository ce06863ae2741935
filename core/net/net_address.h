// core/net/net_address.h — "host:port" text and socket addresses, for listeners and next
// hops alike, and the peer address of an accepted connection. Pure (no I/O, no resolution).
#pragma once

#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>

#include "core/mail/ip_network.h"

namespace relais::net {

// Splits "host:port" or "[v6]:port" at the last colon; the brackets are dropped. False when
// there is no colon, the port is not a number in 1..65535 (0 when `allow_port_zero`), or a
// bracket is unbalanced.
[[nodiscard]] bool SplitHostPort(std::string_view address, std::string& host, std::string& port,
                                 bool allow_port_zero = false);

// "192.0.2.1:25" or "[2001:db8::1]:25"; the path for a unix socket.
[[nodiscard]] std::string SocketAddressText(const sockaddr_storage& address);

// The IP address of a peer as accept or getpeername gave it (an IPv4-mapped IPv6 address is
// unmapped); nullopt for other families (a unix socket).
[[nodiscard]] std::optional<mail::IpAddress> PeerAddress(const sockaddr_storage& address);

}  // namespace relais::net
