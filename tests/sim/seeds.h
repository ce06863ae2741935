// tests/sim/seeds.h — which seeds a seeded simulation runs, and the replay line on a failure.
//
// By default `count` seeds from `first` (what CI runs); RELAIS_SIM_SEEDS=n runs n of them,
// RELAIS_SIM_SEED=s replays seed s alone.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>

namespace relais::sim {

struct Seeds {
  uint64_t first = 0;
  uint64_t count = 0;
};

[[nodiscard]] inline Seeds SeedsFromEnv(uint64_t first, uint64_t count) {
  Seeds s{first, count};
  if (const char* v = std::getenv("RELAIS_SIM_SEEDS")) {
    s.count = std::strtoull(v, nullptr, 10);
  }
  if (const char* v = std::getenv("RELAIS_SIM_SEED")) {
    s.first = std::strtoull(v, nullptr, 10);
    s.count = 1;
  }
  return s;
}

// Runs `run(seed)` for each seed; after the first that fails, names it for a replay and stops.
template <typename Run>
void ForEachSeed(const Seeds& seeds, Run run) {
  for (uint64_t seed = seeds.first; seed < seeds.first + seeds.count; ++seed) {
    run(seed);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "replay with RELAIS_SIM_SEED=" << seed;
      return;
    }
  }
}

}  // namespace relais::sim
