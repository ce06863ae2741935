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

// Endpoints: host 0 has two addresses (0, 1), host 1 one (2), host 2 one (3).
constexpr uint32_t kHosts[] = {0, 0, 1, 2};

TEST(TaskHopsTest, AFailedAddressGoesToTheHostsNextAddressAFailedHostToTheNextHost) {
  NextHops pool(4);
  TaskHops task;
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 0u);
  task.Tried(0);
  task.AddressFailed(0, 0);
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 1u);  // Host 0's second address first.
  task.HostFailed(0);                         // It greeted 421: the whole host is done.
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 2u);
  task.HostFailed(1);
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 3u);
  task.HostFailed(2);
  EXPECT_FALSE(task.Pick(kHosts, pool, 0).has_value());
  EXPECT_EQ(task.hosts_tried(), 3u);
  task.Reset();
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 0u);
}

TEST(TaskHopsTest, HostsMaxCountsDistinctHostsAndLetsATriedHostsAddressesThrough) {
  NextHops pool(4);
  TaskHops task;
  task.AddressFailed(0, 0);
  EXPECT_EQ(task.Pick(kHosts, pool, 1), 1u);  // The same host: not a new one.
  task.AddressFailed(1, 0);
  EXPECT_FALSE(task.Pick(kHosts, pool, 1).has_value());  // One host per attempt.
  EXPECT_EQ(task.Pick(kHosts, pool, 2), 2u);
  task.HostFailed(1);
  EXPECT_FALSE(task.Pick(kHosts, pool, 2).has_value());  // Host 2 would be the third.
  EXPECT_TRUE(task.Allows(3, 2, 0));
  EXPECT_FALSE(task.Allows(3, 2, 2));
  EXPECT_FALSE(task.Allows(2, 1, 0));
}

TEST(TaskHopsTest, AddressesDownForThePoolArePassedOverWhileAnotherIsLeft) {
  NextHops pool(4);
  EXPECT_FALSE(pool.Failed(0, true));
  TaskHops task;
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 1u);
  EXPECT_FALSE(pool.Failed(1, true));
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 2u);
  EXPECT_FALSE(pool.Failed(2, true));
  EXPECT_FALSE(pool.Failed(3, true));
  EXPECT_EQ(task.Pick(kHosts, pool, 0), 0u);  // All down: the first allowed still.
}

}  // namespace
}  // namespace relais::delivery
