// tools/relaisd/shard_resolver.h — one shard's DNS resolver (protocols/dns) on the shard's
// io_uring: c-ares's sockets are watched with one-shot polls, its timeouts run from the
// shard's loop, and no resolver thread exists.
//
// c-ares says which sockets to watch (dns::SocketWatcher); each watched socket has one poll in
// flight for the events wanted; when it completes, c-ares reads or writes the socket itself
// and the poll is armed again. A socket c-ares stops watching (and may close, and reuse the
// number for a new one) has its poll cancelled; the poll's record is kept until its last
// completion has run, then freed on the next Tick(). Owned by the shard; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/uring/engine.h"
#include "protocols/dns/resolver.h"

namespace relais::relaisd {

class ShardResolver final : dns::SocketWatcher {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ShardResolver>> Create(
      uring::Engine& engine, const dns::ResolverOptions& options, const base::Clock& clock);
  ~ShardResolver();
  ShardResolver(const ShardResolver&) = delete;
  ShardResolver& operator=(const ShardResolver&) = delete;

  [[nodiscard]] dns::Resolver& resolver() { return *resolver_; }
  // Once per loop turn: runs c-ares's timeouts when due and frees finished polls. Returns the
  // milliseconds until the next is due (the loop waits no longer), -1 when none is.
  int64_t Tick();
  // Sockets watched now (for tests).
  [[nodiscard]] size_t watched() const { return polls_.size(); }

 private:
  struct Poll;
  explicit ShardResolver(uring::Engine& engine);
  void Watch(int fd, bool readable, bool writable) override;
  void OnPoll(Poll& poll, int32_t result);
  void Arm(Poll& poll);
  void Retire(int fd);

  uring::Engine& engine_;
  std::unordered_map<int, std::unique_ptr<Poll>> polls_;  // By socket, the ones watched.
  std::vector<std::unique_ptr<Poll>> retired_;            // Waiting for their last completion.
  std::unique_ptr<dns::Resolver> resolver_;               // Last member: destroyed first.
};

}  // namespace relais::relaisd
