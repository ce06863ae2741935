#include "queue/scheduler/scheduler.h"

#include <algorithm>

#include "core/base/check.h"

namespace relais::scheduler {

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
    QueueEntry& entry = it->second;
    entry.id = m.id;
    entry.attempts = m.attempts;
    entry.last_reply = m.last_reply;
    entry.delay_reported = m.delay_reported;
    if (m.next_attempt_us > now_us) {
      // Resume the schedule recorded before the restart (wall clock there, monotonic here).
      const uint64_t due = now_ms + (m.next_attempt_us - now_us) / 1000;
      entry.next_attempt_ms = due;
      deferred_.emplace(due, m.id);
    } else {
      ready_.push_back(m.id);
    }
  });
}

void Scheduler::Enqueue(const mail::MessageId& id) {
  auto [it, inserted] = entries_.try_emplace(id);
  if (inserted) {
    it->second.id = id;
    ready_.push_back(id);
  }
}

uint64_t Scheduler::BackoffMs(uint32_t attempt) const {
  uint64_t delay = options_.retry_first_ms;
  for (uint32_t i = 1; i < attempt && delay < options_.retry_max_ms; ++i) {
    delay *= 2;
  }
  return std::min(delay, options_.retry_max_ms);
}

std::optional<Attempt> Scheduler::Next() {
  const uint64_t now = clock_.MonotonicMs();
  while (!deferred_.empty() && deferred_.begin()->first <= now) {
    const mail::MessageId id = deferred_.begin()->second;
    deferred_.erase(deferred_.begin());
    MakeReady(id);
  }
  while (in_flight_ < options_.attempts_in_flight_max && !ready_.empty()) {
    const mail::MessageId id = ready_.front();
    ready_.pop_front();
    auto entry = entries_.find(id);
    if (entry == entries_.end() || entry->second.in_flight || entry->second.held) {
      continue;
    }
    const spool::StoredMessage* message = spool_.Find(id);
    if (message == nullptr) {
      entries_.erase(entry);  // Retired meanwhile.
      continue;
    }
    Attempt attempt{id, {}};
    for (uint32_t i = 0; i < message->states.size(); ++i) {
      if (message->states[i] == spool::RecipientState::kPending) {
        attempt.recipients.push_back(i);
      }
    }
    const uint64_t age_us =
        clock_.UnixMicros() - std::min(message->received_us, clock_.UnixMicros());
    attempt.last_reply = entry->second.last_reply;
    if (entry->second.returning) {
      attempt.give = Attempt::Give::kReturned;
    } else if (age_us / 1000 > options_.lifetime_ms) {
      // The queue lifetime is over: the caller fails what is still pending, with a bounce.
      attempt.give = Attempt::Give::kExpired;
      ++stats_.expired;
    }
    if (attempt.recipients.empty()) {
      entries_.erase(entry);
      continue;
    }
    entry->second.in_flight = true;
    ++entry->second.attempts;
    entry->second.next_attempt_ms = 0;
    ++in_flight_;
    ++stats_.attempts_started;
    return attempt;
  }
  return std::nullopt;
}

void Scheduler::Finish(const Attempt& attempt, const std::vector<RecipientResult>& results) {
  RELAIS_CHECK(results.size() == attempt.recipients.size())
      << results.size() << " results for " << attempt.recipients.size() << " recipients";
  auto entry = entries_.find(attempt.id);
  RELAIS_CHECK(entry != entries_.end() && entry->second.in_flight) << "no such attempt";
  entry->second.in_flight = false;
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
        entry->second.last_reply = results[i].Text();
        break;
    }
  }
  if (!deferred || spool_.Find(attempt.id) == nullptr) {
    entries_.erase(entry);  // Every recipient is final; the spool has retired the message.
    return;
  }
  uint64_t delay = BackoffMs(entry->second.attempts);
  if (options_.jitter_percent > 0) {
    // Spread retries so that a destination that comes back is not hit by all at once.
    const uint64_t spread = delay * options_.jitter_percent / 100;
    delay = delay - spread + random_.Below(2 * spread + 1);
  }
  const uint64_t due = clock_.MonotonicMs() + delay;
  entry->second.next_attempt_ms = due;
  spool_.RecordDeferral(attempt.id, clock_.UnixMicros() + delay * 1000, entry->second.attempts,
                        entry->second.last_reply, entry->second.delay_reported);
  if (!entry->second.held) {
    deferred_.emplace(due, attempt.id);
  }
}

void Scheduler::MakeReady(const mail::MessageId& id) {
  auto entry = entries_.find(id);
  if (entry != entries_.end() && !entry->second.held) {
    entry->second.next_attempt_ms = 0;
    ready_.push_back(id);
  }
}

bool Scheduler::Flush(const mail::MessageId& id) {
  auto entry = entries_.find(id);
  if (entry == entries_.end()) {
    return false;
  }
  if (entry->second.next_attempt_ms != 0) {
    deferred_.erase({entry->second.next_attempt_ms, id});
    MakeReady(id);
  }
  return true;
}

bool Scheduler::Hold(const mail::MessageId& id) {
  auto entry = entries_.find(id);
  if (entry == entries_.end()) {
    return false;
  }
  entry->second.held = true;
  deferred_.erase({entry->second.next_attempt_ms, id});  // Ready copies are skipped by Next.
  return true;
}

bool Scheduler::Release(const mail::MessageId& id) {
  auto entry = entries_.find(id);
  if (entry == entries_.end()) {
    return false;
  }
  if (entry->second.held) {
    entry->second.held = false;
    MakeReady(id);
  }
  return true;
}

bool Scheduler::Return(const mail::MessageId& id) {
  auto entry = entries_.find(id);
  if (entry == entries_.end()) {
    return false;
  }
  entry->second.returning = true;
  entry->second.held = false;
  return Flush(id);
}

bool Scheduler::Forget(const mail::MessageId& id) {
  auto entry = entries_.find(id);
  if (entry == entries_.end() || entry->second.in_flight) {
    return false;
  }
  deferred_.erase({entry->second.next_attempt_ms, id});
  entries_.erase(entry);
  return true;
}

void Scheduler::FlushAll() {
  for (const auto& [due, id] : deferred_) {
    MakeReady(id);
  }
  deferred_.clear();
}

int64_t Scheduler::MsUntilNextDue() const {
  if (deferred_.empty()) {
    return -1;
  }
  const uint64_t now = clock_.MonotonicMs();
  const uint64_t due = deferred_.begin()->first;
  return due > now ? static_cast<int64_t>(due - now) : 0;
}

const QueueEntry* Scheduler::Entry(const mail::MessageId& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second;
}

bool Scheduler::DelayReported(const mail::MessageId& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() || it->second.delay_reported;
}

void Scheduler::MarkDelayReported(const mail::MessageId& id) {
  if (auto it = entries_.find(id); it != entries_.end()) {
    it->second.delay_reported = true;
  }
}

}  // namespace relais::scheduler
