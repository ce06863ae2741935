// queue/delivery/destination_book.cc — see destination_book.h.
#include "queue/delivery/destination_book.h"

#include <netinet/in.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/net/net_address.h"

namespace relais::delivery {
namespace {

Endpoint AddressEndpoint(const mail::IpAddress& address, uint16_t port) {
  Endpoint e;
  if (address.family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&e.address);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    std::memcpy(&a->sin6_addr, address.bytes.data(), 16);
    e.length = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&e.address);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    std::memcpy(&a->sin_addr, address.bytes.data(), 4);
    e.length = sizeof(sockaddr_in);
  }
  e.name = net::SocketAddressText(e.address);
  return e;
}

// "host:port", an IPv6 literal in brackets.
std::string HopText(std::string_view host, uint16_t port) {
  if (host.find(':') != std::string_view::npos && !host.starts_with('[')) {
    return base::StrCat("[", host, "]:", port);
  }
  return base::StrCat(host, ":", port);
}

bool SameEndpoints(const std::vector<Endpoint>& a, const std::vector<Endpoint>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].host != b[i].host || a[i].hop != b[i].hop ||
        a[i].host_index != b[i].host_index) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::vector<Endpoint> MxEndpoints(const Resolution& resolution, uint16_t port) {
  std::vector<Endpoint> out;
  for (size_t i = 0; i < resolution.hosts.size(); ++i) {
    const MxHost& host = resolution.hosts[i];
    for (const mail::IpAddress& address : host.addresses) {
      Endpoint e = AddressEndpoint(address, port);
      e.host = host.name;
      e.hop = HopText(host.name, port);
      e.host_index = static_cast<uint32_t>(i);
      out.push_back(std::move(e));
    }
  }
  return out;
}

std::vector<Endpoint> HostEndpoints(const HostPort& name, const Resolution* resolution,
                                    uint32_t host_index) {
  std::vector<Endpoint> out;
  if (!name.path.empty()) {
    Endpoint e;
    auto* un = reinterpret_cast<sockaddr_un*>(&e.address);
    RELAIS_CHECK(name.path.size() < sizeof(un->sun_path)) << "checked when the route was read";
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, name.path.data(), name.path.size());
    e.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.path.size() + 1);
    e.name = name.path;
    e.hop = name.path;
    e.host_index = host_index;
    out.push_back(std::move(e));
    return out;
  }
  if (resolution == nullptr) {
    return out;
  }
  for (const MxHost& host : resolution->hosts) {
    for (const mail::IpAddress& address : host.addresses) {
      Endpoint e = AddressEndpoint(address, name.port);
      e.host = name.host;  // As written: SNI and the verified name, never the address.
      e.hop = HopText(name.host, name.port);
      e.host_index = host_index;
      out.push_back(std::move(e));
    }
  }
  return out;
}

DestinationBook::~DestinationBook() = default;

const Destination& DestinationBook::Update(uint32_t id, std::string_view key,
                                           const Destination& route_template,
                                           std::vector<Endpoint> endpoints,
                                           uint32_t hosts_per_attempt_max) {
  auto it = live_.find(id);
  if (it != live_.end() && it->second->key != key) {
    // The id was forgotten and made again for another key: the old object is retired.
    retired_.push_back(std::move(it->second));
    live_.erase(it);
    it = live_.end();
  }
  if (it == live_.end()) {
    auto entry = std::make_unique<Entry>();
    entry->key = std::string(key);
    entry->destination = std::make_unique<Destination>();
    by_object_.emplace(entry->destination.get(), entry.get());
    it = live_.emplace(id, std::move(entry)).first;
  }
  Destination& d = *it->second->destination;
  // Between Submits the pools see the newest endpoints (they copy the one a link uses).
  d.route = route_template.route;
  d.lmtp = route_template.lmtp;
  d.tls = route_template.tls;
  d.source_pool = route_template.source_pool;
  d.id = id;
  d.hosts_per_attempt_max = hosts_per_attempt_max;
  if (!SameEndpoints(d.endpoints, endpoints)) {
    d.endpoints = std::move(endpoints);
  }
  return d;
}

const Destination* DestinationBook::Find(uint32_t id) const {
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second->destination.get();
}

DestinationBook::Entry& DestinationBook::EntryOf(const Destination& destination) {
  auto it = by_object_.find(&destination);
  RELAIS_CHECK(it != by_object_.end()) << "a destination of another book";
  return *it->second;
}

void DestinationBook::Acquire(const Destination& destination) { ++EntryOf(destination).tasks; }

void DestinationBook::Drop(const Destination& destination) {
  Entry& entry = EntryOf(destination);
  RELAIS_CHECK(entry.tasks > 0);
  --entry.tasks;
}

void DestinationBook::Sweep(const std::function<bool(uint32_t)>& known,
                            const std::function<void(const Destination&)>& forget) {
  for (auto it = live_.begin(); it != live_.end();) {
    if (known(it->first)) {
      ++it;
      continue;
    }
    retired_.push_back(std::move(it->second));
    it = live_.erase(it);
  }
  std::erase_if(retired_, [&](const std::unique_ptr<Entry>& entry) {
    if (entry->tasks != 0) {
      return false;
    }
    forget(*entry->destination);
    by_object_.erase(entry->destination.get());
    return true;
  });
}

}  // namespace relais::delivery
