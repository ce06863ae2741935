// tools/relais-bench/flags.cc — see flags.h.
#include "tools/relais-bench/flags.h"

#include <charconv>
#include <cmath>

#include "core/base/strings.h"

namespace relais::bench {

using base::StrCat;

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args,
                                   const std::set<std::string>& switches,
                                   const std::set<std::string>& values,
                                   const std::set<std::string>& repeated) {
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!arg.starts_with("--") || arg == "--") {
      flags.positional_.push_back(arg);
      continue;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (switches.contains(name)) {
      if (eq != std::string::npos) {
        return absl::InvalidArgumentError(StrCat("--", name, " takes no value"));
      }
      flags.values_[name].push_back("");
      continue;
    }
    if (!values.contains(name) && !repeated.contains(name)) {
      return absl::InvalidArgumentError(StrCat("unknown flag --", name));
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(StrCat("--", name, " needs a value"));
    }
    auto& slot = flags.values_[name];
    if (!slot.empty() && !repeated.contains(name)) {
      return absl::InvalidArgumentError(StrCat("--", name, " given twice"));
    }
    slot.push_back(std::move(value));
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
