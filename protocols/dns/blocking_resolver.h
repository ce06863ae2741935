// protocols/dns/blocking_resolver.h — c-ares, one question at a time, waiting for the answer.
//
// For command-line tools (relais-auth), which answer one question and exit. The daemon's
// shards never block: they use dns::Resolver (resolver.h), driven on each shard's io_uring by
// tools/relaisd/shard_resolver.h. Answers keep NXDOMAIN,
// no data and temporary failure apart (answer.h). Servers: "host:port" / "[v6]:port" entries, or
// the system's /etc/resolv.conf when none are given. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "protocols/dns/answer.h"

namespace relais::dns {

struct BlockingResolverOptions {
  std::vector<std::string> servers;  // Empty: /etc/resolv.conf.
  uint32_t timeout_ms = 3000;        // Per try.
  uint32_t tries = 2;
};

class BlockingResolver {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BlockingResolver>> Create(
      const BlockingResolverOptions& options);
  ~BlockingResolver();
  BlockingResolver(const BlockingResolver&) = delete;
  BlockingResolver& operator=(const BlockingResolver&) = delete;

  [[nodiscard]] Answer Resolve(const Question& question);
  // Questions sent so far.
  [[nodiscard]] uint32_t queries() const { return queries_; }

 private:
  BlockingResolver() = default;
  void* channel_ = nullptr;  // ares_channel
  uint32_t queries_ = 0;
};

// Shared with resolver.cc. An answer from a DNS reply of type `type` that c-ares accepted
// (ARES_SUCCESS), with the lowest TTL of its answer records.
[[nodiscard]] Answer ParseReply(RecordType type, const unsigned char* reply, int length);
// What a c-ares status means for SPF and DMARC: ENODATA no data, ENOTFOUND no such name, the
// rest temporary.
[[nodiscard]] AnswerStatus StatusOfAresCode(int ares_status);
// A c-ares channel (returned as ares_channel) for both resolvers: `servers` ("host:port") or
// /etc/resolv.conf, per-try timeout and tries, no search list; with `socket_state` set, c-ares
// reports the sockets to watch through it (socket_state(data, fd, readable, writable)).
[[nodiscard]] absl::StatusOr<void*> OpenAresChannel(const std::vector<std::string>& servers,
                                                    uint32_t timeout_ms, uint32_t tries,
                                                    void (*socket_state)(void*, int, int, int),
                                                    void* data);
// The lowest TTL of the answer section's records; nullopt when unreadable or empty.
[[nodiscard]] std::optional<uint32_t> AnswerTtl(const unsigned char* reply, int length);

}  // namespace relais::dns
