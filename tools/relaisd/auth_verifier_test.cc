#include "tools/relaisd/auth_verifier.h"

#include <poll.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace relais::relaisd {
namespace {

mail::IpAddress Ip(const std::string& text) { return *mail::IpAddress::Parse(text); }

// A check the test controls: "right" is the only good password of "alice"; "bob" does not
// exist. With `gate` closed, checks block on the helper thread until the test opens it.
class FakeCheck {
 public:
  sasl::VerifyResult operator()(std::string_view user, std::string_view password) {
    std::unique_lock lock(mu_);
    ++started_;
    threads_.push_back(std::this_thread::get_id());
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    if (user != "alice") {
      return sasl::VerifyResult::kUnknownUser;
    }
    return password == "right" ? sasl::VerifyResult::kOk : sasl::VerifyResult::kBadPassword;
  }
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void WaitStarted(int n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return started_ >= n; });
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int started_ = 0;
  std::vector<std::thread::id> threads_;
};

struct Answer final : AuthCompletion {
  std::optional<AuthOutcome> outcome;
  int calls = 0;
  void OnAuthDone(AuthOutcome o) override {
    outcome = o;
    ++calls;
  }
};

class AuthVerifierTest : public ::testing::Test {
 protected:
  AuthVerifierTest() : wheel_(clock_.MonotonicMs(), 10) {}

  void Make(uint32_t in_flight_max = 8, std::shared_ptr<sasl::LoginLimiter> shared = nullptr) {
    AuthVerifierOptions o;
    o.limiter.failures_before_delay = 2;
    o.limiter.lockout_failures = 4;
    o.limiter.lockout_time_ms = 60'000;
    o.limiter.delay_first_ms = 1000;
    o.limiter.delay_max_ms = 8000;
    o.in_flight_max = in_flight_max;
    o.check = [this](const sasl::Credentials&, std::string_view u, std::string_view p) {
      return check_(u, p);
    };
    verifier_ = shared != nullptr ? std::make_unique<AuthVerifier>(o, shared, wheel_, clock_)
                                  : std::make_unique<AuthVerifier>(o, wheel_, clock_);
    verifier_->SetCredentials(std::make_shared<sasl::Credentials>());
  }

  // Waits (bounded) for the helper to post a result, then lets the loop take it, as the shard
  // does when its read of done_fd completes.
  void Pump() {
    pollfd p{verifier_->done_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10'000), 1) << "no auth result within 10 s";
    uint64_t count;
    ASSERT_EQ(::read(verifier_->done_fd(), &count, sizeof(count)), 8);
    verifier_->OnDoneReadable();
  }

  // Submits and waits for the result to reach the loop (not for the completion: it may be held).
  AuthSubmit SubmitAndPump(const std::string& user, const std::string& password,
                           const std::string& ip, Answer& answer) {
    const AuthSubmit s = verifier_->Submit(user, password, Ip(ip), answer);
    if (s == AuthSubmit::kPending) {
      Pump();
    }
    return s;
  }

  void AdvanceMs(uint64_t ms) {
    clock_.AdvanceMs(ms);
    wheel_.Advance(clock_.MonotonicMs());
  }

  base::FakeClock clock_;
  timer::TimerWheel wheel_;
  FakeCheck check_;
  std::unique_ptr<AuthVerifier> verifier_;
};

TEST_F(AuthVerifierTest, RightPasswordIsOkAndTheHashRunsOffTheLoop) {
  Make();
  check_.Close();
  Answer a;
  ASSERT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.1"), a), AuthSubmit::kPending);
  // Submit returned while the check is still blocked on the helper: the loop never waits.
  check_.WaitStarted(1);
  EXPECT_FALSE(a.outcome.has_value());
  EXPECT_EQ(verifier_->pending(), 1u);
  check_.Open();
  Pump();
  ASSERT_EQ(a.calls, 1);
  EXPECT_EQ(*a.outcome, AuthOutcome::kOk);
  EXPECT_NE(check_.threads().at(0), std::this_thread::get_id());
  EXPECT_EQ(verifier_->pending(), 0u);
  EXPECT_EQ(verifier_->stats().successes, 1u);
}

TEST_F(AuthVerifierTest, WrongPasswordAndUnknownUserAreBadCredentials) {
  Make();
  Answer a, b;
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(a.outcome, AuthOutcome::kBadCredentials);
  ASSERT_EQ(SubmitAndPump("bob", "right", "198.51.100.1", b), AuthSubmit::kPending);
  EXPECT_EQ(b.outcome, AuthOutcome::kBadCredentials);
  EXPECT_EQ(verifier_->stats().failures, 2u);
  EXPECT_EQ(verifier_->stats().unknown_users, 1u);
}

TEST_F(AuthVerifierTest, AfterTheThresholdTheAnswerIsHeldOnTheTimerWheel) {
  Make();
  Answer a;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
    EXPECT_EQ(a.calls, i + 1);
  }
  // Third attempt: held 1 s, even though it is the right password (a delay that only failures
  // paid would give the answer away).
  ASSERT_EQ(SubmitAndPump("alice", "right", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(a.calls, 2);
  AdvanceMs(900);
  EXPECT_EQ(a.calls, 2);
  AdvanceMs(200);
  EXPECT_EQ(a.calls, 3);
  EXPECT_EQ(a.outcome, AuthOutcome::kOk);
  EXPECT_EQ(verifier_->stats().delayed, 1u);
  // The success cleared the user's slate: no delay for alice from elsewhere now. The address
  // keeps its two failures (its own login must not reset a guesser's count): still delayed.
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "198.51.100.9", a), AuthSubmit::kPending);
  EXPECT_EQ(a.calls, 4);
  ASSERT_EQ(SubmitAndPump("carol", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(a.calls, 4);
  AdvanceMs(10'000);
  EXPECT_EQ(a.calls, 5);
}

TEST_F(AuthVerifierTest, LockedOutAnswersAtOnceWithoutHashing) {
  Make();
  Answer a;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
    AdvanceMs(10'000);  // Past any delay.
  }
  EXPECT_EQ(a.calls, 4);
  EXPECT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.1"), a), AuthSubmit::kLockedOut);
  EXPECT_EQ(verifier_->Submit("alice", "right", Ip("203.0.113.5"), a), AuthSubmit::kLockedOut);
  EXPECT_EQ(verifier_->Submit("carol", "x", Ip("192.0.2.1"), a), AuthSubmit::kLockedOut);
  EXPECT_EQ(check_.threads().size(), 4u);  // No hash for the refused ones.
  EXPECT_EQ(verifier_->stats().locked_refusals, 3u);
  EXPECT_EQ(verifier_->stats().lockouts, 2u);
  // lockout_time after the lock, the user may try again.
  AdvanceMs(60'000);
  ASSERT_EQ(SubmitAndPump("alice", "right", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(a.outcome, AuthOutcome::kOk);
}

TEST_F(AuthVerifierTest, CancelWhileHashingStillCountsTheFailure) {
  Make();
  check_.Close();
  Answer a;
  ASSERT_EQ(verifier_->Submit("alice", "wrong", Ip("192.0.2.1"), a), AuthSubmit::kPending);
  check_.WaitStarted(1);
  verifier_->Cancel(a);
  check_.Open();
  Pump();
  EXPECT_EQ(a.calls, 0);
  EXPECT_EQ(verifier_->pending(), 0u);
  EXPECT_EQ(verifier_->stats().failures, 1u);
  // The completion can be used again.
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(a.calls, 1);
  // Two failures counted: the next answer is held.
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(a.calls, 1);
  AdvanceMs(1100);
  EXPECT_EQ(a.calls, 2);
}

TEST_F(AuthVerifierTest, CancelWhileHeldDisarmsTheTimer) {
  Make();
  Answer a;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  }
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  EXPECT_EQ(wheel_.armed_count(), 1u);
  verifier_->Cancel(a);
  EXPECT_EQ(wheel_.armed_count(), 0u);
  EXPECT_EQ(verifier_->pending(), 0u);
  AdvanceMs(10'000);
  EXPECT_EQ(a.calls, 2);
  verifier_->Cancel(a);  // Nothing pending: a no-op.
}

TEST_F(AuthVerifierTest, BusyAndUnconfiguredAreUnavailable) {
  Make(/*in_flight_max=*/1);
  check_.Close();
  Answer a, b;
  ASSERT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.1"), a), AuthSubmit::kPending);
  EXPECT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.2"), b), AuthSubmit::kUnavailable);
  EXPECT_EQ(verifier_->stats().busy_refusals, 1u);
  check_.Open();
  Pump();
  EXPECT_EQ(a.outcome, AuthOutcome::kOk);
  ASSERT_EQ(SubmitAndPump("alice", "right", "192.0.2.2", b), AuthSubmit::kPending);
  EXPECT_EQ(b.outcome, AuthOutcome::kOk);
  verifier_->SetCredentials(nullptr);
  EXPECT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.1"), a), AuthSubmit::kUnavailable);
}

TEST_F(AuthVerifierTest, AReloadDoesNotDisturbACheckInFlight) {
  Make();
  check_.Close();
  Answer a;
  ASSERT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.1"), a), AuthSubmit::kPending);
  check_.WaitStarted(1);
  verifier_->SetCredentials(nullptr);  // AUTH switched off by a reload meanwhile.
  EXPECT_EQ(verifier_->credentials(), nullptr);
  check_.Open();
  Pump();
  EXPECT_EQ(a.outcome, AuthOutcome::kOk);  // Answered against the snapshot it started with.
  EXPECT_EQ(verifier_->Submit("alice", "right", Ip("192.0.2.1"), a), AuthSubmit::kUnavailable);
}

TEST_F(AuthVerifierTest, ACompletionMaySubmitAgainFromItsCallback) {
  Make();
  struct Again final : AuthCompletion {
    AuthVerifier* verifier = nullptr;
    int calls = 0;
    AuthSubmit second = AuthSubmit::kUnavailable;
    void OnAuthDone(AuthOutcome) override {
      if (++calls == 1) {
        second = verifier->Submit("alice", "right", *mail::IpAddress::Parse("192.0.2.1"), *this);
      }
    }
  } again;
  again.verifier = verifier_.get();
  ASSERT_EQ(verifier_->Submit("alice", "wrong", Ip("192.0.2.1"), again), AuthSubmit::kPending);
  Pump();
  EXPECT_EQ(again.second, AuthSubmit::kPending);
  Pump();
  EXPECT_EQ(again.calls, 2);
}

// Attempts still hashing count: a second one for the same user, or a third from the same
// address, is refused at once (454) while other clients go on.
TEST_F(AuthVerifierTest, ChecksInFlightAreCappedPerAddressAndPerUser) {
  Make();
  check_.Close();
  Answer a, b, c, d, e;
  ASSERT_EQ(verifier_->Submit("alice", "x", Ip("192.0.2.1"), a), AuthSubmit::kPending);
  EXPECT_EQ(verifier_->Submit("alice", "y", Ip("198.51.100.1"), b), AuthSubmit::kUnavailable);
  ASSERT_EQ(verifier_->Submit("bob", "x", Ip("192.0.2.1"), c), AuthSubmit::kPending);
  EXPECT_EQ(verifier_->Submit("carol", "x", Ip("192.0.2.1"), d), AuthSubmit::kUnavailable);
  ASSERT_EQ(verifier_->Submit("carol", "x", Ip("198.51.100.1"), e), AuthSubmit::kPending);
  EXPECT_EQ(verifier_->stats().in_flight_refusals, 2u);
  EXPECT_EQ(verifier_->stats().busy_refusals, 0u);
  EXPECT_EQ(verifier_->pending(), 3u);
  check_.Open();
  while (verifier_->pending() > 0) {
    Pump();
  }
  EXPECT_EQ(a.calls + c.calls + e.calls, 3);
  EXPECT_EQ(b.calls + d.calls, 0);
}

// An answer held by a delay keeps its place in the caps until it goes out: one address cannot
// fill the shard's slots with held answers (e.g. of its own account's right password).
TEST_F(AuthVerifierTest, AHeldAnswerKeepsItsPlaceUntilItGoesOut) {
  sasl::LoginLimiterOptions lo;  // Delays from 2 failures, no lock in sight.
  lo.failures_before_delay = 2;
  lo.lockout_failures = 10;
  lo.delay_first_ms = 1000;
  Make(8, std::make_shared<sasl::LoginLimiter>(lo));
  Answer a, b, c;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(SubmitAndPump("bob", "x", "192.0.2.1", a), AuthSubmit::kPending);
  }
  ASSERT_EQ(SubmitAndPump("alice", "right", "192.0.2.1", a), AuthSubmit::kPending);  // Held.
  ASSERT_EQ(SubmitAndPump("dave", "x", "192.0.2.1", b), AuthSubmit::kPending);       // Held.
  EXPECT_EQ(verifier_->pending(), 2u);
  EXPECT_EQ(verifier_->Submit("erin", "x", Ip("192.0.2.1"), c), AuthSubmit::kUnavailable);
  AdvanceMs(10'000);
  EXPECT_EQ(a.outcome, AuthOutcome::kOk);
  EXPECT_EQ(b.outcome, AuthOutcome::kBadCredentials);
  ASSERT_EQ(SubmitAndPump("erin", "x", "192.0.2.1", c), AuthSubmit::kPending);
}

// The daemon's one limiter behind two shards' verifiers: failures on one count on the other,
// and each shard's stats count its own share (their sums are the daemon's).
TEST_F(AuthVerifierTest, ShardsShareTheDaemonsLimiter) {
  sasl::LoginLimiterOptions lo;
  lo.failures_before_delay = 0;
  lo.lockout_failures = 3;
  lo.lockout_time_ms = 60'000;
  auto limiter = std::make_shared<sasl::LoginLimiter>(lo);
  Make(8, limiter);
  std::unique_ptr<AuthVerifier> first = std::move(verifier_);
  Make(8, limiter);
  std::unique_ptr<AuthVerifier> second = std::move(verifier_);
  Answer a;
  verifier_ = std::move(first);
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.2", a), AuthSubmit::kPending);
  first = std::move(verifier_);
  verifier_ = std::move(second);
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.3", a), AuthSubmit::kPending);  // Locks.
  EXPECT_EQ(verifier_->stats().lockouts, 1u);  // The user (each address failed once).
  EXPECT_EQ(first->stats().lockouts, 0u);
  EXPECT_EQ(first->Submit("alice", "right", Ip("203.0.113.1"), a), AuthSubmit::kLockedOut);
  EXPECT_EQ(&first->limiter(), &verifier_->limiter());
  EXPECT_EQ(limiter->stats().lockouts, 1u);
  verifier_.reset();
  EXPECT_EQ(first->Submit("alice", "right", Ip("203.0.113.1"), a), AuthSubmit::kLockedOut);
}

// A shard that goes away settles what it still had in flight in the daemon's limiter (which
// outlives it): nothing stays "in flight" there for ever, and failures are not forgotten.
TEST_F(AuthVerifierTest, DestructionSettlesAttemptsStillPending) {
  sasl::LoginLimiterOptions lo;
  lo.failures_before_delay = 1;
  lo.lockout_failures = 3;
  lo.lockout_time_ms = 60'000;
  auto limiter = std::make_shared<sasl::LoginLimiter>(lo);
  Make(8, limiter);
  Answer a, b;
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", a), AuthSubmit::kPending);
  ASSERT_EQ(SubmitAndPump("alice", "wrong", "192.0.2.1", b), AuthSubmit::kPending);  // Held.
  EXPECT_EQ(verifier_->pending(), 1u);
  verifier_.reset();
  EXPECT_EQ(b.calls, 0);
  // alice is not "in flight" any more, and both failures count: the third locks.
  EXPECT_EQ(limiter->Begin(Ip("198.51.100.1"), "alice", clock_.MonotonicMs()).verdict,
            sasl::LoginVerdict::kProceed);
  EXPECT_EQ(limiter->Settle(Ip("198.51.100.1"), "alice", false, clock_.MonotonicMs()), 1u);
}

TEST(AuthVerifierRealTest, ChecksARealYescryptHashOnTheHelper) {
  // The default check: sasl::Credentials::Verify with a hash made by libcrypt.
  const char* kHash = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2";
  auto credentials = sasl::Credentials::Parse(std::string("alice:") + kHash + "\n", "test");
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  base::FakeClock clock;
  timer::TimerWheel wheel(clock.MonotonicMs(), 10);
  AuthVerifier verifier({}, wheel, clock);
  verifier.SetCredentials(std::make_shared<sasl::Credentials>(*std::move(credentials)));
  for (const auto& [password, want] :
       {std::pair{"x", AuthOutcome::kOk}, std::pair{"y", AuthOutcome::kBadCredentials}}) {
    Answer a;
    ASSERT_EQ(verifier.Submit("alice", password, Ip("192.0.2.1"), a), AuthSubmit::kPending);
    pollfd p{verifier.done_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10'000), 1);
    uint64_t count;
    ASSERT_EQ(::read(verifier.done_fd(), &count, sizeof(count)), 8);
    verifier.OnDoneReadable();
    EXPECT_EQ(a.outcome, want) << password;
  }
}

}  // namespace
}  // namespace relais::relaisd
