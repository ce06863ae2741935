#include "tools/relaisd/connection_limiter.h"

#include <gtest/gtest.h>

namespace relais::relaisd {
namespace {

mail::IpAddress Ip(const char* text) { return *mail::IpAddress::Parse(text); }

TEST(ConnectionLimiterTest, CapsEachClientAddress) {
  ConnectionLimiter limiter(100, 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kAdmitted);
  }
  EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kTooManyFromClient);
  EXPECT_EQ(limiter.Acquire(Ip("198.51.100.2")), ConnectionLimiter::Admission::kAdmitted);
  limiter.Release(Ip("198.51.100.1"));
  EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kAdmitted);
  EXPECT_EQ(limiter.active(), 4u);
}

// 500 sessions from relay.networks (a load balancer) got 421 4.7.0 from the per-address cap.
TEST(ConnectionLimiterTest, ExemptNetworksCountOnlyTowardsTheTotal) {
  ConnectionLimiter limiter(
      600, 3, {*mail::IpNetwork::Parse("10.0.0.0/8"), *mail::IpNetwork::Parse("::1")});
  for (int i = 0; i < 500; ++i) {
    ASSERT_EQ(limiter.Acquire(Ip("10.1.2.3")), ConnectionLimiter::Admission::kAdmitted) << i;
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(limiter.Acquire(Ip("::1")), ConnectionLimiter::Admission::kAdmitted) << i;
  }
  EXPECT_EQ(limiter.Acquire(Ip("::1")), ConnectionLimiter::Admission::kTooMany);
  EXPECT_EQ(limiter.active(), 600u);
  // Outside the networks the cap holds, and the total still binds.
  EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kTooMany);
  for (int i = 0; i < 500; ++i) {
    limiter.Release(Ip("10.1.2.3"));
  }
  for (int i = 0; i < 100; ++i) {
    limiter.Release(Ip("::1"));
  }
  EXPECT_EQ(limiter.active(), 0u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kAdmitted);
  }
  EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kTooManyFromClient);
  // An exempt client's releases never touch a bucket another client shares.
  EXPECT_EQ(limiter.Acquire(Ip("10.9.9.9")), ConnectionLimiter::Admission::kAdmitted);
  limiter.Release(Ip("10.9.9.9"));
  EXPECT_EQ(limiter.Acquire(Ip("198.51.100.1")), ConnectionLimiter::Admission::kTooManyFromClient);
}

}  // namespace
}  // namespace relais::relaisd
