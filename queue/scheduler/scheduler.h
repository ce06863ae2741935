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
//
// Destinations (queue/delivery/destinations.h). Ready mail waits in one queue per
// destination: each message carries the destination its last attempt went to (0 until it has
// been planned once; SetDestination), and Next() takes the ready queues in turn (round robin
// over the destinations with ready mail, the unknown destination 0 among them), asking the
// Gate before handing out an attempt for a destination other than 0. A destination the gate
// refuses is parked, its queue untouched, until Wake names it, so a slow, suspended or
// rate-limited destination costs one refused Admit per wake, never a scan of its queue, and
// never holds up another destination's mail (no head-of-line blocking). The in-flight cap
// (attempts_in_flight_max) bounds the bodies in memory; the gate bounds each destination's
// share of it. Every attempt handed out for a destination other than 0 has been admitted by
// the gate (when there is one), give-ups (expired, returned) included, so the caller releases
// exactly the attempts whose Attempt::destination is not 0. An attempt the caller could not
// run because its destination refused it after planning (first attempts, whose destination
// was 0) goes back with Requeue: to the front of that destination's queue, no attempt
// counted, no deferral recorded, and the destination parked (its gate has just said no) until
// Wake. As a safety net, a destination parked for parked_recheck_ms is asked again all the
// same (MsUntilNextDue counts that time), so mail never waits forever on a wake that a gate
// lost. The destination is kept in memory only: after a restart every message starts at 0 and
// is planned once again. A held message waits in no queue and is not counted as waiting.
// Memory per queued message: its QueueEntry and two queue links (measured at 1 000 000
// messages in bench/RESULTS.md: bench/scheduler_bench.cc).
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
  uint32_t attempts_in_flight_max = 512;
  // A parked destination is asked again after this long even if its gate never woke it: a
  // safety net (the gate's wakes are what normally reopen it), so that no mistake of
  // bookkeeping strands mail. 0: never.
  uint64_t parked_recheck_ms = 60'000;
};

// A recipient's result is the typed delivery status (queue/delivery/status.h); of a deferral
// the scheduler keeps its Text() as the last reply, for operators and the expiry bounce.
using Outcome = delivery::Outcome;
using RecipientResult = delivery::Status;

// Says whether an attempt for a destination may start now (delivery::Destinations).
class Gate {
 public:
  // True: an attempt for `destination` (never 0) may start, and the gate has counted it.
  [[nodiscard]] virtual bool Admit(uint32_t destination) = 0;

 protected:
  ~Gate() = default;
};

struct Attempt {
  mail::MessageId id;
  uint32_t destination = 0;          // The destination it was queued for (0: not known yet).
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
  uint32_t destination = 0;      // Where its last attempt went; 0: not known yet.
  std::string last_reply;
};

// relaisctl queue summary: messages by destination and age (a qshape-like table). Ages are
// since reception, bucketed by the summary's bounds (ms; the last bucket is open-ended).
struct QueueSummary {
  std::vector<uint64_t> bucket_bounds_ms;  // Ascending, e.g. 5m, 10m, 20m, 40m, 80m, 160m, ...
  struct Row {
    uint32_t destination = 0;
    uint64_t total = 0;
    std::vector<uint64_t> buckets;  // bucket_bounds_ms.size() + 1 counts.
  };
  std::vector<Row> rows;  // By total, largest first.
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
  // The gate Next() asks for destinations other than 0; null (the default): every attempt
  // may start. Must outlive the scheduler.
  void SetGate(Gate* gate) { gate_ = gate; }
  // Where `id`'s mail goes (the planner's resolution): later readiness queues it there.
  void SetDestination(const mail::MessageId& id, uint32_t destination);
  // An attempt that did not run (its destination refused it after planning): back to the
  // front of `destination`'s queue; no attempt counted, nothing recorded in the spool. With a
  // gate set, `destination` (not 0) is parked until Wake names it.
  void Requeue(const Attempt& attempt, uint32_t destination);
  // A parked destination may take attempts again (its gate opened).
  void Wake(uint32_t destination);
  // Every message queued for `destination` gets Return() (a [[shaping.reply]] bounce rule or
  // relaisctl); returns how many.
  size_t ReturnDestination(uint32_t destination);
  // Messages waiting for each destination (ready or deferred, not in flight), for the
  // destinations' views; calls fn(destination, count) for every destination with any.
  template <typename Fn>
  void ForEachDestination(Fn&& fn) const {
    for (const auto& [destination, queue] : queues_) {
      if (queue.waiting > 0) {
        fn(destination, queue.waiting);
      }
    }
  }
  // The qshape-like summary of every message the scheduler knows (ready, deferred, held or in
  // flight), by the destination it waits for; ages since reception (the spool's received_us).
  // Linear in the queue; at 1 000 000 messages well inside a second (bench/RESULTS.md).
  [[nodiscard]] QueueSummary Summary(std::vector<uint64_t> bucket_bounds_ms) const;
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
    for (const auto& [id, item] : entries_) {
      fn(item.entry);
    }
  }

  // Milliseconds until the next deferred message is due or a parked destination is to be
  // asked again (parked_recheck_ms); -1 when neither is waiting.
  [[nodiscard]] int64_t MsUntilNextDue() const;
  [[nodiscard]] size_t ready() const { return ready_count_; }
  [[nodiscard]] size_t deferred() const { return deferred_.size(); }
  [[nodiscard]] uint32_t in_flight() const { return in_flight_; }
  [[nodiscard]] const SchedulerStats& stats() const { return stats_; }
  [[nodiscard]] const QueueEntry* Entry(const mail::MessageId& id) const;
  // The backoff before retry number `attempt` (1-based), before jitter.
  [[nodiscard]] uint64_t BackoffMs(uint32_t attempt) const;

 private:
  // A message the scheduler knows, and its place: in its destination's ready FIFO (an
  // intrusive doubly linked list through the items, so Hold, Forget and SetDestination unlink
  // it in O(1)), in deferred_, or neither (in flight or held). Map nodes never move, so the
  // links stay valid while the item lives.
  enum class Where : uint8_t { kNowhere, kReady, kDeferred };
  struct Item {
    QueueEntry entry;
    Item* prev = nullptr;
    Item* next = nullptr;
    uint64_t received_us = 0;  // The spool's, kept here so that Summary reads no spool.
    Where where = Where::kNowhere;
  };
  // One destination's ready messages (FIFO: the longest waiting goes first), how many wait
  // for it in all (ready and deferred), whether it is parked (its gate refused) and whether
  // it is in turn_. Erased once nothing waits and it is not in turn_.
  struct DestinationQueue {
    Item* head = nullptr;
    Item* tail = nullptr;
    uint64_t ready = 0;
    uint64_t waiting = 0;
    bool parked = false;
    bool in_turn = false;
    uint64_t parked_ms = 0;  // When it was parked last.
  };

  void MakeReady(Item& item);
  // Puts `item` (kNowhere) at the back (or front) of its destination's ready FIFO.
  void Link(Item& item, bool front);
  // Takes `item` out of wherever it waits (kReady or kDeferred); no-op for kNowhere.
  void Detach(Item& item);
  void Defer(Item& item, uint64_t due_ms);
  void MaybeErase(uint32_t destination);
  // Its gate refused: parked until Wake (or parked_recheck_ms).
  void Park(uint32_t destination, DestinationQueue& queue);
  void Erase(std::unordered_map<mail::MessageId, Item, mail::MessageIdHash>::iterator it);
  // The first item of `queue` that can be attempted, and its message; drops the ones the spool
  // has retired (or with nothing pending) on the way. Null when none is left.
  Item* Head(DestinationQueue& queue, const spool::StoredMessage*& message);

  const SchedulerOptions options_;
  spool::Spool& spool_;
  const base::Clock& clock_;
  base::Random& random_;
  std::unordered_map<mail::MessageId, Item, mail::MessageIdHash> entries_;
  std::unordered_map<uint32_t, DestinationQueue> queues_;
  std::deque<uint32_t> turn_;  // Destinations with ready mail, not parked, in turn order.
  size_t ready_count_ = 0;
  Gate* gate_ = nullptr;
  std::set<std::pair<uint64_t, mail::MessageId>> deferred_;  // By due time.
  // Parked destinations to ask again (due time, destination), by due time (a constant delay
  // after each park); stale ones (woken meanwhile, or parked again later) are skipped.
  std::deque<std::pair<uint64_t, uint32_t>> recheck_;
  uint32_t in_flight_ = 0;
  SchedulerStats stats_;
};

}  // namespace relais::scheduler
