// queue/delivery/bounce_class.cc — see bounce_class.h.
#include "queue/delivery/bounce_class.h"

#include <optional>

#include "absl/status/status.h"
#include "core/base/strings.h"
#include "re2/re2.h"

namespace relais::delivery {
namespace {

using C = BounceClass;

// An enhanced code, or a rule's prefix of one: -1 is "any" (a prefix) or "unknown" (a status
// without an enhanced code keeps the class digit of its reply code only).
struct Code {
  int klass = -1;
  int subject = -1;
  int detail = -1;
};

// 1 to 3 decimal digits (RFC 3463: subject and detail are 1*3digit).
std::optional<int> Number(std::string_view text) {
  if (text.empty() || text.size() > 3) {
    return std::nullopt;
  }
  int n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    n = n * 10 + (c - '0');
  }
  return n;
}

bool IsClassDigit(std::string_view text) { return text == "2" || text == "4" || text == "5"; }

// "5", "5.", "5.1", "5.1.", "5.1.1"; "x" (or "X") for the class: 4 or 5 alike.
std::optional<Code> ParsePrefix(std::string_view text) {
  std::vector<std::string_view> parts = base::Split(text, '.');
  if (parts.size() > 1 && parts.back().empty()) {
    parts.pop_back();  // "4.7." is "4.7".
  }
  if (parts.empty() || parts.size() > 3) {
    return std::nullopt;
  }
  Code code;
  if (parts[0] != "x" && parts[0] != "X") {
    if (!IsClassDigit(parts[0])) {
      return std::nullopt;
    }
    code.klass = parts[0][0] - '0';
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::optional<int> n = Number(parts[i]);
    if (!n) {
      return std::nullopt;
    }
    (i == 1 ? code.subject : code.detail) = *n;
  }
  return code;
}

// A status's code: its enhanced code when it has a well-formed one, else the class of its
// reply code alone.
Code CodeOf(const Status& status) {
  const std::vector<std::string_view> parts = base::Split(status.enhanced, '.');
  if (parts.size() == 3 && IsClassDigit(parts[0])) {
    const std::optional<int> subject = Number(parts[1]);
    const std::optional<int> detail = Number(parts[2]);
    if (subject && detail) {
      return Code{parts[0][0] - '0', *subject, *detail};
    }
  }
  Code code;
  const int digit = status.code / 100;
  if (status.code >= 200 && status.code < 600 && digit != 3) {
    code.klass = digit;
  }
  return code;
}

bool Covers(const Code& prefix, const Code& code) {
  return (prefix.klass < 0 || prefix.klass == code.klass) &&
         (prefix.subject < 0 || prefix.subject == code.subject) &&
         (prefix.detail < 0 || prefix.detail == code.detail);
}

std::optional<BounceClass> ClassNamed(std::string_view name) {
  for (size_t i = 0; i < kBounceClassNames.size(); ++i) {
    if (base::EqualsIgnoreCase(kBounceClassNames[i], name)) {
      return static_cast<BounceClass>(i);
    }
  }
  return std::nullopt;
}

std::string ClassList() {
  std::string list;
  for (size_t i = 1; i < kBounceClassNames.size(); ++i) {
    base::StrAppend(&list, i == 1 ? "" : ", ", kBounceClassNames[i]);
  }
  return list;
}

// The class of a status Relais writes itself (status.h), whatever its text goes on to quote;
// nullopt: no fixed class (a delivery; a bounce by a [[shaping.reply]] rule, classified by the
// reply it quotes). Past the last Reason: kEnd, which stops the walk over the enum.
struct OwnClass {
  bool end = false;
  std::optional<BounceClass> klass;
};
OwnClass OwnClassOf(Reason reason) {
  switch (reason) {
    case Reason::kExpired:
      return {false, C::kMessageExpired};
    case Reason::kReturned:
    case Reason::kSegmentGone:
    case Reason::kSpoolUnreadable:
    case Reason::kBounceNotQueued:
    case Reason::kStopping:
    case Reason::kMaildirError:
      return {false, C::kOther};  // Relais's own trouble, or an operator's decision.
    case Reason::kNoRoute:
    case Reason::kDnsTemporary:
    case Reason::kMxLoop:
    case Reason::kNoMxAddress:
    case Reason::kHostUnresolved:
      return {false, C::kRoutingErrors};
    case Reason::kRejectedByRoute:
    case Reason::kTlsFailed:
    case Reason::kTlsNotOffered:
    case Reason::kSuspended:
    case Reason::kWarmupCap:
      return {false, C::kPolicyRelated};
    case Reason::kUnsafeDomain:
    case Reason::kNullMx:
    case Reason::kNoSuchDomain:
      return {false, C::kBadDomain};
    case Reason::kUnsafeMailbox:
    case Reason::kMaildirRefused:
      return {false, C::kBadMailbox};
    case Reason::kNoNextHop:
      return {false, C::kNoAnswerFromHost};
    case Reason::kMaildirFull:
      return {false, C::kQuotaIssues};
    case Reason::kMaildirDelivered:
    case Reason::kBouncedByRule:
      return {false, std::nullopt};
  }
  return {true, std::nullopt};
}

// The shipped rules, in order: first the texts of the big receivers (more specific than the
// codes they come with: a 5.7.1 that names Spamhaus is a spam refusal), then the common texts
// by family, then the enhanced codes of RFC 3463 / RFC 5248 (the IANA registry).
struct ShippedRule {
  BounceClass klass;
  std::string_view prefix;   // Empty: any code.
  std::string_view pattern;  // Empty: any text. Case-insensitive.
};
constexpr ShippedRule kShipped[] = {
    // Gmail.
    {C::kBadMailbox, "", R"(account that you tried to reach does not exist)"},
    {C::kInactiveMailbox, "", R"(account that you tried to reach is (disabled|inactive))"},
    {C::kQuotaIssues, "",
     R"(account that you tried to reach is over quota|inbox is out of storage)"},
    {C::kQuotaIssues, "", R"(receiving mail (at a rate|too quickly)|exceeded .*(storage|quota))"},
    {C::kSpamRelated, "",
     R"(unusual rate of unsolicited|likely unsolicited mail|likely suspicious)"},
    {C::kContentRelated, "",
     R"(content presents a potential security issue|message (has been |was )?blocked because its content)"},
    {C::kPolicyRelated, "",
     R"(authentication information|pass authentication checks|DMARC policy|PTR record)"},
    // Microsoft (Outlook.com, Exchange Online).
    {C::kBadMailbox, "", R"(not listed in (the )?(public |domain'?s? )?(directory|address list))"},
    {C::kSpamRelated, "",
     R"(\(S3\d{3}\)|\bS3(150|140|115|113)\b|banned sender|traffic not accepted from this IP)"},
    {C::kBadMailbox, "", R"(RecipientNotFound|Recipient address rejected: Access denied)"},
    {C::kPolicyRelated, "", R"(blocked from sending from unregistered domains)"},
    // Yahoo and AOL.
    {C::kSpamRelated, "", R"(\[(TSS?\d\d|BL\d\d|PH\d\d|GL\d\d)\])"},
    {C::kBadMailbox, "", R"(doesn't have an? [a-z0-9.-]+ account)"},
    {C::kInactiveMailbox, "", R"(this mailbox is disabled|\(554\.30\))"},
    // Spam, block lists and reputation.
    {C::kSpamRelated, "",
     R"(spamhaus|spamcop|barracuda|\bsorbs\b|\bspam\b|unsolicited|junk mail|bulk mail|reputation|black ?list|block ?list|blocklisted|blacklisted|deny ?list|\bDNSBL\b|\bRBL\b|listed (at|on|in|by)|complaints)"},
    // Quota.
    {C::kQuotaIssues, "",
     R"(over ?quota|quota (exceeded|exceed)|exceeded (the |his |her |their |its )?(storage |mailbox |disk )?(quota|allocation)|mail ?box (is )?full|(in|mail)box (is )?(over|out of)|full mailbox|mailbox size limit|insufficient (disk |storage )?space|out of storage|storage (space|limit|allocation))"},
    // Content.
    {C::kContentRelated, "",
     R"(virus|malware|infected|phish|attachment|(message|mail) (size )?(is )?(too (big|large)|exceeds)|size (limit )?exceeded|exceeds (the )?(fixed |maximum )?(message )?size|content (rejected|filter|policy)|message content|8-?bit|line too long)"},
    // Authentication and sender policy.
    {C::kPolicyRelated, "",
     R"(\bDMARC\b|\bSPF\b|\bDKIM\b|sender policy framework|unauthenticated|not authenticated|authentication (required|failed)|sender address rejected|sender verify|invalid sender|reverse DNS|\brDNS\b|\bPTR\b|TLS (is )?required|encryption required|must issue a STARTTLS)"},
    // Inactive mailboxes.
    {C::kInactiveMailbox, "",
     R"((account|mailbox|user) (is |has been )?(disabled|deactivated|inactive|closed|expired|locked|frozen)|inactive (user|account|mailbox)|no longer (active|in use|valid|available)|mailbox has moved)"},
    // Unknown mailboxes.
    {C::kBadMailbox, "",
     R"(user unknown|unknown user|(user|mailbox|recipient|account|address) (does not|doesn't|not) exist|no such (user|mailbox|recipient|person|account)|(user|mailbox|recipient|account) not found|invalid (recipient|mailbox|user)|unknown recipient|unrouteable address|not a valid (mailbox|recipient|user)|bad destination mailbox|no mailbox here|mailbox not available)"},
    // Unknown domains.
    {C::kBadDomain, "",
     R"((domain|host) (name )?(not found|does not exist|doesn't exist|unknown)|no such domain|unknown domain|unrouteable (mail )?domain|bad destination system|\bNXDOMAIN\b|null MX)"},
    // Refusals that name no family: block lists in their vaguest words, rate limits, policies.
    {C::kSpamRelated, "", R"(\bblocked\b|\bblock(ed)? (by|due)|poor reputation)"},
    {C::kPolicyRelated, "",
     R"(rate limit|rate-limit|too many (connections|messages|mails|emails)|(sending|message) rate|throttl|greylist|graylist)"},
    {C::kPolicyRelated, "",
     R"(relay(ing)? (access )?(denied|not permitted|prohibited)|not permitted to relay|policy|prohibited|not allowed|access denied|administrative(ly)? (prohibition|prohibited|denied))"},
    {C::kBadMailbox, "", R"(mailbox unavailable|mailbox is unavailable)"},
    // RFC 3463 / RFC 5248 enhanced codes. X.1: addressing.
    {C::kBadDomain, "x.1.2", ""},
    {C::kBadDomain, "x.1.10", ""},  // RFC 7505: null MX.
    {C::kInactiveMailbox, "x.1.6", ""},
    {C::kPolicyRelated, "x.1.7", ""},  // The sender's address: bad syntax...
    {C::kPolicyRelated, "x.1.8", ""},  // ...or bad system.
    {C::kBadMailbox, "x.1", ""},
    // X.2: the mailbox.
    {C::kInactiveMailbox, "x.2.1", ""},
    {C::kQuotaIssues, "x.2.2", ""},
    {C::kContentRelated, "x.2.3", ""},  // Message longer than the mailbox allows.
    // X.3: the mail system.
    {C::kContentRelated, "x.3.4", ""},  // Message too big for the system.
    // X.4: network and routing.
    {C::kNoAnswerFromHost, "x.4.1", ""},
    {C::kNoAnswerFromHost, "x.4.2", ""},
    {C::kPolicyRelated, "x.4.5", ""},  // Congestion: the receiver, or Relais's shaping, holds back.
    {C::kMessageExpired, "x.4.7", ""},
    {C::kRoutingErrors, "x.4", ""},
    // X.5: the protocol.
    {C::kProtocolErrors, "x.5", ""},
    // X.6: the message content or media.
    {C::kContentRelated, "x.6", ""},
    // X.7: security and policy.
    {C::kInactiveMailbox, "x.7.13", ""},  // User account disabled.
    {C::kInactiveMailbox, "x.7.17", ""},  // Mailbox owner has changed.
    {C::kInactiveMailbox, "x.7.18", ""},  // Domain owner has changed.
    {C::kSpamRelated, "x.7.28", ""},      // Mail flood detected.
    {C::kPolicyRelated, "x.7", ""},
};

RE2::Options PatternOptions() {
  RE2::Options options;
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  options.set_never_capture(true);
  return options;
}

}  // namespace

struct BounceClassifier::Rule {
  BounceClass klass = C::kOther;
  Code prefix;                  // All -1: any code.
  std::unique_ptr<RE2> detail;  // Null: any text.
};

BounceClassifier::BounceClassifier() = default;
BounceClassifier::~BounceClassifier() = default;

absl::StatusOr<std::unique_ptr<BounceClassifier>> BounceClassifier::Create(
    std::string_view operator_rules) {
  std::unique_ptr<BounceClassifier> classifier(new BounceClassifier());
  std::vector<Rule>& rules = classifier->rules_;
  const RE2::Options options = PatternOptions();
  // Appends a rule; an error says what is wrong with it (the caller says where).
  const auto add = [&](BounceClass klass, std::string_view prefix,
                       std::string_view pattern) -> absl::Status {
    Rule rule;
    rule.klass = klass;
    if (!prefix.empty()) {
      const std::optional<Code> code = ParsePrefix(prefix);
      if (!code) {
        return absl::InvalidArgumentError(base::StrCat(
            "bad enhanced-code prefix \"", prefix,
            "\" (class 2, 4, 5 or x, then up to two numbers: \"5.1.1\", \"4.7.\", \"x.2.2\")"));
      }
      rule.prefix = *code;
    }
    if (!pattern.empty()) {
      rule.detail = std::make_unique<RE2>(pattern, options);
      if (!rule.detail->ok()) {
        return absl::InvalidArgumentError(
            base::StrCat("bad pattern \"", pattern, "\": ", rule.detail->error()));
      }
    }
    rules.push_back(std::move(rule));
    return absl::OkStatus();
  };

  // 1. The operator's rules: "<class> <prefix or -> <pattern or nothing>" per line.
  size_t line_number = 0;
  for (std::string_view line : base::Split(operator_rules, '\n')) {
    ++line_number;
    line = base::Trim(line, [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
    if (line.empty() || line.front() == '#') {
      continue;
    }
    const auto fail = [&](std::string_view what) {
      return absl::InvalidArgumentError(
          base::StrCat("bounce class rules, line ", line_number, ": ", what));
    };
    const auto next_word = [&line] {
      const size_t end = line.find_first_of(" \t");
      const std::string_view word = line.substr(0, end);
      line = end == std::string_view::npos ? std::string_view()
                                           : base::Trim(line.substr(end), base::IsWsp);
      return word;
    };
    const std::string_view class_name = next_word();
    const std::optional<BounceClass> klass = ClassNamed(class_name);
    if (!klass || *klass == C::kNone) {
      return fail(base::StrCat("unknown class \"", class_name, "\" (one of ", ClassList(), ")"));
    }
    std::string_view prefix = next_word();
    if (prefix.empty()) {
      return fail("an enhanced-code prefix (or -) and a pattern expected after the class");
    }
    if (prefix == "-") {
      prefix = {};
    }
    const std::string_view pattern = line;  // The rest of the line, spaces included.
    if (prefix.empty() && pattern.empty()) {
      return fail("a rule needs an enhanced-code prefix, a pattern or both");
    }
    if (absl::Status s = add(*klass, prefix, pattern); !s.ok()) {
      return fail(std::string(s.message()));
    }
  }

  // 2. Relais's own statuses (status.h), by their row: its enhanced code and its text.
  for (uint8_t i = 0;; ++i) {
    const auto reason = static_cast<Reason>(i);
    const OwnClass own = OwnClassOf(reason);
    if (own.end) {
      break;
    }
    if (!own.klass) {
      continue;
    }
    const Status row = Make(reason);
    const absl::Status s =
        add(*own.klass, row.enhanced, base::StrCat("^", RE2::QuoteMeta(row.detail)));
    if (!s.ok()) {
      return absl::InternalError(base::StrCat("own status ", i, ": ", std::string(s.message())));
    }
  }

  // 3. The shipped table.
  for (size_t i = 0; i < std::size(kShipped); ++i) {
    const ShippedRule& r = kShipped[i];
    if (absl::Status s = add(r.klass, r.prefix, r.pattern); !s.ok()) {
      return absl::InternalError(
          base::StrCat("shipped bounce rule ", i, ": ", std::string(s.message())));
    }
  }
  return classifier;
}

BounceClass BounceClassifier::Classify(const Status& status) const {
  if (status.outcome == Outcome::kDelivered) {
    return C::kNone;
  }
  const Code code = CodeOf(status);
  for (const Rule& rule : rules_) {
    if (Covers(rule.prefix, code) &&
        (rule.detail == nullptr || RE2::PartialMatch(status.detail, *rule.detail))) {
      return rule.klass;
    }
  }
  return C::kOther;
}

size_t BounceClassifier::rules() const { return rules_.size(); }

}  // namespace relais::delivery
