#include "tools/relaisd/transfer_deadline.h"

#include <gtest/gtest.h>

namespace relais::relaisd {
namespace {

// A client at the rate keeps the deadline `base` ahead of it.
TEST(TransferDeadlineTest, AClientAtTheRateStays) {
  TransferDeadline d = TransferDeadline::Start(0, 1000, 500);
  for (uint64_t t = 100; t <= 60'000; t += 100) {
    d.OnRead(t, 100, 1000, 1000, 500);  // 1 000 bytes/s at data_rate_min = 1 000.
    ASSERT_GT(d.At(false), t) << t;
    ASSERT_GT(d.At(true), t) << t;
  }
  EXPECT_EQ(d.At(false), 60'000u + 1000);
}

// The reviewer's attack: 21.6 KB at once earned 21.6 s, then a byte every 2 s kept the session
// for 22.7 s. Credit cannot run ahead of the clock by more than the base.
TEST(TransferDeadlineTest, CreditEarnedInAdvanceIsCapped) {
  TransferDeadline d = TransferDeadline::Start(0, 1000, 500);
  d.OnRead(10, 21'600, 1000, 1000, 500);
  EXPECT_EQ(d.At(false), 1010u);
  EXPECT_EQ(d.At(true), 510u);
  d.OnRead(1000, 1, 1000, 1000, 500);  // A trickled byte: 1 ms more, not a new window.
  EXPECT_EQ(d.At(false), 1011u);
  // At the defaults: 25 MB at once earns at most the base (300 s), not ~14.5 h.
  TransferDeadline big = TransferDeadline::Start(0, 300'000, 10'000);
  big.OnRead(5, 25'000'000, 500, 300'000, 10'000);
  EXPECT_EQ(big.At(false), 300'005u);
  EXPECT_EQ(big.At(true), 10'005u);
}

// Bursts that alternate with silences: each burst tops the deadline up to base past it, but a
// silence longer than the base ends the transfer whatever came before.
TEST(TransferDeadlineTest, BurstsThenSilence) {
  TransferDeadline d = TransferDeadline::Start(0, 1000, 1000);
  uint64_t t = 0;
  for (int i = 0; i < 10; ++i) {
    t += 900;
    d.OnRead(t, 1'000'000, 1000, 1000, 1000);
    ASSERT_EQ(d.At(false), t + 1000);
  }
  EXPECT_LE(d.At(false), t + 1000);
}

// Below the rate the deadline comes whatever the pace, and it never moves back.
TEST(TransferDeadlineTest, ATrickleRunsOut) {
  TransferDeadline d = TransferDeadline::Start(0, 2000, 2000);
  uint64_t previous = d.At(false);
  uint64_t t = 0;
  while (d.At(false) > t) {
    t += 100;
    d.OnRead(t, 1, 500, 2000, 2000);  // 10 bytes/s at 500: 2 ms a read.
    ASSERT_GE(d.At(false), previous);
    previous = d.At(false);
  }
  EXPECT_GE(t, 2000u);
  EXPECT_LE(t, 2100u);  // The 2 s base plus 2 ms per read: cut at the first read past it.
}

// Small reads add up: the remainder below one ms is kept, not dropped at every read.
TEST(TransferDeadlineTest, FractionsOfAMillisecondAddUp) {
  TransferDeadline d = TransferDeadline::Start(0, 100'000, 100'000);
  for (uint64_t i = 0; i < 3000; ++i) {
    d.OnRead(i * 10, 1, 3000, 100'000, 100'000);  // 1/3 ms per byte.
  }
  EXPECT_EQ(d.At(false), 101'000u);
  // A rate of 0 is treated as 1 byte/s, and huge counts do not overflow.
  TransferDeadline z = TransferDeadline::Start(0, 1000, 1000);
  z.OnRead(0, 1, 0, 1000, 1000);
  EXPECT_EQ(z.At(false), 1000u);
  z.OnRead(0, uint64_t{1} << 50, 1, 1000, 1000);
  EXPECT_EQ(z.At(false), 1000u);
}

// Stress seen once holds for the transfer: cutting the slowest ends the stress, and the rest
// must not get the long deadline back.
TEST(TransferDeadlineTest, StressSeenOnceHolds) {
  TransferDeadline d = TransferDeadline::Start(0, 600'000, 3000);
  d.OnRead(100, 1, 500, 600'000, 3000);
  EXPECT_EQ(d.At(false), 600'002u);
  d.OnStress();
  EXPECT_EQ(d.At(false), 3002u);
  d.OnRead(200, 1, 500, 600'000, 3000);
  EXPECT_EQ(d.At(false), 3004u);
  EXPECT_EQ(d.At(true), 3004u);
}

// Outside a transfer only the session's own timeout counts.
TEST(SessionDeadlinesTest, OutsideATransferTheSessionTimeoutAlone) {
  SessionDeadlines d;
  const TransferLimits limits{1000, 500, 1000};
  EXPECT_EQ(d.Update(100, false, 0, 300'000, false, limits), 300'100u);
  EXPECT_FALSE(d.in_transfer());
  EXPECT_EQ(d.Expired(300'099, true), SessionDeadlines::Expiry::kNone);
  EXPECT_EQ(d.Expired(300'100, false), SessionDeadlines::Expiry::kTimeout);
}

// In a transfer the deadline comes first when it is nearer, and is stricter under stress.
TEST(SessionDeadlinesTest, ATransferIsCutAtItsDeadline) {
  SessionDeadlines d;
  const TransferLimits limits{1000, 500, 1000};
  EXPECT_EQ(d.Update(0, true, 0, 600'000, false, limits), 1000u);
  EXPECT_TRUE(d.in_transfer());
  EXPECT_EQ(d.NextAt(true), 500u);
  EXPECT_EQ(d.Expired(999, false), SessionDeadlines::Expiry::kNone);
  EXPECT_EQ(d.Expired(999, true), SessionDeadlines::Expiry::kTooSlow);
  EXPECT_EQ(d.Expired(1000, false), SessionDeadlines::Expiry::kTooSlow);
  // The session's timeout wins when it is due as well.
  EXPECT_EQ(d.Expired(600'000, false), SessionDeadlines::Expiry::kTimeout);
}

// Each update credits only the bytes read since the last one; the end of the transfer drops
// the deadline.
TEST(SessionDeadlinesTest, ReadsAreCreditedOnceAndTheEndDropsTheDeadline) {
  SessionDeadlines d;
  const TransferLimits limits{1000, 500, 1000};
  d.Update(0, true, 0, 600'000, false, limits);
  // 200 bytes at 1 000 bytes/s: 200 ms more.
  EXPECT_EQ(d.Update(500, true, 200, 600'000, false, limits), 1200u);
  // The same total again (the session moved without new bytes): nothing more.
  EXPECT_EQ(d.Update(600, true, 200, 600'000, false, limits), 1200u);
  EXPECT_EQ(d.Update(700, false, 200, 300'000, false, limits), 300'700u);
  EXPECT_EQ(d.Expired(1200, false), SessionDeadlines::Expiry::kNone);
}

// Stress seen once during a transfer keeps the stress deadline for the rest of it.
TEST(SessionDeadlinesTest, StressSeenDuringATransferStays) {
  SessionDeadlines d;
  const TransferLimits limits{1000, 500, 1000};
  d.Update(0, true, 0, 600'000, false, limits);
  EXPECT_EQ(d.Update(10, true, 0, 600'000, true, limits), 500u);
  EXPECT_EQ(d.NextAt(false), 500u);  // The load fell; the transfer keeps the stress deadline.
  // A new transfer starts afresh.
  d.Update(20, false, 0, 600'000, false, limits);
  EXPECT_EQ(d.Update(30, true, 0, 600'000, false, limits), 1030u);
}

}  // namespace
}  // namespace relais::relaisd
