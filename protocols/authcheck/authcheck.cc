#include "protocols/authcheck/authcheck.h"

#include <cctype>

#include "core/base/strings.h"
#include "protocols/authres/authres.h"

namespace relais::authcheck {

using base::AsciiStrToLower;
using base::EqualsIgnoreCase;
using base::StrCat;

namespace {

template <typename E, size_t N>
std::optional<E> ParseWord(const Word<E> (&words)[N], std::string_view word) {
  for (const Word<E>& w : words) {
    if (w.word == word) {
      return w.value;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<Mode> ParseMode(std::string_view word) { return ParseWord(kModeWords, word); }

std::optional<TempErrorAction> ParseTempErrorAction(std::string_view word) {
  return ParseWord(kTempErrorActionWords, word);
}

HeaderVerdict CheckHeader(std::string_view message, const HeaderLimits& limits) {
  uint64_t fields = 0;
  uint64_t received = 0;
  size_t pos = 0;
  bool too_big = false;
  while (pos < message.size()) {
    if (message.substr(pos).starts_with("\r\n")) {
      break;  // The end of the header.
    }
    if (pos > limits.header_bytes_max) {
      too_big = true;
      break;  // Nothing past the bound is read.
    }
    const size_t eol = message.find("\r\n", pos);
    const std::string_view line =
        message.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.front() != ' ' && line.front() != '\t') {
      ++fields;
      // "Received" then optional WSP and the colon (RFC 5322 3.6.7, obsolete WSP allowed).
      std::string_view name = line.substr(0, line.find(':'));
      while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
        name.remove_suffix(1);
      }
      if (line.find(':') != std::string_view::npos && EqualsIgnoreCase(name, "Received")) {
        ++received;
      }
    }
    pos = eol == std::string_view::npos ? message.size() : eol + 2;
  }
  if (pos > limits.header_bytes_max) {
    too_big = true;  // The last field ran past it.
  }
  if (received > limits.received_max) {
    return HeaderVerdict::kTooManyHops;
  }
  if (fields > limits.header_fields_max) {
    return HeaderVerdict::kTooManyFields;
  }
  return too_big ? HeaderVerdict::kTooBig : HeaderVerdict::kOk;
}

Judgement JudgeSender(const spf::Outcome& spf, const Policy& policy) {
  if (policy.spf != Mode::kReject) {
    return {};
  }
  if (spf.result == spf::Result::kFail) {
    return {Verdict::kReject, spf.explanation.empty()
                                  ? StrCat("SPF of ", spf.domain, " does not permit this host")
                                  : spf.explanation};
  }
  if (spf.result == spf::Result::kTempError && policy.defer_temperror) {
    return {Verdict::kDefer, StrCat("SPF of ", spf.domain, ": ", spf.problem)};
  }
  return {};
}

namespace {

// The value of every From field (unfolded line ends kept: they are whitespace here).
std::vector<std::string_view> FromValues(std::string_view message) {
  std::vector<std::string_view> out;
  size_t body_offset = 0;
  for (const dkim::HeaderField& field : dkim::SplitHeader(message, body_offset)) {
    std::string_view name = field.name;
    while (!name.empty() && base::IsFwsChar(name.back())) {
      name.remove_suffix(1);
    }
    if (EqualsIgnoreCase(name, "From")) {
      out.push_back(field.raw.substr(field.raw.find(':') + 1));
    }
  }
  return out;
}

// The domain of one mailbox ("Name <a@b>", "a@b", "\"x@y\"@b"), quoted strings and comments
// already reduced; empty when it has none.
std::string MailboxDomain(std::string_view mailbox) {
  const size_t open = mailbox.rfind('<');
  if (open != std::string_view::npos) {
    const size_t close = mailbox.find('>', open);
    mailbox = mailbox.substr(open + 1, close == std::string_view::npos ? close : close - open - 1);
  }
  const size_t at = mailbox.rfind('@');
  if (at == std::string_view::npos) {
    return {};
  }
  std::string_view domain = mailbox.substr(at + 1);
  while (!domain.empty() && base::IsFwsChar(domain.front())) {
    domain.remove_prefix(1);
  }
  while (!domain.empty() && (base::IsFwsChar(domain.back()) || domain.back() == '.')) {
    domain.remove_suffix(1);
  }
  // Only a name DNS can ask for: letters, digits, '-', '_', UTF-8 (IDN), dot-separated labels.
  // Anything else (a domain literal, control bytes, spaces) is no domain DMARC can apply to.
  if (domain.empty() || domain.size() > 253 || domain.front() == '.' ||
      domain.find("..") != std::string_view::npos) {
    return {};
  }
  size_t label = 0;  // RFC 1035 2.3.4: labels of at most 63 octets.
  for (char c : domain) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '-' || c == '_' || c == '.' || u >= 0x80)) {
      return {};
    }
    label = c == '.' ? 0 : label + 1;
    if (label > 63) {
      return {};
    }
  }
  return AsciiStrToLower(domain);
}

}  // namespace

std::vector<std::string> FromDomains(std::string_view message) {
  std::vector<std::string> domains;
  for (std::string_view value : FromValues(message)) {
    // One pass: comments dropped, quoted strings kept only as a placeholder (an '@' inside
    // one is not the domain's), split at top-level commas, group names (":") and ends (";").
    std::string mailbox;
    int comment_depth = 0;
    bool quoted = false;
    bool angle = false;
    auto flush = [&] {
      if (std::string d = MailboxDomain(mailbox); !d.empty()) {
        domains.push_back(std::move(d));
      }
      mailbox.clear();
    };
    for (size_t i = 0; i < value.size(); ++i) {
      const char c = value[i];
      if (c == '\\' && (quoted || comment_depth > 0)) {
        ++i;  // A quoted pair.
        continue;
      }
      if (comment_depth > 0) {
        comment_depth += c == '(' ? 1 : (c == ')' ? -1 : 0);
        continue;
      }
      if (quoted) {
        quoted = c != '"';
        continue;
      }
      switch (c) {
        case '(':
          comment_depth = 1;
          break;
        case '"':
          quoted = true;
          mailbox.push_back('q');
          break;
        case '<':
          angle = true;
          mailbox.push_back(c);
          break;
        case '>':
          angle = false;
          mailbox.push_back(c);
          break;
        case ',':
        case ';':
          if (angle) {
            mailbox.push_back(c);
          } else {
            flush();
          }
          break;
        case ':':
          if (angle) {
            mailbox.push_back(c);  // A source route or an IPv6 literal.
          } else {
            mailbox.clear();  // The display name of a group.
          }
          break;
        default:
          mailbox.push_back(c);
      }
    }
    flush();
  }
  return domains;
}

MessageCheck::MessageCheck(const Policy& policy, MessageRequest request, std::string_view message)
    : policy_(policy), request_(std::move(request)), dkim_(message, request_.now_unix_seconds) {
  if (policy_.dkim != Mode::kOff || policy_.dmarc != Mode::kOff) {
    size_t body_offset = 0;
    size_t from_fields = 0;
    for (const dkim::HeaderField& field : dkim::SplitHeader(message, body_offset)) {
      std::string_view name = field.name;
      while (!name.empty() && base::IsFwsChar(name.back())) {
        name.remove_suffix(1);
      }
      from_fields += EqualsIgnoreCase(name, "From") ? 1 : 0;
    }
    std::optional<std::string> author = dmarc::AuthorDomain(FromDomains(message), from_problem_);
    if (from_fields > 1) {
      // RFC 5322 3.6: one From field. With two, which author a reader sees is anyone's guess:
      // outside DMARC's scope (RFC 7489 6.6.1), handled like several author domains.
      from_problem_ =
          "more than one From field: the message should be rejected (RFC 7489 6.6.1, RFC 5322 "
          "3.6)";
      author.reset();
    }
    if (author) {
      from_domain_ = std::move(*author);
    }
    // 6.1 of RFC 6376: the signatures that can make DMARC pass are evaluated first, so junk
    // signatures of other domains can neither push them out nor multiply lookups.
    dkim::VerifyLimits limits;
    limits.signatures_max = policy_.dkim_signatures_max;
    if (!from_domain_.empty()) {
      limits.preferred = [from = from_domain_](std::string_view d) {
        return dmarc::Aligned(d, from, dmarc::Alignment::kRelaxed);
      };
    }
    dkim_.SetLimits(std::move(limits));
  }
  if (policy_.dmarc == Mode::kOff) {
    from_problem_.clear();
    from_domain_.clear();
  }
}

void MessageCheck::Provide(const dns::Question& question, dns::Answer answer) {
  if (!dkim_done_) {
    dkim_.Provide(question, std::move(answer));
  } else if (dmarc_) {
    dmarc_->Provide(question, std::move(answer));
  }
}

void MessageCheck::StartDmarc() {
  dmarc::Request r;
  r.from_domain = from_domain_;
  if (request_.spf) {
    r.spf = dmarc::Identifier{request_.spf->result == spf::Result::kPass,
                              AsciiStrToLower(request_.spf->domain),
                              request_.spf->result == spf::Result::kTempError};
  }
  for (const dkim::SignatureResult& s : dkim_.results()) {
    r.dkim.push_back(
        {s.result == dkim::Result::kPass, s.domain, s.result == dkim::Result::kTempError});
  }
  r.sample = request_.dmarc_sample;
  dmarc_.emplace(std::move(r));
}

bool MessageCheck::Run() {
  const bool dmarc_on = policy_.dmarc != Mode::kOff;
  pending_.clear();
  if (!dkim_done_) {
    if ((policy_.dkim != Mode::kOff || dmarc_on) && !dkim_.Run()) {
      needed_ = dkim_.needed();
      pending_ = dkim_.pending();
      return false;
    }
    dkim_done_ = true;
  }
  if (dmarc_on && !from_domain_.empty()) {
    if (!dmarc_) {
      StartDmarc();
    }
    if (!dmarc_->Run()) {
      needed_ = dmarc_->needed();
      pending_ = {needed_};
      return false;
    }
  }
  Judge();
  return true;
}

void MessageCheck::GiveUp() {
  gave_up_ = true;
  const bool dmarc_on = policy_.dmarc != Mode::kOff;
  if (!dkim_done_) {
    if (policy_.dkim != Mode::kOff || dmarc_on) {
      dkim_.GiveUp();
    }
    dkim_done_ = true;
  }
  pending_.clear();
  if (dmarc_on && !from_domain_.empty()) {
    if (!dmarc_) {
      StartDmarc();
    }
    if (!dmarc_->Run()) {
      dmarc_->GiveUp();
    }
  }
  Judge();
}

void MessageCheck::Judge() {
  judgement_ = {};
  if (policy_.dmarc != Mode::kReject) {
    return;
  }
  if (!from_problem_.empty()) {
    judgement_ = {Verdict::kReject, StrCat("Message rejected: ", from_problem_)};
    return;
  }
  if (!dmarc_) {
    return;
  }
  const dmarc::Outcome& o = dmarc_->outcome();
  if (o.result == dmarc::Result::kFail && o.disposition == dmarc::Policy::kReject) {
    judgement_ = {Verdict::kReject,
                  StrCat("Message rejected by the DMARC policy of ", from_domain_)};
  } else if (o.result == dmarc::Result::kTempError && (o.policy || gave_up_)) {
    // The policy is known and no aligned identifier passed, but one could not be checked; or
    // the check ran out of its budget before it knew: fail closed.
    if (o.policy && o.disposition == dmarc::Policy::kNone) {
      return;  // Nothing is at stake: tagged temperror.
    }
    switch (policy_.dmarc_temperror) {
      case TempErrorAction::kDefer:
        judgement_ = {
            Verdict::kDefer,
            StrCat("Message from ", from_domain_, " could not be verified (DMARC temperror)"),
            true};
        break;
      case TempErrorAction::kReject:
        judgement_ = {
            Verdict::kReject,
            StrCat("Message from ", from_domain_, " could not be verified under its DMARC policy"),
            true};
        break;
      case TempErrorAction::kAccept:
        judgement_.temperror = true;  // Accepted, counted.
        break;
    }
  } else if (o.result == dmarc::Result::kTempError && policy_.defer_temperror) {
    judgement_ = {Verdict::kDefer,
                  StrCat("DMARC policy of ", from_domain_, " could not be looked up")};
  }
}

std::string MessageCheck::Header() const {
  std::vector<authres::MethodResult> results;
  if (request_.spf) {
    authres::MethodResult r{"spf", std::string(spf::ResultName(request_.spf->result)), {}, {}};
    if (request_.sender.empty()) {
      r.properties.emplace_back("smtp.helo", request_.helo);
    } else {
      r.properties.emplace_back("smtp.mailfrom", request_.sender);
    }
    if (request_.spf->result == spf::Result::kTempError ||
        request_.spf->result == spf::Result::kPermError) {
      r.reason = request_.spf->problem;
    }
    results.push_back(std::move(r));
  }
  if (policy_.dkim != Mode::kOff) {
    if (dkim_.results().empty() && dkim_.skipped() == 0) {
      results.push_back({"dkim", "none", {}, {}});
    }
    for (const dkim::SignatureResult& s : dkim_.results()) {
      authres::MethodResult r{"dkim", std::string(dkim::ResultName(s.result)), s.reason, {}};
      if (!s.domain.empty()) {
        r.properties.emplace_back("header.d", s.domain);
      }
      if (!s.selector.empty()) {
        r.properties.emplace_back("header.s", s.selector);
      }
      results.push_back(std::move(r));
    }
    if (dkim_.skipped() > 0) {
      // RFC 6376 6.1: not evaluated, and said so (policy: not acceptable to us as sent).
      results.push_back({"dkim",
                         "policy",
                         StrCat(dkim_.skipped(), " more signatures not evaluated (at most ",
                                policy_.dkim_signatures_max, " per message)"),
                         {}});
    }
  }
  if (policy_.dmarc != Mode::kOff) {
    if (!from_problem_.empty()) {
      results.push_back({"dmarc", "permerror", from_problem_, {}});
    } else if (dmarc_) {
      const dmarc::Outcome& o = dmarc_->outcome();
      authres::MethodResult r{"dmarc", std::string(dmarc::ResultName(o.result)), o.problem, {}};
      r.properties.emplace_back("header.from", from_domain_);
      if (o.policy) {
        r.properties.emplace_back("policy.dmarc", std::string(dmarc::PolicyName(*o.policy)));
      }
      results.push_back(std::move(r));
    }
  }
  return authres::Header(policy_.authserv_id, results);
}

absl::StatusOr<std::string> SignaturesFor(std::string_view message,
                                          const std::vector<SigningKey>& keys,
                                          uint64_t now_unix_seconds) {
  if (keys.empty()) {
    return std::string();
  }
  std::string problem;
  const std::optional<std::string> author = dmarc::AuthorDomain(FromDomains(message), problem);
  if (!author) {
    return std::string();
  }
  std::string out;
  for (const SigningKey& k : keys) {
    const std::string& d = k.options.domain;
    if (*author != d && !author->ends_with(StrCat(".", d))) {
      continue;
    }
    dkim::SignOptions options = k.options;
    options.timestamp = now_unix_seconds;
    absl::StatusOr<std::string> field = dkim::Sign(message, options, k.key);
    if (!field.ok()) {
      return field.status();
    }
    // Each signature covers the message as the receiver sees it below it: the later ones are
    // made over the message without the earlier fields, which is what they sign (DKIM
    // signatures never cover other DKIM-Signature fields unless h= names them).
    out += *field;
  }
  return out;
}

}  // namespace relais::authcheck
