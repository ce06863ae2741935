// tools/relais-auth/main.cc — relais-auth, the operators' tool for sender authentication, on
// the same code as the daemon (protocols/spf, protocols/dns).
//
//   relais-auth spf --ip IP --helo NAME --sender ADDR [--dns HOST:PORT] [--timeout T] [--json]
//   relais-auth dmarc --from-domain D [--spf RESULT:DOMAIN] [--dkim RESULT:DOMAIN]...
//
//   relais-auth dkim verify|sign|record ...
//   relais-auth check --ip IP --helo NAME --sender ADDR [FILE]   (all three, as relaisd does)
//
// Prints the result on stdout (the first word of the first line is the result), diagnostics
// on stderr; exits 0 whenever it produced a result, 2 on bad usage.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/functional/function_ref.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dkim/dkim.h"
#include "protocols/dmarc/dmarc.h"
#include "protocols/dns/blocking_resolver.h"
#include "protocols/spf/spf.h"
#include "tools/cli/args.h"

// Every flag of every command; Usage() says which command takes which.
ABSL_FLAG(bool, json, false, "print the result as JSON");
ABSL_FLAG(bool, helo_identity, false, "spf: check the HELO identity instead of MAIL FROM");
ABSL_FLAG(bool, defer_temperror, false, "check: a temperror under a reject policy defers (451)");
ABSL_FLAG(std::string, ip, "", "the client's IP address");
ABSL_FLAG(std::string, helo, "", "the client's HELO/EHLO name");
ABSL_FLAG(std::string, sender, "", "MAIL FROM address ('' is the null sender)");
ABSL_FLAG(std::string, dns, "",
          "the only DNS server to ask, HOST:PORT (default: /etc/resolv.conf)");
ABSL_FLAG(std::string, timeout, "", "DNS timeout per try, in ms");
ABSL_FLAG(std::string, receiver, "", "our host name, for SPF's %{r} macro");
ABSL_FLAG(std::string, from_domain, "", "dmarc: the author (From) domain");
ABSL_FLAG(std::string, spf, "", "dmarc: the SPF result, RESULT:DOMAIN");
ABSL_FLAG(relais::cli::Repeated, dkim, {},
          "dmarc: a DKIM result, RESULT:DOMAIN, once per signature");
ABSL_FLAG(std::string, sample, "", "dmarc, check: the pct= draw, 0..99 (default: random)");
ABSL_FLAG(std::string, domain, "", "dkim sign: d=");
ABSL_FLAG(std::string, selector, "", "dkim sign: s=");
ABSL_FLAG(std::string, key, "", "dkim sign, record: the PKCS #8 PEM key");
ABSL_FLAG(std::string, algorithm, "", "dkim sign: rsa-sha256 or ed25519-sha256");
ABSL_FLAG(std::string, canonicalization, "", "dkim sign: header/body, e.g. relaxed/relaxed");
ABSL_FLAG(std::string, headers, "", "dkim sign: the fields to sign, from:to:...");
ABSL_FLAG(std::string, authserv_id, "", "check: our Authentication-Results identity");
ABSL_FLAG(std::string, spf_policy, "", "check: off, tag or reject");
ABSL_FLAG(std::string, dkim_policy, "", "check: off, tag or reject");
ABSL_FLAG(std::string, dmarc_policy, "", "check: off, tag or reject");
ABSL_FLAG(std::string, signatures_max, "", "check: DKIM signatures verified at most, 1..64");
ABSL_FLAG(std::string, dmarc_temperror, "", "check: defer, accept or reject on a DMARC temperror");

namespace relais {
namespace {

using base::StrAppend;
using base::StrCat;

constexpr const char* kUsage =
    "usage: relais-auth spf --ip IP --helo NAME --sender ADDR [--helo-identity]\n"
    "       relais-auth dmarc --from-domain D [--spf RESULT:DOMAIN] [--dkim RESULT:DOMAIN]...\n"
    "                         [--sample 0..99]\n"
    "       relais-auth dkim verify [FILE]\n"
    "       relais-auth dkim sign --domain D --selector S --key KEY.pem\n"
    "                         [--algorithm rsa-sha256|ed25519-sha256]\n"
    "                         [--canonicalization relaxed/relaxed] [--headers from:to:...] [FILE]\n"
    "       relais-auth dkim record --key KEY.pem     (the TXT record that publishes the key)\n"
    "       relais-auth check --ip IP --helo NAME --sender ADDR [--authserv-id ID]\n"
    "                         [--spf-policy|--dkim-policy|--dmarc-policy off|tag|reject]\n"
    "                         [--defer-temperror] [--sample 0..99]\n"
    "                         [--signatures-max N] [--dmarc-temperror defer|accept|reject] [FILE]\n"
    "  common: [--dns HOST:PORT] [--timeout MS] [--json]\n"
    "  spf: --sender '' is the null sender (postmaster@NAME is checked). dmarc: --dkim once per\n"
    "  signature; --sample fixes the pct= draw (default: random). --dns uses only that server\n"
    "  (default: /etc/resolv.conf). Exit status 0 when a result was produced, 2 on bad usage.\n";

using Flags = std::map<std::string, std::string>;

int Usage(const std::string& problem) {
  std::fprintf(stderr, "relais-auth: %s\n%s", problem.c_str(), kUsage);
  return 2;
}

// The flags of every command, read with Abseil's parsers (tools/cli) into name -> value; a
// switch given has the value "true"; --dkim may be repeated (its values joined by newlines);
// the one word that is not a flag is "file" (the message, for the dkim and check commands).
bool ParseFlags(int argc, char** argv, int first, Flags& out, std::string& problem) {
  static constexpr std::string_view kFlags[] = {"json",
                                                "helo-identity",
                                                "defer-temperror",
                                                "ip",
                                                "helo",
                                                "sender",
                                                "dns",
                                                "timeout",
                                                "receiver",
                                                "from-domain",
                                                "spf",
                                                "sample",
                                                "domain",
                                                "selector",
                                                "key",
                                                "algorithm",
                                                "canonicalization",
                                                "headers",
                                                "authserv-id",
                                                "spf-policy",
                                                "dkim-policy",
                                                "dmarc-policy",
                                                "signatures-max",
                                                "dmarc-temperror",
                                                "dkim"};
  absl::StatusOr<cli::Args> args = cli::Parse({argv + first, argv + argc}, kFlags);
  if (!args.ok()) {
    problem = std::string(args.status().message());
    return false;
  }
  if (args->help) {
    problem = "unknown flag --help";
    return false;
  }
  if (args->positional.size() > 1) {
    problem = StrCat("unexpected argument '", args->positional[1], "'");
    return false;
  }
  if (!args->positional.empty()) {
    out["file"] = args->positional[0];
  }
  for (const std::string& name : args->given) {
    std::string registered = name;
    std::replace(registered.begin(), registered.end(), '-', '_');
    out[name] = absl::FindCommandLineFlag(registered)->CurrentValue();
  }
  return true;
}

// Runs `command` over the flags from argv[first] on, or prints the usage error.
int WithFlags(int argc, char** argv, int first, absl::FunctionRef<int(Flags&)> command) {
  Flags flags;
  std::string problem;
  if (!ParseFlags(argc, argv, first, flags, problem)) {
    return Usage(problem);
  }
  return command(flags);
}

// A whole decimal number in [min, max]; nullopt for anything else.
std::optional<uint32_t> ParseNumber(std::string_view text, uint32_t min, uint32_t max) {
  uint32_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < min || n > max) {
    return std::nullopt;
  }
  return n;
}

// The resolver the flags ask for (--dns, --timeout); nullptr after printing the usage error.
std::unique_ptr<dns::BlockingResolver> MakeResolver(Flags& flags) {
  dns::BlockingResolverOptions options;
  if (flags.contains("dns")) {
    options.servers = {flags["dns"]};
  }
  if (flags.contains("timeout")) {
    const std::optional<uint32_t> ms = ParseNumber(flags["timeout"], 1, UINT32_MAX);
    if (!ms) {
      Usage(StrCat("--timeout '", flags["timeout"], "': expected milliseconds"));
      return nullptr;
    }
    options.timeout_ms = *ms;
  }
  absl::StatusOr<std::unique_ptr<dns::BlockingResolver>> resolver =
      dns::BlockingResolver::Create(options);
  if (!resolver.ok()) {
    Usage(std::string(resolver.status().message()));
    return nullptr;
  }
  return std::move(*resolver);
}

// Answers an evaluation's DNS questions (SPF, DKIM, DMARC all ask the same way) until it is
// done.
template <typename Evaluation>
void Resolve(Evaluation& evaluation, dns::BlockingResolver& resolver) {
  while (!evaluation.Run()) {
    const dns::Question& q = evaluation.needed();
    evaluation.Provide(q, resolver.Resolve(q));
  }
}

// The SPF request --ip, --helo and --sender describe; nullopt after printing the usage error.
std::optional<spf::Request> SpfRequest(Flags& flags) {
  for (const char* required : {"ip", "helo", "sender"}) {
    if (!flags.contains(required)) {
      Usage(StrCat("--", required, " is required"));
      return std::nullopt;
    }
  }
  spf::Request request;
  const std::optional<mail::IpAddress> ip = mail::IpAddress::Parse(flags["ip"]);
  if (!ip) {
    Usage(StrCat("--ip '", flags["ip"], "' is not an IP address"));
    return std::nullopt;
  }
  request.ip = *ip;
  request.helo = flags["helo"];
  request.sender = flags["sender"];
  request.helo_identity = flags.contains("helo-identity");
  request.receiver = flags.contains("receiver") ? flags["receiver"] : "relais-auth";
  request.now_unix_seconds = static_cast<uint64_t>(std::time(nullptr));
  if (request.helo.empty() && (request.sender.empty() || request.helo_identity)) {
    Usage("--helo is empty, and the check needs it (null sender or HELO identity)");
    return std::nullopt;
  }
  return request;
}

int Spf(Flags& flags) {
  const std::optional<spf::Request> request = SpfRequest(flags);
  if (!request) {
    return 2;
  }
  std::unique_ptr<dns::BlockingResolver> resolver = MakeResolver(flags);
  if (resolver == nullptr) {
    return 2;
  }
  spf::Evaluation evaluation(*request);
  Resolve(evaluation, *resolver);
  const spf::Outcome& o = evaluation.outcome();
  if (flags.contains("json")) {
    std::printf(
        "{\"result\":%s,\"domain\":%s,\"mechanism\":%s,\"explanation\":%s,\"problem\":%s,"
        "\"dns_terms\":%u,\"void_lookups\":%u,\"dns_queries\":%u}\n",
        log::JsonString(spf::ResultName(o.result)).c_str(), log::JsonString(o.domain).c_str(),
        log::JsonString(o.mechanism).c_str(), log::JsonString(o.explanation).c_str(),
        log::JsonString(o.problem).c_str(), o.dns_terms, o.void_lookups, resolver->queries());
    return 0;
  }
  std::printf("%s %s\n", std::string(spf::ResultName(o.result)).c_str(), o.domain.c_str());
  if (o.result == spf::Result::kFail && !o.explanation.empty()) {
    std::printf("explanation: %s\n", o.explanation.c_str());
  }
  if (!o.mechanism.empty()) {
    std::printf("mechanism: %s\n", o.mechanism.c_str());
  }
  if (!o.problem.empty()) {
    std::printf("problem: %s\n", o.problem.c_str());
  }
  std::printf("dns: %u of 10 lookup terms, %u of 2 void lookups, %u queries\n", o.dns_terms,
              o.void_lookups, resolver->queries());
  return 0;
}

// The DMARC pct= draw: --sample, or random. False when --sample is not 0..99.
bool ParseSample(Flags& flags, uint8_t& sample) {
  if (!flags.contains("sample")) {
    std::random_device random;
    sample = static_cast<uint8_t>(random() % 100);
    return true;
  }
  const std::optional<uint32_t> n = ParseNumber(flags["sample"], 0, 99);
  if (!n) {
    return false;
  }
  sample = static_cast<uint8_t>(*n);
  return true;
}

// "pass:example.com" -> an identifier; false when malformed.
bool ParseIdentifier(const std::string& text, dmarc::Identifier& out) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos || colon + 1 >= text.size()) {
    return false;
  }
  const std::string result = base::AsciiStrToLower(text.substr(0, colon));
  static const std::vector<std::string> kWords = {"pass", "fail",      "softfail",  "neutral",
                                                  "none", "temperror", "permerror", "policy"};
  if (std::find(kWords.begin(), kWords.end(), result) == kWords.end()) {
    return false;
  }
  out.pass = result == "pass";
  out.domain = text.substr(colon + 1);
  return true;
}

int Dmarc(Flags& flags) {
  if (!flags.contains("from-domain") || flags["from-domain"].empty()) {
    return Usage("--from-domain is required");
  }
  dmarc::Request request;
  request.from_domain = flags["from-domain"];
  if (flags.contains("spf")) {
    dmarc::Identifier spf;
    if (!ParseIdentifier(flags["spf"], spf)) {
      return Usage(
          StrCat("--spf '", flags["spf"], "': expected RESULT:DOMAIN, e.g. pass:example.com"));
    }
    request.spf = spf;
  }
  if (flags.contains("dkim")) {
    std::string_view rest = flags["dkim"];
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      const std::string item(rest.substr(0, nl));
      rest = nl == std::string_view::npos ? "" : rest.substr(nl + 1);
      dmarc::Identifier d;
      if (!ParseIdentifier(item, d)) {
        return Usage(StrCat("--dkim '", item, "': expected RESULT:DOMAIN, e.g. pass:example.com"));
      }
      request.dkim.push_back(d);
    }
  }
  if (!ParseSample(flags, request.sample)) {
    return Usage(StrCat("--sample '", flags["sample"], "': expected 0..99"));
  }
  std::unique_ptr<dns::BlockingResolver> resolver = MakeResolver(flags);
  if (resolver == nullptr) {
    return 2;
  }
  dmarc::Evaluation evaluation(request);
  Resolve(evaluation, *resolver);
  const dmarc::Outcome& o = evaluation.outcome();
  const std::string result(dmarc::ResultName(o.result));
  const std::string disposition(dmarc::PolicyName(o.disposition));
  if (flags.contains("json")) {
    std::printf(
        "{\"result\":%s,\"policy\":%s,\"disposition\":%s,\"record_domain\":%s,"
        "\"spf_aligned\":%s,\"dkim_aligned\":%s,\"pct\":%u,\"sample\":%u,"
        "\"problem\":%s}\n",
        log::JsonString(result).c_str(),
        o.policy ? log::JsonString(dmarc::PolicyName(*o.policy)).c_str() : "null",
        log::JsonString(disposition).c_str(), log::JsonString(o.record_domain).c_str(),
        o.spf_aligned ? "true" : "false", o.dkim_aligned ? "true" : "false",
        o.record ? o.record->pct : 100u, request.sample, log::JsonString(o.problem).c_str());
    return 0;
  }
  std::string line = result;
  if (o.policy) {
    StrAppend(&line, " policy=", dmarc::PolicyName(*o.policy));
  }
  StrAppend(&line, " disposition=", disposition);
  std::printf("%s\n", line.c_str());
  if (o.record) {
    std::printf("record: _dmarc.%s (pct=%u, adkim=%s, aspf=%s)\n", o.record_domain.c_str(),
                o.record->pct, o.record->adkim == dmarc::Alignment::kStrict ? "s" : "r",
                o.record->aspf == dmarc::Alignment::kStrict ? "s" : "r");
    std::printf("aligned: spf %s, dkim %s\n", o.spf_aligned ? "yes" : "no",
                o.dkim_aligned ? "yes" : "no");
  }
  if (!o.problem.empty()) {
    std::fprintf(stderr, "relais-auth: %s\n", o.problem.c_str());
  }
  return 0;
}

// The message from FILE or stdin; nullopt (after an error message) when unreadable.
std::optional<std::string> ReadMessage(const Flags& flags) {
  const auto file = flags.find("file");
  FILE* in = stdin;
  if (file != flags.end() && file->second != "-") {
    in = std::fopen(file->second.c_str(), "rb");
    if (in == nullptr) {
      std::fprintf(stderr, "relais-auth: cannot read %s: %s\n", file->second.c_str(),
                   std::strerror(errno));
      return std::nullopt;
    }
  }
  std::string message;
  char buffer[65536];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), in)) > 0) {
    message.append(buffer, n);
  }
  if (in != stdin) {
    std::fclose(in);
  }
  return message;
}

std::optional<crypto::PrivateKey> LoadKey(const std::string& path) {
  const Flags one = {{"file", path}};
  const std::optional<std::string> pem = ReadMessage(one);
  if (!pem) {
    return std::nullopt;
  }
  absl::StatusOr<crypto::PrivateKey> key = crypto::PrivateKey::FromPem(*pem);
  if (!key.ok()) {
    std::fprintf(stderr, "relais-auth: %s: %s\n", path.c_str(),
                 std::string(key.status().message()).c_str());
    return std::nullopt;
  }
  return std::move(*key);
}

int DkimVerify(Flags& flags) {
  const std::optional<std::string> raw = ReadMessage(flags);
  if (!raw) {
    return 2;
  }
  std::unique_ptr<dns::BlockingResolver> resolver = MakeResolver(flags);
  if (resolver == nullptr) {
    return 2;
  }
  const std::string message = dkim::Normalize(*raw);
  dkim::Verification verification(message, static_cast<uint64_t>(std::time(nullptr)));
  Resolve(verification, *resolver);
  const std::vector<dkim::SignatureResult>& results = verification.results();
  if (flags.contains("json")) {
    std::string out = "{\"signatures\":[";
    for (size_t i = 0; i < results.size(); ++i) {
      const dkim::SignatureResult& r = results[i];
      StrAppend(
          &out, i == 0 ? "" : ",", "{\"result\":", log::JsonString(dkim::ResultName(r.result)),
          ",\"domain\":", log::JsonString(r.domain), ",\"selector\":", log::JsonString(r.selector),
          ",\"reason\":", log::JsonString(r.reason), ",\"testing\":", r.testing ? "true" : "false",
          "}");
    }
    StrAppend(&out, "]}");
    std::printf("%s\n", out.c_str());
    return 0;
  }
  if (results.empty()) {
    std::printf("none\n");
    return 0;
  }
  for (const dkim::SignatureResult& r : results) {
    std::string line = StrCat(dkim::ResultName(r.result), " d=", r.domain, " s=", r.selector);
    if (!r.reason.empty()) {
      StrAppend(&line, " ", r.reason);
    }
    if (r.testing) {
      line.append(" (key in testing mode, t=y)");
    }
    std::printf("%s\n", line.c_str());
  }
  if (verification.skipped() > 0) {
    // RFC 6376 6.1: relaisd's default bound (auth.dkim_signatures_max) applies here too.
    std::printf("policy: %zu more signatures not evaluated\n", verification.skipped());
  }
  return 0;
}

int DkimSign(Flags& flags) {
  for (const char* required : {"domain", "selector", "key"}) {
    if (!flags.contains(required) || flags[required].empty()) {
      return Usage(StrCat("--", required, " is required"));
    }
  }
  dkim::SignOptions options;
  options.domain = flags["domain"];
  options.selector = flags["selector"];
  options.timestamp = static_cast<uint64_t>(std::time(nullptr));
  if (flags.contains("canonicalization")) {
    const std::string c = base::AsciiStrToLower(flags["canonicalization"]);
    const size_t slash = c.find('/');
    const std::string h = c.substr(0, slash);
    const std::string b = slash == std::string::npos ? "simple" : c.substr(slash + 1);
    if ((h != "simple" && h != "relaxed") || (b != "simple" && b != "relaxed")) {
      return Usage(
          StrCat("--canonicalization '", c, "': expected simple or relaxed, e.g. relaxed/relaxed"));
    }
    options.header_canonicalization =
        h == "relaxed" ? dkim::Canonicalization::kRelaxed : dkim::Canonicalization::kSimple;
    options.body_canonicalization =
        b == "relaxed" ? dkim::Canonicalization::kRelaxed : dkim::Canonicalization::kSimple;
  }
  if (flags.contains("headers")) {
    options.headers.clear();
    std::string_view rest = flags["headers"];
    while (!rest.empty()) {
      const size_t colon = rest.find(':');
      options.headers.emplace_back(rest.substr(0, colon));
      rest = colon == std::string_view::npos ? "" : rest.substr(colon + 1);
    }
  }
  std::optional<crypto::PrivateKey> key = LoadKey(flags["key"]);
  if (!key) {
    return 1;
  }
  if (flags.contains("algorithm")) {
    const std::string a = base::AsciiStrToLower(flags["algorithm"]);
    const bool rsa = key->type() == crypto::KeyType::kRsa;
    if (a != "rsa-sha256" && a != "ed25519-sha256") {
      return Usage(StrCat("--algorithm '", a, "': rsa-sha256 or ed25519-sha256"));
    }
    if ((a == "rsa-sha256") != rsa) {
      std::fprintf(stderr, "relais-auth: --algorithm %s does not fit the %s key in %s\n", a.c_str(),
                   rsa ? "RSA" : "Ed25519", flags["key"].c_str());
      return 1;
    }
  }
  const std::optional<std::string> raw = ReadMessage(flags);
  if (!raw) {
    return 1;
  }
  absl::StatusOr<std::string> field = dkim::Sign(dkim::Normalize(*raw), options, *key);
  if (!field.ok()) {
    std::fprintf(stderr, "relais-auth: cannot sign: %s\n",
                 std::string(field.status().message()).c_str());
    return 1;
  }
  // The input stays byte for byte; the new field takes its line ends.
  std::string top = *field;
  if (raw->find("\r\n") == std::string::npos) {
    std::string lf;
    for (size_t i = 0; i < top.size(); ++i) {
      if (!(top[i] == '\r' && i + 1 < top.size() && top[i + 1] == '\n')) {
        lf.push_back(top[i]);
      }
    }
    top = std::move(lf);
  }
  std::fwrite(top.data(), 1, top.size(), stdout);
  std::fwrite(raw->data(), 1, raw->size(), stdout);
  return 0;
}

// SPF, then DKIM and DMARC over the message, exactly as relaisd runs them (protocols/authcheck).
int Check(Flags& flags) {
  std::optional<spf::Request> request = SpfRequest(flags);
  if (!request) {
    return 2;
  }
  request->helo_identity = false;
  authcheck::Policy policy;
  policy.authserv_id = flags.contains("authserv-id") ? flags["authserv-id"] : "relais-auth";
  for (const auto& [flag, mode] :
       {std::pair{"spf-policy", &policy.spf}, std::pair{"dkim-policy", &policy.dkim},
        std::pair{"dmarc-policy", &policy.dmarc}}) {
    if (flags.contains(flag)) {
      const std::optional<authcheck::Mode> m = authcheck::ParseMode(flags[flag]);
      if (!m) {
        return Usage(StrCat("--", flag, " must be off, tag or reject"));
      }
      *mode = *m;
    }
  }
  policy.defer_temperror = flags.contains("defer-temperror");
  if (flags.contains("signatures-max")) {
    const std::optional<uint32_t> n = ParseNumber(flags["signatures-max"], 1, 64);
    if (!n) {
      return Usage(StrCat("--signatures-max '", flags["signatures-max"], "': expected 1..64"));
    }
    policy.dkim_signatures_max = *n;
  }
  if (flags.contains("dmarc-temperror")) {
    const std::optional<authcheck::TempErrorAction> a =
        authcheck::ParseTempErrorAction(flags["dmarc-temperror"]);
    if (!a) {
      return Usage("--dmarc-temperror must be defer, accept or reject");
    }
    policy.dmarc_temperror = *a;
  }
  authcheck::MessageRequest message_request;
  if (!ParseSample(flags, message_request.dmarc_sample)) {
    return Usage(StrCat("--sample '", flags["sample"], "': expected 0..99"));
  }
  const std::optional<std::string> raw = ReadMessage(flags);
  if (!raw) {
    return 2;
  }
  std::unique_ptr<dns::BlockingResolver> resolver = MakeResolver(flags);
  if (resolver == nullptr) {
    return 2;
  }
  authcheck::Judgement verdict;
  if (policy.spf != authcheck::Mode::kOff) {
    spf::Evaluation spf_evaluation(*request);
    Resolve(spf_evaluation, *resolver);
    message_request.spf = spf_evaluation.outcome();
    verdict = authcheck::JudgeSender(*message_request.spf, policy);
  }
  message_request.sender = request->sender;
  message_request.helo = request->helo;
  message_request.now_unix_seconds = request->now_unix_seconds;
  const std::string message = dkim::Normalize(*raw);
  authcheck::MessageCheck check(policy, message_request, message);
  // The daemon would refuse at MAIL FROM already; the message is checked anyway, to show it.
  Resolve(check, *resolver);
  if (verdict.verdict == authcheck::Verdict::kAccept) {
    verdict = check.judgement();
  }
  const dmarc::Outcome* dmarc = check.dmarc_outcome();
  const std::string disposition(
      dmarc::PolicyName(dmarc != nullptr ? dmarc->disposition : dmarc::Policy::kNone));
  static constexpr const char* kVerdicts[] = {"accept", "reject", "defer"};
  const char* verdict_word = kVerdicts[static_cast<int>(verdict.verdict)];
  const std::string header = check.Header();
  if (flags.contains("json")) {
    std::printf("{\"authentication_results\":%s,\"disposition\":%s,\"verdict\":%s,\"text\":%s}\n",
                log::JsonString(header).c_str(), log::JsonString(disposition).c_str(),
                log::JsonString(verdict_word).c_str(), log::JsonString(verdict.text).c_str());
    return 0;
  }
  std::string shown;
  for (char c : header) {
    if (c != '\r') {
      shown.push_back(c);
    }
  }
  std::printf("%sdisposition=%s\n", shown.c_str(), disposition.c_str());
  std::printf("verdict: %s%s%s\n", verdict_word, verdict.text.empty() ? "" : " ",
              verdict.text.c_str());
  return 0;
}

int DkimCommand(const std::string& command, Flags& flags) {
  if (command == "verify") {
    return DkimVerify(flags);
  }
  if (command == "sign") {
    return DkimSign(flags);
  }
  if (command == "record") {
    if (!flags.contains("key")) {
      return Usage("--key is required");
    }
    std::optional<crypto::PrivateKey> key = LoadKey(flags["key"]);
    if (!key) {
      return 1;
    }
    std::printf("v=DKIM1; k=%s; p=%s\n", key->type() == crypto::KeyType::kRsa ? "rsa" : "ed25519",
                crypto::Base64Encode(key->PublicKeyBytes()).c_str());
    return 0;
  }
  return Usage(StrCat("unknown dkim command '", command, "'"));
}

int Dkim(int argc, char** argv) {
  if (argc < 3) {
    return Usage("dkim needs a command: verify, sign or record");
  }
  const std::string command = argv[2];
  return WithFlags(argc, argv, 3, [&](Flags& flags) { return DkimCommand(command, flags); });
}

}  // namespace
}  // namespace relais

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(relais::kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "spf") {
    return relais::WithFlags(argc, argv, 2, relais::Spf);
  }
  if (command == "dmarc") {
    return relais::WithFlags(argc, argv, 2, relais::Dmarc);
  }
  if (command == "dkim") {
    return relais::Dkim(argc, argv);
  }
  if (command == "check") {
    return relais::WithFlags(argc, argv, 2, relais::Check);
  }
  if (command == "--help" || command == "help") {
    std::fputs(relais::kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "relais-auth: unknown command '%s'\n%s", command.c_str(), relais::kUsage);
  return 2;
}
