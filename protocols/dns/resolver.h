// protocols/dns/resolver.h — one shard's asynchronous DNS resolver: c-ares without threads,
// its sockets watched by the owner's event loop, with a cache.
//
// The owner (a shard, driving its io_uring; or a test with poll()) is told which sockets to
// watch through SocketWatcher, calls OnReadable/OnWritable when they are ready and OnTimer
// when TimeoutMs() has passed; c-ares itself never blocks and never runs a thread. The
// owner's loop does the waiting; c-ares reads and writes its own non-blocking sockets.
//
// Cache: answers are kept for their TTL (clamped to [ttl_min, ttl_max]); NXDOMAIN and no-data
// answers for the negative TTL of RFC 2308 (the SOA's minimum and TTL, whichever is lower,
// from the authority section; negative_ttl_default when there is no SOA), capped by
// negative_ttl_max. Temporary failures are not cached. The cache holds at most
// cache_entries_max answers and forgets the least recently used. Identical questions in flight
// share one query. Owned by one thread; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "protocols/dns/answer.h"

namespace relais::dns {

class SocketWatcher {
 public:
  // Watch `fd` for reading and/or writing; both false: stop watching it.
  virtual void Watch(int fd, bool readable, bool writable) = 0;

 protected:
  ~SocketWatcher() = default;
};

struct ResolverOptions {
  std::vector<std::string> servers;  // "host:port"; empty: /etc/resolv.conf.
  uint32_t timeout_ms = 2000;        // Per try.
  uint32_t tries = 2;
  size_t cache_entries_max = 10'000;
  uint32_t ttl_min_seconds = 0;
  uint32_t ttl_max_seconds = 86'400;
  uint32_t negative_ttl_default_seconds = 300;
  uint32_t negative_ttl_max_seconds = 3'600;
};

struct ResolverStats {
  uint64_t lookups = 0;  // Resolve() calls.
  uint64_t cache_hits = 0;
  uint64_t queries_sent = 0;  // Questions that went to the network.
  uint64_t joined = 0;        // Lookups that joined a query already in flight.
  uint64_t temporary_failures = 0;
};

class Resolver {
 public:
  using Callback = std::function<void(const Answer&)>;

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Resolver>> Create(
      const ResolverOptions& options, SocketWatcher& watcher, const base::Clock& clock);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // The cached answer, if there is a live one (a peek: not counted in stats).
  [[nodiscard]] std::optional<Answer> Cached(const Question& question);
  // A lookup that the cache answers, counted as a lookup and a cache hit; nullopt (and not
  // counted) when the cache cannot: then Resolve() it. Lets an owner answer from the cache
  // without the callback running inside Resolve().
  [[nodiscard]] std::optional<Answer> FromCache(const Question& question);
  // Answers `question`: at once (before returning) from the cache, else later, from
  // OnReadable/OnTimer, once the servers answered or gave up.
  void Resolve(const Question& question, Callback done);

  void OnReadable(int fd);
  void OnWritable(int fd);
  // Milliseconds until OnTimer is due; -1 when nothing is in flight.
  [[nodiscard]] int64_t TimeoutMs() const;
  void OnTimer();

  [[nodiscard]] const ResolverStats& stats() const { return stats_; }
  [[nodiscard]] size_t cache_entries() const { return cache_.size(); }
  [[nodiscard]] size_t in_flight() const { return waiting_.size(); }

 private:
  struct Entry {
    Answer answer;
    uint64_t expires_ms;
    std::list<std::string>::iterator lru;
  };
  struct Query;

  Resolver(const ResolverOptions& options, const base::Clock& clock);
  static void OnReply(void* arg, int status, int timeouts, unsigned char* reply, int length);
  void Finish(const std::string& key, Answer answer, uint32_t negative_ttl_seconds);
  void Store(const std::string& key, const Answer& answer, uint32_t ttl_seconds);

  const ResolverOptions options_;
  const base::Clock& clock_;
  void* channel_ = nullptr;  // ares_channel
  std::unordered_map<std::string, Entry> cache_;
  std::list<std::string> lru_;  // Most recent first.
  std::unordered_map<std::string, std::vector<Callback>> waiting_;
  ResolverStats stats_;
};

// RFC 2308 section 5: the negative TTL of a reply, min(SOA TTL, SOA MINIMUM) from its
// authority section; nullopt when it has no SOA (or cannot be read). Exposed for tests.
[[nodiscard]] std::optional<uint32_t> NegativeTtl(const unsigned char* reply, int length);

}  // namespace relais::dns
