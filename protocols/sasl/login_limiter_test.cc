#include "protocols/sasl/login_limiter.h"

#include <string>

#include "gtest/gtest.h"

namespace relais::sasl {
namespace {

mail::IpAddress Ip(const std::string& text) {
  auto a = mail::IpAddress::Parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(mail::IpAddress{});
}

LoginLimiterOptions Options() {
  LoginLimiterOptions o;
  o.failures_before_delay = 3;
  o.lockout_failures = 6;
  o.lockout_time_ms = 60'000;
  o.delay_first_ms = 1000;
  o.delay_max_ms = 4000;
  o.entries_max = 100;
  return o;
}

TEST(LoginLimiterTest, DelaysAfterThresholdGrowingAndCapped) {
  LoginLimiter limiter(Options());
  const auto client = Ip("192.0.2.1");
  const uint64_t expected[] = {0, 0, 0, 1000, 2000, 4000};
  for (uint64_t want : expected) {
    const LoginDecision d = limiter.Check(client, "alice", 100);
    EXPECT_EQ(d.verdict, LoginVerdict::kProceed);
    EXPECT_EQ(d.delay_ms, want);
    (void)limiter.RecordFailure(client, "alice", 100);
  }
}

TEST(LoginLimiterTest, DelayFollowsTheWorseOfAddressAndUser) {
  LoginLimiter limiter(Options());
  for (int i = 0; i < 4; ++i) {
    (void)limiter.RecordFailure(Ip("192.0.2.1"), "alice", 0);
  }
  // Another user from the same address: the address's count applies.
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "bob", 0).delay_ms, 2000u);
  // The same user from another address: the user's count applies.
  EXPECT_EQ(limiter.Check(Ip("198.51.100.7"), "alice", 0).delay_ms, 2000u);
  EXPECT_EQ(limiter.Check(Ip("198.51.100.7"), "bob", 0).delay_ms, 0u);
}

TEST(LoginLimiterTest, LocksOutAfterLockoutFailuresUntilLockoutTime) {
  LoginLimiter limiter(Options());
  const auto client = Ip("192.0.2.1");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(limiter.RecordFailure(client, "alice", 1000), FailureEffect::kCounted);
  }
  EXPECT_EQ(limiter.RecordFailure(client, "alice", 1000), FailureEffect::kLocked);
  EXPECT_EQ(limiter.stats().lockouts, 2u);  // The address and the user.
  EXPECT_EQ(limiter.Check(client, "alice", 1000).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(client, "bob", 30'000).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(Ip("203.0.113.9"), "alice", 60'999).verdict, LoginVerdict::kLockedOut);
  // A failure reported while locked (an attempt already in flight) does not extend the lock.
  EXPECT_EQ(limiter.RecordFailure(client, "alice", 50'000), FailureEffect::kCounted);
  // The lock ends lockout_time after it began, and the slate is clean afterwards.
  const LoginDecision after = limiter.Check(client, "alice", 61'000);
  EXPECT_EQ(after.verdict, LoginVerdict::kProceed);
  EXPECT_EQ(after.delay_ms, 0u);
  EXPECT_EQ(limiter.address_entries(), 0u);
  EXPECT_EQ(limiter.user_entries(), 0u);
}

TEST(LoginLimiterTest, FailuresExpireLockoutTimeAfterTheLast) {
  LoginLimiter limiter(Options());
  const auto client = Ip("192.0.2.1");
  for (int i = 0; i < 4; ++i) {
    (void)limiter.RecordFailure(client, "alice", 10'000);
  }
  EXPECT_EQ(limiter.Check(client, "alice", 69'999).delay_ms, 2000u);
  EXPECT_EQ(limiter.Check(client, "alice", 70'000).delay_ms, 0u);
  // Counting starts over: five more failures do not lock.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(limiter.RecordFailure(client, "alice", 70'000), FailureEffect::kCounted);
  }
}

TEST(LoginLimiterTest, SuccessClearsTheAddressAndTheUser) {
  LoginLimiter limiter(Options());
  for (int i = 0; i < 5; ++i) {
    (void)limiter.RecordFailure(Ip("192.0.2.1"), "alice", 0);
  }
  (void)limiter.RecordFailure(Ip("192.0.2.1"), "bob", 0);
  limiter.RecordSuccess(Ip("192.0.2.1"), "alice");
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "alice", 0).delay_ms, 0u);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "carol", 0).delay_ms, 0u);
  EXPECT_EQ(limiter.user_entries(), 1u);  // bob's one failure stays.
  EXPECT_EQ(limiter.address_entries(), 0u);
}

TEST(LoginLimiterTest, GroupsIpv6ByPrefix64AndIpv4ByAddress) {
  LoginLimiter limiter(Options());
  for (int i = 0; i < 6; ++i) {
    // A host rotating addresses inside its /64, and a different user name each time.
    const std::string a = "2001:db8:1:2::" + std::to_string(i + 1);
    (void)limiter.RecordFailure(Ip(a.c_str()), "user" + std::to_string(i), 0);
  }
  EXPECT_EQ(limiter.Check(Ip("2001:db8:1:2:ffff::1"), "new", 0).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(Ip("2001:db8:1:3::1"), "new", 0).verdict, LoginVerdict::kProceed);
  for (int i = 0; i < 6; ++i) {
    (void)limiter.RecordFailure(Ip("192.0.2.1"), "u" + std::to_string(i), 0);
  }
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "new", 0).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.2"), "new", 0).verdict, LoginVerdict::kProceed);
  // An IPv4 client seen through a dual-stack socket is the same client.
  EXPECT_EQ(limiter.Check(Ip("::ffff:192.0.2.1"), "new", 0).verdict, LoginVerdict::kLockedOut);
}

TEST(LoginLimiterTest, UserKeysAreBoundedAndFoldTheDomainCase) {
  EXPECT_EQ(LoginLimiter::UserKey(std::string(10'000, 'x')).size(), 255u);
  EXPECT_EQ(LoginLimiter::UserKey("Bob@Example.COM"), "Bob@example.com");
  LoginLimiter limiter(Options());
  for (int i = 0; i < 6; ++i) {
    (void)limiter.RecordFailure(Ip("192.0.2." + std::to_string(i + 1)), "Bob@EXAMPLE.com", 0);
  }
  EXPECT_EQ(limiter.Check(Ip("203.0.113.1"), "Bob@example.com", 0).verdict,
            LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(Ip("203.0.113.1"), "bob@example.com", 0).verdict, LoginVerdict::kProceed);
}

TEST(LoginLimiterTest, EvictsTheOldestBeyondEntriesMax) {
  LoginLimiterOptions o = Options();
  o.entries_max = 10;
  LoginLimiter limiter(o);
  // user0 fails first, then is the oldest; the 11th key pushes it out.
  for (int i = 0; i < 3; ++i) {
    (void)limiter.RecordFailure(Ip("192.0.2.1"), "user0", 0);
  }
  for (int i = 1; i < 10; ++i) {
    (void)limiter.RecordFailure(Ip(("192.0.2." + std::to_string(i + 1)).c_str()),
                                "user" + std::to_string(i), uint64_t(i));
  }
  EXPECT_EQ(limiter.user_entries(), 10u);
  EXPECT_EQ(limiter.Check(Ip("203.0.113.1"), "user0", 20).delay_ms, 1000u);
  (void)limiter.RecordFailure(Ip("192.0.2.1"), "user1", 20);  // user1 is now the newest.
  (void)limiter.RecordFailure(Ip("192.0.2.99"), "user10", 21);
  EXPECT_EQ(limiter.user_entries(), 10u);
  EXPECT_EQ(limiter.address_entries(), 10u);
  EXPECT_EQ(limiter.Check(Ip("203.0.113.1"), "user0", 22).delay_ms, 0u);  // Forgotten.
  EXPECT_GE(limiter.stats().evictions, 1u);
  // Many keys later, the tables never grow past the bound.
  for (int i = 0; i < 1000; ++i) {
    (void)limiter.RecordFailure(
        Ip(("10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250)).c_str()),
        "spray" + std::to_string(i), 30);
  }
  EXPECT_EQ(limiter.user_entries(), 10u);
  EXPECT_EQ(limiter.address_entries(), 10u);
}

TEST(LoginLimiterTest, ZeroDisablesDelayAndLockout) {
  LoginLimiterOptions o = Options();
  o.failures_before_delay = 0;
  o.lockout_failures = 0;
  LoginLimiter limiter(o);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(limiter.RecordFailure(Ip("192.0.2.1"), "alice", 0), FailureEffect::kCounted);
  }
  const LoginDecision d = limiter.Check(Ip("192.0.2.1"), "alice", 0);
  EXPECT_EQ(d.verdict, LoginVerdict::kProceed);
  EXPECT_EQ(d.delay_ms, 0u);
}

}  // namespace
}  // namespace relais::sasl
