// core/base/clock.h — the injected source of time.
//
// Code that needs time takes a `Clock&`; only core/base and startup code read the kernel's
// clocks. SystemClock is thread-safe; FakeClock (tests) belongs to one thread.
#pragma once

#include <cstdint>
#include <string>

namespace relais::base {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic milliseconds, for timeouts and durations.
  [[nodiscard]] virtual uint64_t MonotonicMs() const = 0;
  // Monotonic microseconds, for latencies worth measuring below a millisecond.
  [[nodiscard]] virtual uint64_t MonotonicMicros() const = 0;
  // Wall-clock microseconds since the Unix epoch, for trace headers and message IDs.
  [[nodiscard]] virtual uint64_t UnixMicros() const = 0;
};

// "Thu, 26 Nov 2026 21:00:00 +0000" (RFC 5322 3.3, in UTC).
[[nodiscard]] std::string Rfc5322Date(uint64_t unix_micros);

class SystemClock final : public Clock {
 public:
  [[nodiscard]] uint64_t MonotonicMs() const override;
  [[nodiscard]] uint64_t MonotonicMicros() const override;
  [[nodiscard]] uint64_t UnixMicros() const override;
};

class FakeClock final : public Clock {
 public:
  [[nodiscard]] uint64_t MonotonicMs() const override { return monotonic_ms_; }
  [[nodiscard]] uint64_t MonotonicMicros() const override { return monotonic_ms_ * 1000; }
  [[nodiscard]] uint64_t UnixMicros() const override { return unix_micros_; }
  void AdvanceMs(uint64_t ms) {
    monotonic_ms_ += ms;
    unix_micros_ += ms * 1000;
  }

 private:
  uint64_t monotonic_ms_ = 1'000'000;
  uint64_t unix_micros_ = 1'764'000'000'000'000;  // 2025-11-24, a fixed and valid date.
};

}  // namespace relais::base
