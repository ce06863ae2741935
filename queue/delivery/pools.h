// queue/delivery/pools.h — one shard's outbound connections: SMTP to smarthosts and LMTP to
// mail stores, each an smtp::ClientSession on the stream pump (core/net) over the socket seam
// (io::Net: the shard's io_uring in production, io::FakeNet in tests).
//
// Each destination (a smarthost or lmtp route) has a pool: a queue of tasks (one message and
// some of its recipients) and up to connections_max connections (links). A link that finishes
// a message takes the next task of its pool (RSET, then the next envelope), up to
// messages_per_connection_max, and waits idle_timeout_ms for one before it says QUIT. A task
// goes to an idle link first; a new link is opened only for a task no idle link can take (up to
// connections_max), and that task is reserved for it, so every connection opened carries at
// least one message (a link that finishes first takes the next queued task, never a reserved
// one). Next hops are tried in the route's order (next_hops.h): a link that fails before the
// greeting and EHLO are done moves the pool to the next one; when every next hop failed in a
// row, the queued tasks are deferred with the last error (the scheduler retries them later).
//
// A task's results arrive through PoolListener::OnPoolDone once per task, never from inside
// Submit; when its link fails while part of the message is being sent, only once that send
// has ended (large content is sent from the caller's memory, which the results free). Timeouts per
// RFC 5321 4.5.3.2 (the options), one pump deadline per link for whatever it waits on: the connect,
// a send (data_block_timeout_ms), a reply, or the idle time. What a task carries and how its
// replies become typed statuses is decided in outbound.h; the deferrals made here (stopping, no
// usable next hop) come from the status table (status.h).
//
// Owned by one shard; not thread-safe. Time comes from the injected Clock; the net, timer
// wheel and listener outlive the pools.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/base/clock.h"
#include "core/io/net.h"
#include "core/timer/timer_wheel.h"
#include "protocols/smtp/client_session.h"
#include "queue/delivery/delivery.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

struct Endpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  std::string name;  // "192.0.2.1:25", "[2001:db8::1]:25" or "/run/lmtp.sock".
};

// Where one smarthost or lmtp route sends its mail.
struct Destination {
  Route route = Route::kSmarthost;  // kSmarthost or kLmtp.
  bool lmtp = false;
  std::vector<Endpoint> endpoints;  // In the order the route lists them.
};

struct PoolOptions {
  uint32_t shard = 0;
  std::string helo_name;
  uint32_t connect_timeout_ms = 30'000;
  uint32_t reply_timeout_ms = 300'000;
  uint32_t data_init_timeout_ms = 120'000;
  uint32_t data_block_timeout_ms = 180'000;
  uint32_t data_end_timeout_ms = 600'000;
  uint32_t idle_timeout_ms = 5'000;
  uint32_t connections_max = 10;  // Per destination, this shard's share.
  uint32_t messages_per_connection_max = 100;
  uint32_t mime_nesting_max = 100;  // For 8-bit mail converted to 7 bits (protocols/mime).
  // TCP_NODELAY on TCP connections (commands and replies are small and latency-bound): a
  // control-plane call on the descriptor, off for a Net whose sockets are not the kernel's.
  bool tcp_no_delay = true;
};

struct PoolTask {
  uint64_t id = 0;                // The caller's handle, given back with the results.
  smtp::OutgoingMessage message;  // Views into memory the caller keeps until the results.
};

class PoolListener {
 public:
  // One result per recipient of the task's message; `next_hop` names the endpoint that
  // answered last (empty when none was reached).
  virtual void OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                          std::string_view next_hop) = 0;

 protected:
  ~PoolListener() = default;
};

struct PoolCounters {
  uint64_t connections_opened = 0;
  uint64_t connect_failures = 0;
  uint64_t transactions = 0;
  uint64_t tasks_retried = 0;        // Moved off a cached connection that had gone stale.
  uint64_t connections_unused = 0;   // Greeted, then closed without carrying a message.
  uint64_t converted_7bit = 0;       // Messages converted for a next hop without 8BITMIME.
  uint64_t not_convertible = 0;      // ...and those that could not be (failed, 5.6.3).
  uint64_t smtputf8_not_needed = 0;  // Sent without SMTPUTF8 to a next hop without it.
};

class Pools {
 public:
  Pools(io::Net& net, timer::TimerWheel& timers, const base::Clock& clock, PoolOptions options,
        PoolListener& listener);
  ~Pools();
  Pools(const Pools&) = delete;
  Pools& operator=(const Pools&) = delete;

  // Queues `task` for `destination` (which must outlive the pools).
  void Submit(const Destination& destination, PoolTask task);
  // Opens, sends, and hands out results for everything the turn's completions changed. Once
  // per loop turn, after the completions ran.
  void Pump();
  // True when Pump has work that should not wait for the next completion.
  [[nodiscard]] bool busy() const { return !dirty_.empty() || !pending_pools_.empty(); }
  // Graceful stop: queued tasks are deferred, idle links say QUIT, messages being sent
  // finish. Nothing new is opened.
  void Stop();
  // No connection open and no task queued.
  [[nodiscard]] bool idle() const;
  [[nodiscard]] uint32_t connections() const { return connections_; }
  [[nodiscard]] const PoolCounters& counters() const { return counters_; }

 private:
  struct Pool;
  struct Link;

  void Dispatch(Pool& pool);
  void Open(Pool& pool, PoolTask task);
  void Process(Link& link);
  // Hands the link's finished task to the listener (or back to the queue when the link was
  // stale before anything of it was answered).
  void HandOut(Link& link);
  void BeginClose(Link& link);
  // The pump closed: results held back for it go out, then the link is freed.
  void Closed(Link& link);
  void Free(Link& link);
  void MarkDirty(Link& link);
  void MarkPending(Pool& pool);
  void Requeue(Pool& pool, PoolTask task);
  void DeferQueue(Pool& pool, const smtp::RecipientReply& reason);
  void OnTimeout(Link& link);
  [[nodiscard]] static smtp::RecipientReply NoNextHop(const Pool& pool);

  io::Net& net_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  const PoolOptions options_;
  PoolListener& listener_;
  std::unordered_map<const Destination*, std::unique_ptr<Pool>> pools_;
  std::vector<Pool*> pending_pools_;  // Pools with tasks to dispatch this turn.
  std::vector<Link*> dirty_;
  uint32_t connections_ = 0;
  bool stopping_ = false;
  PoolCounters counters_;
};

// The delivery side's way out (Outbound): a route index names the destination whose pool on
// this shard sends the task. Both references must outlive it.
class PoolsOutbound final : public Outbound {
 public:
  PoolsOutbound(Pools& pools, const std::vector<std::optional<Destination>>& destinations)
      : pools_(pools), destinations_(destinations) {}
  void Submit(int32_t destination, uint64_t task_id, smtp::OutgoingMessage message) override;

 private:
  Pools& pools_;
  const std::vector<std::optional<Destination>>& destinations_;
};

}  // namespace relais::delivery
