// tools/relaisd/egress.h — one shard's outbound connections: SMTP to smarthosts and LMTP to
// mail stores, driven by the shard's io_uring.
//
// Each destination (a smarthost or lmtp route) has a pool: a queue of tasks (one message and
// some of its recipients) and up to connections_max connections, each an smtp::ClientSession.
// A connection that finishes a message takes the next task of its pool (RSET, then the next
// envelope), up to messages_per_connection_max, and waits idle_timeout_ms for one before it
// says QUIT. A task goes to an idle connection first; a new connection is opened only for a
// task no idle connection can take (up to connections_max), and that task is reserved for it,
// so every connection opened carries at least one message (a connection that finishes first
// takes the next queued task, never a reserved one). Next hops are tried in the route's order: a
// connection that fails before the greeting and EHLO are done moves the pool to the next one; when
// every next hop failed in a row, the queued tasks are deferred with the last error (the scheduler
// retries them later).
//
// A task's results arrive through EgressListener::OnEgressDone once per task, never from
// inside Submit. Timeouts per RFC 5321 4.5.3.2 (the options). Owned by one shard; not
// thread-safe.
//
// The delivery room (queue/delivery) reaches the pools through EgressOutbound (its
// delivery::Outbound); what a task carries and how its replies become typed statuses is
// decided there (queue/delivery/outbound.h), and the deferrals made here (stopping, no usable
// next hop) come from its status table. What stays here is engine-bound: sockets, connects,
// receives and sends on the shard's io_uring. It moves onto the shared stream pump (core/net)
// once that exists.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/config/config.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "protocols/smtp/client_session.h"
#include "queue/delivery/delivery.h"
#include "queue/delivery/status.h"

namespace relais::relaisd {

struct Endpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  std::string name;  // "192.0.2.1:25", "[2001:db8::1]:25" or "/run/lmtp.sock".
};

// Where one smarthost or lmtp route sends its mail.
struct Destination {
  delivery::Route route = delivery::Route::kSmarthost;  // kSmarthost or kLmtp.
  bool lmtp = false;
  std::vector<Endpoint> endpoints;  // In the order the route lists them.
};

// The destination of every route, by route index; nullopt for maildir and reject routes. Host
// names are resolved here, once, on the startup thread (getaddrinfo blocks): the shard's own
// resolver (tools/relaisd/shard_resolver) serves the sender checks only so far; MX delivery
// will resolve next hops with it. An error names the route and the host.
[[nodiscard]] absl::StatusOr<std::vector<std::optional<Destination>>> ResolveDestinations(
    const std::vector<config::Route>& routes);

struct EgressOptions {
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
};

struct EgressTask {
  uint64_t id = 0;                // The caller's handle, given back with the results.
  smtp::OutgoingMessage message;  // Views into memory the caller keeps until the results.
};

class EgressListener {
 public:
  // One result per recipient of the task's message; `next_hop` names the endpoint that
  // answered last (empty when none was reached).
  virtual void OnEgressDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                            std::string_view next_hop) = 0;

 protected:
  ~EgressListener() = default;
};

struct EgressCounters {
  uint64_t connections_opened = 0;
  uint64_t connect_failures = 0;
  uint64_t transactions = 0;
  uint64_t tasks_retried = 0;        // Moved off a cached connection that had gone stale.
  uint64_t connections_unused = 0;   // Greeted, then closed without carrying a message.
  uint64_t converted_7bit = 0;       // Messages converted for a next hop without 8BITMIME.
  uint64_t not_convertible = 0;      // ...and those that could not be (failed, 5.6.3).
  uint64_t smtputf8_not_needed = 0;  // Sent without SMTPUTF8 to a next hop without it.
};

class Egress {
 public:
  Egress(uring::Engine& engine, timer::TimerWheel& timers, const base::Clock& clock,
         EgressOptions options, EgressListener& listener);
  ~Egress();
  Egress(const Egress&) = delete;
  Egress& operator=(const Egress&) = delete;

  // Queues `task` for `destination` (which must outlive the Egress).
  void Submit(const Destination& destination, EgressTask task);
  // Opens, sends, and hands out results for everything the turn's completions changed. Once
  // per loop turn, after the completions ran.
  void Pump();
  // True when Pump has work that should not wait for the next completion.
  [[nodiscard]] bool busy() const { return !dirty_.empty() || !pending_pools_.empty(); }
  // Graceful stop: queued tasks are deferred, idle connections say QUIT, messages being sent
  // finish. Nothing new is opened.
  void Stop();
  // No connection open and no task queued.
  [[nodiscard]] bool idle() const;
  [[nodiscard]] uint32_t connections() const { return connections_; }
  [[nodiscard]] const EgressCounters& counters() const { return counters_; }

 private:
  struct Pool;
  struct Link;

  void Dispatch(Pool& pool);
  void Open(Pool& pool, EgressTask task);
  void Process(Link& link);
  void Flush(Link& link);
  void BeginClose(Link& link);
  void Free(Link& link);
  void MarkDirty(Link& link);
  void Requeue(Pool& pool, EgressTask task);
  void DeferQueue(Pool& pool, const smtp::RecipientReply& reason);
  void OnConnect(Link& link, int32_t result, uint32_t flags);
  void OnRecv(Link& link, int32_t result, uint32_t flags);
  void OnSend(Link& link, int32_t result, uint32_t flags);
  void OnClosed(Link& link, int32_t result, uint32_t flags);
  void OnTimer(Link& link);

  uring::Engine& engine_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  const EgressOptions options_;
  EgressListener& listener_;
  std::unordered_map<const Destination*, std::unique_ptr<Pool>> pools_;
  std::vector<Pool*> pending_pools_;  // Pools with tasks to dispatch this turn.
  std::vector<Link*> dirty_;
  uint32_t connections_ = 0;
  bool stopping_ = false;
  EgressCounters counters_;
};

// The delivery room's way out (delivery::Outbound): a route index names the destination
// whose pool on this shard sends the task. Both references must outlive it.
class EgressOutbound final : public delivery::Outbound {
 public:
  EgressOutbound(Egress& egress, const std::vector<std::optional<Destination>>& destinations)
      : egress_(egress), destinations_(destinations) {}
  void Submit(int32_t destination, uint64_t task_id, smtp::OutgoingMessage message) override;

 private:
  Egress& egress_;
  const std::vector<std::optional<Destination>>& destinations_;
};

}  // namespace relais::relaisd
