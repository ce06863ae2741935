#include "tools/relaisd/auth_verifier.h"

#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <utility>

#include "core/base/check.h"

namespace relais::relaisd {
namespace {

void Signal(int fd) {
  const uint64_t one = 1;
  const ssize_t n = ::write(fd, &one, sizeof(one));
  RELAIS_CHECK(n == sizeof(one) || errno == EAGAIN) << "eventfd write: " << errno;
}

// The smallest ring that holds `count` items (every slot has at most one job or result).
uint32_t RingLog2(uint32_t count) {
  uint32_t log2 = 1;
  while ((uint64_t{1} << log2) < count) {
    ++log2;
  }
  return log2;
}

}  // namespace

// What crosses to the helper thread: everything the check needs, nothing of the loop's.
struct AuthVerifier::Job {
  uint32_t slot = 0;
  std::shared_ptr<const sasl::Credentials> credentials;
  std::string user;
  std::string password;
  ~Job() { explicit_bzero(password.data(), password.size()); }
};

// One pending request, on the loop: waiting for its hash (kHashing) or held until the delay the
// limiter asked for has passed (kHeld, armed on the wheel).
class AuthVerifier::Slot final : public timer::Timer {
 public:
  enum class State : uint8_t { kFree, kHashing, kHeld };

  AuthVerifier* owner = nullptr;
  uint32_t index = 0;
  State state = State::kFree;
  AuthCompletion* completion = nullptr;  // nullptr: cancelled while hashing.
  mail::IpAddress client;
  std::string user_key;  // sasl::LoginLimiter::UserKey: bounded.
  uint64_t release_ms = 0;
  AuthOutcome outcome = AuthOutcome::kBadCredentials;

 protected:
  void OnTimer() override { owner->Finish(*this); }
};

AuthVerifier::AuthVerifier(const AuthVerifierOptions& options, timer::TimerWheel& timers,
                           const base::Clock& clock)
    : AuthVerifier(options, std::make_shared<sasl::LoginLimiter>(options.limiter), timers, clock) {}

AuthVerifier::AuthVerifier(const AuthVerifierOptions& options,
                           std::shared_ptr<sasl::LoginLimiter> limiter, timer::TimerWheel& timers,
                           const base::Clock& clock)
    : options_(options),
      timers_(timers),
      clock_(clock),
      limiter_(std::move(limiter)),
      slots_(new Slot[std::max<uint32_t>(options.in_flight_max, 1)]),
      jobs_(RingLog2(std::max<uint32_t>(options.in_flight_max, 1))),
      done_(RingLog2(std::max<uint32_t>(options.in_flight_max, 1))) {
  const uint32_t slots = std::max<uint32_t>(options.in_flight_max, 1);
  free_slots_.reserve(slots);
  for (uint32_t i = slots; i-- > 0;) {
    slots_[i].owner = this;
    slots_[i].index = i;
    free_slots_.push_back(i);
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  done_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  RELAIS_CHECK(limiter_ != nullptr) << "AuthVerifier without a login limiter";
  RELAIS_CHECK(wake_fd_ >= 0 && done_fd_ >= 0) << "eventfd: " << errno;
  thread_ = std::thread([this] { Loop(); });
}

AuthVerifier::~AuthVerifier() {
  stop_.store(true, std::memory_order_release);
  Signal(wake_fd_);
  thread_.join();
  ::close(wake_fd_);
  ::close(done_fd_);
  // The limiter may outlive this shard (it is the daemon's): attempts still pending must not
  // stay "in flight" there for ever. One whose hash did not answer counts as a failure.
  const uint64_t now_ms = clock_.MonotonicMs();
  for (uint32_t i = 0; i < std::max<uint32_t>(options_.in_flight_max, 1); ++i) {
    const Slot& slot = slots_[i];
    if (slot.state != Slot::State::kFree) {
      (void)limiter_->Settle(slot.client, slot.user_key,
                             slot.state == Slot::State::kHeld && slot.outcome == AuthOutcome::kOk,
                             now_ms);
    }
  }
}

void AuthVerifier::SetCredentials(std::shared_ptr<const sasl::Credentials> credentials) {
  credentials_ = std::move(credentials);
}

AuthSubmit AuthVerifier::Submit(std::string_view user, std::string_view password,
                                const mail::IpAddress& client, AuthCompletion& completion) {
  RELAIS_CHECK(completion.slot_ == UINT32_MAX) << "one AUTH request per completion at a time";
  if (credentials_ == nullptr) {
    return AuthSubmit::kUnavailable;
  }
  if (free_slots_.empty()) {
    ++stats_.busy_refusals;
    return AuthSubmit::kUnavailable;
  }
  const uint64_t now_ms = clock_.MonotonicMs();
  // From here the attempt counts in the limiter as a failure in flight (so parallel attempts
  // see each other), until Free settles it.
  const sasl::LoginDecision decision = limiter_->Begin(client, user, now_ms);
  stats_.limiter_evictions += decision.evictions;
  switch (decision.verdict) {
    case sasl::LoginVerdict::kProceed:
      break;
    case sasl::LoginVerdict::kLockedOut:
      ++stats_.locked_refusals;
      return AuthSubmit::kLockedOut;
    case sasl::LoginVerdict::kBusy:
      ++stats_.in_flight_refusals;
      return AuthSubmit::kUnavailable;
    case sasl::LoginVerdict::kTableFull:
      ++stats_.table_full_refusals;
      return AuthSubmit::kUnavailable;
  }
  Slot& slot = slots_[free_slots_.back()];
  free_slots_.pop_back();
  ++pending_;
  slot.state = Slot::State::kHashing;
  slot.completion = &completion;
  slot.client = client;
  slot.user_key = sasl::LoginLimiter::UserKey(user);
  slot.outcome = AuthOutcome::kBadCredentials;  // Until the hash says otherwise.
  // The answer, whatever it is, waits until then: a delay that only failures paid would tell
  // the guesser the outcome early.
  slot.release_ms = now_ms + decision.delay_ms;
  stats_.delayed += decision.delay_ms > 0;
  completion.slot_ = slot.index;

  auto job = std::make_unique<Job>();
  job->slot = slot.index;
  job->credentials = credentials_;
  job->user = std::string(user);
  job->password = std::string(password);
  // Each slot has at most one job in the ring, and the ring holds every slot.
  RELAIS_CHECK(jobs_.TryPush(std::move(job))) << "auth job ring full";
  Signal(wake_fd_);  // One write per AUTH: rare next to the hash it starts.
  return AuthSubmit::kPending;
}

void AuthVerifier::Cancel(AuthCompletion& completion) {
  if (completion.slot_ == UINT32_MAX) {
    return;
  }
  Slot& slot = slots_[completion.slot_];
  completion.slot_ = UINT32_MAX;
  RELAIS_CHECK(slot.completion == &completion);
  if (slot.state == Slot::State::kHeld) {
    timers_.Cancel(slot);
    Free(slot);
    return;
  }
  // Hashing: the slot stays taken until the result comes back and is counted.
  slot.completion = nullptr;
}

void AuthVerifier::OnDoneReadable() {
  while (std::optional<Result> result = done_.TryPop()) {
    RELAIS_CHECK(result->slot < std::max<uint32_t>(options_.in_flight_max, 1));
    Slot& slot = slots_[result->slot];
    RELAIS_CHECK(slot.state == Slot::State::kHashing) << "auth result for an idle slot";
    const uint64_t now_ms = clock_.MonotonicMs();
    if (result->verdict == sasl::VerifyResult::kOk) {
      ++stats_.successes;
      slot.outcome = AuthOutcome::kOk;
    } else {
      ++stats_.failures;
      stats_.unknown_users += result->verdict == sasl::VerifyResult::kUnknownUser;
      slot.outcome = AuthOutcome::kBadCredentials;
    }
    // The limiter still counts the attempt as a failure in flight; Free settles it.
    if (slot.completion == nullptr) {  // Cancelled: counted, nobody to answer.
      Free(slot);
    } else if (now_ms >= slot.release_ms) {
      Finish(slot);
    } else {
      slot.state = Slot::State::kHeld;
      timers_.Arm(slot, slot.release_ms);
    }
  }
}

void AuthVerifier::Free(Slot& slot) {
  stats_.lockouts += limiter_->Settle(slot.client, slot.user_key, slot.outcome == AuthOutcome::kOk,
                                      clock_.MonotonicMs());
  slot.state = Slot::State::kFree;
  slot.completion = nullptr;
  slot.user_key.clear();
  free_slots_.push_back(slot.index);
  --pending_;
}

void AuthVerifier::Finish(Slot& slot) {
  AuthCompletion* const completion = slot.completion;
  const AuthOutcome outcome = slot.outcome;
  Free(slot);  // First: the completion may Submit again, or destroy its session.
  completion->slot_ = UINT32_MAX;
  completion->OnAuthDone(outcome);
}

AuthVerifierStats AuthVerifier::stats() const { return stats_; }

void AuthVerifier::Loop() {
  const std::string name = "relais-auth-" + std::to_string(options_.shard);
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  while (true) {
    uint64_t count;
    // Blocks until the loop has a check for us or we are told to stop.
    const ssize_t n = ::read(wake_fd_, &count, sizeof(count));
    (void)n;
    while (!stop_.load(std::memory_order_acquire)) {
      std::optional<std::unique_ptr<Job>> job = jobs_.TryPop();
      if (!job) {
        break;
      }
      const Job& j = **job;
      const sasl::VerifyResult verdict = options_.check
                                             ? options_.check(*j.credentials, j.user, j.password)
                                             : j.credentials->Verify(j.user, j.password);
      const uint32_t slot = j.slot;
      job->reset();  // Wipes the password now, not when the ring slot is reused.
      // As large as the jobs ring: a slot has one job or one result, never both.
      RELAIS_CHECK(done_.TryPush(Result{slot, verdict})) << "auth result ring full";
      Signal(done_fd_);
    }
    if (stop_.load(std::memory_order_acquire)) {
      return;  // Jobs still queued die with the ring (their passwords wiped).
    }
  }
}

}  // namespace relais::relaisd
