// protocols/dkim/dkim.h — DKIM signatures (RFC 6376) with rsa-sha256 and ed25519-sha256
// (RFC 8463), under RFC 8301's rules (rsa-sha1 and RSA keys under 1024 bits fail).
//
// Verification is sans-I/O like spf::Evaluation: Run() verifies every DKIM-Signature field of
// the message (topmost first) as far as the key records it has allow, and names the next
// TXT question (SELECTOR._domainkey.DOMAIN) until every signature has a result. The body hash
// is BodyHasher, which takes the body in pieces as it arrives (no second pass). Messages are
// CRLF text; Normalize() turns a file with bare LF line ends into that.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "protocols/dns/answer.h"
#include "protocols/tls/crypto.h"

namespace relais::dkim {

enum class Canonicalization : uint8_t { kSimple, kRelaxed };
enum class Algorithm : uint8_t { kRsaSha256, kEd25519Sha256, kRsaSha1 };

// RFC 8601 result words.
enum class Result : uint8_t { kPass, kFail, kNeutral, kPolicy, kTempError, kPermError };
[[nodiscard]] std::string_view ResultName(Result result);

// Bare LF (and a lone CR) line ends become CRLF; CRLF stays.
[[nodiscard]] std::string Normalize(std::string_view message);

struct HeaderField {
  std::string_view name;  // As written.
  std::string_view raw;   // The whole field: name, colon, value with its folds, final CRLF.
};

// Splits a CRLF message into its header fields and the offset where the body starts (after
// the empty line; the message's end when there is none).
[[nodiscard]] std::vector<HeaderField> SplitHeader(std::string_view message, size_t& body_offset);

// 3.4.1 / 3.4.2: one header field, canonicalized, with its CRLF.
[[nodiscard]] std::string CanonicalHeader(std::string_view raw, Canonicalization c);

// 3.4.3 / 3.4.4 and 3.7: the body hash, fed in pieces of any size. `limit` is l=.
class BodyHasher {
 public:
  explicit BodyHasher(Canonicalization c, std::optional<uint64_t> limit = std::nullopt);
  void Update(std::string_view bytes);
  [[nodiscard]] tls::Sha256Digest Finish();
  // Canonical body bytes seen (before l= cuts them).
  [[nodiscard]] uint64_t canonical_bytes() const { return canonical_bytes_; }

 private:
  void Line(std::string_view line);  // One complete line, without its CRLF.
  void Emit(std::string_view bytes);

  static constexpr size_t kPendingBytes = 8192;

  const Canonicalization canonicalization_;
  const std::optional<uint64_t> limit_;
  tls::Sha256Stream sha_;
  std::string line_;          // The current, unfinished line (only when it spans pieces).
  std::string relaxed_;       // Scratch for a relaxed line.
  std::string pending_;       // Canonical bytes not hashed yet.
  uint64_t blank_lines_ = 0;  // Empty lines held back: only trailing ones are dropped.
  bool any_ = false;          // Something was emitted.
  uint64_t canonical_bytes_ = 0;
  uint64_t hashed_ = 0;
};

// Every body hash the DKIM-Signature fields of a message ask for, computed while the message
// streams in (the SMTP session feeds it DATA as it arrives), so that verification makes no
// second pass over the body. Update() takes the message from its first byte, in pieces of any
// size; at the end of the header it reads each signature's c= and l= and starts one BodyHasher
// per distinct pair. A header longer than `header_bytes_max` is not followed (nothing is
// kept): Verification then hashes the body itself.
class BodyHashes {
 public:
  struct Hash {
    tls::Sha256Digest digest{};
    uint64_t canonical_bytes = 0;
  };

  explicit BodyHashes(size_t header_bytes_max = 256 * 1024);
  ~BodyHashes();
  BodyHashes(const BodyHashes&) = delete;
  BodyHashes& operator=(const BodyHashes&) = delete;

  void Update(std::string_view bytes);
  // The message is complete; Find() answers from now on.
  void Finish();
  // The hash for body canonicalization `c` and l= `limit`; nullptr when it was not computed.
  [[nodiscard]] const Hash* Find(Canonicalization c, std::optional<uint64_t> limit) const;
  // Distinct (c=, l=) pairs being hashed (for tests).
  [[nodiscard]] size_t hashers() const { return slots_.size(); }

 private:
  struct Slot {
    Canonicalization canonicalization;
    std::optional<uint64_t> limit;
    std::unique_ptr<BodyHasher> hasher;  // Null once finished.
    Hash hash;
  };
  void StartBody(size_t header_end);

  const size_t header_bytes_max_;
  std::string header_;  // The header as it arrives, until its end is seen.
  bool in_body_ = false;
  bool given_up_ = false;
  bool finished_ = false;
  std::vector<Slot> slots_;
};

// Parsed public keys by key record p= value, for one thread's verifications: a few domains
// sign most mail, and parsing a key record (base64, DER, and for RSA the Montgomery set-up of
// its first verification) is then paid once. Measured (bench/auth_bench.cc): about 10 us of a
// 90-100 us rsa-2048 verification of 10 KiB; nothing measurable for Ed25519. Bounded: when
// full it starts over. Not thread-safe (one per shard).
class KeyCache {
 public:
  explicit KeyCache(size_t entries_max = 1024) : entries_max_(entries_max) {}
  // The parsed key for (type, p), parsing and keeping it on a miss; the error of a key that
  // cannot be parsed (not kept). The pointer is valid until the next call.
  [[nodiscard]] absl::StatusOr<const tls::PublicKey*> Get(tls::KeyType type, std::string_view p);
  [[nodiscard]] size_t size() const { return keys_.size(); }
  [[nodiscard]] uint64_t hits() const { return hits_; }

 private:
  const size_t entries_max_;
  std::map<std::string, tls::PublicKey, std::less<>> keys_;  // Key: type letter + p.
  uint64_t hits_ = 0;
};

struct SignatureResult {
  Result result = Result::kNeutral;
  std::string domain;    // d=
  std::string selector;  // s=
  std::string reason;    // Why, for everything but pass ("body hash mismatch").
  bool testing = false;  // The key says t=y.
};

class Verification {
 public:
  // `message` is CRLF text and must outlive the verification. `now_unix_seconds` checks x=.
  Verification(std::string_view message, uint64_t now_unix_seconds);
  [[nodiscard]] bool Run();
  [[nodiscard]] const dns::Question& needed() const { return needed_; }
  void Provide(const dns::Question& question, dns::Answer answer);
  // One per DKIM-Signature field, topmost first; empty when the message has none.
  [[nodiscard]] const std::vector<SignatureResult>& results() const { return results_; }
  // Body hashes computed as the message arrived (finished, outliving the verification);
  // signatures whose hash is not there hash the body here.
  void UseBodyHashes(const BodyHashes* hashes) { body_hashes_ = hashes; }
  // Parsed keys kept across verifications (must outlive this one); null: parsed each time.
  void UseKeyCache(KeyCache* cache) { key_cache_ = cache; }

 private:
  SignatureResult VerifyOne(const HeaderField& signature, bool& need);

  std::string_view message_;
  uint64_t now_;
  std::vector<HeaderField> header_;
  size_t body_offset_ = 0;
  std::map<std::string, dns::Answer> answers_;
  dns::Question needed_;
  std::vector<SignatureResult> results_;  // Final results of the signatures decided so far.
  const BodyHashes* body_hashes_ = nullptr;
  KeyCache* key_cache_ = nullptr;
};

struct SignOptions {
  std::string domain;
  std::string selector;
  Canonicalization header_canonicalization = Canonicalization::kRelaxed;
  Canonicalization body_canonicalization = Canonicalization::kRelaxed;
  // Header fields to sign, lower or mixed case; From is always signed, and signed once more
  // than it appears (oversigning: a From added later breaks the signature).
  std::vector<std::string> headers = {
      "from",        "to",        "cc",           "subject",      "date",
      "message-id",  "reply-to",  "mime-version", "content-type", "content-transfer-encoding",
      "in-reply-to", "references"};
  uint64_t timestamp = 0;  // t=; 0: not given.
};

// The DKIM-Signature field (folded, ending in CRLF) to put on top of `message` (CRLF text).
// Errors: no From field, or a key that cannot sign.
[[nodiscard]] absl::StatusOr<std::string> Sign(std::string_view message, const SignOptions& options,
                                               const tls::PrivateKey& key);

}  // namespace relais::dkim
