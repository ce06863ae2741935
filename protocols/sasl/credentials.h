// protocols/sasl/credentials.h — the SMTP AUTH credentials file (RFC 4954 users) and the
// password check.
//
// The file ([smtp_auth] credentials, written by `relaisctl passwd`) holds one user a line:
//
//   user:hash[:domain,domain...]      # comments and blank lines are skipped
//
// - user: 1..255 characters of [A-Za-z0-9._%+@-]. The part before the last '@' is compared
//   exactly (case-sensitive, like a local part, RFC 5321 2.4); the domain part after the last
//   '@' is case-insensitive and is lowercased on load and on lookup ("Bob@Example.COM" and
//   "Bob@example.com" are one user, "bob@example.com" another).
// - hash: a crypt(3) string of yescrypt ("$y$", "$gy$") or bcrypt ("$2b$", "$2y$") only.
//   Plaintext, DES, MD5 ("$1$"), SHA-crypt ("$5$", "$6$"), old bcrypt ("$2a$") and every
//   other scheme are refused: the error names the file, the line and the scheme.
// - domains: optional, comma-separated, lowercased: the domains this user may send from
//   (besides the domain of the user name itself when it is an address), for
//   smtp_auth.require_sender_owned.
//
// Load refuses a file that others may read, write or run (mode & 0007): hashes are secrets
// too (an offline guesser needs only them). Load is control-plane code (startup and reload,
// never a shard's loop); it reads a file, like the config loader.
//
// Verify runs crypt(3) and costs milliseconds of CPU and a few MiB of memory (yescrypt): it
// must never run on a shard's loop (tools/relaisd/auth_verifier.h moves it to a worker). A
// Credentials object is immutable after Load and safe to share read-only between threads;
// Verify keeps its scratch state (struct crypt_data) per call, so threads share nothing.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace relais::sasl {

inline constexpr size_t kUserBytesMax = 255;

enum class [[nodiscard]] VerifyResult : uint8_t{
    kOk,
    kBadPassword,  // The user exists; the password does not match.
    kUnknownUser,  // No such user (the check cost one hash anyway: no timing oracle).
};

// True for 1..255 characters of [A-Za-z0-9._%+@-].
[[nodiscard]] bool ValidUserName(std::string_view user);
// The lookup form of a user name: the domain part after the last '@' lowercased.
[[nodiscard]] std::string NormalizeUserName(std::string_view user);
// The method and cost part of a crypt string: "$y$j9T$", "$2b$12$" (through its third '$').
[[nodiscard]] std::string_view HashSettings(std::string_view hash);
// "" when `hash` is a crypt(3) string Relais accepts (yescrypt or bcrypt); otherwise why not,
// naming the scheme ("plaintext or DES", "MD5-crypt ($1$)", ...).
[[nodiscard]] std::string RefusedHashReason(std::string_view hash);

class Credentials {
 public:
  struct User {
    std::string hash;
    // The domain of the user name when it is an address, then the listed ones; lowercase,
    // without duplicates.
    std::vector<std::string> owned_domains;
  };

  Credentials() = default;

  // Reads and parses `path`. Errors (InvalidArgument, NotFound, PermissionDenied,
  // FailedPrecondition for a file others may read) name the file, and the line for a bad entry.
  [[nodiscard]] static absl::StatusOr<Credentials> Load(const std::string& path);
  // Parses file text; `source` (a path) names the file in errors. Pure.
  [[nodiscard]] static absl::StatusOr<Credentials> Parse(std::string_view text,
                                                         std::string_view source);

  // Checks `password` against `user`'s hash with crypt_rn and a constant-time comparison.
  // An unknown user costs one hash all the same: against the decoy (see decoy_settings()).
  // Thread-safe; slow (milliseconds).
  [[nodiscard]] VerifyResult Verify(std::string_view user, std::string_view password) const;

  // The domains `user` owns (see User::owned_domains); empty for an unknown user. The span
  // lives as long as this object.
  [[nodiscard]] std::span<const std::string> OwnedDomains(std::string_view user) const;
  // True when `domain` (any case) is one of OwnedDomains(user).
  [[nodiscard]] bool OwnsDomain(std::string_view user, std::string_view domain) const;

  [[nodiscard]] size_t size() const { return users_.size(); }
  // The method and cost of the decoy an unknown user's password is hashed against: those of
  // the most entries (the first seen on a tie), so an unknown user costs what a typical known
  // one does even in a file that mixes methods or costs. A file without users: yescrypt of
  // libcrypt's default cost ("$y$j9T$").
  [[nodiscard]] std::string_view decoy_settings() const;
  [[nodiscard]] bool Contains(std::string_view user) const;

 private:
  const User* Find(std::string_view user) const;

  absl::flat_hash_map<std::string, User> users_;  // Keyed by NormalizeUserName.
  // What an unknown user's password is hashed against: the hash of an entry of the most common
  // method and cost (its result is thrown away); empty without users.
  std::string decoy_hash_;
};

}  // namespace relais::sasl
