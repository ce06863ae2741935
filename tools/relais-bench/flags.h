// tools/relais-bench/flags.h — command-line flags of relais-bench ("--name value",
// "--name=value", bare "--name" for switches) and the units its values are written in.
// Every flag is declared once with ABSL_FLAG in flags.cc and read by Abseil's parsers
// (tools/cli); Flags is the per-command view the commands use.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace relais::bench {

class Flags {
 public:
  // Parses args; `switches` are the flags that take no value, `repeated` those that may be
  // given more than once; any other flag takes one value and may appear once. Each name must
  // be declared in flags.cc (bool, std::string or cli::Repeated, as its set says): a name that
  // is not is a programmer error (CHECK).
  [[nodiscard]] static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                                   const std::set<std::string>& switches,
                                                   const std::set<std::string>& values,
                                                   const std::set<std::string>& repeated = {});
  [[nodiscard]] bool Has(const std::string& name) const { return values_.contains(name); }
  [[nodiscard]] std::optional<std::string> Get(const std::string& name) const;
  [[nodiscard]] std::vector<std::string> GetAll(const std::string& name) const;
  [[nodiscard]] const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// "250ms", "10s", "2m", "1h"; a bare number is seconds.
[[nodiscard]] absl::StatusOr<uint64_t> ParseDurationMs(std::string_view text);
// "2048", "2k" / "2KiB" (x1024), "1m" / "1MiB".
[[nodiscard]] absl::StatusOr<uint64_t> ParseBytes(std::string_view text);
[[nodiscard]] absl::StatusOr<uint64_t> ParseCount(std::string_view what, std::string_view text);
[[nodiscard]] absl::StatusOr<double> ParseFraction(std::string_view what, std::string_view text);

}  // namespace relais::bench
