// queue/delivery/delivery.h — one shard's delivery driving: due attempts from the scheduler,
// planned into jobs (planner.h), sent through the blocking worker and the outbound pools, and
// their results recorded (scheduler, spool, the sender's report, metrics, log lines).
//
// The path of one attempt (each arrow into or out of the worker is one ring hand-off):
//   Tick ─▶ Plan ─▶ every recipient decided, body in memory ─▶ Finish here (report, log)
//                ─▶ network recipients, body in memory ─▶ Outbound (the pools) ─▶ Finish here
//                ─▶ a body on disk or Maildir recipients ─▶ BlockingWork (the worker thread):
//                   read the body, deliver to Maildir ─▶ done there (Finish on the worker)
//                   or, network recipients left ─▶ back here with the body ─▶ Outbound ─▶
//                   Finish here
// So a smarthost message whose body is on disk goes shard → worker → shard → pools → shard,
// and one whose body is in memory never leaves the shard: a body crosses threads at most once
// each way. Finishing records the results: a report to the sender is spooled first (from <>,
// in the same group commit as the failures), then Scheduler::Finish.
//
// The shard owns it and calls it only from its loop: Tick once per turn, OnWorkerDone for each
// result the worker hands back, OnOutboundDone for each outbound task's replies, FlushLog once
// per turn. Not thread-safe. Time comes from the injected Clock; the blocking work and the
// pools are reached through the two interfaces below, so tests drive it with fakes.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/clock.h"
#include "core/log/log.h"
#include "core/metrics/metrics.h"
#include "protocols/smtp/client_session.h"
#include "queue/delivery/job.h"
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

// The outbound pools (pools.h): sends `message` to the destination of route
// `destination`; the replies come back through Delivery::OnOutboundDone(task_id, ...), never
// from inside Submit. The message's views stay valid until then.
class Outbound {
 public:
  virtual void Submit(int32_t destination, uint64_t task_id, smtp::OutgoingMessage message) = 0;

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

struct DeliveryOptions {
  PlanOptions plan;
  uint32_t recipients_per_transaction_max = 100;
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
  // No new attempt from now on; those in flight finish.
  void Stop() { stopping_ = true; }
  // Hands this turn's log lines to the writer. Once per loop turn.
  void FlushLog();
  // No attempt in flight and every log line written.
  [[nodiscard]] bool idle() const;
  [[nodiscard]] size_t in_flight() const { return attempts_.size(); }
  [[nodiscard]] uint64_t attempts_started() const { return attempts_started_; }
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
  uint64_t next_token_ = 1;
  uint64_t next_task_ = 1;
  uint64_t attempts_started_ = 0;
  bool stopping_ = false;
  std::string log_lines_;
  log::Channel* log_channel_ = nullptr;
};

}  // namespace relais::delivery
