// queue/delivery/bounce_class.h — every delivery reply that is not a success, sorted into the
// categories senders already use (PowerMTA's and KumoMTA's set), so that a sender can act on
// them: remove bad mailboxes, slow down on spam-related refusals, fix routing.
//
// Classify reads a typed status (status.h: code, enhanced code, detail): operator rules first,
// then Relais's own statuses, then the shipped rules; first match wins. Each rule is an
// optional enhanced-code prefix ("5.1.1", "4.7.", "5.", "x.2.2": x is either class) and an
// optional RE2 pattern searched in the detail (case-insensitive); a rule needs at least one.
// A prefix matches whole numbers ("5.1.1" is not "5.1.10"); a reply without an enhanced code
// matches a class-only prefix by its reply code. The shipped table (one ordered table in
// bounce_class.cc) has the texts the big receivers use first (Gmail, Microsoft, Yahoo: their
// texts are more specific than the codes they come with, a 5.7.1 naming Spamhaus is a spam
// refusal), then the common texts by family ("user unknown", "mailbox full", "spamhaus",
// "blocked", "rate limit", "DMARC", ...), then the enhanced codes of RFC 3463 / RFC 5248. A
// status of Relais's own (status.h: expired, no next hop, DNS, null MX, TLS, shaping) has a
// fixed class, recognised by its row's enhanced code and text, so that the last reply an
// expiry quotes does not change it. Delivered gets kNone; anything unmatched kOther.
//
// Operator rules come from [bounce] class_rules_file: one rule per line,
//   <class> <enhanced-prefix or -> <pattern or nothing>
// e.g. "quota-issues 4.2.2" or "spam-related - listed at", '#' comments; read at start, an
// error names the line ("none" is not a class a rule may give). RE2 runs in linear time, so a
// hostile reply text costs what its length costs (and it is bounded by the client session's
// reply limits).
//
// Where the class goes (report.cc's Finish is the one place that classifies; it sets
// Item::bounce_class and JobDone::classes): the delivery_attempt log line ("bounce_class",
// always present, "none" for a delivery), the metric relais_delivery_bounces_total{class}
// (failed and deferred recipients; Delivery::Complete), and the DSN's per-recipient fields
// ("X-Relais-Bounce-Class:", RFC 3464 2.4 extension field, failed and delayed recipients).
//
// Immutable after Create; shared read-only by the shards and the delivery workers (RE2 is
// thread-safe for matching).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

enum class BounceClass : uint8_t {
  kNone,  // Delivered: no bounce.
  kBadMailbox,
  kBadDomain,
  kInactiveMailbox,
  kQuotaIssues,
  kSpamRelated,
  kPolicyRelated,
  kContentRelated,
  kRoutingErrors,
  kNoAnswerFromHost,
  kMessageExpired,
  kProtocolErrors,
  kOther,
};
inline constexpr std::array<std::string_view, 13> kBounceClassNames = {
    "none",           "bad-mailbox",         "bad-domain",      "inactive-mailbox",
    "quota-issues",   "spam-related",        "policy-related",  "content-related",
    "routing-errors", "no-answer-from-host", "message-expired", "protocol-errors",
    "other"};
[[nodiscard]] inline std::string_view BounceClassName(BounceClass c) {
  return kBounceClassNames[static_cast<size_t>(c)];
}

class BounceClassifier {
 public:
  // The shipped rules, after `operator_rules` (the class_rules_file's text; empty: none). An
  // error names the line and what is wrong with it.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BounceClassifier>> Create(
      std::string_view operator_rules);
  ~BounceClassifier();
  BounceClassifier(const BounceClassifier&) = delete;
  BounceClassifier& operator=(const BounceClassifier&) = delete;

  [[nodiscard]] BounceClass Classify(const Status& status) const;
  // Rules loaded (operator + shipped), for tests and the startup log line.
  [[nodiscard]] size_t rules() const;

 private:
  struct Rule;
  BounceClassifier();
  std::vector<Rule> rules_;
};

}  // namespace relais::delivery
