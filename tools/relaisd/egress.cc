// tools/relaisd/egress.cc — see egress.h.
#include "tools/relaisd/egress.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include "core/base/strings.h"
#include "core/net/net_address.h"

namespace relais::relaisd {
// The addresses' helpers moved to core/net; this file's own reshape qualifies its calls.
using net::SocketAddressText, net::SplitHostPort;

using base::StrCat;

absl::StatusOr<std::vector<std::optional<Destination>>> ResolveDestinations(
    const std::vector<config::Route>& routes) {
  std::vector<std::optional<Destination>> out(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    const config::Route& route = routes[i];
    std::vector<std::string> hops;
    if (route.type == config::RouteType::kSmarthost) {
      hops = route.hosts;
    } else if (route.type == config::RouteType::kLmtp) {
      hops = {route.address};
    } else {
      continue;
    }
    Destination d;
    d.lmtp = route.type == config::RouteType::kLmtp;
    d.route = d.lmtp ? delivery::Route::kLmtp : delivery::Route::kSmarthost;
    for (const std::string& hop : hops) {
      const std::string where = StrCat("route for ", route.domain, ": next hop ", hop);
      if (d.lmtp && hop.starts_with('/')) {
        Endpoint e;
        auto* un = reinterpret_cast<sockaddr_un*>(&e.address);
        if (hop.size() >= sizeof(un->sun_path)) {
          return absl::InvalidArgumentError(StrCat(where, ": socket path too long"));
        }
        un->sun_family = AF_UNIX;
        std::memcpy(un->sun_path, hop.data(), hop.size());
        e.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + hop.size() + 1);
        e.name = hop;
        d.endpoints.push_back(std::move(e));
        continue;
      }
      std::string host, port;
      if (!net::SplitHostPort(hop, host, port)) {
        return absl::InvalidArgumentError(
            StrCat(where, ": expected host:port, [v6]:port", d.lmtp ? " or a socket path" : ""));
      }
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_NUMERICSERV;
      addrinfo* result = nullptr;
      const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
      if (rc != 0 || result == nullptr) {
        return absl::InvalidArgumentError(StrCat(where, ": cannot resolve: ", gai_strerror(rc)));
      }
      for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
        Endpoint e;
        std::memcpy(&e.address, a->ai_addr, a->ai_addrlen);
        e.length = a->ai_addrlen;
        e.name = net::SocketAddressText(e.address);
        d.endpoints.push_back(std::move(e));
      }
      freeaddrinfo(result);
    }
    out[i] = std::move(d);
  }
  return out;
}

}  // namespace relais::relaisd
