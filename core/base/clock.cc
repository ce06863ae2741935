#include "core/base/clock.h"

#include <time.h>

namespace relais::base {

std::string Rfc5322Date(uint64_t unix_micros) {
  const time_t t = static_cast<time_t>(unix_micros / 1'000'000);
  tm utc;
  gmtime_r(&t, &utc);
  char buf[64];
  strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S +0000", &utc);
  return buf;
}

uint64_t SystemClock::MonotonicMs() const {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}

uint64_t SystemClock::MonotonicMicros() const {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

uint64_t SystemClock::UnixMicros() const {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

}  // namespace relais::base
