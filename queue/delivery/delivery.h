// queue/delivery/delivery.h — one shard's delivery driving: due attempts from the scheduler,
// planned into jobs (planner.h), their network recipients' next hops resolved (mx.h) and
// shaped (destinations.h), sent through the blocking worker and the outbound pools, and their
// results recorded (scheduler, spool, the sender's report, metrics, log lines).
//
// The path of one attempt (each arrow into or out of the worker is one ring hand-off):
//   Tick ─▶ Plan ─▶ Resolve ─▶ every recipient decided, body in memory ─▶ Finish here
//                           ─▶ network recipients, body in memory ─▶ Outbound (the pools) ─▶
//                              Finish here
//                           ─▶ a body on disk or Maildir recipients ─▶ BlockingWork (the worker
//                              thread): read the body, deliver to Maildir ─▶ done there (Finish
//                              on the worker) or, network recipients left ─▶ back here with the
//                              body ─▶ Outbound ─▶ Finish here
// So a smarthost message whose body is on disk goes shard → worker → shard → pools → shard,
// and one whose body is in memory never leaves the shard: a body crosses threads at most once
// each way. Finishing records the results: a report to the sender is spooled first (from <>,
// in the same group commit as the failures), then Scheduler::Finish.
//
// Resolve (before any body is read, so that mail that will wait costs no read): every pending
// network recipient gets its next hops from the shard's NextHopResolver: an mx recipient by its
// domain (ResolveMx), a smarthost or lmtp recipient by its route (ResolveHost per host the
// route template names; a unix socket path needs none). Cached answers go on at once; else the
// job waits for the resolver's callbacks (bounded by the resolver's own timeout). A failed
// resolution decides its recipients (Resolution::failure: null MX 556 5.1.10, NXDOMAIN 550
// 5.1.2, DNS 451 4.4.3, loop 550 5.4.6, no address 550 5.4.4; a route none of whose hosts
// resolves: 451 4.4.3). The rest get a DestinationId (Destinations::Intern of the resolution's
// key, or "route:<index>"; a full table defers them, kDnsTemporary with "too many
// destinations"), and the pools' Destination object for it (destination_book.h). The message's
// first network destination is given to the scheduler (SetDestination). A first attempt (its
// Attempt::destination was 0) whose destination's gate refuses it (Destinations::Admit) goes
// back with Scheduler::Requeue, unless some recipient of it is decided or goes to Maildir: no
// body read, no attempt counted, nothing logged. An attempt admitted (by the scheduler's gate
// when Attempt::destination was set, or here) is released exactly once when it ends
// (Destinations::Release), and every recipient outcome of a destination is counted there.
// Stop sends the jobs still waiting on the resolver on at once, their network recipients
// deferred (kStopping); an answer that comes for one later is dropped.
//
// The shard owns it and calls it only from its loop: Tick once per turn, OnWorkerDone for each
// result the worker hands back, OnOutboundDone for each outbound task's replies,
// Upkeep, ForgetDestinations and FlushLog once per turn. Not thread-safe. Time comes from the
// injected Clock; the blocking work, the pools and the resolver's DNS are reached through
// interfaces, so tests drive it with fakes.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/clock.h"
#include "core/log/log.h"
#include "core/metrics/metrics.h"
#include "protocols/smtp/client_session.h"
#include "queue/delivery/destination_book.h"
#include "queue/delivery/destinations.h"
#include "queue/delivery/endpoint.h"
#include "queue/delivery/job.h"
#include "queue/delivery/mx.h"
#include "queue/delivery/outbound.h"
#include "queue/delivery/planner.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"

namespace relais::delivery {

// The worker thread (tools/relaisd/delivery_worker): takes a job; its JobDone comes back
// through Delivery::OnWorkerDone, never from inside Submit.
class BlockingWork {
 public:
  virtual void Submit(std::unique_ptr<Job> job) = 0;

 protected:
  ~BlockingWork() = default;
};

// The outbound pools (pools.h): sends `message` to `destination` (which stays valid until the
// replies came back); the replies come back through Delivery::OnOutboundDone(task_id, ...),
// never from inside Submit. The message's views stay valid until then.
class Outbound {
 public:
  virtual void Submit(const Destination& destination, uint64_t task_id,
                      smtp::OutgoingMessage message) = 0;

 protected:
  ~Outbound() = default;
};

// The shard's series this unit writes (it is their only writer).
struct DeliveryMetrics {
  std::array<std::array<metrics::Counter, kOutcomeNames.size()>, kRouteNames.size()>* attempts =
      nullptr;                          // By route and outcome.
  metrics::Counter* bounces = nullptr;  // Reports spooled.
  metrics::Counter* mailboxes_recreated = nullptr;
  metrics::Counter* directories_forgotten = nullptr;
  metrics::Histogram* time_to_delivered = nullptr;  // Reception to delivery.
  // Failed and deferred recipients by bounce class (bounce_class.h).
  std::array<metrics::Counter, kBounceClassNames.size()>* bounce_classes = nullptr;
};

// Where network recipients go: the shard's resolver and destinations, and the route templates.
struct DeliveryNextHops {
  // Both set, or both null: then (tools and tests that deliver by address only) every network
  // recipient goes to its route template as is (its endpoints filled in by the caller), with
  // no DestinationId, no shaping and DeliveryOptions::recipients_per_transaction_max.
  NextHopResolver* resolver = nullptr;
  Destinations* destinations = nullptr;
  // By route index (tools/relaisd/egress): TLS, AUTH, source pool, and for smarthost and lmtp
  // routes the hosts as written (Destination::names). Must outlive the Delivery.
  const std::vector<std::optional<Destination>>* routes = nullptr;
  uint16_t mx_port = 25;               // [mx] port.
  uint32_t hosts_per_attempt_max = 5;  // [mx] hosts_per_attempt_max (0: all).
};

struct DeliveryOptions {
  PlanOptions plan;
  DeliveryNextHops next_hops;
  uint32_t recipients_per_transaction_max = 100;  // Without a resolver (see DeliveryNextHops).
  // A random token from a CSPRNG (>= 96 bits) for a report's MIME boundary.
  std::function<std::string()> report_boundary;
  // Classifies every result that is not a delivery (shared, immutable); null: all kOther.
  const BounceClassifier* classifier = nullptr;
  // Log lines go to a channel of their own to the log writer (FlushLog); false: they stay
  // here for TakeLog (tests).
  bool log_channel = true;
};

class Delivery {
 public:
  Delivery(DeliveryOptions options, scheduler::Scheduler& scheduler, spool::Spool& spool,
           const routing::Router& router, const base::Clock& clock, BlockingWork& worker,
           Outbound& outbound, const DeliveryMetrics& metrics);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Starts every attempt the scheduler has due (none once stopping).
  void Tick();
  // A result the worker handed back: finished, or a job for the pools.
  void OnWorkerDone(std::unique_ptr<JobDone> done);
  // One outbound task's replies, one per recipient of its message.
  void OnOutboundDone(uint64_t task_id, std::vector<smtp::RecipientReply>&& replies,
                      std::string_view next_hop);
  // No new attempt from now on; those in flight finish (those waiting on the resolver at once,
  // deferred).
  void Stop();
  // The destinations' side of the loop turn (the daemon's shard and the sims call it once per
  // turn, before Tick): destinations whose gate opened (a suspension ended, a token refilled,
  // an attempt was released, the destination was forgotten) are woken in the scheduler, those
  // a reply rule bounced return their queues; once a second the scheduler's counts of waiting
  // messages go to the destinations (fresh right before the sweep, 0 for a queue that emptied,
  // so that none is forgotten while mail waits for it) and idle destinations are forgotten
  // (their ids appended to `forgotten` when given: Sources::Forget them). No-op without
  // destinations.
  void Upkeep(std::vector<DestinationId>* forgotten = nullptr);
  // Frees the Destination objects of destinations that Destinations forgot (after its Sweep)
  // or that a newer resolution replaced, once no task holds them; `forget` runs on each first
  // (Pools::Forget). Once per loop turn; it scans the book at most once a second.
  void ForgetDestinations(const std::function<void(const Destination&)>& forget);
  // Hands this turn's log lines to the writer. Once per loop turn.
  void FlushLog();
  // No attempt in flight and every log line written.
  [[nodiscard]] bool idle() const;
  [[nodiscard]] size_t in_flight() const { return attempts_.size(); }
  [[nodiscard]] uint64_t attempts_started() const { return attempts_started_; }
  // Jobs waiting for the resolver.
  [[nodiscard]] size_t resolving() const { return resolving_.size(); }
  [[nodiscard]] const DestinationBook& book() const { return book_; }
  // The log lines not flushed (log_channel false).
  [[nodiscard]] std::string TakeLog() { return std::move(log_lines_); }

 private:
  struct NetworkJob {
    std::unique_ptr<Job> job;
    uint32_t parts_pending = 0;
    uint64_t started_us = 0;
  };
  struct Task {
    uint64_t token = 0;  // Its job.
    Part part;
  };
  // One question a job waits for: a domain's MX hosts, or one host of a route.
  struct Lookup {
    bool mx = false;
    std::string name;  // The domain (lower case), or the host as the route writes it.
    int32_t route = -1;
    uint32_t host = 0;  // Which of the route's names.
    std::optional<Resolution> answer;
  };
  struct Resolving {
    std::unique_ptr<Job> job;
    std::vector<Lookup> lookups;
    uint32_t outstanding = 0;
  };
  // A job's destinations, from its resolution to its end.
  struct Shaped {
    uint32_t admitted = 0;                 // To Release when the attempt ends.
    std::vector<uint32_t> dests;           // Per item (0: none).
    std::vector<const Destination*> held;  // Its Destination objects (book_.Acquire).
  };

  // Asks the resolver for the job's network recipients; goes on at once when it answered.
  void Resolve(std::unique_ptr<Job> job);
  void OnResolved(uint64_t token, size_t lookup, const Resolution& resolution);
  // Every answer is in: destinations, admission, then Dispatch (or Requeue).
  void Resolved(std::unique_ptr<Job> job, std::vector<Lookup>& lookups);
  // The route template of route index `route` (a default one of `type` when it has none).
  [[nodiscard]] const Destination& Template(int32_t route, Route type) const;
  // After Complete: per-destination counts, Release, the held objects dropped.
  void Ended(const JobDone& done);
  // Sends `job` on to where NextStep says.
  void Dispatch(std::unique_ptr<Job> job);
  void SendToNetwork(std::unique_ptr<Job> job);
  void FinishHere(Job& job);
  // Records a finished attempt: report, metrics, scheduler.
  void Complete(JobDone& done);
  // Spools a report to the original's sender. False when the spool refused it.
  [[nodiscard]] bool QueueBounce(const mail::MessageId& original, std::string&& report);

  const DeliveryOptions options_;
  scheduler::Scheduler& scheduler_;
  spool::Spool& spool_;
  const routing::Router& router_;
  const base::Clock& clock_;
  BlockingWork& worker_;
  Outbound& outbound_;
  const DeliveryMetrics metrics_;
  std::unordered_map<uint64_t, scheduler::Attempt> attempts_;  // By job token.
  std::unordered_map<uint64_t, NetworkJob> network_jobs_;      // By job token.
  std::unordered_map<uint64_t, Task> tasks_;                   // By task id.
  std::unordered_map<uint64_t, Resolving> resolving_;          // By job token.
  std::unordered_map<uint64_t, Shaped> shaped_;                // By job token.
  DestinationBook book_;
  uint64_t next_forget_ms_ = 0;
  uint64_t next_upkeep_ms_ = 0;
  std::vector<uint32_t> queued_set_;  // Destinations given a queued count last time, sorted.
  // The resolver's callbacks hold a weak reference: one that runs after the Delivery is gone
  // does nothing.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  uint64_t next_token_ = 1;
  uint64_t next_task_ = 1;
  uint64_t attempts_started_ = 0;
  bool stopping_ = false;
  std::string log_lines_;
  log::Channel* log_channel_ = nullptr;
};

}  // namespace relais::delivery
