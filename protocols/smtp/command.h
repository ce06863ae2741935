// protocols/smtp/command.h — parse one SMTP command line. Pure: no I/O, no state, no
// allocation. The caller has split input at CRLF, rejected bare CR/LF and enforced the line
// length limit. Returned views point into `line`.
#pragma once

#include <cstdint>
#include <string_view>

namespace relais::smtp {

enum class Verb : uint8_t {
  kHelo,
  kEhlo,
  kMail,
  kRcpt,
  kData,
  kBdat,
  kRset,
  kNoop,
  kQuit,
  kVrfy,
  kHelp,
  kStartTls,        // RFC 3207.
  kAuth,            // RFC 4954.
  kNotImplemented,  // Known but not offered here: EXPN, TURN, ETRN, ...
  kUnknown,
};

struct Command {
  Verb verb = Verb::kUnknown;
  // MAIL/RCPT: from the '<' of the path to the end of line (path, then parameters).
  // Other verbs: everything after the verb and its separating space(s).
  std::string_view argument;
  bool syntax_ok = true;  // False when MAIL lacks "FROM:" or RCPT lacks "TO:".
};

[[nodiscard]] Command ParseCommand(std::string_view line);

// Splits the next ESMTP parameter ("KEY" or "KEY=VALUE", RFC 5321 4.1.2 esmtp-param) off
// `params`, which is advanced past it. Returns false at the end or on a malformed parameter
// (then `malformed` is set).
struct Parameter {
  std::string_view keyword;
  std::string_view value;  // Empty when no '=' was given.
  bool has_value = false;
};
[[nodiscard]] bool NextParameter(std::string_view& params, Parameter& out, bool& malformed);

}  // namespace relais::smtp
