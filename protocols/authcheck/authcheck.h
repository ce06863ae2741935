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

// What a DMARC temperror gets when the author domain's policy (after pct=) is reject or
// quarantine and our DMARC mode is reject: an aligned identifier could not be checked (a key
// lookup failed or was over the check's budget), so the message might be a forgery.
enum class TempErrorAction : uint8_t { kDefer, kAccept, kReject };

struct Policy {
  std::string authserv_id = "localhost";  // Our Authentication-Results identity.
  Mode spf = Mode::kTag;
  Mode dkim = Mode::kTag;  // kReject is taken as kTag: DKIM alone never refuses (RFC 6376 6.3).
  Mode dmarc = Mode::kTag;
  // A temporary DNS failure (SPF or DMARC temperror) under a rejecting mode: defer the client
  // with 451 (true) or accept and record the temperror (false).
  bool defer_temperror = false;
  // DKIM signatures evaluated per message (RFC 6376 6.1), the author domain's first.
  uint32_t dkim_signatures_max = 8;
  // Fail closed: a temperror where the policy in force is reject or quarantine is deferred
  // (451 4.7.5, RFC 7489 6.6.2) by default, never silently accepted.
  TempErrorAction dmarc_temperror = TempErrorAction::kDefer;
};

// A choice's word in relaisd's config file and relais-auth's flags, and the value it stands for.
template <typename E>
struct Word {
  std::string_view word;
  E value;
};

// The one list of each choice's words, in the order errors list them.
inline constexpr Word<Mode> kModeWords[] = {
    {"off", Mode::kOff}, {"tag", Mode::kTag}, {"reject", Mode::kReject}};
inline constexpr Word<TempErrorAction> kTempErrorActionWords[] = {
    {"defer", TempErrorAction::kDefer},
    {"accept", TempErrorAction::kAccept},
    {"reject", TempErrorAction::kReject}};

// A word of kTempErrorActionWords; nullopt for anything else.
[[nodiscard]] std::optional<TempErrorAction> ParseTempErrorAction(std::string_view word);

// A word of kModeWords; nullopt for anything else.
[[nodiscard]] std::optional<Mode> ParseMode(std::string_view word);

enum class Verdict : uint8_t { kAccept, kReject, kDefer };

struct Judgement {
  Verdict verdict = Verdict::kAccept;
  std::string text;  // For kReject / kDefer: why, for the reply.
  // The verdict is Policy::dmarc_temperror's: the message could not be verified (the reply
  // says so: 451 4.7.5 for a deferral).
  bool temperror = false;
};

// Bounds on a message's header section, checked at the end of data before anything else reads
// it (every later step is linear in it; these keep the work and what is stored bounded).
struct HeaderLimits {
  uint64_t header_bytes_max = 100 * 1024;  // Postfix's header_size_limit.
  uint32_t header_fields_max = 1000;
  uint32_t received_max = 50;  // RFC 5321 6.3 loop detection; Postfix's hopcount_limit.
};
enum class HeaderVerdict : uint8_t { kOk, kTooBig, kTooManyFields, kTooManyHops };
// One pass over the header of `message` (CRLF text; the header ends at the first empty line).
// A loop (more Received fields than allowed) is reported first, then the field count, then
// the size.
[[nodiscard]] HeaderVerdict CheckHeader(std::string_view message, const HeaderLimits& limits);

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
  // Every question the check waits for now (DKIM key lookups together), to be asked at once.
  [[nodiscard]] const std::vector<dns::Question>& pending() const { return pending_; }
  void Provide(const dns::Question& question, dns::Answer answer);
  // The check is out of its budget (questions, time): what is undecided becomes temperror and
  // the verdict is judged on that. Valid results afterwards, as after Run() returned true.
  void GiveUp();

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
  // DKIM signatures not evaluated (over Policy::dkim_signatures_max).
  [[nodiscard]] size_t dkim_skipped() const { return dkim_.skipped(); }

 private:
  void Judge();
  void StartDmarc();

  const Policy& policy_;
  const MessageRequest request_;
  dkim::Verification dkim_;
  bool dkim_done_ = false;
  bool gave_up_ = false;  // Out of budget (GiveUp).
  std::string from_domain_;
  std::string from_problem_;  // Why DMARC could not apply (RFC 7489 6.6.1).
  std::optional<dmarc::Evaluation> dmarc_;
  dns::Question needed_;
  std::vector<dns::Question> pending_;
  Judgement judgement_;
};

// A DKIM signing key for a domain (loaded by the owner at start).
struct SigningKey {
  dkim::SignOptions options;  // domain, selector, canonicalization, headers.
  crypto::PrivateKey key;
};

// The DKIM-Signature fields (each folded, CRLF-terminated; empty when none applies) to put on
// top of `message` (CRLF text): one per key whose domain is the message's author domain or a
// parent of it (so the signature aligns for DMARC). A message without a single author domain
// is not signed. Fails only when a key cannot sign.
[[nodiscard]] absl::StatusOr<std::string> SignaturesFor(std::string_view message,
                                                        const std::vector<SigningKey>& keys,
                                                        uint64_t now_unix_seconds);

}  // namespace relais::authcheck
