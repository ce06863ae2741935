#include "core/ring/spsc_ring.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>

namespace relais::ring {
namespace {

TEST(SpscRingTest, FullRingRefusesAndKeepsItem) {
  SpscRing<std::unique_ptr<int>> ring(2);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(ring.TryPush(std::make_unique<int>(i)));
  }
  auto extra = std::make_unique<int>(99);
  EXPECT_FALSE(ring.TryPush(std::move(extra)));
  ASSERT_NE(extra, nullptr);  // Untouched on failure.
  EXPECT_EQ(*extra, 99);
  for (int i = 0; i < 4; ++i) {
    auto item = ring.TryPop();
    ASSERT_TRUE(item.has_value());
    EXPECT_EQ(**item, i);
  }
  EXPECT_FALSE(ring.TryPop().has_value());
}

TEST(SpscRingTest, DestructorReleasesQueuedItems) {
  auto counter = std::make_shared<int>(0);
  {
    SpscRing<std::shared_ptr<int>> ring(3);
    ASSERT_TRUE(ring.TryPush(std::shared_ptr<int>(counter)));
    ASSERT_TRUE(ring.TryPush(std::shared_ptr<int>(counter)));
    EXPECT_EQ(counter.use_count(), 3);
  }
  EXPECT_EQ(counter.use_count(), 1);
}

// Two threads hammer a small ring so that it is full and empty many times; every value must
// arrive exactly once and in order.
TEST(SpscRingTest, TransfersInOrderUnderContention) {
  constexpr uint64_t kItems = 2'000'000;
  SpscRing<uint64_t> ring(4);
  std::thread producer([&] {
    for (uint64_t i = 0; i < kItems;) {
      uint64_t v = i;
      if (ring.TryPush(std::move(v))) {
        ++i;
      }
    }
  });
  uint64_t expected = 0;
  uint64_t sum = 0;
  while (expected < kItems) {
    if (auto v = ring.TryPop()) {
      ASSERT_EQ(*v, expected);
      sum += *v;
      ++expected;
    }
  }
  producer.join();
  EXPECT_EQ(sum, kItems * (kItems - 1) / 2);
  EXPECT_FALSE(ring.TryPop().has_value());
}

}  // namespace
}  // namespace relais::ring
