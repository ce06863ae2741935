#include "queue/delivery/next_hops.h"

#include <gtest/gtest.h>

namespace relais::delivery {
namespace {

TEST(NextHopsTest, FailsOverInTheRoutesOrderAndStaysWhereItWorked) {
  NextHops hops(3);
  EXPECT_EQ(hops.Pick(), 0u);
  EXPECT_FALSE(hops.Failed(0, false));
  EXPECT_EQ(hops.Pick(), 1u);
  hops.Worked(1);
  EXPECT_FALSE(hops.down(0));  // A working next hop clears the record.
  EXPECT_EQ(hops.Pick(), 1u);  // New connections go where the last one worked.
  EXPECT_FALSE(hops.Failed(1, false));
  EXPECT_EQ(hops.Pick(), 2u);
  EXPECT_FALSE(hops.Failed(2, false));
  EXPECT_EQ(hops.Pick(), 0u);  // Wraps around to the first not known to be down.
}

TEST(NextHopsTest, EveryNextHopDownDefersTheQueueUnlessAConnectionIsReady) {
  NextHops hops(2);
  EXPECT_FALSE(hops.Failed(0, false));
  EXPECT_FALSE(hops.Failed(0, false));  // The same one twice counts once.
  EXPECT_FALSE(hops.Failed(1, true));   // Another connection of the pool is ready: go on.
  EXPECT_TRUE(hops.down(1));
  EXPECT_TRUE(hops.all_down());  // No new connection until one works or the record resets.
  hops.Reset();
  EXPECT_FALSE(hops.all_down());
  NextHops alone(2);
  EXPECT_FALSE(alone.Failed(1, false));
  EXPECT_TRUE(alone.Failed(0, false));  // All down: defer, and start over.
  EXPECT_FALSE(alone.down(0));
  EXPECT_FALSE(alone.down(1));
  NextHops single(1);
  EXPECT_TRUE(single.Failed(0, false));
  EXPECT_EQ(single.Pick(), 0u);
}

}  // namespace
}  // namespace relais::delivery
