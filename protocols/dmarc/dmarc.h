// protocols/dmarc/dmarc.h — DMARC (RFC 7489): policy record discovery and parsing,
// identifier alignment, the DMARC result and the disposition, as a sans-I/O evaluation.
//
// Like spf::Evaluation, Run() replays over the DNS answers collected and names the next
// question (a TXT lookup at _dmarc.<From domain>, then at _dmarc.<organizational domain>);
// nothing here does I/O. The organizational domain comes from the Public Suffix List
// (libpsl, the system's list).
//
// Result words are RFC 8601's: pass, fail, none (no policy record, or DMARC not applied: several
// records, or one without a valid p= or with an invalid sp= and without rua=, RFC 7489 6.6.3),
// temperror (DNS failure during discovery; or no aligned pass while an aligned identifier's
// mechanism could not decide, with the policy and disposition it would have). The policy is what
// the domain owner asked for (p=, or sp= for a subdomain found through its organizational domain);
// the disposition is what a receiver applies to a failing message, with pct= sampling: a message
// outside the sample gets the next weaker policy (reject -> quarantine -> none), 6.6.4.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocols/dns/answer.h"

namespace relais::dmarc {

enum class Policy : uint8_t { kNone, kQuarantine, kReject };
enum class Alignment : uint8_t { kRelaxed, kStrict };
enum class Result : uint8_t { kNone, kPass, kFail, kTempError, kPermError };

[[nodiscard]] std::string_view PolicyName(Policy policy);
[[nodiscard]] std::string_view ResultName(Result result);

struct Record {
  Policy p = Policy::kNone;
  std::optional<Policy> sp;
  Alignment adkim = Alignment::kRelaxed;
  Alignment aspf = Alignment::kRelaxed;
  uint8_t pct = 100;
  std::vector<std::string> rua;  // As given; parsed and kept for reporting.
  std::vector<std::string> ruf;
  std::string fo = "0";
  std::string rf = "afrf";
  uint32_t ri = 86'400;
};

// 6.3 / 6.6.3. nullopt (and `problem`) when the text is not a usable DMARC record; a record
// without a valid p=, or with an sp= that is not valid, but with rua= reads as p=none.
[[nodiscard]] std::optional<Record> ParseRecord(std::string_view text, std::string& problem);

// 3.2: the Public Suffix List's registrable domain of `domain` (lower-cased); the domain itself
// when it has none (it is a public suffix, or unknown to the list).
[[nodiscard]] std::string OrganizationalDomain(std::string_view domain);

// 3.1: do two domains align?
[[nodiscard]] bool Aligned(std::string_view a, std::string_view b, Alignment mode);

// 6.6.1: the one domain DMARC applies to, from the domains of the From header's addresses.
// nullopt (and `problem`) for none, or for several that differ: such a message should be
// rejected.
[[nodiscard]] std::optional<std::string> AuthorDomain(const std::vector<std::string>& domains,
                                                      std::string& problem);

struct Identifier {
  bool pass = false;       // The mechanism's result was pass.
  std::string domain;      // SPF: the domain checked (MAIL FROM, or HELO); DKIM: d=.
  bool temperror = false;  // The mechanism could not decide (temperror).
};

struct Request {
  std::string from_domain;
  std::optional<Identifier> spf;
  std::vector<Identifier> dkim;  // One per signature.
  uint8_t sample = 0;            // 0..99, uniformly drawn per message: the pct= sample.
};

struct Outcome {
  Result result = Result::kNone;
  std::optional<Policy> policy;  // When a usable record was found.
  Policy disposition = Policy::kNone;
  std::string record_domain;  // Where the record was found.
  bool spf_aligned = false;   // An SPF pass aligned with the From domain.
  bool dkim_aligned = false;  // A DKIM pass aligned with it.
  std::optional<Record> record;
  std::string problem;
};

class Evaluation {
 public:
  explicit Evaluation(Request request);
  [[nodiscard]] bool Run();
  [[nodiscard]] const dns::Question& needed() const { return needed_; }
  void Provide(const dns::Question& question, dns::Answer answer);
  [[nodiscard]] const Outcome& outcome() const { return outcome_; }
  // Out of the check's budget before the discovery ended: temperror.
  void GiveUp();

 private:
  // The answer to a TXT question, or nullptr after naming it in needed_.
  const dns::Answer* Txt(const std::string& name);

  const Request request_;
  std::map<std::string, dns::Answer> answers_;  // TXT answers by lower-case name.
  dns::Question needed_;
  Outcome outcome_;
};

}  // namespace relais::dmarc
