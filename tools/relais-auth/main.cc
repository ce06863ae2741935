// tools/relais-auth/main.cc — relais-auth, the operators' tool for sender authentication, on
// the same code as the daemon (protocols/spf, protocols/dns).
//
//   relais-auth spf --ip IP --helo NAME --sender ADDR [--dns HOST:PORT] [--timeout T] [--json]
//
// Prints the result on stdout (the first word of the first line is the result), diagnostics
// on stderr; exits 0 whenever it produced a result, 2 on bad usage.
#include <charconv>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "core/base/strings.h"
#include "core/log/log.h"
#include "protocols/dns/blocking_resolver.h"
#include "protocols/spf/spf.h"

namespace relais {
namespace {

using base::StrCat;

constexpr const char* kUsage =
    "usage: relais-auth spf --ip IP --helo NAME --sender ADDR [--dns HOST:PORT] [--timeout MS]\n"
    "                       [--helo-identity] [--json]\n"
    "  --sender '' is the null sender (postmaster@NAME is checked); --dns uses only that server\n"
    "  (default: /etc/resolv.conf). Exit status 0 when a result was produced, 2 on bad usage.\n";

int Usage(const std::string& problem) {
  std::fprintf(stderr, "relais-auth: %s\n%s", problem.c_str(), kUsage);
  return 2;
}

// --name value pairs; switches have no value.
bool ParseFlags(int argc, char** argv, int first, std::map<std::string, std::string>& out,
                std::string& problem) {
  static const std::vector<std::string> kSwitches = {"json", "helo-identity"};
  static const std::vector<std::string> kValues = {"ip",  "helo",    "sender",
                                                   "dns", "timeout", "receiver"};
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (!arg.starts_with("--")) {
      problem = StrCat("unexpected argument '", arg, "'");
      return false;
    }
    std::string name = arg.substr(2);
    std::string value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (std::find(kSwitches.begin(), kSwitches.end(), name) != kSwitches.end()) {
      out[name] = "1";
      continue;
    }
    if (std::find(kValues.begin(), kValues.end(), name) == kValues.end()) {
      problem = StrCat("unknown flag --", name);
      return false;
    }
    if (eq == std::string::npos) {
      if (i + 1 >= argc) {
        problem = StrCat("--", name, " needs a value");
        return false;
      }
      value = argv[++i];
    }
    out[name] = value;
  }
  return true;
}

int Spf(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  std::string problem;
  if (!ParseFlags(argc, argv, 2, flags, problem)) {
    return Usage(problem);
  }
  for (const char* required : {"ip", "helo", "sender"}) {
    if (!flags.contains(required)) {
      return Usage(StrCat("--", required, " is required"));
    }
  }
  spf::Request request;
  const std::optional<mail::IpAddress> ip = mail::IpAddress::Parse(flags["ip"]);
  if (!ip) {
    return Usage(StrCat("--ip '", flags["ip"], "' is not an IP address"));
  }
  request.ip = *ip;
  request.helo = flags["helo"];
  request.sender = flags["sender"];
  request.helo_identity = flags.contains("helo-identity");
  request.receiver = flags.contains("receiver") ? flags["receiver"] : "relais-auth";
  request.now_unix_seconds = static_cast<uint64_t>(std::time(nullptr));
  if (request.helo.empty() && (request.sender.empty() || request.helo_identity)) {
    return Usage("--helo is empty, and the check needs it (null sender or HELO identity)");
  }
  dns::BlockingResolverOptions options;
  if (flags.contains("dns")) {
    options.servers = {flags["dns"]};
  }
  if (flags.contains("timeout")) {
    const std::string& t = flags["timeout"];
    uint32_t ms = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), ms);
    if (ec != std::errc() || end != t.data() + t.size() || ms == 0) {
      return Usage(StrCat("--timeout '", t, "': expected milliseconds"));
    }
    options.timeout_ms = ms;
  }
  absl::StatusOr<std::unique_ptr<dns::BlockingResolver>> resolver =
      dns::BlockingResolver::Create(options);
  if (!resolver.ok()) {
    return Usage(std::string(resolver.status().message()));
  }
  spf::Evaluation evaluation(request);
  while (!evaluation.Run()) {
    const dns::Question& q = evaluation.needed();
    evaluation.Provide(q, (*resolver)->Resolve(q));
  }
  const spf::Outcome& o = evaluation.outcome();
  if (flags.contains("json")) {
    std::printf(
        "{\"result\":%s,\"domain\":%s,\"mechanism\":%s,\"explanation\":%s,\"problem\":%s,"
        "\"dns_terms\":%u,\"void_lookups\":%u,\"dns_queries\":%u}\n",
        log::JsonString(spf::ResultName(o.result)).c_str(), log::JsonString(o.domain).c_str(),
        log::JsonString(o.mechanism).c_str(), log::JsonString(o.explanation).c_str(),
        log::JsonString(o.problem).c_str(), o.dns_terms, o.void_lookups, (*resolver)->queries());
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
              o.void_lookups, (*resolver)->queries());
  return 0;
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
    return relais::Spf(argc, argv);
  }
  if (command == "--help" || command == "help") {
    std::fputs(relais::kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "relais-auth: unknown command '%s' (dkim and dmarc are not built yet)\n%s",
               command.c_str(), relais::kUsage);
  return 2;
}
