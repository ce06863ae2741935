#include "protocols/sasl/login_limiter.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

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

// A success clears the user's failures only: the address keeps its own (a guesser with an
// account of his own must not reset his address's count by logging in as himself).
TEST(LoginLimiterTest, SuccessClearsTheUserButNotTheAddress) {
  LoginLimiter limiter(Options());
  for (int i = 0; i < 4; ++i) {
    (void)limiter.RecordFailure(Ip("192.0.2.1"), "alice", 0);
  }
  (void)limiter.RecordFailure(Ip("192.0.2.1"), "bob", 0);
  limiter.RecordSuccess(Ip("192.0.2.1"), "alice");
  // alice from elsewhere: clean. Anyone from 192.0.2.1: its 5 failures still count.
  EXPECT_EQ(limiter.Check(Ip("198.51.100.1"), "alice", 0).delay_ms, 0u);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "carol", 0).delay_ms, 4000u);
  EXPECT_EQ(limiter.user_entries(), 1u);  // bob's one failure stays.
  EXPECT_EQ(limiter.address_entries(), 1u);
  // The sixth failure of the address locks it although alice logged in in between.
  EXPECT_EQ(limiter.RecordFailure(Ip("192.0.2.1"), "dave", 0), FailureEffect::kLocked);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "alice", 0).verdict, LoginVerdict::kLockedOut);
  // They are forgotten lockout_time after the last one, like any failure.
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "alice", 60'000).verdict, LoginVerdict::kProceed);
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
  // Idempotent: AuthVerifier settles with the key it kept, Begin had the raw name.
  for (const std::string& u : {std::string(300, 'x') + "@A.B", std::string("Bob@Example.COM"),
                               std::string(250, 'y') + "@ExampleExample.COM"}) {
    EXPECT_EQ(LoginLimiter::UserKey(LoginLimiter::UserKey(u)), LoginLimiter::UserKey(u)) << u;
  }
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

// Begin counts an attempt as a failure while it is in flight: parallel attempts see each
// other, delays grow with them, and no more start than could reach the lock.
TEST(LoginLimiterTest, AttemptsInFlightCountAsFailures) {
  LoginLimiterOptions o = Options();  // Delay from 3, lock at 6.
  o.in_flight_per_address_max = 0;    // No cap: this test is about the counts.
  o.in_flight_per_user_max = 0;
  LoginLimiter limiter(o);
  const auto client = Ip("192.0.2.1");
  const uint64_t expected[] = {0, 0, 0, 1000, 2000, 4000};
  for (uint64_t want : expected) {
    const LoginDecision d = limiter.Begin(client, "alice", 100);
    ASSERT_EQ(d.verdict, LoginVerdict::kProceed);
    EXPECT_EQ(d.delay_ms, want);
  }
  // Six in flight, none settled: a seventh could be past the lock, so it does not start, for
  // this address or this user.
  EXPECT_EQ(limiter.Begin(client, "bob", 100).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Begin(Ip("198.51.100.1"), "alice", 100).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(client, "bob", 100).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.stats().lockouts, 0u);  // Not locked: refused while they are unsettled.
  // Five turn out right: their provisional failures are undone. The address keeps the one
  // that failed, the user's slate is clean.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(limiter.Settle(client, "alice", /*ok=*/true, 200), 0u);
  }
  EXPECT_EQ(limiter.Settle(client, "alice", /*ok=*/false, 200), 0u);
  EXPECT_EQ(limiter.Check(client, "bob", 200).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Check(client, "bob", 200).delay_ms, 0u);
  EXPECT_EQ(limiter.user_entries(), 1u);  // alice: the settled failure.
  EXPECT_EQ(limiter.address_entries(), 1u);
}

TEST(LoginLimiterTest, SettledFailuresLockAndTheLastOnesInFlightStillCount) {
  LoginLimiterOptions o = Options();
  o.in_flight_per_address_max = 0;
  o.in_flight_per_user_max = 0;
  LoginLimiter limiter(o);
  const auto client = Ip("192.0.2.1");
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(limiter.Begin(client, "u" + std::to_string(i), 0).verdict, LoginVerdict::kProceed);
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(limiter.Settle(client, "u" + std::to_string(i), false, 10), 0u);
  }
  EXPECT_EQ(limiter.Settle(client, "u5", false, 10), 1u);  // The address locks.
  EXPECT_EQ(limiter.Check(client, "new", 10).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.stats().lockouts, 1u);
  // The lock ends lockout_time after the failure that set it; then nothing is left.
  EXPECT_EQ(limiter.Check(client, "new", 60'010).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.address_entries(), 0u);
}

// One address, one user: a small number of checks in flight each. Others are not affected.
TEST(LoginLimiterTest, CapsAttemptsInFlightPerAddressAndPerUser) {
  LoginLimiterOptions o = Options();
  o.in_flight_per_address_max = 2;
  o.in_flight_per_user_max = 1;
  LoginLimiter limiter(o);
  const auto greedy = Ip("192.0.2.66");
  EXPECT_EQ(limiter.Begin(greedy, "u1", 0).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Begin(greedy, "u1", 0).verdict, LoginVerdict::kBusy);  // The user's cap.
  EXPECT_EQ(limiter.Begin(greedy, "u2", 0).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Begin(greedy, "u3", 0).verdict, LoginVerdict::kBusy);  // The address's cap.
  EXPECT_EQ(limiter.Begin(Ip("2001:db8::1"), "u1", 0).verdict, LoginVerdict::kBusy);
  EXPECT_EQ(limiter.Begin(Ip("198.51.100.20"), "alice", 0).verdict, LoginVerdict::kProceed);
  // A refusal counts nothing: two settled failures for the greedy address, not five.
  EXPECT_EQ(limiter.Settle(greedy, "u1", false, 0), 0u);
  EXPECT_EQ(limiter.Settle(greedy, "u2", false, 0), 0u);
  EXPECT_EQ(limiter.Settle(Ip("198.51.100.20"), "alice", true, 0), 0u);
  EXPECT_EQ(limiter.Begin(greedy, "u3", 0).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Check(greedy, "u4", 0).delay_ms, 1000u);  // 2 settled + 1 in flight.
  EXPECT_EQ(limiter.Settle(greedy, "u3", true, 0), 0u);
  EXPECT_EQ(limiter.Check(greedy, "u4", 0).delay_ms, 0u);
  EXPECT_EQ(limiter.address_entries(), 1u);  // 198.51.100.20 succeeded: nothing remembered.
}

// A full table never gives up a locked entry nor one in flight; a new key is refused instead,
// until the first lock ends.
TEST(LoginLimiterTest, AFullTableEvictsNeitherLockedNorInFlightEntries) {
  LoginLimiterOptions o = Options();
  o.lockout_failures = 2;
  o.entries_max = 4;
  LoginLimiter limiter(o);
  // Users a..c locked at 1000, 1001, 1002, from addresses of their own.
  for (int i = 0; i < 3; ++i) {
    const std::string user(1, static_cast<char>('a' + i));
    for (int f = 0; f < 2; ++f) {
      (void)limiter.RecordFailure(Ip("10.0.0." + std::to_string(i + 1)), user, 1000 + uint64_t(i));
    }
  }
  // d in flight.
  ASSERT_EQ(limiter.Begin(Ip("10.0.0.9"), "d", 1100).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.user_entries(), 4u);
  // Full: e is refused, nobody is unlocked, and the refusal is counted.
  EXPECT_EQ(limiter.Begin(Ip("10.0.0.9"), "e", 2000).verdict, LoginVerdict::kTableFull);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "a", 2000).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.stats().full_refusals, 1u);
  // A failure with new keys in both full tables cannot be remembered: dropped, counted.
  (void)limiter.RecordFailure(Ip("10.0.0.20"), "f", 2000);
  EXPECT_EQ(limiter.stats().full_refusals, 3u);
  EXPECT_EQ(limiter.stats().evictions, 0u);
  EXPECT_EQ(limiter.user_entries(), 4u);
  EXPECT_EQ(limiter.address_entries(), 4u);
  // d's Settle still finds its entries (idle ones now: the only evictable kind).
  EXPECT_EQ(limiter.Settle(Ip("10.0.0.9"), "d", false, 2000), 0u);
  EXPECT_EQ(limiter.Begin(Ip("10.0.0.10"), "e", 2001).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.stats().evictions, 2u);  // d and 10.0.0.9 went, not a locked one.
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "a", 2001).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(Ip("10.0.0.1"), "x", 2001).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Settle(Ip("10.0.0.10"), "e", false, 2001), 0u);
  // Full again (a, b, c locked; e idle): g takes e's place, and a success leaves nothing.
  EXPECT_EQ(limiter.Begin(Ip("10.0.0.11"), "g", 2002).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Settle(Ip("10.0.0.11"), "g", true, 2002), 0u);
  EXPECT_EQ(limiter.user_entries(), 3u);
  EXPECT_EQ(limiter.address_entries(), 3u);
  EXPECT_EQ(limiter.Begin(Ip("10.0.0.12"), "h", 2003).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Begin(Ip("10.0.0.13"), "i", 2003).verdict, LoginVerdict::kTableFull);
  // a's lock (and 10.0.0.1's) ends at 1000 + 60000: then a new key takes its place; b and c
  // stay locked.
  EXPECT_EQ(limiter.Begin(Ip("10.0.0.13"), "i", 61'000).verdict, LoginVerdict::kProceed);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "b", 61'000).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.Check(Ip("192.0.2.1"), "c", 61'000).verdict, LoginVerdict::kLockedOut);
  EXPECT_EQ(limiter.user_entries(), 4u);
  EXPECT_EQ(limiter.address_entries(), 4u);
}

// The daemon's one limiter is used by every shard's thread at once (run under TSan too): no
// attempt is lost. Each address gets 160 attempts from 4 threads, all failures or all successes;
// with lockout_failures 160 every failing address must lock exactly at its last one.
TEST(LoginLimiterTest, SharedByThreadsCountsEveryAttempt) {
  constexpr int kThreads = 4, kAttempts = 2000, kAddresses = 50;
  constexpr uint32_t kPerAddress = kThreads * kAttempts / kAddresses;
  LoginLimiterOptions o = Options();
  o.lockout_failures = kPerAddress;
  o.failures_before_delay = 0;
  o.in_flight_per_address_max = 0;
  o.entries_max = kThreads * kAttempts;
  auto limiter = std::make_shared<LoginLimiter>(o);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&limiter, t] {
      for (int i = 0; i < kAttempts; ++i) {
        // Address i % 50: even ones always fail, odd ones always succeed (50 is even).
        const auto client = Ip("192.0.2." + std::to_string(1 + i % kAddresses));
        const std::string user = "u" + std::to_string(t) + "-" + std::to_string(i);
        const LoginDecision d = limiter->Begin(client, user, 0);
        ASSERT_EQ(d.verdict, LoginVerdict::kProceed) << i;
        (void)limiter->Settle(client, user, /*ok=*/i % 2 == 1, 0);
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(limiter->address_entries(), size_t{kAddresses / 2});
  EXPECT_EQ(limiter->stats().lockouts, uint64_t{kAddresses / 2});
  for (int a = 0; a < kAddresses; ++a) {
    EXPECT_EQ(limiter->Check(Ip("192.0.2." + std::to_string(1 + a)), "nobody", 0).verdict,
              a % 2 == 0 ? LoginVerdict::kLockedOut : LoginVerdict::kProceed)
        << a;
  }
  EXPECT_EQ(limiter->stats().evictions, 0u);
}

}  // namespace
}  // namespace relais::sasl
