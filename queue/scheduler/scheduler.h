// queue/scheduler/scheduler.h — one shard's delivery queue: which message to try next, when
// to try again, and when to give up.
//
// A message is ready when it has pending recipients and no attempt in flight; a deferred
// message waits until its next-attempt time. An attempt covers every pending recipient of one
// message; its outcome per recipient is delivered, deferred (temporary failure: retried with
// exponential backoff and jitter) or failed (permanent). Final outcomes are recorded in the
// spool (group-committed with everything else), which retires a message once all its
// recipients are final. Past the queue lifetime, Next hands out an attempt marked expired:
// the caller fails its recipients (and bounces them) instead of delivering.
//
// Deferrals are recorded in the spool as well (next attempt in wall-clock time, attempts, last
// reply), so a restart resumes the schedule where it was. Owned by one shard; not thread-safe;
// reads time only from the injected Clock.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/mail/message_id.h"
#include "queue/delivery/status.h"
#include "queue/spool/spool.h"

namespace relais::scheduler {

struct SchedulerOptions {
  uint64_t retry_first_ms = 5 * 60 * 1000;         // First retry after 5 minutes,
  uint64_t retry_max_ms = 60 * 60 * 1000;          // doubling up to 1 hour,
  uint64_t lifetime_ms = 5ull * 24 * 3600 * 1000;  // until 5 days after reception.
  uint32_t jitter_percent = 10;                    // Each delay varies by up to this much.
  uint32_t attempts_in_flight_max = 64;
};

// A recipient's result is the typed delivery status (queue/delivery/status.h); of a deferral
// the scheduler keeps its Text() as the last reply, for operators and the expiry bounce.
using Outcome = delivery::Outcome;
using RecipientResult = delivery::Status;

struct Attempt {
  mail::MessageId id;
  std::vector<uint32_t> recipients;  // Indices into the message's envelope.
  // Do not deliver: report every recipient failed (and bounce). kExpired: the queue lifetime
  // is over; kReturned: an operator asked for it (relaisctl queue bounce).
  enum class Give : uint8_t { kDeliver, kExpired, kReturned } give = Give::kDeliver;
  std::string last_reply;  // What the destination said last, for the bounce.
};

struct QueueEntry {  // What an operator sees of one message.
  mail::MessageId id;
  uint32_t attempts = 0;
  bool in_flight = false;
  bool held = false;             // An operator put it on hold: no attempt until released.
  bool returning = false;        // An operator asked to bounce it: the next attempt gives it up.
  bool delay_reported = false;   // An RFC 3461 delay report went out (kept with the deferral).
  uint64_t next_attempt_ms = 0;  // Monotonic; 0 when ready now.
  std::string last_reply;
};

struct SchedulerStats {
  uint64_t attempts_started = 0;
  uint64_t delivered = 0;
  uint64_t deferred = 0;
  uint64_t failed = 0;
  uint64_t expired = 0;
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, spool::Spool& spool, const base::Clock& clock,
            base::Random& random);

  // Queues every message the spool holds (after recovery): all are ready now.
  void LoadFromSpool();
  // Queues a message the spool has just made durable.
  void Enqueue(const mail::MessageId& id);
  // The next attempt to run, if one is due and the in-flight cap allows.
  [[nodiscard]] std::optional<Attempt> Next();
  // Reports an attempt's results, one per entry of attempt.recipients.
  void Finish(const Attempt& attempt, const std::vector<RecipientResult>& results);
  // Makes every deferred message ready now (relaisctl queue flush).
  void FlushAll();
  // Operator controls for one message; false when the scheduler does not know it (or, for
  // Forget, when an attempt is in flight).
  bool Flush(const mail::MessageId& id);
  bool Hold(const mail::MessageId& id);
  bool Release(const mail::MessageId& id);
  bool Forget(const mail::MessageId& id);  // The caller has made every recipient final.
  // The next attempt (right away) fails every pending recipient and bounces the message.
  bool Return(const mail::MessageId& id);
  // Whether a delay report went out for `id`; MarkDelayReported records that one did. It is
  // persisted with the message's next deferral record, so a restart does not warn again.
  [[nodiscard]] bool DelayReported(const mail::MessageId& id) const;
  void MarkDelayReported(const mail::MessageId& id);
  template <typename Fn>
  void ForEachEntry(Fn&& fn) const {
    for (const auto& [id, entry] : entries_) {
      fn(entry);
    }
  }

  // Milliseconds until the next deferred message is due; -1 when none is waiting.
  [[nodiscard]] int64_t MsUntilNextDue() const;
  [[nodiscard]] size_t ready() const { return ready_.size(); }
  [[nodiscard]] size_t deferred() const { return deferred_.size(); }
  [[nodiscard]] uint32_t in_flight() const { return in_flight_; }
  [[nodiscard]] const SchedulerStats& stats() const { return stats_; }
  [[nodiscard]] const QueueEntry* Entry(const mail::MessageId& id) const;
  // The backoff before retry number `attempt` (1-based), before jitter.
  [[nodiscard]] uint64_t BackoffMs(uint32_t attempt) const;

 private:
  void MakeReady(const mail::MessageId& id);

  const SchedulerOptions options_;
  spool::Spool& spool_;
  const base::Clock& clock_;
  base::Random& random_;
  std::unordered_map<mail::MessageId, QueueEntry, mail::MessageIdHash> entries_;
  std::deque<mail::MessageId> ready_;  // FIFO: the longest waiting goes first.
  std::set<std::pair<uint64_t, mail::MessageId>> deferred_;  // By due time.
  uint32_t in_flight_ = 0;
  SchedulerStats stats_;
};

}  // namespace relais::scheduler
