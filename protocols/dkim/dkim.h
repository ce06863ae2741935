// protocols/dkim/dkim.h — DKIM signatures (RFC 6376) with rsa-sha256 and ed25519-sha256
// (RFC 8463), under RFC 8301's rules (rsa-sha1 and RSA keys under 1024 bits fail).
//
// Verification is sans-I/O like spf::Evaluation: Run() verifies the DKIM-Signature fields of
// the message (at most VerifyLimits::signatures_max of them, those of the preferred domain
// first) as far as the key records it has allow, and names every TXT question
// (SELECTOR._domainkey.DOMAIN) still needed, so that the caller asks them at once, until every
// evaluated signature has a result. The body hash is BodyHasher, which takes the body in pieces
// as it arrives (no second pass). Every step is linear in the message size. Messages are CRLF
// text; Normalize() turns a file with bare LF line ends into that.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "protocols/crypto/crypto.h"
#include "protocols/dns/answer.h"

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
//
// One hasher also gives the hash of any number of prefixes of the canonical body (`cuts`, the
// l= values of several signatures): the canonical bytes are hashed once, and at each cut the
// running SHA-256 state is copied and finished. So N signatures with distinct l= cost one pass
// over the body plus one SHA-256 block each, not N passes.
class BodyHasher {
 public:
  explicit BodyHasher(Canonicalization c, std::optional<uint64_t> limit = std::nullopt);
  // Hashes the whole canonical body and the prefixes of `cuts` bytes (any order, repeats
  // allowed); Finish() returns the whole body's hash, Cut() a prefix's.
  BodyHasher(Canonicalization c, std::vector<uint64_t> cuts);
  void Update(std::string_view bytes);
  // With a `limit`: the hash of the first `limit` canonical bytes; otherwise the whole body's.
  [[nodiscard]] crypto::Sha256Digest Finish();
  // After Finish(): the hash of the first `cut` canonical bytes (the whole body when it is
  // shorter); nullptr for a cut that was not asked for.
  [[nodiscard]] const crypto::Sha256Digest* Cut(uint64_t cut) const;
  // After Finish(): the whole canonical body's hash.
  [[nodiscard]] const crypto::Sha256Digest& Whole() const { return whole_; }
  // Canonical body bytes seen (before l= cuts them).
  [[nodiscard]] uint64_t canonical_bytes() const { return canonical_bytes_; }

 private:
  void Line(std::string_view line);  // One complete line, without its CRLF.
  void Emit(std::string_view bytes);
  void Hash(std::string_view bytes);
  void Snapshot(size_t cut_index);

  static constexpr size_t kPendingBytes = 8192;

  const Canonicalization canonicalization_;
  const bool limited_;          // Constructed with a limit: nothing past it is hashed.
  std::vector<uint64_t> cuts_;  // Sorted, distinct.
  std::vector<crypto::Sha256Digest> cut_digests_;
  size_t next_cut_ = 0;
  crypto::Sha256Stream sha_;
  std::string line_;          // The current, unfinished line (only when it spans pieces).
  std::string relaxed_;       // Scratch for a relaxed line.
  std::string pending_;       // Canonical bytes not hashed yet.
  uint64_t blank_lines_ = 0;  // Empty lines held back: only trailing ones are dropped.
  bool any_ = false;          // Something was emitted.
  uint64_t canonical_bytes_ = 0;
  uint64_t hashed_ = 0;
  crypto::Sha256Digest whole_{};
};

// Every body hash the DKIM-Signature fields of a message ask for, computed while the message
// streams in (the SMTP session feeds it DATA as it arrives), so that verification makes no
// second pass over the body. Update() takes the message from its first byte, in pieces of any
// size; at the end of the header it reads each signature's c= and l= and starts one BodyHasher
// per body canonicalization (at most two), cut at every l= asked for: the cost is linear in
// the message whatever the signatures ask. A header longer than `header_bytes_max` is not
// followed (nothing is kept): Verification then hashes the body itself, in one pass too.
class BodyHashes {
 public:
  struct Hash {
    crypto::Sha256Digest digest{};
    uint64_t canonical_bytes = 0;
  };

  explicit BodyHashes(size_t header_bytes_max = 256 * 1024);
  ~BodyHashes();
  BodyHashes(const BodyHashes&) = delete;
  BodyHashes& operator=(const BodyHashes&) = delete;

  void Update(std::string_view bytes);
  // The message is complete; Find() answers from now on.
  void Finish();
  // The hash for body canonicalization `c` and l= `limit`; nullopt when it was not computed.
  [[nodiscard]] std::optional<Hash> Find(Canonicalization c, std::optional<uint64_t> limit) const;
  // Body canonicalizations being hashed (at most two; for tests).
  [[nodiscard]] size_t hashers() const { return slots_.size(); }

 private:
  struct Slot {
    Canonicalization canonicalization;
    bool whole = false;            // Some signature has no l=.
    std::vector<uint64_t> limits;  // The l= values asked for.
    std::unique_ptr<BodyHasher> hasher;
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
  [[nodiscard]] absl::StatusOr<const crypto::PublicKey*> Get(crypto::KeyType type,
                                                             std::string_view p);
  [[nodiscard]] size_t size() const { return keys_.size(); }
  [[nodiscard]] uint64_t hits() const { return hits_; }

 private:
  const size_t entries_max_;
  std::map<std::string, crypto::PublicKey, std::less<>> keys_;  // Key: type letter + p.
  uint64_t hits_ = 0;
};

struct SignatureResult {
  Result result = Result::kNeutral;
  std::string domain;    // d=
  std::string selector;  // s=
  std::string reason;    // Why, for everything but pass ("body hash mismatch").
  bool testing = false;  // The key says t=y.
};

// Header fields by lower-case name, each name's fields in header order: built once per message
// so that finding the fields a signature's h= names costs O(h=), not O(header) per name.
using FieldIndex = std::unordered_map<std::string, std::vector<uint32_t>>;
[[nodiscard]] FieldIndex IndexFields(const std::vector<HeaderField>& header);

// What a verifier evaluates (RFC 6376 6.1: a verifier may limit the signatures it tries, and
// should prefer those that matter to it).
struct VerifyLimits {
  // Signatures evaluated per message; the others get no result and are counted in skipped().
  uint32_t signatures_max = 8;
  // Evaluated first (in header order), before the others: those whose d= this accepts (the
  // author domain's, for DMARC). Null: header order only.
  std::function<bool(std::string_view domain)> preferred;
};

class Verification {
 public:
  // `message` is CRLF text and must outlive the verification. `now_unix_seconds` checks x=.
  Verification(std::string_view message, uint64_t now_unix_seconds);
  ~Verification();
  // Before the first Run().
  void SetLimits(VerifyLimits limits) { limits_ = std::move(limits); }
  [[nodiscard]] bool Run();
  // The first of pending(): one key lookup.
  [[nodiscard]] const dns::Question& needed() const { return needed_; }
  // Every key lookup the undecided signatures wait for (distinct names), to be asked at once.
  [[nodiscard]] const std::vector<dns::Question>& pending() const { return pending_; }
  void Provide(const dns::Question& question, dns::Answer answer);
  // The check ran out of its budget: every signature still waiting for a key is temperror
  // (what could not be decided is never "not checked"). results() is complete afterwards.
  void GiveUp();
  // One per evaluated DKIM-Signature field, topmost first; empty when the message has none.
  [[nodiscard]] const std::vector<SignatureResult>& results() const { return results_; }
  // DKIM-Signature fields not evaluated (over VerifyLimits::signatures_max).
  [[nodiscard]] size_t skipped() const { return skipped_; }
  // Body hashes computed as the message arrived (finished, outliving the verification);
  // signatures whose hash is not there hash the body here (once for all of them).
  void UseBodyHashes(const BodyHashes* hashes) { body_hashes_ = hashes; }
  // Parsed keys kept across verifications (must outlive this one); null: parsed each time.
  void UseKeyCache(KeyCache* cache) { key_cache_ = cache; }

 private:
  SignatureResult VerifyOne(const HeaderField& signature, bool& need);
  void Select();
  void Collect();

  std::string_view message_;
  uint64_t now_;
  std::vector<HeaderField> header_;
  FieldIndex index_;
  size_t body_offset_ = 0;
  size_t from_fields_ = 0;
  VerifyLimits limits_;
  bool selected_ = false;
  std::vector<uint32_t> signatures_;  // Header indices of the signatures evaluated, in order.
  std::vector<std::optional<SignatureResult>> decided_;  // Parallel to signatures_.
  size_t skipped_ = 0;
  std::map<std::string, dns::Answer> answers_;
  dns::Question needed_;
  std::vector<dns::Question> pending_;
  std::vector<SignatureResult> results_;  // Complete once Run() returned true.
  const BodyHashes* body_hashes_ = nullptr;
  std::unique_ptr<BodyHashes> own_hashes_;  // When body_hashes_ lacks one.
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
                                               const crypto::PrivateKey& key);

}  // namespace relais::dkim
