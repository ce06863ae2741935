#include "core/timer/timer_wheel.h"

#include "core/base/check.h"

namespace relais::timer {

Timer::~Timer() {
  if (wheel_ != nullptr) {
    wheel_->Cancel(*this);
  }
}

TimerWheel::TimerWheel(uint64_t now_ms, uint32_t tick_ms)
    : tick_ms_(tick_ms), current_tick_(now_ms / tick_ms) {
  RELAIS_CHECK(tick_ms > 0);
}

uint32_t TimerWheel::SlotFor(uint64_t deadline_ms) const {
  // Round up so that a timer never fires before its deadline.
  uint64_t tick = (deadline_ms + tick_ms_ - 1) / tick_ms_;
  // While Advance is processing current_tick_, that slot is taken: due timers go to the next.
  const uint64_t earliest = advancing_ ? current_tick_ + 1 : current_tick_;
  if (tick < earliest) {
    tick = earliest;
  }
  return static_cast<uint32_t>(tick % kSlots);
}

void TimerWheel::PushFront(Timer*& head, Timer& timer) {
  timer.head_ = &head;
  timer.prev_ = nullptr;
  timer.next_ = head;
  if (head != nullptr) {
    head->prev_ = &timer;
  }
  head = &timer;
}

void TimerWheel::Arm(Timer& timer, uint64_t deadline_ms) {
  if (timer.wheel_ != nullptr) {
    Cancel(timer);
  }
  timer.deadline_ms_ = deadline_ms;
  timer.wheel_ = this;
  timer.armed_pass_ = pass_;
  PushFront(slots_[SlotFor(deadline_ms)], timer);
  ++armed_;
}

void TimerWheel::Cancel(Timer& timer) {
  if (timer.wheel_ == nullptr) {
    return;
  }
  RELAIS_DCHECK(timer.wheel_ == this);
  if (timer.prev_ != nullptr) {
    timer.prev_->next_ = timer.next_;
  } else {
    *timer.head_ = timer.next_;
  }
  if (timer.next_ != nullptr) {
    timer.next_->prev_ = timer.prev_;
  }
  timer.prev_ = timer.next_ = nullptr;
  timer.head_ = nullptr;
  timer.wheel_ = nullptr;
  --armed_;
}

uint32_t TimerWheel::Advance(uint64_t now_ms) {
  const uint64_t now_tick = now_ms / tick_ms_;
  uint32_t fired = 0;
  // Visit at most one revolution per call: past that every slot has been seen once.
  uint64_t last = now_tick;
  if (last >= current_tick_ + kSlots) {
    last = current_tick_ + kSlots - 1;
  }
  advancing_ = true;
  ++pass_;
  for (; current_tick_ <= last; ++current_tick_) {
    Timer*& slot = slots_[current_tick_ % kSlots];
    if (slot == nullptr) {
      continue;
    }
    // Take the slot's list as this pass's batch. Callbacks may cancel batch members (Cancel
    // follows head_) or arm timers anew (they land in slots, outside the batch).
    Timer* batch = slot;
    slot = nullptr;
    for (Timer* t = batch; t != nullptr; t = t->next_) {
      t->head_ = &batch;
    }
    while (batch != nullptr) {
      Timer& t = *batch;
      Cancel(t);
      if (t.deadline_ms_ <= now_ms && t.armed_pass_ != pass_) {
        ++fired;
        t.OnTimer();
      } else {
        t.wheel_ = this;
        ++armed_;
        PushFront(slots_[SlotFor(t.deadline_ms_)], t);
      }
    }
  }
  advancing_ = false;
  if (now_tick >= current_tick_) {
    current_tick_ = now_tick + 1;
  }
  return fired;
}

int64_t TimerWheel::MsUntilNextTick(uint64_t now_ms) const {
  if (armed_ == 0) {
    return -1;
  }
  const uint64_t next_ms = current_tick_ * tick_ms_;
  return next_ms > now_ms ? static_cast<int64_t>(next_ms - now_ms) : 0;
}

}  // namespace relais::timer
