// queue/delivery/next_hops.h — failover among one destination's next hops, as its outbound
// pool decides it: new connections go to the next hop that worked last, or the first one after
// it (in the route's order) not known to be down; a next hop is down once a connection to it
// failed before it was ready (greeting and EHLO done); when every next hop is down and no
// connection of the pool is ready, the pool's queued tasks are deferred to the retry schedule
// and the record starts over. While a ready connection remains, no new one is opened to a
// next hop known down: the ready ones take the queue (a refused connect is not retried in a
// loop), and once none is left the queue is deferred.
//
// Pure: no I/O, no clock. Owned by one pool on one shard; not thread-safe.
#pragma once

#include <cstdint>
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

}  // namespace relais::delivery
