// queue/delivery/sources.h — source IP pools: which local address (and EHLO name) an outbound
// connection uses.
//
// A source ([[source]]) is a local address to bind before connecting and the name to say in
// EHLO with it (empty: [server] hostname), with optional limits per destination: concurrent
// connections and a warm-up cap (messages per day). A pool ([[source_pool]]) is a list of
// sources with weights. A route's source_pool, or the shaping rules' source_pool for a
// destination, names the pool its connections use; none: the system picks the address and
// the EHLO name is [server] hostname.
//
// Pick chooses among the pool's sources that are under their limits for the destination and
// of the destination's address family (an IPv4 source never connects to an IPv6 host), at
// random in proportion to the weights (the injected Random); none left: nullopt, with why
// (every source at its connection limit: the pools wait for a connection to close; every
// source at its warm-up cap: the destination's queue is deferred with kWarmupCap until the
// next day window). The warm-up count is per source and destination per UTC day (the
// injected clock's wall time), kept in memory per shard (each shard gets cap / shards, at
// least 1): a restart forgets the day's counts, stated in docs/mx-delivery.md.
//
// Owned by one shard; not thread-safe. Memory: one small counter per (source, destination)
// in use, dropped with the destination (Forget).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/mail/ip_network.h"

namespace relais::delivery {

struct Source {
  std::string name;
  mail::IpAddress address;
  std::string ehlo;              // Empty: [server] hostname.
  uint32_t connections_max = 0;  // Per destination, this shard's share; 0: no limit.
  uint32_t warmup_per_day = 0;   // Messages per destination per day, this shard's share; 0: none.
};

struct SourcePool {
  std::string name;
  struct Member {
    uint32_t source = 0;  // Index into SourceOptions::sources.
    uint32_t weight = 1;  // > 0.
  };
  std::vector<Member> members;
};

struct SourceOptions {
  std::vector<Source> sources;
  std::vector<SourcePool> pools;
  // Index of a pool by name; -1 when there is none of that name.
  [[nodiscard]] int32_t PoolIndex(std::string_view name) const;
};

class Sources {
 public:
  enum class Refusal : uint8_t { kConnections, kWarmup, kFamily };
  struct Choice {
    uint32_t source = 0;  // Index into SourceOptions::sources.
  };

  Sources(const SourceOptions& options, const base::Clock& clock, base::Random& random);

  // A source of pool `pool` for a new connection to destination `destination` (an opaque id)
  // at an address of family `family` (AF_INET or AF_INET6); nullopt and `why` when none may
  // (kConnections when one at its connection limit would do once a connection closes, else
  // kWarmup when one is at its cap for the day, else kFamily: none of that family, or no such
  // pool). A source with no address (family 0) goes with either family. Weights below 1
  // count as 1.
  [[nodiscard]] std::optional<Choice> Pick(int32_t pool, uint32_t destination, int family,
                                           Refusal* why);
  // Bookkeeping for the limits: a connection from `source` to `destination` opened or closed;
  // a message sent over it (counted against the warm-up cap when accepted by the next hop).
  void Opened(uint32_t source, uint32_t destination);
  void Closed(uint32_t source, uint32_t destination);
  void Sent(uint32_t source, uint32_t destination);
  // The destination is gone: its counters go too.
  void Forget(uint32_t destination);
  // Milliseconds until the current day window ends (warm-up caps reset), for deferrals.
  [[nodiscard]] uint64_t MsUntilNextDay() const;

  [[nodiscard]] const SourceOptions& options() const { return options_; }
  // (source, destination) counters held now (tests: they go with Closed and Forget).
  [[nodiscard]] size_t size() const;

 private:
  struct Use {
    uint32_t source = 0;
    uint32_t connections = 0;
    uint32_t sent_today = 0;  // Warm-up sources only.
    uint32_t day = 0;         // UTC days since the epoch that sent_today counts.
  };

  [[nodiscard]] uint32_t Today() const;
  Use* Find(uint32_t source, uint32_t destination);
  Use& Make(uint32_t source, uint32_t destination);
  void Drop(uint32_t source, uint32_t destination);

  const SourceOptions& options_;
  const base::Clock& clock_;
  base::Random& random_;
  // By destination: the sources with a connection open to it, or a warm-up count today.
  std::unordered_map<uint32_t, std::vector<Use>> use_;
};

}  // namespace relais::delivery
