// protocols/sasl/login_limiter.h — slows down and then locks out password guessing (SMTP AUTH),
// per client network and per user name.
//
// Keys: a client's IPv4 address (/32) or its IPv6 /64 (one host usually holds a whole /64, so a
// /128 key would let it rotate addresses for free), and the user name it tried (cut to
// kUserBytesMax bytes before it becomes a key, with its domain part lowercased as the
// credentials file does). Every AUTH attempt asks Check first:
// - a key with `lockout_failures` failures is locked for `lockout_time_ms` after the last one
//   (the caller answers 454 4.7.0 without checking the password);
// - a key with `failures_before_delay` failures or more delays the answer: delay_first_ms, then
//   doubling with each further failure, capped at delay_max_ms (the caller holds the answer,
//   whatever it is, so the delay does not reveal it);
// - failures are forgotten `lockout_time_ms` after the last one (and when a lock ends).
// RecordFailure / RecordSuccess report the outcome; a success clears both the address's and
// the user's failures. An unknown user counts like a wrong password (no user oracle).
//
// Sans-I/O and sans-clock: `now_ms` (monotonic) comes from the caller. Memory is bounded:
// at most `entries_max` addresses and `entries_max` user names are remembered; beyond that the
// entry whose last failure is oldest is forgotten (counted in stats().evictions). Every call is
// O(1) (one hash lookup, list splices). Only failures create entries.
//
// Owned by one shard's loop (tools/relaisd/auth_verifier.h); not thread-safe. Metrics are the
// caller's: the return values and stats() say what happened.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/node_hash_map.h"
#include "core/mail/ip_network.h"

namespace relais::sasl {

struct LoginLimiterOptions {
  uint32_t failures_before_delay = 3;         // smtp_auth.failures_before_delay; 0: no delay.
  uint32_t lockout_failures = 10;             // smtp_auth.lockout_failures; 0: never lock.
  uint64_t lockout_time_ms = 15 * 60 * 1000;  // smtp_auth.lockout_time
  uint64_t delay_first_ms = 1000;
  uint64_t delay_max_ms = 16000;  // Well below any command timeout (RFC 5321 4.5.3.2: 5 min).
  uint32_t entries_max = 16384;   // Per kind (addresses, users): about 2 MiB at most in all.
};

enum class [[nodiscard]] LoginVerdict : uint8_t{
    kProceed,    // Check the password; hold the answer for `delay_ms`.
    kLockedOut,  // Do not check; answer 454 4.7.0.
};

struct LoginDecision {
  LoginVerdict verdict = LoginVerdict::kProceed;
  uint64_t delay_ms = 0;  // kProceed only.
};

// What a failure did, for the caller's counters.
enum class [[nodiscard]] FailureEffect : uint8_t{
    kCounted,  // Below the lockout threshold.
    kLocked,   // This failure locked the address, the user, or both.
};

struct LoginLimiterStats {
  uint64_t evictions = 0;  // Entries forgotten to stay within entries_max.
  uint64_t lockouts = 0;   // Keys locked (an address and a user locked at once count 2).
};

class LoginLimiter {
 public:
  explicit LoginLimiter(const LoginLimiterOptions& options);
  LoginLimiter(const LoginLimiter&) = delete;
  LoginLimiter& operator=(const LoginLimiter&) = delete;

  // Before checking a password. Changes nothing but expired entries.
  LoginDecision Check(const mail::IpAddress& client, std::string_view user, uint64_t now_ms);
  // After a wrong password or an unknown user.
  FailureEffect RecordFailure(const mail::IpAddress& client, std::string_view user,
                              uint64_t now_ms);
  // After a right password: the address and the user start afresh.
  void RecordSuccess(const mail::IpAddress& client, std::string_view user);

  [[nodiscard]] size_t address_entries() const { return addresses_.size(); }
  [[nodiscard]] size_t user_entries() const { return users_.size(); }
  [[nodiscard]] const LoginLimiterStats& stats() const { return stats_; }
  [[nodiscard]] const LoginLimiterOptions& options() const { return options_; }

  // The key of a client: family, then 4 bytes (IPv4) or the first 8 bytes (IPv6 /64).
  [[nodiscard]] static std::string AddressKey(const mail::IpAddress& client);
  // The key of a user name: at most kUserBytesMax bytes, the domain part lowercased.
  [[nodiscard]] static std::string UserKey(std::string_view user);

 private:
  struct Entry {
    uint32_t failures = 0;
    uint64_t last_failure_ms = 0;
    uint64_t locked_until_ms = 0;  // 0: not locked.
    Entry* newer = nullptr;        // The recency list: oldest failure at the head.
    Entry* older = nullptr;
    const std::string* key = nullptr;  // Points at the map's key (node_hash_map: stable).
  };
  // One kind of key with its bound and recency list.
  struct Table {
    absl::node_hash_map<std::string, Entry> map;
    Entry* oldest = nullptr;
    Entry* newest = nullptr;
    size_t size() const { return map.size(); }
  };

  // The live entry for `key`, or nullptr (an expired one is erased first).
  Entry* Find(Table& table, const std::string& key, uint64_t now_ms);
  bool Fail(Table& table, const std::string& key, uint64_t now_ms);  // True: locked now.
  void Erase(Table& table, const std::string& key);
  void Unlink(Table& table, Entry& entry);
  void PushNewest(Table& table, Entry& entry);
  uint64_t DelayFor(const Entry* entry) const;

  const LoginLimiterOptions options_;
  Table addresses_;
  Table users_;
  LoginLimiterStats stats_;
};

}  // namespace relais::sasl
