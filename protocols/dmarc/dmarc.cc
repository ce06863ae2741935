// protocols/dmarc/dmarc.cc — see dmarc.h. Section numbers are RFC 7489's.
#include "protocols/dmarc/dmarc.h"

#include <libpsl.h>

#include <algorithm>
#include <charconv>

#include "core/base/strings.h"

namespace relais::dmarc {

using base::AsciiStrToLower;
using base::EqualsIgnoreCase;
using base::Split;
using base::StrCat;
using base::Trim;

std::string_view PolicyName(Policy policy) {
  switch (policy) {
    case Policy::kNone:
      return "none";
    case Policy::kQuarantine:
      return "quarantine";
    case Policy::kReject:
      return "reject";
  }
  return "none";
}

std::string_view ResultName(Result result) {
  switch (result) {
    case Result::kNone:
      return "none";
    case Result::kPass:
      return "pass";
    case Result::kFail:
      return "fail";
    case Result::kTempError:
      return "temperror";
    case Result::kPermError:
      return "permerror";
  }
  return "none";
}

namespace {

std::optional<Policy> ParsePolicy(std::string_view v) {
  if (EqualsIgnoreCase(v, "none")) {
    return Policy::kNone;
  }
  if (EqualsIgnoreCase(v, "quarantine")) {
    return Policy::kQuarantine;
  }
  if (EqualsIgnoreCase(v, "reject")) {
    return Policy::kReject;
  }
  return std::nullopt;
}

std::vector<std::string> UriList(std::string_view v) {
  std::vector<std::string> out;
  for (std::string_view uri : Split(v, ',')) {
    uri = Trim(uri);
    // 6.2: a DMARC URI is a URI with an optional "!size" suffix; we keep mailto: and others.
    if (!uri.empty() && uri.find(':') != std::string_view::npos) {
      out.emplace_back(uri);
    }
  }
  return out;
}

// 6.6.1's "next weaker" policy, for messages outside the pct= sample.
Policy Weaker(Policy p) { return p == Policy::kReject ? Policy::kQuarantine : Policy::kNone; }

}  // namespace

std::optional<Record> ParseRecord(std::string_view text, std::string& problem) {
  Record r;
  std::optional<Policy> p;
  bool sp_invalid = false;
  bool first = true;
  for (std::string_view pair : Split(text, ';')) {
    pair = Trim(pair);
    if (pair.empty()) {
      if (first) {
        problem = "does not start with v=DMARC1";
        return std::nullopt;
      }
      continue;
    }
    const size_t eq = pair.find('=');
    const std::string_view tag = Trim(pair.substr(0, eq));
    const std::string_view value = eq == std::string_view::npos ? "" : Trim(pair.substr(eq + 1));
    if (first) {
      // 6.3: v=DMARC1 must come first (the tag name and value are case-sensitive... in
      // practice receivers compare them exactly).
      if (tag != "v" || value != "DMARC1") {
        problem = "does not start with v=DMARC1";
        return std::nullopt;
      }
      first = false;
      continue;
    }
    if (eq == std::string_view::npos) {
      continue;  // Not a tag=value pair: ignored.
    }
    const std::string t = AsciiStrToLower(tag);
    // Invalid values fall back to the defaults (6.3: syntax errors in the rest are ignored).
    if (t == "p") {
      p = ParsePolicy(value);
    } else if (t == "sp") {
      r.sp = ParsePolicy(value);
      sp_invalid = !r.sp;
    } else if (t == "adkim" || t == "aspf") {
      Alignment& a = t == "adkim" ? r.adkim : r.aspf;
      if (EqualsIgnoreCase(value, "s")) {
        a = Alignment::kStrict;
      } else if (EqualsIgnoreCase(value, "r")) {
        a = Alignment::kRelaxed;
      }
    } else if (t == "pct") {
      uint32_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec == std::errc() && end == value.data() + value.size() && n <= 100) {
        r.pct = static_cast<uint8_t>(n);
      }
    } else if (t == "rua") {
      r.rua = UriList(value);
    } else if (t == "ruf") {
      r.ruf = UriList(value);
    } else if (t == "fo") {
      r.fo = std::string(value);
    } else if (t == "rf") {
      r.rf = std::string(value);
    } else if (t == "ri") {
      uint32_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec == std::errc() && end == value.data() + value.size()) {
        r.ri = n;
      }
    }
  }
  if (first) {
    problem = "does not start with v=DMARC1";
    return std::nullopt;
  }
  // 6.6.3 step 5: no valid p=, or an sp= that is not valid: with a valid rua= the record reads
  // as "v=DMARC1; p=none" (sp= dropped, so that no subdomain gets a policy it did not ask
  // for); without one, no DMARC applies.
  if (!p || sp_invalid) {
    const std::string what = !p ? "no valid p= tag" : "an sp= tag that is not valid";
    if (r.rua.empty()) {
      problem = StrCat(what, " and no rua=");
      return std::nullopt;
    }
    p = Policy::kNone;
    r.sp.reset();
  }
  r.p = *p;
  return r;
}

std::string OrganizationalDomain(std::string_view domain) {
  std::string d = AsciiStrToLower(domain);
  if (d.ends_with('.')) {
    d.pop_back();
  }
  // The system's list (Debian publicsuffix), else the one built into libpsl. Loaded once.
  static psl_ctx_t* const list = [] {
    psl_ctx_t* latest = psl_latest(nullptr);
    return latest != nullptr ? latest : const_cast<psl_ctx_t*>(psl_builtin());
  }();
  if (list == nullptr) {
    return d;
  }
  const char* registrable = psl_registrable_domain(list, d.c_str());
  return registrable != nullptr ? std::string(registrable) : d;
}

bool Aligned(std::string_view a, std::string_view b, Alignment mode) {
  if (a.ends_with('.')) {
    a.remove_suffix(1);
  }
  if (b.ends_with('.')) {
    b.remove_suffix(1);
  }
  if (a.empty() || b.empty()) {
    return false;
  }
  if (mode == Alignment::kStrict) {
    return EqualsIgnoreCase(a, b);
  }
  return OrganizationalDomain(a) == OrganizationalDomain(b);
}

std::optional<std::string> AuthorDomain(const std::vector<std::string>& domains,
                                        std::string& problem) {
  if (domains.empty()) {
    problem = "no From address: the message should be rejected (RFC 7489 6.6.1)";
    return std::nullopt;
  }
  for (const std::string& d : domains) {
    if (!EqualsIgnoreCase(d, domains.front())) {
      problem =
          "From addresses in different domains: the message should be rejected (RFC "
          "7489 6.6.1)";
      return std::nullopt;
    }
  }
  return AsciiStrToLower(domains.front());
}

Evaluation::Evaluation(Request request) : request_(std::move(request)) {}

void Evaluation::Provide(const dns::Question& question, dns::Answer answer) {
  answers_[dns::QuestionKey(question.name)] = std::move(answer);
}

const dns::Answer* Evaluation::Txt(const std::string& name) {
  const std::string key = dns::QuestionKey(name);
  const auto it = answers_.find(key);
  if (it != answers_.end()) {
    return &it->second;
  }
  needed_ = {key, dns::RecordType::kTxt};
  return nullptr;
}

void Evaluation::GiveUp() {
  outcome_ = {};
  outcome_.result = Result::kTempError;
  outcome_.problem = "policy discovery not done within the check's budget";
}

bool Evaluation::Run() {
  Outcome o;
  std::string from = AsciiStrToLower(request_.from_domain);
  if (from.ends_with('.')) {
    from.pop_back();
  }
  const std::string org = OrganizationalDomain(from);
  // 6.6.3: the From domain first, then its organizational domain.
  std::vector<std::string> candidates = {from};
  if (org != from) {
    candidates.push_back(org);
  }
  for (const std::string& domain : candidates) {
    const dns::Answer* txt = Txt(StrCat("_dmarc.", domain));
    if (txt == nullptr) {
      return false;
    }
    if (txt->status == dns::AnswerStatus::kTemporary) {
      o.result = Result::kTempError;
      o.problem = StrCat("DNS failure looking up _dmarc.", domain);
      outcome_ = std::move(o);
      return true;
    }
    std::vector<const std::string*> records;
    for (const std::string& t : txt->texts) {
      if (Trim(t).starts_with("v=DMARC1")) {
        records.push_back(&t);
      }
    }
    if (records.empty()) {
      continue;
    }
    // 6.6.3 steps 4 and 5: several records, or one without a usable policy, end the
    // discovery: DMARC is not applied to the message (result none, with why), and no policy
    // is taken from such a record.
    if (records.size() > 1) {
      o.result = Result::kNone;
      o.problem = StrCat("_dmarc.", domain,
                         " has more than one DMARC record: DMARC not applied (RFC 7489 6.6.3)");
      outcome_ = std::move(o);
      return true;
    }
    std::string problem;
    std::optional<Record> record = ParseRecord(*records[0], problem);
    if (!record) {
      o.result = Result::kNone;
      o.problem = StrCat("_dmarc.", domain, ": ", problem, ": DMARC not applied (RFC 7489 6.6.3)");
      outcome_ = std::move(o);
      return true;
    }
    o.record_domain = domain;
    o.record = std::move(record);
    break;
  }
  if (!o.record) {
    o.result = Result::kNone;
    o.problem = StrCat("no DMARC record for ", from);
    outcome_ = std::move(o);
    return true;
  }
  const Record& r = *o.record;
  // 6.6.3: a record found at the organizational domain for a subdomain applies sp=.
  const Policy policy = (o.record_domain != from && r.sp) ? *r.sp : r.p;
  o.policy = policy;
  o.spf_aligned = request_.spf && request_.spf->pass && Aligned(request_.spf->domain, from, r.aspf);
  for (const Identifier& d : request_.dkim) {
    o.dkim_aligned = o.dkim_aligned || (d.pass && Aligned(d.domain, from, r.adkim));
  }
  // An aligned identifier that could not be checked (a DNS failure, a key lookup the check had
  // no budget for): the message might pass, so it does not fail: temperror, with the
  // disposition it would get, so that the receiver's policy for temperror decides.
  bool undecided =
      request_.spf && request_.spf->temperror && Aligned(request_.spf->domain, from, r.aspf);
  for (const Identifier& d : request_.dkim) {
    undecided = undecided || (d.temperror && Aligned(d.domain, from, r.adkim));
  }
  if (o.spf_aligned || o.dkim_aligned) {
    o.result = Result::kPass;
    o.disposition = Policy::kNone;
  } else if (undecided) {
    o.result = Result::kTempError;
    o.problem = "an aligned identifier could not be checked (temporary error)";
    o.disposition = request_.sample < r.pct ? policy : Weaker(policy);
  } else {
    o.result = Result::kFail;
    o.disposition = request_.sample < r.pct ? policy : Weaker(policy);
  }
  outcome_ = std::move(o);
  return true;
}

}  // namespace relais::dmarc
