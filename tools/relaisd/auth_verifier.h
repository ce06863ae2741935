// tools/relaisd/auth_verifier.h — one shard's SMTP AUTH password checks (RFC 4954), off its
// loop.
//
// A password check is crypt(3) (yescrypt or bcrypt): milliseconds of CPU and MiBs of memory by
// design, so it never runs on a shard's loop. The shard owns one AuthVerifier; it consults the
// daemon's login limiter (protocols/sasl/login_limiter.h, ONE for all shards) on the loop, runs
// the hash on a helper thread of its own, and gives the answer back on the loop, held as long
// as the limiter says (on the shard's timer wheel).
//
// CONTRACT for the wiring (Ingress and Shard; all calls on the shard's loop thread):
// - Create one sasl::LoginLimiter at startup (std::make_shared, from [smtp_auth]) and give the
//   same one to every shard's AuthVerifier (the constructor that takes it): the lockout
//   thresholds are per client and per user for the whole daemon, not per shard. The
//   constructor without a limiter makes a private one from options.limiter (tests, or a
//   single-shard daemon).
// - Construct one per shard with the shard's TimerWheel and Clock, after the wheel and before
//   any session; destroy it after the last session (pending completions are then never run).
// - SetCredentials(snapshot) at start and on every reload ([smtp_auth] credentials, loaded off
//   the loop with sasl::Credentials::Load). nullptr: AUTH is not offered; Submit answers
//   kUnavailable. A check in flight finishes against the snapshot it started with.
// - Readable done_fd() means results wait: read its 8 bytes through io_uring (as Shard does for
//   the DeliveryWorker's done_fd) and call OnDoneReadable(), then arm the read again. Completions
//   run from OnDoneReadable() or from the timer wheel's Advance, never from Submit.
// - Submit(user, password, client, completion) when a client finished AUTH PLAIN / LOGIN:
//     kPending     -> completion.OnAuthDone(outcome) runs later, exactly once, unless Cancel().
//     kLockedOut   -> answer now: 454 4.7.0 (too many failures for this client or this user,
//                     attempts in flight included).
//     kUnavailable -> answer now: 454 4.7.0 (no credentials loaded; in_flight_max checks
//                     already running on this shard; this client's address or this user
//                     already has the limiter's maximum of checks in flight; or the limiter's
//                     table is full of locked entries).
//   `user` and `password` are copied (the password is wiped after the check); `completion` is
//   the caller's and must stay alive until OnAuthDone ran or Cancel() returned. One request per
//   completion at a time.
// - OnAuthDone(kOk) -> 235 2.7.0; kBadCredentials (wrong password or unknown user: the client
//   is not told which) -> 535 5.7.8. The answer is already delayed as the limiter wants.
// - Cancel(completion) when the session goes away with a request pending (connection closed):
//   OnAuthDone will not run. A hash already running still finishes and its failure still counts
//   (a client cannot dodge the limiter by hanging up).
// - stats() are this verifier's counters for the shard's metrics (the wiring mirrors them); they
//   count this shard's share only, also of the shared limiter's lockouts and evictions, so the
//   shards' sums are the daemon's.
//
// Limiter accounting: Submit begins the attempt in the limiter (it counts as a failure in
// flight from then on); it is settled when the slot is freed: when the answer goes out (hash
// done and hold over) or, cancelled, when the hash is done. So a held answer keeps its place in
// the limiter's per-address and per-user caps: one client cannot fill a shard's slots with
// answers held by delays either.
//
// Threading: one helper thread per verifier. Jobs go to it through one SPSC ring and results
// come back through another (single producer, single consumer each, as in delivery_worker.h);
// it is woken by an eventfd and wakes the loop through done_fd. The slots and the completions
// are touched only on the loop; the limiter is shared with the other shards (it has its own
// mutex). The worker touches only the job it holds and the credentials snapshot, which is
// immutable and shared read-only (std::shared_ptr: a reload replaces the loop's pointer while
// the worker may still hold the old snapshot).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/mail/ip_network.h"
#include "core/ring/spsc_ring.h"
#include "core/timer/timer_wheel.h"
#include "protocols/sasl/credentials.h"
#include "protocols/sasl/login_limiter.h"

namespace relais::relaisd {

enum class [[nodiscard]] AuthSubmit : uint8_t{
    kPending,      // The completion will be called.
    kLockedOut,    // 454 4.7.0, now.
    kUnavailable,  // 454 4.7.0, now.
};

enum class [[nodiscard]] AuthOutcome : uint8_t{
    kOk,              // 235 2.7.0
    kBadCredentials,  // 535 5.7.8
};

// What the caller embeds in its session to receive an answer.
class AuthCompletion {
 public:
  virtual ~AuthCompletion() = default;
  // On the loop thread. May Submit again or destroy the session (the verifier is done with it).
  virtual void OnAuthDone(AuthOutcome outcome) = 0;

 private:
  friend class AuthVerifier;
  uint32_t slot_ = UINT32_MAX;  // The verifier's slot while a request is pending.
};

struct AuthVerifierOptions {
  // From [smtp_auth] (failures_before_delay, ...); only for the constructor that makes a
  // private limiter.
  sasl::LoginLimiterOptions limiter;
  uint32_t in_flight_max = 64;  // Checks pending on one shard (hashing or held).
  uint32_t shard = 0;           // Names the helper thread.
  // Test seam: replaces sasl::Credentials::Verify on the helper thread.
  std::function<sasl::VerifyResult(const sasl::Credentials&, std::string_view user,
                                   std::string_view password)>
      check;
};

struct AuthVerifierStats {
  uint64_t successes = 0;            // kOk answers.
  uint64_t failures = 0;             // Wrong passwords and unknown users.
  uint64_t unknown_users = 0;        // Of the failures, the unknown users.
  uint64_t locked_refusals = 0;      // Submits answered kLockedOut.
  uint64_t busy_refusals = 0;        // Submits answered kUnavailable: this shard's slots all taken.
  uint64_t in_flight_refusals = 0;   // kUnavailable: the address or user has checks in flight.
  uint64_t table_full_refusals = 0;  // kUnavailable: the limiter's table is all locked.
  uint64_t delayed = 0;              // Answers held by the limiter.
  uint64_t lockouts = 0;             // Keys (addresses, users) locked by this shard's attempts.
  uint64_t limiter_evictions = 0;    // Limiter entries forgotten to make room for this shard's.
};

class AuthVerifier {
 public:
  // With a limiter of its own (options.limiter): one shard, or tests.
  AuthVerifier(const AuthVerifierOptions& options, timer::TimerWheel& timers,
               const base::Clock& clock);
  // With the daemon's limiter, shared by every shard (options.limiter is not used).
  AuthVerifier(const AuthVerifierOptions& options, std::shared_ptr<sasl::LoginLimiter> limiter,
               timer::TimerWheel& timers, const base::Clock& clock);
  // Finishes the hash in hand, joins the helper thread, and settles the attempts still pending
  // in the limiter (as failures when their hash had not answered).
  ~AuthVerifier();
  AuthVerifier(const AuthVerifier&) = delete;
  AuthVerifier& operator=(const AuthVerifier&) = delete;

  void SetCredentials(std::shared_ptr<const sasl::Credentials> credentials);
  [[nodiscard]] const sasl::Credentials* credentials() const { return credentials_.get(); }

  AuthSubmit Submit(std::string_view user, std::string_view password, const mail::IpAddress& client,
                    AuthCompletion& completion);
  void Cancel(AuthCompletion& completion);

  [[nodiscard]] int done_fd() const { return done_fd_; }
  // Takes every result the helper has finished; runs the completions that are due.
  void OnDoneReadable();

  [[nodiscard]] AuthVerifierStats stats() const;
  [[nodiscard]] uint32_t pending() const { return pending_; }
  [[nodiscard]] const sasl::LoginLimiter& limiter() const { return *limiter_; }

 private:
  struct Job;
  struct Result {
    uint32_t slot = 0;
    sasl::VerifyResult verdict = sasl::VerifyResult::kBadPassword;
  };
  class Slot;

  void Loop();
  void Finish(Slot& slot);  // Frees the slot and runs its completion.
  void Free(Slot& slot);    // Settles the attempt in the limiter and frees the slot.

  const AuthVerifierOptions options_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  const std::shared_ptr<sasl::LoginLimiter> limiter_;  // Never null.
  std::shared_ptr<const sasl::Credentials> credentials_;
  std::unique_ptr<Slot[]> slots_;
  std::vector<uint32_t> free_slots_;
  uint32_t pending_ = 0;
  AuthVerifierStats stats_;

  ring::SpscRing<std::unique_ptr<Job>> jobs_;
  ring::SpscRing<Result> done_;
  int wake_fd_ = -1;
  int done_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace relais::relaisd
