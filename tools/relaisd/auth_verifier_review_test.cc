// tools/relaisd/auth_verifier_review_test.cc — security review: proofs of findings in the AUTH
// brute-force defences (AuthVerifier + sasl::LoginLimiter). Each test asserts what a fix must
// give. Open findings are DISABLED_ (the suite stays green until they are fixed; run them with
// --gtest_also_run_disabled_tests) and lose the prefix with the fix: all five are fixed.
#include <poll.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "protocols/sasl/login_limiter.h"
#include "tools/relaisd/auth_verifier.h"

namespace relais::relaisd {
namespace {

mail::IpAddress Ip(const std::string& text) { return *mail::IpAddress::Parse(text); }

struct Answer final : AuthCompletion {
  int calls = 0;
  AuthOutcome outcome = AuthOutcome::kBadCredentials;
  void OnAuthDone(AuthOutcome o) override {
    outcome = o;
    ++calls;
  }
};

class AuthReviewTest : public ::testing::Test {
 protected:
  AuthReviewTest() : wheel_(clock_.MonotonicMs(), 10) {}

  static sasl::LoginLimiterOptions LimiterOptions() {
    sasl::LoginLimiterOptions o;
    o.failures_before_delay = 2;
    o.lockout_failures = 4;
    o.lockout_time_ms = 600'000;
    o.delay_first_ms = 1000;
    o.delay_max_ms = 8000;
    return o;
  }
  // `shared`: the daemon's limiter, as every shard gets it; nullptr: a limiter of its own.
  std::unique_ptr<AuthVerifier> Make(uint32_t in_flight_max = 64,
                                     std::shared_ptr<sasl::LoginLimiter> shared = nullptr) {
    AuthVerifierOptions o;
    o.limiter = LimiterOptions();
    o.in_flight_max = in_flight_max;
    // "alice"/"right" is the attacker's own account; everything else is wrong.
    o.check = [](const sasl::Credentials&, std::string_view u, std::string_view p) {
      return u == "alice" && p == "right" ? sasl::VerifyResult::kOk
                                          : sasl::VerifyResult::kBadPassword;
    };
    auto v = shared != nullptr ? std::make_unique<AuthVerifier>(o, shared, wheel_, clock_)
                               : std::make_unique<AuthVerifier>(o, wheel_, clock_);
    v->SetCredentials(std::make_shared<sasl::Credentials>());
    return v;
  }
  // Takes every result the helper posted (waits for `n`), then lets held answers go.
  void Drain(AuthVerifier& v, int n) {
    for (int got = 0; got < n;) {
      pollfd p{v.done_fd(), POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 10'000), 1);
      uint64_t count;
      ASSERT_EQ(::read(v.done_fd(), &count, sizeof(count)), 8);
      const uint32_t before = v.pending();
      v.OnDoneReadable();
      got += static_cast<int>(count);
      (void)before;
    }
    clock_.AdvanceMs(60'000);
    wheel_.Advance(clock_.MonotonicMs());
  }
  base::FakeClock clock_;
  timer::TimerWheel wheel_;
};

// FINDING: the limiter is consulted when an attempt is submitted but learns of the failure only
// when its hash is done. An attacker who sends AUTH on many connections at once (or pipelines
// across connections) gets in_flight_max guesses (64 per shard) checked with no delay and no
// lock, although lockout_failures is 4.
TEST_F(AuthReviewTest, ConcurrentGuessesStopAtTheLockout) {
  auto v = Make();
  std::vector<Answer> answers(40);
  int checked = 0;
  for (Answer& a : answers) {
    checked += v->Submit("victim", "guess", Ip("192.0.2.1"), a) == AuthSubmit::kPending;
  }
  Drain(*v, checked);
  EXPECT_LE(checked, 4) << checked << " passwords checked for one address and one user";
}

// FINDING (same root): nothing bounds the checks one address has in flight, so one client (up to
// connections_per_ip_max = 100 connections) takes every slot of a shard's verifier, and every
// other client's AUTH gets 454 4.7.0 meanwhile (the hashes run one at a time on one helper
// thread per shard, so the queue it keeps full is seconds long).
TEST_F(AuthReviewTest, OneAddressCannotTakeEverySlot) {
  auto v = Make(/*in_flight_max=*/64);
  std::vector<Answer> answers(64);
  int checked = 0;
  for (int i = 0; i < 64; ++i) {
    checked += v->Submit("user" + std::to_string(i), "guess", Ip("192.0.2.66"), answers[i]) ==
               AuthSubmit::kPending;
  }
  Answer honest;
  const AuthSubmit s = v->Submit("alice", "right", Ip("198.51.100.20"), honest);
  const int in_flight = checked + (s == AuthSubmit::kPending);
  Drain(*v, in_flight);
  EXPECT_EQ(s, AuthSubmit::kPending)
      << "an honest client is refused while one address holds " << checked << " slots";
}

// FINDING: RecordSuccess clears the client address's failures whatever user succeeded. An
// attacker with one account of his own sprays passwords over many users from one address,
// logging in as himself every (lockout_failures - 1) guesses: the per-address lock never
// comes, and the per-user one never does either (one guess per user).
TEST_F(AuthReviewTest, OwnLoginDoesNotClearTheAddressFailures) {
  auto v = Make();
  const auto attacker = Ip("192.0.2.7");
  int checked = 0;
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 3; ++i) {
      Answer a;
      const std::string user = "user" + std::to_string(round * 3 + i);
      if (v->Submit(user, "Summer2026!", attacker, a) == AuthSubmit::kPending) {
        ++checked;
        Drain(*v, 1);
      }
    }
    Answer own;
    if (v->Submit("alice", "right", attacker, own) == AuthSubmit::kPending) {
      Drain(*v, 1);
    }
  }
  EXPECT_LE(checked, 4) << checked << " guesses on other users from one address";
}

// FINDING: each shard has a limiter of its own; connections of one attacker land on every
// shard, so the lock for an address (and for a user) comes after lockout_failures x shards.
// (Adapted to the fix: the daemon makes one limiter and gives it to every shard's verifier.)
TEST_F(AuthReviewTest, LockoutIsSharedByTheShards) {
  auto limiter = std::make_shared<sasl::LoginLimiter>(LimiterOptions());
  auto shard_a = Make(64, limiter);
  auto shard_b = Make(64, limiter);
  for (int i = 0; i < 4; ++i) {
    Answer a;
    ASSERT_EQ(shard_a->Submit("victim", "guess", Ip("192.0.2.9"), a), AuthSubmit::kPending);
    Drain(*shard_a, 1);
  }
  Answer locked;
  ASSERT_EQ(shard_a->Submit("victim", "guess", Ip("192.0.2.9"), locked), AuthSubmit::kLockedOut);
  Answer other;
  const AuthSubmit on_b = shard_b->Submit("victim", "guess", Ip("192.0.2.9"), other);
  if (on_b == AuthSubmit::kPending) {
    Drain(*shard_b, 1);
  }
  EXPECT_EQ(on_b, AuthSubmit::kLockedOut) << "the other shard still checks passwords";
}

// FINDING: a locked user is forgotten as soon as entries_max other failures arrive (the
// eviction takes the oldest entry, locked or not): failures with random user names (each
// costs the attacker one AUTH, from addresses he rotates, e.g. IPv6 /64s) unlock the victim.
TEST(LoginLimiterReviewTest, EvictionDoesNotUnlockALockedUser) {
  sasl::LoginLimiterOptions o;
  o.lockout_failures = 3;
  o.lockout_time_ms = 600'000;
  o.entries_max = 8;
  sasl::LoginLimiter limiter(o);
  for (int i = 0; i < 3; ++i) {
    (void)limiter.RecordFailure(Ip("2001:db8:0:1::1"), "victim", 1000);
  }
  ASSERT_EQ(limiter.Check(Ip("2001:db8:0:2::1"), "victim", 1001).verdict,
            sasl::LoginVerdict::kLockedOut);
  for (int i = 0; i < 8; ++i) {
    (void)limiter.RecordFailure(Ip("2001:db8:0:" + std::to_string(100 + i) + "::1"),
                                "random" + std::to_string(i), 2000);
  }
  EXPECT_EQ(limiter.Check(Ip("2001:db8:0:3::1"), "victim", 3000).verdict,
            sasl::LoginVerdict::kLockedOut);
}

}  // namespace
}  // namespace relais::relaisd
