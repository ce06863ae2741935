#include "tools/cli/args.h"

#include <algorithm>
#include <optional>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "core/base/strings.h"

namespace relais::cli {

using base::StrAppend;
using base::StrCat;

bool AbslParseFlag(absl::string_view text, Repeated* out, std::string* /*error*/) {
  out->values.clear();
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    out->values.emplace_back(text.substr(0, nl));
    text = nl == absl::string_view::npos ? absl::string_view() : text.substr(nl + 1);
  }
  return true;
}

std::string AbslUnparseFlag(const Repeated& in) {
  std::string out;
  for (const std::string& v : in.values) {
    StrAppend(&out, out.empty() ? "" : "\n", v);
  }
  return out;
}

absl::StatusOr<Args> Parse(std::span<char* const> args, std::span<const std::string_view> flags,
                           DoubleDash double_dash) {
  Args out;
  std::vector<std::pair<absl::CommandLineFlag*, std::string>> repeated;  // Flag, values so far.
  bool flags_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (flags_ended || !arg.starts_with("--")) {
      out.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--" && double_dash == DoubleDash::kEndsFlags) {
      flags_ended = true;
      continue;
    }
    if (arg == "--") {
      out.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--help") {
      out.help = true;
      continue;
    }
    std::string_view name = arg.substr(2);
    std::optional<std::string_view> value;
    if (const size_t eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const std::string spelled(name);
    std::string registered = spelled;
    std::replace(registered.begin(), registered.end(), '-', '_');
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(registered);
    if (std::find(flags.begin(), flags.end(), name) == flags.end() || flag == nullptr) {
      return absl::NotFoundError(StrCat("unknown flag --", spelled));
    }
    std::string text;
    if (value) {
      text = std::string(*value);
    } else if (flag->IsOfType<bool>()) {
      text = "true";
    } else if (i + 1 < args.size()) {
      text = args[++i];
    } else {
      return absl::InvalidArgumentError(StrCat("--", spelled, " needs a value"));
    }
    if (flag->IsOfType<Repeated>()) {
      auto it = std::find_if(repeated.begin(), repeated.end(),
                             [&](const auto& r) { return r.first == flag; });
      if (it == repeated.end()) {
        repeated.emplace_back(flag, text);
      } else {
        StrAppend(&it->second, "\n", text);
        text = it->second;
      }
    } else if (out.given.contains(spelled) && !flag->IsOfType<bool>()) {
      return absl::InvalidArgumentError(StrCat("--", spelled, " given twice"));
    }
    std::string error;
    if (!flag->ParseFrom(text, &error)) {
      return absl::OutOfRangeError(StrCat("--", spelled, ": ", error));
    }
    out.given.insert(spelled);
  }
  return out;
}

}  // namespace relais::cli
