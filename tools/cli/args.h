// tools/cli/args.h — the command line of Relais's programs, read through Abseil's flag registry.
//
// Each program declares its flags with ABSL_FLAG (type, default, help: the one declaration)
// and calls Parse with the flags one command takes. Abseil's own parser is not used as is
// because our programs take flags per subcommand ("relaisctl queue ls --json"), spell names with
// dashes ("--check-config" is ABSL_FLAG(bool, check_config, ...)), answer -h/--help with their
// own usage (exit 0), and report bad usage themselves (exit 2, with their message); Abseil's
// ParseCommandLine exits 1 on its own. So this file only splits argv; every value is parsed by
// the flag's Abseil parser (CommandLineFlag::ParseFrom), so types and defaults are Abseil's.
// Startup code only; not thread-safe (Abseil flags are process globals).
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace relais::cli {

// A flag that may be given more than once: every value, in order (ABSL_FLAG(cli::Repeated, ...)).
struct Repeated {
  std::vector<std::string> values;
};
// Abseil's hooks for Repeated: values are kept one per line.
bool AbslParseFlag(absl::string_view text, Repeated* out, std::string* error);
std::string AbslUnparseFlag(const Repeated& in);

struct Args {
  bool help = false;                    // --help was given.
  std::set<std::string> given;          // The flags given, spelled as on the command line.
  std::vector<std::string> positional;  // Everything that is not a flag, in order.
};

enum class DoubleDash : uint8_t {
  kEndsFlags,  // "--" ends the flags (Abseil's and getopt's convention).
  kIsAWord,    // "--" is a positional word like any other (relais-bench's convention).
};

// Reads `args` (argv after the program name, or after a subcommand): "--name=value",
// "--name value", a bare "--name" for bool flags; "--" ends the flags; anything not starting
// with "--" ("-", "-h", a file) is positional. `flags` are the names this
// command takes, with dashes; each is an ABSL_FLAG of the same name with underscores.
// Errors (the message says which): NotFound "unknown flag --x"; InvalidArgument "--x needs a
// value" or "--x given twice" (unless the flag is a Repeated or a bool); OutOfRange "--x: <Abseil's
// reason>" for a value its type does not take.
[[nodiscard]] absl::StatusOr<Args> Parse(std::span<char* const> args,
                                         std::span<const std::string_view> flags,
                                         DoubleDash double_dash = DoubleDash::kEndsFlags);

}  // namespace relais::cli
