// queue/delivery/next_hops.h — failover among one destination's next hops, as its outbound
// pool decides it: new connections go to the next hop that worked last, or the first one after
// it (in the route's order) not known to be down; a next hop is down once a connection to it
// failed before it was ready (greeting and EHLO done); when every next hop is down and no
// connection of the pool is ready, the pool's queued tasks are deferred to the retry schedule
// and the record starts over. While a ready connection remains, no new one is opened to a
// next hop known down: the ready ones take the queue (a refused connect is not retried in a
// loop), and once none is left the queue is deferred.
//
// An mx destination's task also keeps its own way through the hosts (TaskHops): MX hosts by
// preference, each host's addresses in order. A connect that fails moves the task to the
// host's next address; a host that greets with anything but 220, fails before it is ready,
// or answers the whole transaction with a temporary reply moves it to the next host; at most
// `hosts_max` distinct hosts per attempt (0: all). NextHops' down marks are then only a hint:
// an address known down is passed over while the task has another candidate.
//
// Pure: no I/O, no clock. Owned by one pool on one shard; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace relais::delivery {

class NextHops {
 public:
  explicit NextHops(uint32_t count) : down_(count, false) {}

  // The next hop a new connection goes to.
  [[nodiscard]] uint32_t Pick() const;
  // A connection to `index` failed before it was ready. True when every next hop is now down
  // and `others_ready` is false: the caller defers its queue; the record is cleared.
  [[nodiscard]] bool Failed(uint32_t index, bool others_ready);
  // A connection to `index` became ready: nothing is down, and new connections go there.
  void Worked(uint32_t index);

  [[nodiscard]] bool down(uint32_t index) const { return down_[index]; }
  [[nodiscard]] uint32_t size() const { return static_cast<uint32_t>(down_.size()); }
  // Every next hop is down (while a ready connection of the pool kept Failed from deferring):
  // no new connection should be opened until one works again or the record starts over.
  [[nodiscard]] bool all_down() const { return down_count_ == down_.size(); }
  // Starts the record over (the pool deferred its queue).
  void Reset() { Clear(); }

 private:
  void Clear();

  std::vector<bool> down_;
  uint32_t down_count_ = 0;
  uint32_t preferred_ = 0;
};

// One task's tried hosts and addresses within one attempt. `hosts` gives each endpoint's
// host (Endpoint::host_index), in the destination's order; the caller resets the record
// when the destination's endpoints were replaced (re-resolution).
class TaskHops {
 public:
  // The endpoint a new connection for the task goes to: the first in order that is allowed
  // (Allows) and not down in `pool`, else the first allowed; nullopt when none is left.
  [[nodiscard]] std::optional<uint32_t> Pick(std::span<const uint32_t> hosts, const NextHops& pool,
                                             uint32_t hosts_max) const;
  // May the task go over a connection to `endpoint` (of host `host`)? Not when that address
  // or host failed for it, nor a new host once `hosts_max` distinct hosts were tried.
  [[nodiscard]] bool Allows(uint32_t endpoint, uint32_t host, uint32_t hosts_max) const;
  // A connection to `endpoint` was made for the task (its host counts as tried).
  void Tried(uint32_t host);
  // The connect to `endpoint` failed: the host's other addresses are next.
  void AddressFailed(uint32_t endpoint, uint32_t host);
  // The host failed for the task (greeting, not ready, a temporary reply to the whole
  // transaction): the next host is next.
  void HostFailed(uint32_t host);
  [[nodiscard]] uint32_t hosts_tried() const { return static_cast<uint32_t>(tried_.size()); }
  void Reset() { *this = TaskHops(); }

 private:
  [[nodiscard]] static bool Has(const std::vector<uint32_t>& v, uint32_t x);

  std::vector<uint32_t> tried_;  // Hosts, each once.
  std::vector<uint32_t> failed_hosts_;
  std::vector<uint32_t> failed_addresses_;  // Endpoints.
};

}  // namespace relais::delivery
