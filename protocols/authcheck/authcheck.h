// protocols/authcheck/authcheck.h — SPF, DKIM and DMARC together, exactly as the daemon runs
// them on a message: the policy that turns results into accept / reject / defer, the From
// domains DMARC needs, and the Authentication-Results field for the stored message.
//
// Two steps, both sans-I/O in the Run()/needed()/Provide() shape of spf::Evaluation:
//   1. at MAIL FROM, spf::Evaluation; JudgeSender() says whether the policy refuses it;
//   2. at the end of data, MessageCheck: DKIM verification (with body hashes computed as the
//      message arrived), then DMARC over the SPF outcome of step 1 and the DKIM results; its
//      verdict says whether to accept, refuse (550 5.7.1) or defer (451), and header() is
//      the Authentication-Results field (RFC 8601) to put on top of the message.
// relaisd drives them on each shard's resolver; `relais-auth check` drives the same code with a
// blocking resolver. No I/O, no clock; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/dkim/dkim.h"
#include "protocols/dmarc/dmarc.h"
#include "protocols/dns/answer.h"
#include "protocols/spf/spf.h"

namespace relais::authcheck {

// What a check does: not run; run and recorded in Authentication-Results; run, recorded, and
// its failure refused (SPF fail at MAIL FROM; DMARC fail whose disposition is reject).
enum class Mode : uint8_t { kOff, kTag, kReject };

struct Policy {
  std::string authserv_id = "localhost";  // Our Authentication-Results identity.
  Mode spf = Mode::kTag;
  Mode dkim = Mode::kTag;  // kReject is taken as kTag: DKIM alone never refuses (RFC 6376 6.3).
  Mode dmarc = Mode::kTag;
  // A temporary DNS failure (SPF or DMARC temperror) under a rejecting mode: defer the client
  // with 451 (true) or accept and record the temperror (false).
  bool defer_temperror = false;
};

// "off", "tag", "reject" (config words); nullopt for anything else.
[[nodiscard]] std::optional<Mode> ParseMode(std::string_view word);

enum class Verdict : uint8_t { kAccept, kReject, kDefer };

struct Judgement {
  Verdict verdict = Verdict::kAccept;
  std::string text;  // For kReject / kDefer: why, for the reply.
};

// Step 1's verdict under `policy`: SPF fail refused when policy.spf is kReject; temperror
// deferred when also defer_temperror.
[[nodiscard]] Judgement JudgeSender(const spf::Outcome& spf, const Policy& policy);

// The domains of the addresses in the message's From fields (RFC 5322 3.6.2, with RFC 6854
// groups), lower-case and in order; display names, comments and quoted strings skipped.
// Addresses without a domain are left out.
[[nodiscard]] std::vector<std::string> FromDomains(std::string_view message);

struct MessageRequest {
  // Step 1's outcome; nullopt when SPF was not evaluated (policy.spf off).
  std::optional<spf::Outcome> spf;
  std::string sender;  // MAIL FROM (empty: the null sender) and the HELO name, for the field.
  std::string helo;
  uint64_t now_unix_seconds = 0;  // For DKIM x=.
  uint8_t dmarc_sample = 0;       // 0..99, drawn per message (DMARC pct=).
};

class MessageCheck {
 public:
  // `message` (CRLF text, as stored) and `policy` must outlive the check.
  MessageCheck(const Policy& policy, MessageRequest request, std::string_view message);

  // Body hashes fed the message as it arrived (finished; must outlive the check).
  void UseBodyHashes(const dkim::BodyHashes* hashes) { dkim_.UseBodyHashes(hashes); }
  // Parsed DKIM keys kept across messages (the shard's; must outlive the check).
  void UseKeyCache(dkim::KeyCache* cache) { dkim_.UseKeyCache(cache); }

  [[nodiscard]] bool Run();
  [[nodiscard]] const dns::Question& needed() const { return needed_; }
  void Provide(const dns::Question& question, dns::Answer answer);

  // Valid once Run() returned true.
  [[nodiscard]] const Judgement& judgement() const { return judgement_; }
  // "Authentication-Results: ...\r\n".
  [[nodiscard]] std::string Header() const;
  [[nodiscard]] const std::vector<dkim::SignatureResult>& dkim_results() const {
    return dkim_.results();
  }
  // Null when DMARC was off.
  [[nodiscard]] const dmarc::Outcome* dmarc_outcome() const {
    return dmarc_ ? &dmarc_->outcome() : nullptr;
  }
  // The author domain DMARC was evaluated for (empty when there was none).
  [[nodiscard]] const std::string& from_domain() const { return from_domain_; }

 private:
  void Judge();

  const Policy& policy_;
  const MessageRequest request_;
  dkim::Verification dkim_;
  bool dkim_done_ = false;
  std::string from_domain_;
  std::string from_problem_;  // Why DMARC could not apply (RFC 7489 6.6.1).
  std::optional<dmarc::Evaluation> dmarc_;
  dns::Question needed_;
  Judgement judgement_;
};

// A DKIM signing key for a domain (loaded by the owner at start).
struct SigningKey {
  dkim::SignOptions options;  // domain, selector, canonicalization, headers.
  tls::PrivateKey key;
};

// The DKIM-Signature fields (each folded, CRLF-terminated; empty when none applies) to put on
// top of `message` (CRLF text): one per key whose domain is the message's author domain or a
// parent of it (so the signature aligns for DMARC). A message without a single author domain
// is not signed. Fails only when a key cannot sign.
[[nodiscard]] absl::StatusOr<std::string> SignaturesFor(std::string_view message,
                                                        const std::vector<SigningKey>& keys,
                                                        uint64_t now_unix_seconds);

}  // namespace relais::authcheck
