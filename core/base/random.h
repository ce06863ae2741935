// core/base/random.h — the injected source of randomness (retry jitter, unique names).
// SplitMix64: small, fast, and the same sequence for the same seed, so tests replay. Not for
// secrets. One thread per instance.
#pragma once

#include <cstdint>

namespace relais::base {

class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  [[nodiscard]] uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound); bound > 0.
  [[nodiscard]] uint64_t Below(uint64_t bound) { return Next() % bound; }

 private:
  uint64_t state_;
};

}  // namespace relais::base
