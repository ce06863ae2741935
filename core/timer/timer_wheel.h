// core/timer/timer_wheel.h — per-shard hashed timing wheel for connection timeouts.
//
// Timers are intrusive: each owner embeds a Timer, so arming, re-arming and cancelling never
// allocate and cost O(1). The wheel has kSlots slots of tick_ms each; a timer whose deadline is
// more than one revolution away stays in its slot and is skipped until its turn comes. Timeouts
// fire at most one tick late, never early. A timer armed from a callback for a deadline that is
// already due fires on the next Advance, never in the same pass (no livelock).
//
// Owned by one shard; not thread-safe. A Timer must be cancelled (or fired) before it dies;
// its destructor cancels it.
#pragma once

#include <cstdint>

namespace relais::timer {

class TimerWheel;

class Timer {
 public:
  Timer() = default;
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  virtual ~Timer();
  [[nodiscard]] bool armed() const { return wheel_ != nullptr; }
  [[nodiscard]] uint64_t deadline_ms() const { return deadline_ms_; }

 protected:
  // Runs on the shard thread from TimerWheel::Advance; the timer is already disarmed and may
  // be re-armed from here.
  virtual void OnTimer() = 0;

 private:
  friend class TimerWheel;
  TimerWheel* wheel_ = nullptr;
  Timer** head_ = nullptr;  // The list this timer is on: a slot, or Advance's batch.
  Timer* prev_ = nullptr;
  Timer* next_ = nullptr;
  uint64_t deadline_ms_ = 0;
  uint64_t armed_pass_ = 0;
};

class TimerWheel {
 public:
  static constexpr uint32_t kSlots = 1024;

  TimerWheel(uint64_t now_ms, uint32_t tick_ms);
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // (Re-)arms `timer` to fire at `deadline_ms` (monotonic).
  void Arm(Timer& timer, uint64_t deadline_ms);
  void Cancel(Timer& timer);
  // Fires every timer whose deadline is <= now_ms. Returns how many fired.
  uint32_t Advance(uint64_t now_ms);
  // Milliseconds until the next tick that may hold work, or -1 when no timer is armed.
  [[nodiscard]] int64_t MsUntilNextTick(uint64_t now_ms) const;
  [[nodiscard]] uint32_t armed_count() const { return armed_; }

 private:
  uint32_t SlotFor(uint64_t deadline_ms) const;
  static void PushFront(Timer*& head, Timer& timer);

  uint32_t tick_ms_;
  uint64_t current_tick_;  // The next tick to process.
  uint32_t armed_ = 0;
  bool advancing_ = false;
  uint64_t pass_ = 0;  // Advance calls so far; a timer armed during pass N waits for N+1.
  Timer* slots_[kSlots] = {};
};

}  // namespace relais::timer
