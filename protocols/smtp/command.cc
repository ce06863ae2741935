#include "protocols/smtp/command.h"

#include "core/base/strings.h"

namespace relais::smtp {
namespace {

struct VerbName {
  std::string_view name;
  Verb verb;
};

// clang-format off
constexpr VerbName kVerbs[] = {
    {"HELO", Verb::kHelo},
    {"EHLO", Verb::kEhlo},
    {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt},
    {"DATA", Verb::kData},
    {"BDAT", Verb::kBdat},
    {"RSET", Verb::kRset},
    {"NOOP", Verb::kNoop},
    {"QUIT", Verb::kQuit},
    {"VRFY", Verb::kVrfy},
    {"HELP", Verb::kHelp},
    {"STARTTLS", Verb::kStartTls},
    {"AUTH", Verb::kAuth},
    {"EXPN", Verb::kNotImplemented},
    {"TURN", Verb::kNotImplemented},
    {"ETRN", Verb::kNotImplemented},
    {"ATRN", Verb::kNotImplemented},
    {"SEND", Verb::kNotImplemented},
    {"SOML", Verb::kNotImplemented},
    {"SAML", Verb::kNotImplemented},
};
// clang-format on

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') {
    s.remove_prefix(1);
  }
  while (!s.empty() && s.back() == ' ') {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Command ParseCommand(std::string_view line) {
  Command cmd;
  const size_t space = line.find(' ');
  const std::string_view word = line.substr(0, space);
  const std::string_view rest =
      space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
  for (const VerbName& v : kVerbs) {
    if (base::EqualsIgnoreCase(word, v.name)) {
      cmd.verb = v.verb;
      break;
    }
  }
  cmd.argument = TrimSpaces(rest);
  if (cmd.verb == Verb::kMail || cmd.verb == Verb::kRcpt) {
    // RFC 5321 4.1.1.2: "MAIL FROM:" Reverse-path; many clients put a space after the colon,
    // which RFC 5321 forbids but every MTA tolerates.
    const std::string_view prefix = cmd.verb == Verb::kMail ? "FROM:" : "TO:";
    if (!base::StartsWithIgnoreCase(cmd.argument, prefix)) {
      cmd.syntax_ok = false;
      return cmd;
    }
    cmd.argument = TrimSpaces(cmd.argument.substr(prefix.size()));
  }
  return cmd;
}

bool NextParameter(std::string_view& params, Parameter& out, bool& malformed) {
  malformed = false;
  while (!params.empty() && params.front() == ' ') {
    params.remove_prefix(1);
  }
  if (params.empty()) {
    return false;
  }
  const size_t end = params.find(' ');
  std::string_view token = params.substr(0, end);
  params = end == std::string_view::npos ? std::string_view() : params.substr(end);
  const size_t eq = token.find('=');
  out.keyword = token.substr(0, eq);
  out.has_value = eq != std::string_view::npos;
  out.value = out.has_value ? token.substr(eq + 1) : std::string_view();
  // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); esmtp-value = 1*(%d33-60 / %d62-126)
  if (out.keyword.empty() || out.keyword.front() == '-' || (out.has_value && out.value.empty())) {
    malformed = true;
    return false;
  }
  for (char c : out.keyword) {
    const auto u = static_cast<unsigned char>(c);
    if (!((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || c == '-')) {
      malformed = true;
      return false;
    }
  }
  for (char c : out.value) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 33 || u == '=' || u > 126) {
      malformed = true;
      return false;
    }
  }
  return true;
}

}  // namespace relais::smtp
