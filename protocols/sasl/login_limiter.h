// protocols/sasl/login_limiter.h — slows down and then locks out password guessing (SMTP AUTH),
// per client network and per user name, for the whole daemon.
//
// Keys: a client's IPv4 address (/32) or its IPv6 /64 (one host usually holds a whole /64, so a
// /128 key would let it rotate addresses for free), and the user name it tried (cut to
// kUserBytesMax bytes before it becomes a key, with its domain part lowercased as the
// credentials file does).
//
// An attempt is counted from the moment it starts, not when its hash is done: Begin counts it
// as a failure *in flight* (provisional), Settle turns it into a failure or undoes it (a right
// password). So parallel attempts (many connections at once) see each other, and the
// thresholds below apply to settled failures plus attempts in flight ("the count"):
// - a key locked (`lockout_failures` settled failures) stays locked for `lockout_time_ms` after
//   the failure that locked it; a key whose count reached `lockout_failures` with attempts
//   still in flight is refused too. Either way the caller answers 454 4.7.0 without checking;
// - a key whose count is `failures_before_delay` or more delays the answer: delay_first_ms,
//   then doubling with each further one, capped at delay_max_ms (the caller holds the answer,
//   whatever it is, so the delay does not reveal it);
// - at most `in_flight_per_address_max` attempts of one address and `in_flight_per_user_max`
//   of one user are in flight at once; more are refused (kBusy: 454 4.7.0 for that client
//   only), so one client cannot take every password-check slot of a shard;
// - failures are forgotten `lockout_time_ms` after the last one (and when a lock ends).
// A right password (Settle ok, RecordSuccess) clears the *user's* failures and lock only. The
// address keeps its failures until they expire: otherwise a guesser with an account of his
// own would log in as himself between guesses and never reach the address's lock. An unknown
// user counts like a wrong password (no user oracle).
//
// Memory is bounded: at most `entries_max` addresses and `entries_max` user names. When a
// table is full, a new key takes the place of the entry with the oldest activity that is
// neither locked nor in flight. A locked entry is never evicted (that would unlock it), nor one
// in flight (its Settle must find it): when every entry is locked or in flight, a new key is
// refused (kTableFull, counted in stats().full_refusals; the caller answers 454 4.7.0) rather
// than unlocking anyone. An attacker who fills a table with locked keys so denies AUTH to new
// clients for at most lockout_time_ms: a temporary failure, chosen over letting him unlock a
// victim. Every call is O(1): a hash lookup per key and list splices (three lists per table:
// evictable, in flight, locked in the order the locks end).
//
// Threading: ONE LoginLimiter serves every shard of the daemon (created at startup, shared
// through std::shared_ptr). With one limiter per shard a client's connections, spread over the
// shards by SO_REUSEPORT, would get lockout_failures guesses per shard. A std::mutex guards it:
// this is the deliberate exception to "cores share nothing". It is taken once per call, twice
// per AUTH attempt (Begin, Settle), next to a password hash that costs ~30 ms of CPU on a
// helper thread; it is never on a per-command or per-byte path, and nothing else is done while
// holding it (no I/O, no allocation beyond a new key). Sans-I/O and sans-clock: `now_ms`
// (monotonic) comes from the caller. Metrics are the caller's: the return values and stats()
// say what happened.
#pragma once

#include <cstdint>
#include <mutex>
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
  uint32_t in_flight_per_address_max = 2;  // Attempts of one address at once; 0: no cap.
  uint32_t in_flight_per_user_max = 1;     // Attempts for one user at once; 0: no cap.
};

enum class [[nodiscard]] LoginVerdict : uint8_t{
    kProceed,    // Check the password; hold the answer for `delay_ms`.
    kLockedOut,  // Do not check; answer 454 4.7.0.
    kBusy,       // Too many attempts of this address or user in flight: 454 4.7.0.
    kTableFull,  // A new key and every entry locked or in flight: 454 4.7.0.
};

struct LoginDecision {
  LoginVerdict verdict = LoginVerdict::kProceed;
  uint64_t delay_ms = 0;   // kProceed only.
  uint32_t evictions = 0;  // Begin only: entries this call forgot to make room.
};

// What a failure did, for the caller's counters.
enum class [[nodiscard]] FailureEffect : uint8_t{
    kCounted,  // Below the lockout threshold.
    kLocked,   // This failure locked the address, the user, or both.
};

struct LoginLimiterStats {
  uint64_t evictions = 0;      // Entries forgotten to stay within entries_max.
  uint64_t lockouts = 0;       // Keys locked (an address and a user locked at once count 2).
  uint64_t full_refusals = 0;  // New keys refused: the table was all locked or in flight.
};

class LoginLimiter {
 public:
  explicit LoginLimiter(const LoginLimiterOptions& options);
  LoginLimiter(const LoginLimiter&) = delete;
  LoginLimiter& operator=(const LoginLimiter&) = delete;

  // Starts an attempt: kProceed counts it in flight for the address and the user (as a
  // failure, until Settle), and must be followed by exactly one Settle with the same client
  // and user. Any other verdict changed nothing but expired entries.
  LoginDecision Begin(const mail::IpAddress& client, std::string_view user, uint64_t now_ms);
  // Ends an attempt Begin let through: `ok` (right password) undoes its provisional failure
  // and clears the user's failures; otherwise the failure is settled. Returns the keys this
  // settlement locked (0, 1 or 2).
  [[nodiscard]] uint32_t Settle(const mail::IpAddress& client, std::string_view user, bool ok,
                                uint64_t now_ms);

  // What Begin would answer, counting nothing (delay_ms included; evictions 0).
  LoginDecision Check(const mail::IpAddress& client, std::string_view user, uint64_t now_ms);
  // A failure of an attempt that was not begun (Begin + Settle(false) in one).
  FailureEffect RecordFailure(const mail::IpAddress& client, std::string_view user,
                              uint64_t now_ms);
  // A right password of an attempt that was not begun: the user starts afresh (the address
  // keeps its failures, see above).
  void RecordSuccess(const mail::IpAddress& client, std::string_view user);

  [[nodiscard]] size_t address_entries() const;
  [[nodiscard]] size_t user_entries() const;
  [[nodiscard]] LoginLimiterStats stats() const;
  [[nodiscard]] const LoginLimiterOptions& options() const { return options_; }

  // The key of a client: family, then 4 bytes (IPv4) or the first 8 bytes (IPv6 /64).
  [[nodiscard]] static std::string AddressKey(const mail::IpAddress& client);
  // The key of a user name: at most kUserBytesMax bytes, the domain part lowercased.
  // Idempotent: UserKey(UserKey(u)) == UserKey(u).
  [[nodiscard]] static std::string UserKey(std::string_view user);

 private:
  enum class List : uint8_t { kNone, kIdle, kInFlight, kLocked };
  struct Entry {
    uint32_t failures = 0;   // Settled.
    uint32_t in_flight = 0;  // Begun, not settled: counted as failures meanwhile.
    uint64_t last_failure_ms = 0;
    uint64_t locked_until_ms = 0;  // 0: not locked.
    List list = List::kNone;
    Entry* newer = nullptr;  // Within its list: oldest at the head.
    Entry* older = nullptr;
    const std::string* key = nullptr;  // Points at the map's key (node_hash_map: stable).
  };
  struct Chain {
    Entry* oldest = nullptr;
    Entry* newest = nullptr;
  };
  // One kind of key with its bound and its lists: kIdle (neither locked nor in flight: the
  // only evictable ones, by oldest activity), kInFlight, kLocked (by lock start, so by lock end:
  // every lock lasts lockout_time_ms).
  struct Table {
    absl::node_hash_map<std::string, Entry> map;
    Chain idle, in_flight, locked;
    size_t size() const { return map.size(); }
  };

  // The live entry for `key`, or nullptr (an expired one is reset, and erased when empty).
  Entry* Find(Table& table, const std::string& key, uint64_t now_ms);
  // Find, or a new entry; nullptr when the table is full of locked and in-flight entries.
  Entry* FindOrCreate(Table& table, const std::string& key, uint64_t now_ms, uint32_t& evictions);
  LoginDecision Decide(const Entry* address, const Entry* user) const;
  bool Fail(Entry& entry, uint64_t now_ms);  // True: locked now.
  void Expire(Entry& entry, uint64_t now_ms) const;
  // Moves `entry` to the list its state calls for (newest there), or erases it when empty.
  // `touch`: to the newest end even if it stays in its list.
  void Place(Table& table, Entry& entry, bool touch);
  Chain& ChainOf(Table& table, List list);
  void Unlink(Table& table, Entry& entry);
  void Link(Table& table, Entry& entry, List list);
  uint64_t DelayFor(const Entry* entry) const;
  static uint32_t Count(const Entry* entry) {
    return entry == nullptr ? 0 : entry->failures + entry->in_flight;
  }

  const LoginLimiterOptions options_;
  mutable std::mutex mu_;  // Guards everything below (see "Threading" above).
  Table addresses_;
  Table users_;
  LoginLimiterStats stats_;
};

}  // namespace relais::sasl
