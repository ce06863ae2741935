// queue/delivery/destination_book.h — the pools' Destination object of every DestinationId a
// shard knows (destinations.h): its endpoints made from a Resolution (mx.h) or a route's
// resolved host names, its TLS, AUTH and source pool from the route template (endpoint.h).
//
// The pools key their pools by the Destination's address, so an id keeps its object while it
// lives: a newer resolution (the TTL ran out, the equal-preference order was drawn again)
// replaces its endpoints in place, between Submits (the pools copy the endpoint a link uses
// and start their records over when the endpoints change). An id that Destinations forgot, or
// reused for another key, has its object retired; a retired object is freed once no job of
// this shard holds it (Acquire / Drop), after the caller's `forget` ran on it (Pools::Forget:
// the pools drop their record of it first; Destinations forgets only destinations with
// nothing queued, in flight or connected). The caller sweeps once in a while (Sweep: linear in
// the book, so not every turn).
//
// Owned by one shard's Delivery; not thread-safe; no I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "queue/delivery/endpoint.h"
#include "queue/delivery/mx.h"

namespace relais::delivery {

// The endpoints of an mx destination, in the order to try them: each MX host of `resolution`
// (host_index its place), each of its addresses at `port`; host = the MX host name, hop =
// "host:port".
[[nodiscard]] std::vector<Endpoint> MxEndpoints(const Resolution& resolution, uint16_t port);
// The endpoints of one host of a smarthost or lmtp route: a unix socket path as is (no
// resolution), else each address of `resolution` (the host's ResolveHost) at the host's port;
// host and hop as the route writes them.
[[nodiscard]] std::vector<Endpoint> HostEndpoints(const HostPort& name,
                                                  const Resolution* resolution,
                                                  uint32_t host_index);

class DestinationBook {
 public:
  DestinationBook() = default;
  ~DestinationBook();
  DestinationBook(const DestinationBook&) = delete;
  DestinationBook& operator=(const DestinationBook&) = delete;

  // The Destination of `id` (made for `key`): the template's route, TLS, AUTH and source pool,
  // `endpoints`, `hosts_per_attempt_max`. The same object while the id has the same key
  // (updated in place); a new one for another key (the old one retired).
  const Destination& Update(uint32_t id, std::string_view key, const Destination& route_template,
                            std::vector<Endpoint> endpoints, uint32_t hosts_per_attempt_max);
  [[nodiscard]] const Destination* Find(uint32_t id) const;

  // A task of the shard holds `destination` (one of this book's) until Drop.
  void Acquire(const Destination& destination);
  void Drop(const Destination& destination);

  // Ids for which `known(id)` is false are forgotten; every forgotten or retired object no
  // task holds is handed to `forget` and freed.
  void Sweep(const std::function<bool(uint32_t)>& known,
             const std::function<void(const Destination&)>& forget);

  [[nodiscard]] size_t size() const { return live_.size(); }
  [[nodiscard]] size_t retired() const { return retired_.size(); }

 private:
  struct Entry {
    std::string key;
    std::unique_ptr<Destination> destination;
    uint32_t tasks = 0;
  };
  Entry& EntryOf(const Destination& destination);

  std::unordered_map<uint32_t, std::unique_ptr<Entry>> live_;  // By id.
  std::vector<std::unique_ptr<Entry>> retired_;
  std::unordered_map<const Destination*, Entry*> by_object_;
};

}  // namespace relais::delivery
