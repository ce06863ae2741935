// protocols/spf/spf.h — Sender Policy Framework (RFC 7208): check_host() as a sans-I/O
// evaluation.
//
// An Evaluation never does I/O. Run() evaluates as far as the DNS answers it has allow; when
// it needs one more, it returns false and needed() names the question; the owner looks it up
// (asynchronously, on its own resolver), hands the answer to Provide(), and calls Run()
// again. Each Run() replays the evaluation from the start over the answers collected so far,
// which keeps the code a plain recursive reading of the RFC: the answers never change within
// an evaluation, so every replay takes the same path, and an evaluation needs at most a few
// dozen questions (the limits below).
//
// Complete: every mechanism (all, include, a, mx, ptr, ip4, ip6, exists) and modifier
// (redirect, exp; unknown modifiers are checked and ignored), CIDR lengths, all macros and
// transformers (with %{i} as nibbles for IPv6 and %{p} by validated reverse lookup), the
// 10-term DNS limit, the 2-void-lookup limit, at most 10 MX names and 10 PTR names per term,
// several SPF records -> permerror, syntax errors -> permerror, DNS failures -> temperror,
// the HELO identity and postmaster@HELO for the null sender. A target name no DNS question
// can carry (empty label, label over 63 bytes, from a macro or written so) is never asked
// about: it does not exist (a void lookup), not a DNS failure. Domain-specs may contain ':'
// and '/'; ip6 takes the mixed notation ::FFFF:a.b.c.d.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "core/mail/ip_network.h"
#include "protocols/dns/answer.h"

namespace relais::spf {

enum class Result : uint8_t { kNone, kNeutral, kPass, kFail, kSoftFail, kTempError, kPermError };

// "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror" (RFC 8601 words).
[[nodiscard]] std::string_view ResultName(Result result);

struct Request {
  mail::IpAddress ip;
  std::string sender;  // MAIL FROM, without brackets; empty: the null reverse-path.
  std::string helo;    // The EHLO/HELO name.
  // Check the HELO identity (RFC 7208 2.3) instead of MAIL FROM.
  bool helo_identity = false;
  std::string receiver = "unknown";  // Our host name, for %{r}.
  uint64_t now_unix_seconds = 0;     // For %{t}.
};

struct Outcome {
  Result result = Result::kNone;
  std::string domain;       // The domain checked first (from MAIL FROM, or the HELO name).
  std::string mechanism;    // The term that decided, as written ("-all", "include:x.org").
  std::string explanation;  // For fail: the expanded exp= text, when there was one.
  std::string problem;      // For permerror and temperror: what went wrong.
  uint32_t dns_terms = 0;   // Terms that cost DNS lookups (limit 10).
  uint32_t void_lookups = 0;
};

class Evaluation {
 public:
  explicit Evaluation(Request request);

  // True when outcome() is final; false when needed() must be answered first.
  [[nodiscard]] bool Run();
  [[nodiscard]] const dns::Question& needed() const { return needed_; }
  void Provide(const dns::Question& question, dns::Answer answer);
  [[nodiscard]] const Outcome& outcome() const { return outcome_; }
  // Distinct questions answered so far.
  [[nodiscard]] size_t questions() const { return answers_.size(); }

 private:
  struct Flow;  // Internal results (see spf.cc).
  friend struct Evaluator;

  const Request request_;
  std::string sender_;  // The identity checked: sender, or postmaster@helo.
  std::map<std::pair<std::string, uint16_t>, dns::Answer> answers_;
  dns::Question needed_;
  Outcome outcome_;
};

}  // namespace relais::spf
