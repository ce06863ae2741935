// tools/relais-bench/flags.cc — see flags.h.
#include "tools/relais-bench/flags.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "core/base/check.h"
#include "core/base/strings.h"
#include "tools/cli/args.h"

// Every flag of relais-bench's commands, typed; each command's usage text says what it means.
// send
ABSL_FLAG(std::string, target, "", "send: HOST:PORT or /PATH to send to");
ABSL_FLAG(bool, lmtp, false, "send, sink: speak LMTP instead of SMTP");
ABSL_FLAG(std::string, connections, "", "send: concurrent connections (default 10)");
ABSL_FLAG(std::string, messages, "", "send: messages to send; sink: stop after this many");
ABSL_FLAG(std::string, duration, "", "send, sink: how long to run (250ms, 10s, 2m, 1h)");
ABSL_FLAG(std::string, size, "", "send: message size, or S:W,S:W... weighted sizes");
ABSL_FLAG(std::string, rcpts, "", "send: recipients per message");
ABSL_FLAG(std::string, rate, "", "send: messages per second (default: closed loop)");
ABSL_FLAG(std::string, pipelining, "", "send: on or off");
ABSL_FLAG(bool, bdat, false, "send: BDAT instead of DATA");
ABSL_FLAG(std::string, bind, "", "send: source addresses, CIDR or none");
ABSL_FLAG(std::string, messages_per_connection, "", "send: messages before reconnecting");
ABSL_FLAG(std::string, from, "", "send: MAIL FROM address");
ABSL_FLAG(std::string, to_domain, "", "send: recipients' domain");
ABSL_FLAG(std::string, helo, "", "send: EHLO name");
ABSL_FLAG(std::string, timeout, "", "send: per-reply timeout");
ABSL_FLAG(std::string, run_id, "", "send: the run's ID in the tracking header");
ABSL_FLAG(std::string, sink, "", "send: the sink's HOST:PORT, to verify delivery");
ABSL_FLAG(std::string, verify_timeout, "", "send: how long to wait for the sink's count");
ABSL_FLAG(std::string, json, "", "send, sink: write the run's results to this file");
ABSL_FLAG(std::string, seed, "", "send, sink: random seed");
ABSL_FLAG(bool, progress, false, "send: print progress each second");
ABSL_FLAG(bool, quiet, false, "send: print only the summary");
ABSL_FLAG(std::string, hold, "", "send: connect, EHLO and keep connections idle this long");
ABSL_FLAG(std::string, message, "", "send: the message file to send every time");
ABSL_FLAG(bool, tls, false, "send: STARTTLS on every connection");
ABSL_FLAG(bool, tls_implicit, false, "send, sink: TLS from the first byte (port 465 style)");
ABSL_FLAG(bool, tls_resume, false, "send: resume TLS sessions (tickets) across connections");
ABSL_FLAG(std::string, auth, "", "send: USER:PASS for AUTH PLAIN over TLS");
// sink
ABSL_FLAG(std::string, tls_cert, "", "sink: PEM certificate chain: offer STARTTLS");
ABSL_FLAG(std::string, tls_key, "", "sink: PEM private key of --tls-cert");
ABSL_FLAG(std::string, listen, "", "sink: HOST:PORT or /PATH to listen on");
ABSL_FLAG(std::string, hostname, "", "sink: name in the greeting");
ABSL_FLAG(relais::cli::Repeated, reply, {}, "sink: STAGE:CODE:FRACTION, may be repeated");
ABSL_FLAG(relais::cli::Repeated, delay, {}, "sink: STAGE:MIN-MAX, may be repeated");
// report
ABSL_FLAG(std::string, png, "", "report: write the plot here");
ABSL_FLAG(std::string, markdown, "", "report: write the table here");
ABSL_FLAG(std::string, title, "", "report: the plot's title");

namespace relais::bench {

using base::StrCat;

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args,
                                   const std::set<std::string>& switches,
                                   const std::set<std::string>& values,
                                   const std::set<std::string>& repeated) {
  std::vector<std::string_view> names;
  auto declared =
      [&](const std::string& name) {
        std::string registered = name;
        std::replace(registered.begin(), registered.end(), '-', '_');
        absl::CommandLineFlag* flag = absl::FindCommandLineFlag(registered);
        RELAIS_CHECK(flag != nullptr)
            << "relais-bench flag --" << name
            << " is not declared with ABSL_FLAG (tools/relais-bench/flags.cc)";
        names.push_back(name);
        return flag;
      };
  for (const std::string& name : switches) {
    if (name != "help") {
      RELAIS_CHECK(declared(name)->IsOfType<bool>()) << "--" << name << " must be a bool flag";
    }
  }
  for (const std::string& name : values) {
    RELAIS_CHECK(declared(name)->IsOfType<std::string>()) << "--" << name << " must be a string";
  }
  for (const std::string& name : repeated) {
    RELAIS_CHECK(declared(name)->IsOfType<cli::Repeated>()) << "--" << name << " must repeat";
  }
  // A switch takes no value: "--bdat=1" is a mistake, not "true".
  std::vector<std::string> words = args;
  std::vector<char*> argv;
  for (std::string& w : words) {
    const size_t eq = w.find('=');
    if (w.starts_with("--") && eq != std::string::npos && switches.contains(w.substr(2, eq - 2))) {
      return absl::InvalidArgumentError(StrCat(w.substr(0, eq), " takes no value"));
    }
    argv.push_back(w.data());
  }
  absl::StatusOr<cli::Args> parsed = cli::Parse(argv, names, cli::DoubleDash::kIsAWord);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(parsed.status().message());
  }
  Flags flags;
  flags.positional_ = std::move(parsed->positional);
  if (parsed->help) {
    if (!switches.contains("help")) {
      return absl::InvalidArgumentError("unknown flag --help");
    }
    flags.values_["help"].push_back("");
  }
  for (const std::string& name : parsed->given) {
    std::string registered = name;
    std::replace(registered.begin(), registered.end(), '-', '_');
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(registered);
    if (switches.contains(name)) {
      flags.values_[name].push_back("");
    } else if (repeated.contains(name)) {
      flags.values_[name] = flag->TryGet<cli::Repeated>()->values;
    } else {
      flags.values_[name].push_back(*flag->TryGet<std::string>());
    }
  }
  return flags;
}

std::optional<std::string> Flags::Get(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) {
    return std::nullopt;
  }
  return it->second.back();
}

std::vector<std::string> Flags::GetAll(const std::string& name) const {
  const auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

namespace {

// A decimal number and the suffix after it.
bool SplitNumber(std::string_view text, double& number, std::string_view& suffix) {
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) {
    ++i;
  }
  if (i == 0) {
    return false;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + i, number);
  suffix = text.substr(i);
  return ec == std::errc() && end == text.data() + i && std::isfinite(number) && number >= 0;
}

}  // namespace

absl::StatusOr<uint64_t> ParseDurationMs(std::string_view text) {
  double n = 0;
  std::string_view unit;
  if (SplitNumber(text, n, unit)) {
    double ms = -1;
    if (unit == "ms") {
      ms = n;
    } else if (unit.empty() || unit == "s") {
      ms = n * 1000;
    } else if (unit == "m" || unit == "min") {
      ms = n * 60'000;
    } else if (unit == "h") {
      ms = n * 3'600'000;
    }
    if (ms >= 0 && ms < 1e15) {
      return static_cast<uint64_t>(ms);
    }
  }
  return absl::InvalidArgumentError(
      StrCat("bad duration '", text, "': expected a number with ms, s, m or h"));
}

absl::StatusOr<uint64_t> ParseBytes(std::string_view text) {
  double n = 0;
  std::string_view unit;
  if (SplitNumber(text, n, unit)) {
    double factor = 0;
    const std::string u = base::AsciiStrToLower(unit);
    if (u.empty() || u == "b") {
      factor = 1;
    } else if (u == "k" || u == "kb" || u == "kib") {
      factor = 1024;
    } else if (u == "m" || u == "mb" || u == "mib") {
      factor = 1024.0 * 1024;
    }
    if (factor != 0 && n * factor < 1e13) {
      return static_cast<uint64_t>(n * factor);
    }
  }
  return absl::InvalidArgumentError(
      StrCat("bad size '", text, "': expected bytes, optionally with k or m (KiB, MiB)"));
}

absl::StatusOr<uint64_t> ParseCount(std::string_view what, std::string_view text) {
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return absl::InvalidArgumentError(StrCat("bad ", what, " '", text, "': expected a number"));
  }
  return n;
}

absl::StatusOr<double> ParseFraction(std::string_view what, std::string_view text) {
  double n = 0;
  std::string_view rest;
  if (!SplitNumber(text, n, rest) || !rest.empty() || n > 1) {
    return absl::InvalidArgumentError(
        StrCat("bad ", what, " '", text, "': expected a probability from 0 to 1"));
  }
  return n;
}

}  // namespace relais::bench
