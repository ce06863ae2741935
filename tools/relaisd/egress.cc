// tools/relaisd/egress.cc — see egress.h.
#include "tools/relaisd/egress.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include "core/base/strings.h"
#include "core/mail/ip_network.h"
#include "core/net/net_address.h"

namespace relais::relaisd {
// The addresses' helpers moved to core/net; this file's own reshape qualifies its calls.
using net::SocketAddressText, net::SplitHostPort;

using base::StrCat;

namespace {

// The route's outbound AUTH password: the first line of `path`, which must be a regular file
// that others cannot read (it is a secret; the config file may be world-readable).
absl::StatusOr<std::string> ReadPassword(const std::string& where, const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        StrCat(where, ": auth_password_file ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  std::string text;
  absl::Status status;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError(
        StrCat(where, ": auth_password_file ", path, ": not a regular file"));
  } else if ((st.st_mode & S_IRWXO) != 0) {
    status = absl::InvalidArgumentError(StrCat(where, ": auth_password_file ", path,
                                               ": others may read it (chmod o-rwx, e.g. 0600)"));
  } else {
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0 && text.size() < 65536) {
      text.append(buffer, static_cast<size_t>(n));
    }
    if (n < 0) {
      status = absl::InvalidArgumentError(
          StrCat(where, ": auth_password_file ", path, ": ", std::strerror(errno)));
    }
  }
  close(fd);
  if (!status.ok()) {
    return status;
  }
  text = text.substr(0, text.find_first_of("\r\n"));
  if (text.empty()) {
    return absl::InvalidArgumentError(
        StrCat(where, ": auth_password_file ", path, ": the first line is empty"));
  }
  return text;
}

}  // namespace

absl::StatusOr<std::vector<std::optional<Destination>>> MakeRouteTemplates(
    const std::vector<config::Route>& routes, uint32_t hosts_per_attempt_max,
    const delivery::SourceOptions& sources) {
  std::vector<std::optional<Destination>> out(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    const config::Route& route = routes[i];
    std::vector<std::string> hops;
    Destination d;
    if (route.type == config::RouteType::kSmarthost) {
      hops = route.hosts;
      d.route = delivery::Route::kSmarthost;
    } else if (route.type == config::RouteType::kLmtp) {
      hops = {route.address};
      d.route = delivery::Route::kLmtp;
      d.lmtp = true;
    } else if (route.type == config::RouteType::kMx) {
      d.route = delivery::Route::kMx;
      d.hosts_per_attempt_max = hosts_per_attempt_max;
    } else {
      continue;
    }
    if (!route.source_pool.empty()) {
      for (size_t p = 0; p < sources.pools.size(); ++p) {
        if (sources.pools[p].name == route.source_pool) {
          d.source_pool = static_cast<int32_t>(p);
        }
      }
      if (d.source_pool < 0) {
        return absl::InvalidArgumentError(StrCat("route for ", route.domain, ": source_pool '",
                                                 route.source_pool, "' is not a [[source_pool]]"));
      }
    }
    d.tls.policy = route.tls;
    if (!route.tls_ca_file.empty()) {
      d.tls.client.ca_file = route.tls_ca_file;
    } else if (route.tls != config::RouteTls::kVerify) {
      // Nothing is verified: no CA bundle to load (nor to be missing).
      d.tls.client.ca_file.clear();
    }
    d.tls.client.client_certificate = {route.tls_client_chain, route.tls_client_key};
    d.tls.auth_user = route.auth_user;
    if (!route.auth_password_file.empty()) {
      auto password = ReadPassword(StrCat("route for ", route.domain), route.auth_password_file);
      if (!password.ok()) {
        return password.status();
      }
      d.tls.auth_password = std::move(*password);
    }
    for (uint32_t h = 0; h < hops.size(); ++h) {
      const std::string& hop = hops[h];
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
        e.hop = hop;
        e.host_index = h;
        d.endpoints.push_back(std::move(e));
        d.names.push_back(delivery::HostPort{"", 0, hop});
        continue;
      }
      std::string host, port;
      uint32_t port_number = 0;
      if (!net::SplitHostPort(hop, host, port) || host.empty() || port.empty() || port.size() > 5 ||
          !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          (port_number = static_cast<uint32_t>(std::stoul(port))) == 0 || port_number > 65535) {
        return absl::InvalidArgumentError(
            StrCat(where, ": expected host:port, [v6]:port", d.lmtp ? " or a socket path" : ""));
      }
      d.names.push_back(delivery::HostPort{host, static_cast<uint16_t>(port_number), ""});
      // An address literal needs no lookup: its endpoint now. Names are the shard's to resolve.
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
      addrinfo* result = nullptr;
      if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0 || result == nullptr) {
        continue;
      }
      for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
        Endpoint e;
        std::memcpy(&e.address, a->ai_addr, a->ai_addrlen);
        e.length = a->ai_addrlen;
        e.name = net::SocketAddressText(e.address);
        e.host = host;  // As written: SNI (none for an address) and the verified name.
        e.hop = hop;
        e.host_index = h;
        d.endpoints.push_back(std::move(e));
      }
      freeaddrinfo(result);
    }
    out[i] = std::move(d);
  }
  delivery::NumberClientContexts(out);
  return out;
}

bool NeedsDns(const std::vector<std::optional<Destination>>& templates) {
  for (const std::optional<Destination>& d : templates) {
    if (!d) {
      continue;
    }
    if (d->route == delivery::Route::kMx) {
      return true;
    }
    for (const delivery::HostPort& name : d->names) {
      if (!name.host.empty() && !mail::IpAddress::Parse(name.host)) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace relais::relaisd
