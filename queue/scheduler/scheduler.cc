#include "queue/scheduler/scheduler.h"

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "core/base/check.h"

namespace relais::scheduler {
namespace {

bool HasPending(const spool::StoredMessage& message) {
  return std::find(message.states.begin(), message.states.end(), spool::RecipientState::kPending) !=
         message.states.end();
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, spool::Spool& spool, const base::Clock& clock,
                     base::Random& random)
    : options_(options), spool_(spool), clock_(clock), random_(random) {}

void Scheduler::LoadFromSpool() {
  const uint64_t now_us = clock_.UnixMicros();
  const uint64_t now_ms = clock_.MonotonicMs();
  spool_.ForEach([&](const spool::StoredMessage& m) {
    auto [it, inserted] = entries_.try_emplace(m.id);
    if (!inserted) {
      return;
    }
    QueueEntry& entry = it->second.entry;
    it->second.received_us = m.received_us;
    entry.id = m.id;
    entry.attempts = m.attempts;
    entry.last_reply = m.last_reply;
    entry.delay_reported = m.delay_reported;
    if (m.next_attempt_us > now_us) {
      // Resume the schedule recorded before the restart (wall clock there, monotonic here).
      Defer(it->second, now_ms + (m.next_attempt_us - now_us) / 1000);
    } else {
      Link(it->second, /*front=*/false);
    }
  });
}

void Scheduler::Enqueue(const mail::MessageId& id) {
  auto [it, inserted] = entries_.try_emplace(id);
  if (inserted) {
    it->second.entry.id = id;
    const spool::StoredMessage* message = spool_.Find(id);
    it->second.received_us = message != nullptr ? message->received_us : clock_.UnixMicros();
    Link(it->second, /*front=*/false);
  }
}

uint64_t Scheduler::BackoffMs(uint32_t attempt) const {
  uint64_t delay = options_.retry_first_ms;
  for (uint32_t i = 1; i < attempt && delay < options_.retry_max_ms; ++i) {
    delay *= 2;
  }
  return std::min(delay, options_.retry_max_ms);
}

void Scheduler::Link(Item& item, bool front) {
  RELAIS_DCHECK(item.where == Where::kNowhere);
  const uint32_t destination = item.entry.destination;
  DestinationQueue& q = queues_[destination];
  item.prev = nullptr;
  item.next = nullptr;
  if (q.head == nullptr) {
    q.head = q.tail = &item;
  } else if (front) {
    item.next = q.head;
    q.head->prev = &item;
    q.head = &item;
  } else {
    item.prev = q.tail;
    q.tail->next = &item;
    q.tail = &item;
  }
  item.where = Where::kReady;
  ++q.ready;
  ++q.waiting;
  ++ready_count_;
  if (!q.parked && !q.in_turn) {
    q.in_turn = true;
    turn_.push_back(destination);
  }
}

void Scheduler::Defer(Item& item, uint64_t due_ms) {
  RELAIS_DCHECK(item.where == Where::kNowhere);
  item.entry.next_attempt_ms = due_ms;
  deferred_.emplace(due_ms, item.entry.id);
  ++queues_[item.entry.destination].waiting;
  item.where = Where::kDeferred;
}

void Scheduler::Detach(Item& item) {
  if (item.where == Where::kNowhere) {
    return;
  }
  const uint32_t destination = item.entry.destination;
  auto q = queues_.find(destination);
  RELAIS_CHECK(q != queues_.end()) << "a waiting message without its destination's queue";
  if (item.where == Where::kReady) {
    (item.prev != nullptr ? item.prev->next : q->second.head) = item.next;
    (item.next != nullptr ? item.next->prev : q->second.tail) = item.prev;
    item.prev = item.next = nullptr;
    --q->second.ready;
    --ready_count_;
  } else {
    deferred_.erase({item.entry.next_attempt_ms, item.entry.id});
  }
  --q->second.waiting;
  item.where = Where::kNowhere;
  MaybeErase(destination);
}

void Scheduler::MaybeErase(uint32_t destination) {
  auto q = queues_.find(destination);
  if (q != queues_.end() && q->second.waiting == 0 && !q->second.in_turn) {
    queues_.erase(q);
  }
}

void Scheduler::Erase(std::unordered_map<mail::MessageId, Item, mail::MessageIdHash>::iterator it) {
  Detach(it->second);
  entries_.erase(it);
}

void Scheduler::MakeReady(Item& item) {
  if (!item.entry.held && !item.entry.in_flight && item.where == Where::kNowhere) {
    item.entry.next_attempt_ms = 0;
    Link(item, /*front=*/false);
  }
}

Scheduler::Item* Scheduler::Head(DestinationQueue& queue, const spool::StoredMessage*& message) {
  // The caller keeps queue.in_turn set while this runs, so dropping items never erases `queue`.
  while (queue.head != nullptr) {
    Item* item = queue.head;
    message = spool_.Find(item->entry.id);
    if (message != nullptr && HasPending(*message)) {
      return item;
    }
    Erase(entries_.find(item->entry.id));  // Retired meanwhile.
  }
  return nullptr;
}

void Scheduler::Park(uint32_t destination, DestinationQueue& queue) {
  queue.parked = true;
  if (options_.parked_recheck_ms != 0) {
    queue.parked_ms = clock_.MonotonicMs();
    recheck_.emplace_back(queue.parked_ms + options_.parked_recheck_ms, destination);
  }
}

std::optional<Attempt> Scheduler::Next() {
  const uint64_t now = clock_.MonotonicMs();
  while (!recheck_.empty() && recheck_.front().first <= now) {
    const uint32_t destination = recheck_.front().second;
    recheck_.pop_front();
    auto q = queues_.find(destination);
    if (q != queues_.end() && q->second.parked &&
        q->second.parked_ms + options_.parked_recheck_ms <= now) {
      Wake(destination);  // Its gate never woke it: asked again.
    }
  }
  while (!deferred_.empty() && deferred_.begin()->first <= now) {
    Item& item = entries_.at(deferred_.begin()->second);
    Detach(item);
    MakeReady(item);
  }
  // Each pass takes one destination off the turn: it hands out an attempt (and goes to the
  // back of the turn if more is ready), or is parked, or is found empty. So this ends.
  while (in_flight_ < options_.attempts_in_flight_max && !turn_.empty()) {
    const uint32_t destination = turn_.front();
    turn_.pop_front();
    auto q = queues_.find(destination);
    if (q == queues_.end()) {
      continue;
    }
    const spool::StoredMessage* message = nullptr;
    Item* item = q->second.parked ? nullptr : Head(q->second, message);
    q->second.in_turn = false;
    if (item == nullptr) {
      MaybeErase(destination);
      continue;
    }
    if (destination != 0 && gate_ != nullptr && !gate_->Admit(destination)) {
      Park(destination, q->second);  // Its queue waits, untouched, until Wake names it.
      continue;
    }
    Detach(*item);  // May erase the queue: `q` is not used after this.
    if (auto again = queues_.find(destination);
        again != queues_.end() && again->second.ready > 0 && !again->second.in_turn) {
      again->second.in_turn = true;
      turn_.push_back(destination);
    }
    QueueEntry& entry = item->entry;
    Attempt attempt{entry.id, destination, {}};
    for (uint32_t i = 0; i < message->states.size(); ++i) {
      if (message->states[i] == spool::RecipientState::kPending) {
        attempt.recipients.push_back(i);
      }
    }
    const uint64_t age_us =
        clock_.UnixMicros() - std::min(message->received_us, clock_.UnixMicros());
    attempt.last_reply = entry.last_reply;
    if (entry.returning) {
      attempt.give = Attempt::Give::kReturned;
    } else if (age_us / 1000 > options_.lifetime_ms) {
      // The queue lifetime is over: the caller fails what is still pending, with a bounce.
      attempt.give = Attempt::Give::kExpired;
      ++stats_.expired;
    }
    entry.in_flight = true;
    ++entry.attempts;
    entry.next_attempt_ms = 0;
    ++in_flight_;
    ++stats_.attempts_started;
    return attempt;
  }
  return std::nullopt;
}

void Scheduler::Finish(const Attempt& attempt, const std::vector<RecipientResult>& results) {
  RELAIS_CHECK(results.size() == attempt.recipients.size())
      << results.size() << " results for " << attempt.recipients.size() << " recipients";
  auto it = entries_.find(attempt.id);
  RELAIS_CHECK(it != entries_.end() && it->second.entry.in_flight) << "no such attempt";
  QueueEntry& entry = it->second.entry;
  entry.in_flight = false;
  --in_flight_;
  bool deferred = false;
  for (size_t i = 0; i < results.size(); ++i) {
    switch (results[i].outcome) {
      case Outcome::kDelivered:
        ++stats_.delivered;
        spool_.RecordOutcome(attempt.id, attempt.recipients[i], spool::RecipientState::kDelivered);
        break;
      case Outcome::kFailed:
        ++stats_.failed;  // The caller has queued the bounce.
        spool_.RecordOutcome(attempt.id, attempt.recipients[i], spool::RecipientState::kFailed);
        break;
      case Outcome::kDeferred:
        ++stats_.deferred;
        deferred = true;
        entry.last_reply = results[i].Text();
        break;
    }
  }
  if (!deferred || spool_.Find(attempt.id) == nullptr) {
    Erase(it);  // Every recipient is final; the spool has retired the message.
    return;
  }
  uint64_t delay = BackoffMs(entry.attempts);
  if (options_.jitter_percent > 0) {
    // Spread retries so that a destination that comes back is not hit by all at once.
    const uint64_t spread = delay * options_.jitter_percent / 100;
    delay = delay - spread + random_.Below(2 * spread + 1);
  }
  const uint64_t due = clock_.MonotonicMs() + delay;
  entry.next_attempt_ms = due;
  spool_.RecordDeferral(attempt.id, clock_.UnixMicros() + delay * 1000, entry.attempts,
                        entry.last_reply, entry.delay_reported);
  if (!entry.held) {
    Defer(it->second, due);  // Counted as waiting for its destination until it is due.
  }
}

void Scheduler::SetDestination(const mail::MessageId& id, uint32_t destination) {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.entry.destination == destination) {
    return;
  }
  Item& item = it->second;
  const Where where = item.where;
  Detach(item);
  item.entry.destination = destination;
  if (where == Where::kReady) {
    Link(item, /*front=*/false);
  } else if (where == Where::kDeferred) {
    Defer(item, item.entry.next_attempt_ms);
  }
}

void Scheduler::Requeue(const Attempt& attempt, uint32_t destination) {
  auto it = entries_.find(attempt.id);
  RELAIS_CHECK(it != entries_.end() && it->second.entry.in_flight) << "no such attempt";
  QueueEntry& entry = it->second.entry;
  // Undo what Next counted: the attempt never ran.
  entry.in_flight = false;
  --in_flight_;
  entry.attempts -= entry.attempts > 0 ? 1 : 0;
  --stats_.attempts_started;
  if (attempt.give == Attempt::Give::kExpired) {
    --stats_.expired;
  }
  entry.destination = destination;
  if (destination != 0 && gate_ != nullptr) {
    // Its gate has just refused it (that is why it is back): parked until Wake names it, as if
    // Next had asked.
    Park(destination, queues_[destination]);
  }
  if (!entry.held) {
    Link(it->second, /*front=*/true);
  }
  MaybeErase(destination);
}

void Scheduler::Wake(uint32_t destination) {
  auto q = queues_.find(destination);
  if (q == queues_.end()) {
    return;
  }
  q->second.parked = false;
  if (q->second.ready > 0 && !q->second.in_turn) {
    q->second.in_turn = true;
    turn_.push_back(destination);
  }
}

size_t Scheduler::ReturnDestination(uint32_t destination) {
  std::vector<mail::MessageId> ids;
  for (const auto& [id, item] : entries_) {
    if (item.entry.destination == destination && item.where != Where::kNowhere) {
      ids.push_back(id);
    }
  }
  for (const mail::MessageId& id : ids) {
    Return(id);
  }
  return ids.size();
}

QueueSummary Scheduler::Summary(std::vector<uint64_t> bucket_bounds_ms) const {
  QueueSummary summary;
  summary.bucket_bounds_ms = std::move(bucket_bounds_ms);
  const std::vector<uint64_t>& bounds = summary.bucket_bounds_ms;
  const uint64_t now_us = clock_.UnixMicros();
  // Rows by destination id through a dense index (ids are small: the destinations table
  // reuses them), so a million entries cost one pass over the map and no hashing beyond it.
  // Ids past kDenseMax (not made by delivery::Destinations) go through a hash map instead.
  constexpr uint32_t kDenseMax = 1u << 22;
  std::vector<uint32_t> row_of;  // Row index + 1; 0: none yet.
  std::unordered_map<uint32_t, uint32_t> sparse_row_of;
  const size_t width = bounds.size() + 1;
  std::vector<uint64_t> counts;  // Row r's buckets at [r * width, (r + 1) * width).
  for (const auto& [id, item] : entries_) {
    const uint32_t destination = item.entry.destination;
    uint32_t* slot = nullptr;
    if (destination < kDenseMax) {
      if (destination >= row_of.size()) {
        row_of.resize(
            std::min<size_t>(std::max<size_t>(destination + 1, row_of.size() * 2), kDenseMax), 0);
      }
      slot = &row_of[destination];
    } else {
      slot = &sparse_row_of[destination];
    }
    if (*slot == 0) {
      summary.rows.emplace_back();
      summary.rows.back().destination = destination;
      *slot = static_cast<uint32_t>(summary.rows.size());
      counts.resize(counts.size() + width, 0);
    }
    const uint64_t age_ms = (now_us - std::min(item.received_us, now_us)) / 1000;
    // The first bucket whose bound is above the age; the last one is open-ended.
    const size_t bucket = std::upper_bound(bounds.begin(), bounds.end(), age_ms) - bounds.begin();
    ++counts[(*slot - 1) * width + bucket];
  }
  for (size_t r = 0; r < summary.rows.size(); ++r) {
    QueueSummary::Row& row = summary.rows[r];
    row.buckets.assign(counts.begin() + static_cast<ptrdiff_t>(r * width),
                       counts.begin() + static_cast<ptrdiff_t>((r + 1) * width));
    for (uint64_t n : row.buckets) {
      row.total += n;
    }
  }
  std::sort(summary.rows.begin(), summary.rows.end(), [](const auto& a, const auto& b) {
    return a.total != b.total ? a.total > b.total : a.destination < b.destination;
  });
  return summary;
}

bool Scheduler::Flush(const mail::MessageId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return false;
  }
  if (it->second.where == Where::kDeferred) {
    Detach(it->second);
    MakeReady(it->second);
  }
  return true;
}

bool Scheduler::Hold(const mail::MessageId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return false;
  }
  it->second.entry.held = true;
  Detach(it->second);  // Keeps next_attempt_ms, for operators.
  return true;
}

bool Scheduler::Release(const mail::MessageId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return false;
  }
  if (it->second.entry.held) {
    it->second.entry.held = false;
    MakeReady(it->second);
  }
  return true;
}

bool Scheduler::Return(const mail::MessageId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return false;
  }
  it->second.entry.returning = true;
  it->second.entry.held = false;
  if (it->second.where == Where::kDeferred) {
    Detach(it->second);
  }
  MakeReady(it->second);  // No-op when it is ready already or in flight.
  return true;
}

bool Scheduler::Forget(const mail::MessageId& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.entry.in_flight) {
    return false;
  }
  Erase(it);
  return true;
}

void Scheduler::FlushAll() {
  std::vector<mail::MessageId> ids;
  ids.reserve(deferred_.size());
  for (const auto& [due, id] : deferred_) {
    ids.push_back(id);
  }
  for (const mail::MessageId& id : ids) {
    Flush(id);
  }
}

int64_t Scheduler::MsUntilNextDue() const {
  if (deferred_.empty() && recheck_.empty()) {
    return -1;
  }
  uint64_t due = std::numeric_limits<uint64_t>::max();
  if (!deferred_.empty()) {
    due = deferred_.begin()->first;
  }
  if (!recheck_.empty()) {
    due = std::min(due, recheck_.front().first);
  }
  const uint64_t now = clock_.MonotonicMs();
  return due > now ? static_cast<int64_t>(due - now) : 0;
}

const QueueEntry* Scheduler::Entry(const mail::MessageId& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second.entry;
}

bool Scheduler::DelayReported(const mail::MessageId& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() || it->second.entry.delay_reported;
}

void Scheduler::MarkDelayReported(const mail::MessageId& id) {
  if (auto it = entries_.find(id); it != entries_.end()) {
    it->second.entry.delay_reported = true;
  }
}

}  // namespace relais::scheduler
