#include "protocols/smtp/server_session.h"

#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/mail/domain.h"
#include "protocols/smtp/address.h"
#include "protocols/smtp/command.h"
#include "protocols/smtp/sasl.h"

namespace relais::smtp {
namespace {

// RFC 5321 4.1.2 Domain: LDH labels of 1 to 63 octets, at most 255 in all.
bool IsPlainDomain(std::string_view name) {
  if (name.empty() || name.size() > 255) {
    return false;
  }
  size_t label = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '.') {
      if (label == 0 || name[i - 1] == '-') {
        return false;
      }
      label = 0;
      continue;
    }
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!(alnum || (c == '-' && label > 0)) || ++label > 63) {
      return false;
    }
  }
  return label > 0 && name.back() != '-';
}

// An address literal made of nothing that could end a token: "[192.0.2.1]", "[IPv6:...]".
bool IsPlainAddressLiteral(std::string_view name) {
  if (name.size() < 3 || name.size() > 64 || name.front() != '[' || name.back() != ']') {
    return false;
  }
  std::string_view inner = name.substr(1, name.size() - 2);
  if (inner.starts_with("IPv6:")) {
    inner.remove_prefix(5);
  }
  return !inner.empty() && std::all_of(inner.begin(), inner.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' ||
           c == ':';
  });
}

// Client text as the inside of an RFC 5322 comment: "(", ")" and backslash become quoted-pairs so
// it can neither close the comment nor open another; controls, and 8-bit bytes unless the
// message is UTF8SMTP (then the text is valid UTF-8, checked at EHLO), become "?". At most
// 255 octets are kept, so the line stays far below 998.
void AppendCommentText(std::string& out, std::string_view text, bool utf8) {
  if (text.size() > 255) {
    size_t cut = 255;
    while (utf8 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
      --cut;  // Never split a UTF-8 sequence.
    }
    text = text.substr(0, cut);
  }
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '(' || c == ')' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x21 || u == 0x7F || (u >= 0x80 && !utf8)) {
      out.push_back('?');
    } else {
      out.push_back(c);
    }
  }
}

// Whether a forward-path can go into the "for <...>" clause as it is: nothing that could end
// the angle-addr, open a comment or a quoted string, or start the date clause (";").
// Otherwise the clause, which is optional (RFC 5321 4.4), is left out.
bool IsPlainForPath(std::string_view address, bool utf8) {
  return !address.empty() && address.size() <= 255 &&
         std::all_of(address.begin(), address.end(), [utf8](char c) {
           const auto u = static_cast<unsigned char>(c);
           if (u >= 0x80) {
             return utf8;
           }
           return u > 0x20 && u != 0x7F &&
                  std::string_view("()<>;\\\",").find(c) == std::string_view::npos;
         });
}

// RFC 4954 4: an AUTH command, or a response to 334, may be up to 12288 octets with CRLF.
constexpr size_t kAuthLineBytesMax = 12288;

// The LOGIN mechanism's prompts (base64 of "Username:" and "Password:").
constexpr std::string_view kLoginUserPrompt = "VXNlcm5hbWU6";
constexpr std::string_view kLoginPasswordPrompt = "UGFzc3dvcmQ6";

// An identity from a client, decoded: it goes into logs and the trace header, so it must be
// printable (UTF-8 allowed) and free of controls.
bool IsPrintableIdentity(std::string_view text) {
  if (text.empty() || text.size() > 255 || !IsValidUtf8(text)) {
    return false;
  }
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u != 0x7F;
  });
}

}  // namespace

ServerSession::ServerSession(const SessionOptions& options, const mail::IpAddress& client)
    : options_(options), client_(client) {}

ServerSession::~ServerSession() {
  ReleaseBudget();
  Wipe(auth_request_.password);
}

void ServerSession::ReleaseBudget() {
  if (options_.receive_budget != nullptr) {
    options_.receive_budget->bytes_used -= budget_charged_;
  }
  budget_charged_ = 0;
}

void ServerSession::Start() { Send(Reply::kGreeting, options_.hostname); }

void ServerSession::Refuse(Reply reason) {
  RELAIS_CHECK(Row(reason).closes) << "Refuse needs a closing reply";
  Send(reason);
}

void ServerSession::Send(Reply reply, std::string_view argument) {
  if (closing_) {
    return;
  }
  AppendReply(output_, reply, argument);
  if (options_.replies_by_class != nullptr) {
    options_.replies_by_class[Row(reply).code / 100].Add();
  }
  if (Row(reply).closes) {
    closing_ = true;
    phase_ = Phase::kClosed;
    return;
  }
  // RFC 5321 leaves the count to the server; every 5xx a client earns counts.
  if (Row(reply).code >= 500 && ++errors_ >= options_.errors_max) {
    Send(Reply::kTooManyErrors);
  }
}

void ServerSession::Feed(std::string_view input) {
  if (closing_) {
    return;  // Nothing a client says after the final reply matters.
  }
  if (phase_ == Phase::kStartTls) {
    // Sent in the clear after STARTTLS, before the handshake: never executed (RFC 3207 4.2).
    discarded_after_starttls_ += input.size();
    return;
  }
  if (input_.empty()) {
    const size_t used = Process(input);
    input_.assign(input.substr(used));
  } else {
    input_.append(input);
    const size_t used = Process(input_);
    DropInput(used);
  }
}

size_t ServerSession::Process(std::string_view input) {
  size_t pos = 0;
  while (pos < input.size() && !closing_) {
    size_t used = 0;
    switch (phase_) {
      case Phase::kCommand:
        used = ProcessCommands(input.substr(pos));
        break;
      case Phase::kData:
        used = ScanBody(input.substr(pos), /*dot_terminated=*/true);
        data_bytes_read_ += used;
        if (data_ended_) {
          FinishMessage();
        }
        break;
      case Phase::kBdat:
        used = ProcessBdat(input.substr(pos));
        data_bytes_read_ += used;
        break;
      case Phase::kAwaitSender:
      case Phase::kAwaitCommit:
      case Phase::kAwaitAuth:
      case Phase::kClosed:
        return pos;
      case Phase::kStartTls:
        break;  // Not reached: handled below as soon as the phase is entered.
    }
    if (used == 0) {
      break;  // An incomplete line: wait for more.
    }
    pos += used;
    if (phase_ == Phase::kStartTls) {
      // CVE-2011-0411: whatever the client pipelined after STARTTLS came in the clear and
      // could have been injected by anyone on the path; it is dropped, never executed.
      discarded_after_starttls_ += input.size() - pos;
      return input.size();
    }
  }
  return pos;
}

size_t ServerSession::ProcessCommands(std::string_view input) {
  const size_t crlf = input.find("\r\n");
  if (discarding_long_line_) {
    if (crlf == std::string_view::npos) {
      // Keep a trailing CR: it may be half of the CRLF that ends the long line.
      return input.back() == '\r' ? input.size() - 1 : input.size();
    }
    discarding_long_line_ = false;
    ++command_lines_;
    if (sasl_step_ != SaslStep::kNone) {
      EndSasl();  // An overlong response ends the AUTH exchange.
    }
    Send(Reply::kLineTooLong);
    return crlf + 2;
  }
  if (crlf == std::string_view::npos) {
    // RFC 5321 4.5.3.1.4: a line that cannot fit in the limit even if CRLF came next is
    // refused now, and its rest skipped, so that memory stays bounded.
    if (input.size() >= LineBytesMax(input)) {
      discarding_long_line_ = true;
      return input.back() == '\r' ? input.size() - 1 : input.size();
    }
    return 0;
  }
  const std::string_view line = input.substr(0, crlf);
  ++command_lines_;
  if (crlf + 2 > LineBytesMax(line)) {
    if (sasl_step_ != SaslStep::kNone) {
      EndSasl();
    }
    Send(Reply::kLineTooLong);
  } else if (line.find_first_of("\r\n") != std::string_view::npos) {
    // A bare CR or LF is never a line end (SMTP smuggling); the whole line is refused.
    if (sasl_step_ != SaslStep::kNone) {
      EndSasl();
    }
    Send(Reply::kBareLineEnding);
  } else {
    HandleLine(line);
  }
  return crlf + 2;
}

size_t ServerSession::LineBytesMax(std::string_view line_start) const {
  const size_t normal = options_.command_line_bytes_max;
  if (sasl_step_ != SaslStep::kNone ||
      (options_.auth_offered && base::StartsWithIgnoreCase(line_start, "AUTH "))) {
    return std::max(normal, kAuthLineBytesMax);
  }
  return normal;
}

void ServerSession::HandleLine(std::string_view line) {
  if (sasl_step_ != SaslStep::kNone) {
    HandleSaslResponse(line);
    return;
  }
  const Command cmd = ParseCommand(line);
  if (shutting_down_ && !mail_given_ && cmd.verb != Verb::kQuit) {
    Send(Reply::kShuttingDown);
    return;
  }
  if (options_.tls_required && !tls_active_) {
    switch (cmd.verb) {
      case Verb::kEhlo:
      case Verb::kHelo:
      case Verb::kStartTls:
      case Verb::kNoop:
      case Verb::kRset:
      case Verb::kQuit:
        break;
      default:
        Send(Reply::kTlsRequired);  // RFC 3207 4.
        return;
    }
  }
  switch (cmd.verb) {
    case Verb::kHelo:
    case Verb::kEhlo:
      HandleEhlo(cmd.argument, cmd.verb == Verb::kEhlo);
      return;
    case Verb::kMail:
      if (!cmd.syntax_ok) {
        Send(Reply::kSyntax, "MAIL FROM:<address> [parameters]");
        return;
      }
      HandleMail(cmd.argument);
      return;
    case Verb::kRcpt:
      if (!cmd.syntax_ok) {
        Send(Reply::kSyntax, "RCPT TO:<address>");
        return;
      }
      HandleRcpt(cmd.argument);
      return;
    case Verb::kData:
      HandleData(cmd.argument);
      return;
    case Verb::kBdat:
      HandleBdat(cmd.argument);
      return;
    case Verb::kRset:
      if (!cmd.argument.empty()) {
        Send(Reply::kSyntax, "RSET");
        return;
      }
      ResetTransaction();
      Send(Reply::kResetOk);
      return;
    case Verb::kNoop:
      Send(Reply::kOk);
      return;
    case Verb::kQuit:
      Send(Reply::kBye);
      return;
    case Verb::kVrfy:
      if (cmd.argument.empty()) {
        Send(Reply::kSyntax, "VRFY address");
        return;
      }
      Send(Reply::kVrfy);
      return;
    case Verb::kHelp:
      Send(Reply::kHelp);
      return;
    case Verb::kStartTls:
      HandleStartTls(cmd.argument);
      return;
    case Verb::kAuth:
      HandleAuth(cmd.argument);
      return;
    case Verb::kNotImplemented:
      Send(Reply::kNotImplemented);
      return;
    case Verb::kUnknown:
      Send(Reply::kUnknownCommand);
      return;
  }
}

void ServerSession::HandleEhlo(std::string_view argument, bool extended) {
  const std::string_view name = argument.substr(0, argument.find(' '));
  // The name goes into the Received: header. Odd but printable names are common and taken as
  // they are (RFC 5321 4.1.4 says not to refuse a mismatch); control bytes and broken UTF-8
  // are not.
  bool printable = !name.empty() && IsValidUtf8(name);
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    printable = printable && u > 0x20 && u != 0x7F;
  }
  if (!printable) {
    Send(Reply::kSyntax, extended ? "EHLO domain" : "HELO domain");
    return;
  }
  // RFC 5321 4.1.4: EHLO/HELO resets any transaction in progress.
  ResetTransaction();
  greeted_ = true;
  esmtp_ = extended;
  helo_.assign(name);
  if (extended) {
    AppendEhloReply(output_, options_.hostname, options_.message_bytes_max,
                    EhloOffers{.starttls = StartTlsOffered(), .auth = AuthOfferedNow()});
    if (options_.replies_by_class != nullptr) {
      options_.replies_by_class[2].Add();
    }
  } else {
    Send(Reply::kHeloOk, options_.hostname);
  }
}

void ServerSession::HandleMail(std::string_view argument) {
  if (!greeted_) {
    Send(Reply::kNeedHelo);
    return;
  }
  if (mail_given_) {
    Send(Reply::kNestedMail);
    return;
  }
  // Parse with UTF-8 allowed first: whether it is allowed depends on a parameter after it.
  const ParsedPath path = ParsePath(argument, PathKind::kReversePath, /*smtputf8=*/true);
  if (path.error != PathError::kNone || (!path.rest.empty() && path.rest.front() != ' ')) {
    Send(Reply::kBadSenderSyntax);
    return;
  }
  bool smtputf8 = false;
  bool size_seen = false;
  bool body_seen = false;
  mail::BodyType body_type = mail::BodyType::k7Bit;
  mail::DsnReturn dsn_return = mail::DsnReturn::kUnspecified;
  bool envid_seen = false;
  bool auth_seen = false;
  std::string_view envid;
  std::string_view params = path.rest;
  Parameter p;
  bool malformed = false;
  while (NextParameter(params, p, malformed)) {
    if (!esmtp_) {
      Send(Reply::kUnknownParameter);  // RFC 5321 4.1.1.11: parameters need EHLO.
      return;
    }
    if (base::EqualsIgnoreCase(p.keyword, "SIZE") && p.has_value && !size_seen) {
      // RFC 1870: SIZE=<decimal octets>.
      uint64_t declared = 0;
      auto [end, ec] = std::from_chars(p.value.data(), p.value.data() + p.value.size(), declared);
      if (ec == std::errc::result_out_of_range) {
        declared = UINT64_MAX;
      } else if (ec != std::errc() || end != p.value.data() + p.value.size()) {
        Send(Reply::kUnknownParameter);
        return;
      }
      if (declared > options_.message_bytes_max) {
        Send(Reply::kDeclaredSizeTooBig);
        return;
      }
      size_seen = true;
    } else if (base::EqualsIgnoreCase(p.keyword, "BODY") && p.has_value && !body_seen) {
      if (base::EqualsIgnoreCase(p.value, "7BIT")) {
        body_type = mail::BodyType::k7Bit;
      } else if (base::EqualsIgnoreCase(p.value, "8BITMIME")) {
        body_type = mail::BodyType::k8BitMime;
      } else {
        Send(Reply::kUnknownParameter);
        return;
      }
      body_seen = true;
    } else if (base::EqualsIgnoreCase(p.keyword, "SMTPUTF8") && !p.has_value && !smtputf8) {
      smtputf8 = true;
    } else if (base::EqualsIgnoreCase(p.keyword, "RET") &&
               dsn_return == mail::DsnReturn::kUnspecified) {
      // RFC 3461 4.3.
      if (base::EqualsIgnoreCase(p.value, "FULL")) {
        dsn_return = mail::DsnReturn::kFull;
      } else if (base::EqualsIgnoreCase(p.value, "HDRS")) {
        dsn_return = mail::DsnReturn::kHeaders;
      } else {
        Send(Reply::kBadDsnParameter, "RET must be FULL or HDRS");
        return;
      }
    } else if (base::EqualsIgnoreCase(p.keyword, "ENVID") && !envid_seen) {
      // RFC 3461 4.4: xtext, at most 100 characters.
      if (!p.has_value || p.value.empty() || p.value.size() > 100 || !mail::XtextValid(p.value)) {
        Send(Reply::kBadDsnParameter, "ENVID must be 1 to 100 characters of xtext");
        return;
      }
      envid = p.value;
      envid_seen = true;
    } else if (base::EqualsIgnoreCase(p.keyword, "AUTH") && !auth_seen &&
               (AuthOfferedNow() || !authenticated_user_.empty())) {
      // RFC 4954 5: AUTH=<> or AUTH=xtext, the identity that submitted the message first.
      // Checked, then not kept: the session's own authenticated_user() is what it vouches for.
      if (!p.has_value || (p.value != "<>" && !mail::XtextValid(p.value))) {
        Send(Reply::kSyntax, "AUTH=<> or AUTH=xtext");
        return;
      }
      auth_seen = true;
    } else {
      Send(Reply::kUnknownParameter);
      return;
    }
  }
  if (malformed) {
    Send(Reply::kUnknownParameter);
    return;
  }
  if (!smtputf8 && !base::IsAscii(path.mailbox)) {
    Send(Reply::kNeedSmtpUtf8);
    return;
  }
  if (options_.require_sender_owned && !authenticated_user_.empty() && !path.mailbox.empty() &&
      std::none_of(owned_domains_.begin(), owned_domains_.end(), [&](const std::string& owned) {
        return mail::DomainMatches(owned, path.domain);
      })) {
    Send(Reply::kSenderNotOwned);
    return;
  }
  if (options_.spool_full != nullptr && *options_.spool_full) {
    Send(Reply::kSpoolFull);
    return;
  }
  mail_given_ = true;
  mail::Envelope& env = transaction_.envelope;
  env.sender.assign(path.mailbox);
  env.body_type = body_type;
  env.smtputf8 = smtputf8;
  env.dsn_return = dsn_return;
  env.envid.assign(envid);
  env.helo = helo_;
  env.client_address = client_.ToString();
  if (sender_check_required_) {
    phase_ = Phase::kAwaitSender;  // The owner checks the sender before MAIL is answered.
    sender_check_requested_ = true;
    return;
  }
  Send(Reply::kSenderOk);
}

// ---- STARTTLS (RFC 3207) ----

void ServerSession::HandleStartTls(std::string_view argument) {
  if (!argument.empty()) {
    Send(Reply::kSyntax, "STARTTLS");
    return;
  }
  if (tls_active_) {
    Send(Reply::kTlsAlreadyActive);
    return;
  }
  if (!StartTlsOffered()) {
    Send(Reply::kNotImplemented);
    return;
  }
  if (!greeted_) {
    Send(Reply::kNeedHelo);
    return;
  }
  if (mail_given_) {
    Send(Reply::kStartTlsInTransaction);
    return;
  }
  Send(Reply::kStartTlsReady);
  if (closing_) {
    return;
  }
  phase_ = Phase::kStartTls;  // Process drops the rest of the input.
  starttls_requested_ = true;
}

bool ServerSession::TakeStartTls() {
  const bool requested = starttls_requested_;
  starttls_requested_ = false;
  return requested;
}

void ServerSession::TlsStarted(std::string_view version, std::string_view cipher) {
  RELAIS_CHECK(!tls_active_) << "TLS started twice";
  if (closing_) {
    // A timeout or shutdown closed the session while the handshake ran: nothing to reset.
    tls_active_ = true;
    starttls_requested_ = false;
    return;
  }
  RELAIS_CHECK(phase_ == Phase::kStartTls || phase_ == Phase::kCommand)
      << "TLS started in the middle of a command";
  tls_active_ = true;
  starttls_requested_ = false;
  tls_version_.assign(version.substr(0, 64));
  tls_cipher_.assign(cipher.substr(0, 64));
  // RFC 3207 4.2: the server discards any knowledge obtained from the client (its EHLO
  // argument included) that was not obtained from the TLS negotiation itself.
  if (phase_ == Phase::kStartTls) {
    phase_ = Phase::kCommand;
  }
  discarded_after_starttls_ += input_.size();
  input_.clear();
  discarding_long_line_ = false;
  greeted_ = false;
  esmtp_ = false;
  helo_.clear();
  EndSasl();
  authenticated_user_.clear();
  owned_domains_.clear();
  ResetTransaction();
}

// ---- AUTH (RFC 4954) ----

bool ServerSession::AuthOfferedNow() const {
  return options_.auth_offered && (tls_active_ || options_.auth_in_clear);
}

void ServerSession::HandleAuth(std::string_view argument) {
  secret_in_input_ = true;
  if (!AuthOfferedNow()) {
    // Offered once TLS is up: say so (538), rather than "not enabled".
    Send(options_.auth_offered && StartTlsOffered() ? Reply::kAuthNeedsTls
                                                    : Reply::kAuthNotEnabled);
    return;
  }
  if (!greeted_) {
    Send(Reply::kNeedHelo);
    return;
  }
  if (!authenticated_user_.empty()) {
    Send(Reply::kAlreadyAuthenticated);  // RFC 4954 4: one successful AUTH per session.
    return;
  }
  if (mail_given_) {
    Send(Reply::kAuthInTransaction);
    return;
  }
  // "AUTH" SP sasl-mech [SP initial-response]
  const size_t space = argument.find(' ');
  const std::string_view mechanism = argument.substr(0, space);
  const std::string_view initial =
      space == std::string_view::npos ? std::string_view() : argument.substr(space + 1);
  if (mechanism.empty() || initial.find(' ') != std::string_view::npos ||
      (space != std::string_view::npos && initial.empty())) {
    Send(Reply::kSyntax, "AUTH mechanism [initial-response]");
    return;
  }
  Wipe(auth_request_.password);
  auth_request_.user.clear();
  if (base::EqualsIgnoreCase(mechanism, "PLAIN")) {
    auth_request_.mechanism = "PLAIN";
    if (initial.empty()) {
      sasl_step_ = SaslStep::kPlain;
      Send(Reply::kAuthChallenge, "");  // RFC 4616: the server's challenge is empty.
      return;
    }
    TakePlain(initial);
  } else if (base::EqualsIgnoreCase(mechanism, "LOGIN")) {
    auth_request_.mechanism = "LOGIN";
    if (initial.empty()) {
      sasl_step_ = SaslStep::kLoginUser;
      Send(Reply::kAuthChallenge, kLoginUserPrompt);
      return;
    }
    sasl_step_ = SaslStep::kLoginUser;  // The initial response is the user name.
    HandleSaslResponse(initial);
  } else {
    Send(Reply::kUnknownMechanism);
  }
}

void ServerSession::HandleSaslResponse(std::string_view line) {
  secret_in_input_ = true;
  const SaslStep step = sasl_step_;
  if (line == "*") {
    EndSasl();
    Send(Reply::kAuthCancelled);  // RFC 4954 4.
    return;
  }
  if (step == SaslStep::kPlain) {
    sasl_step_ = SaslStep::kNone;
    TakePlain(line);
    return;
  }
  // RFC 4954 4: "=" stands for an empty response.
  std::optional<std::string> decoded = line == "=" ? std::string() : Base64Decode(line);
  if (!decoded) {
    EndSasl();
    Send(Reply::kAuthBadResponse);
    return;
  }
  if (step == SaslStep::kLoginUser) {
    if (!IsPrintableIdentity(*decoded)) {
      EndSasl();
      Send(Reply::kAuthBadResponse);
      return;
    }
    auth_request_.user = std::move(*decoded);
    sasl_step_ = SaslStep::kLoginPassword;
    Send(Reply::kAuthChallenge, kLoginPasswordPrompt);
    return;
  }
  // kLoginPassword.
  const bool ok = !decoded->empty() && decoded->find('\0') == std::string::npos;
  if (!ok) {
    Wipe(*decoded);
    EndSasl();
    Send(Reply::kAuthBadResponse);
    return;
  }
  auth_request_.password.swap(*decoded);
  sasl_step_ = SaslStep::kNone;
  RequestAuth();
}

void ServerSession::TakePlain(std::string_view encoded) {
  std::optional<std::string> decoded = encoded == "=" ? std::string() : Base64Decode(encoded);
  if (!decoded) {
    EndSasl();
    Send(Reply::kAuthBadResponse);
    return;
  }
  const std::optional<PlainCredentials> plain = ParsePlain(*decoded);
  if (!plain || !IsPrintableIdentity(plain->authcid)) {
    Wipe(*decoded);
    EndSasl();
    Send(Reply::kAuthBadResponse);
    return;
  }
  if (!plain->authzid.empty() && plain->authzid != plain->authcid) {
    // Acting for another identity is not supported: refused like bad credentials.
    Wipe(*decoded);
    EndSasl();
    Send(Reply::kAuthFailed);
    return;
  }
  auth_request_.user.assign(plain->authcid);
  auth_request_.password.assign(plain->password);
  Wipe(*decoded);
  RequestAuth();
}

void ServerSession::RequestAuth() {
  sasl_step_ = SaslStep::kNone;
  phase_ = Phase::kAwaitAuth;  // Input waits until the owner answers.
  auth_requested_ = true;
}

void ServerSession::EndSasl() {
  sasl_step_ = SaslStep::kNone;
  auth_request_.mechanism.clear();
  auth_request_.user.clear();
  Wipe(auth_request_.password);
}

bool ServerSession::TakeAuthRequest() {
  const bool requested = auth_requested_;
  auth_requested_ = false;
  return requested;
}

void ServerSession::CompleteAuth(AuthOutcome outcome, std::vector<std::string> owned_domains) {
  RELAIS_CHECK(phase_ == Phase::kAwaitAuth) << "no AUTH request in flight";
  phase_ = Phase::kCommand;
  auth_requested_ = false;
  Wipe(auth_request_.password);
  switch (outcome) {
    case AuthOutcome::kOk:
      authenticated_user_ = auth_request_.user;
      owned_domains_ = std::move(owned_domains);
      Send(Reply::kAuthOk);
      break;
    case AuthOutcome::kFailed:
      Send(Reply::kAuthFailed);
      break;
    case AuthOutcome::kTemporary:
      Send(Reply::kAuthTemporary);
      break;
    case AuthOutcome::kLockedOut:
      Send(Reply::kAuthLockedOut);
      break;
  }
  Resume();
}

bool ServerSession::TakeSenderCheck() {
  const bool requested = sender_check_requested_;
  sender_check_requested_ = false;
  return requested;
}

void ServerSession::CompleteSenderCheck(Reply reply, std::string_view argument) {
  RELAIS_CHECK(phase_ == Phase::kAwaitSender) << "no sender check in flight";
  phase_ = Phase::kCommand;
  if (reply != Reply::kSenderOk) {
    ResetTransaction();
  }
  Send(reply, argument);
  Resume();
}

void ServerSession::RefuseMessage(Reply reply, std::string_view argument) {
  RELAIS_CHECK(phase_ == Phase::kAwaitCommit) << "no commit in flight";
  RELAIS_CHECK(IsError(reply));
  phase_ = Phase::kCommand;
  ResetTransaction();
  Send(reply, argument);
  Resume();
}

void ServerSession::DropInput(size_t used) {
  if (secret_in_input_) {
    // An AUTH line was read from this buffer: its bytes are zeroed, not left in the capacity
    // that erase() keeps.
    volatile char* p = input_.data();
    for (size_t i = 0; i < used; ++i) {
      p[i] = 0;
    }
    secret_in_input_ = false;
  }
  input_.erase(0, used);
}

void ServerSession::Resume() {
  if (force_close_after_answer_) {
    Send(Reply::kShuttingDown);
  }
  if (!input_.empty() && !closing_) {
    const size_t used = Process(input_);
    DropInput(used);
  }
}

bool ServerSession::RecipientAllowed(std::string_view domain) const {
  if (domain.empty()) {
    return true;  // <Postmaster>, which every SMTP server must accept (RFC 5321 4.5.1).
  }
  for (const std::string& pattern : options_.local_domains) {
    if (mail::DomainMatches(pattern, domain)) {
      return true;
    }
  }
  for (const std::string& pattern : options_.relay_domains) {
    if (mail::DomainMatches(pattern, domain)) {
      return true;
    }
  }
  return TrustedClient();
}

bool ServerSession::TrustedClient() const {
  if (!authenticated_user_.empty()) {
    return true;  // RFC 4954: an authenticated client may relay.
  }
  return std::any_of(options_.relay_networks.begin(), options_.relay_networks.end(),
                     [&](const mail::IpNetwork& net) { return net.Contains(client_); });
}

void ServerSession::HandleRcpt(std::string_view argument) {
  if (!mail_given_) {
    Send(Reply::kNeedMail);
    return;
  }
  const ParsedPath path = ParsePath(argument, PathKind::kForwardPath, /*smtputf8=*/true);
  if (path.error != PathError::kNone || (!path.rest.empty() && path.rest.front() != ' ')) {
    Send(Reply::kBadRecipientSyntax);
    return;
  }
  std::string_view params = path.rest;
  Parameter p;
  bool malformed = false;
  uint8_t notify = 0;
  bool orcpt_seen = false;
  std::string_view orcpt;
  while (NextParameter(params, p, malformed)) {
    if (!esmtp_) {
      Send(Reply::kUnknownParameter);
      return;
    }
    if (base::EqualsIgnoreCase(p.keyword, "NOTIFY") && notify == 0) {
      // RFC 3461 4.1: NEVER, or a list of SUCCESS, FAILURE and DELAY.
      std::string_view list = p.value;
      while (p.has_value && !list.empty()) {
        const size_t comma = list.find(',');
        const std::string_view word = list.substr(0, comma);
        const uint8_t bit = base::EqualsIgnoreCase(word, "NEVER")     ? mail::kNotifyNever
                            : base::EqualsIgnoreCase(word, "SUCCESS") ? mail::kNotifySuccess
                            : base::EqualsIgnoreCase(word, "FAILURE") ? mail::kNotifyFailure
                            : base::EqualsIgnoreCase(word, "DELAY")   ? mail::kNotifyDelay
                                                                      : 0;
        if (bit == 0 || (notify & bit) != 0) {
          notify = 0;
          break;
        }
        notify |= bit;
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        if (comma != std::string_view::npos && list.empty()) {
          notify = 0;  // A trailing comma.
        }
      }
      if (notify == 0 || ((notify & mail::kNotifyNever) != 0 && notify != mail::kNotifyNever)) {
        Send(Reply::kBadDsnParameter, "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY");
        return;
      }
    } else if (base::EqualsIgnoreCase(p.keyword, "ORCPT") && !orcpt_seen) {
      // RFC 3461 4.2: addr-type ";" xtext, where addr-type is an atom.
      const size_t semi = p.value.find(';');
      const bool ok =
          p.has_value && semi != std::string_view::npos && semi > 0 && semi + 1 < p.value.size() &&
          p.value.size() <= 500 && mail::XtextValid(p.value.substr(semi + 1)) &&
          std::all_of(p.value.begin(), p.value.begin() + static_cast<long>(semi), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-';
          });
      if (!ok) {
        Send(Reply::kBadDsnParameter, "ORCPT must be addr-type;xtext");
        return;
      }
      orcpt = p.value;
      orcpt_seen = true;
    } else {
      Send(Reply::kUnknownParameter);
      return;
    }
  }
  if (malformed) {
    Send(Reply::kUnknownParameter);
    return;
  }
  mail::Envelope& env = transaction_.envelope;
  if (!env.smtputf8 && !base::IsAscii(path.mailbox)) {
    Send(Reply::kNeedSmtpUtf8);
    return;
  }
  if (env.recipients.size() >= options_.recipients_max) {
    Send(Reply::kTooManyRecipients);  // RFC 5321 4.5.3.1.10: 452, the client retries the rest.
    return;
  }
  if (!RecipientAllowed(path.domain)) {
    Send(Reply::kRelayDenied);
    return;
  }
  if (!options_.allow_untrusted_routing && HasSenderRouting(path.local_part) && !TrustedClient()) {
    Send(Reply::kSenderRouting);  // Postfix: allow_untrusted_routing = no.
    return;
  }
  if (options_.recipient_policy != nullptr) {
    if (const Reply verdict = options_.recipient_policy->Check(path.local_part, path.domain);
        verdict != Reply::kRecipientOk) {
      Send(verdict);
      return;
    }
  }
  env.recipients.push_back(mail::Recipient{std::string(path.mailbox), notify, std::string(orcpt)});
  Send(Reply::kRecipientOk);
}

void ServerSession::BeginBody() {
  line_state_ = LineState::kLineStart;
  line_bytes_ = 0;
  body_bytes_seen_ = 0;
  body_too_big_ = body_bare_line_ending_ = body_line_too_long_ = data_ended_ = false;
  body_over_budget_ = false;
}

void ServerSession::HandleData(std::string_view argument) {
  if (!argument.empty()) {
    Send(Reply::kSyntax, "DATA");
    return;
  }
  if (!mail_given_) {
    Send(Reply::kNeedMail);
    return;
  }
  if (used_bdat_) {
    Send(Reply::kDataAfterBdat);
    return;
  }
  if (transaction_.envelope.recipients.empty()) {
    Send(Reply::kNoValidRecipients);
    return;
  }
  BeginBody();
  if (body_observer_ != nullptr) {
    body_observer_->OnBodyStart();
  }
  phase_ = Phase::kData;
  Send(Reply::kStartData);
}

void ServerSession::HandleBdat(std::string_view argument) {
  // RFC 3030: "BDAT" SP chunk-size [ SP end-marker ]
  const size_t space = argument.find(' ');
  const std::string_view size_text = argument.substr(0, space);
  const std::string_view marker =
      space == std::string_view::npos ? std::string_view() : argument.substr(space + 1);
  uint64_t size = 0;
  auto [end, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (size_text.empty() || ec != std::errc() || end != size_text.data() + size_text.size() ||
      !(marker.empty() || base::EqualsIgnoreCase(marker, "LAST"))) {
    // The chunk length is unknown, so what follows cannot be skipped; it will be read as
    // commands and refused one line at a time.
    Send(Reply::kSyntax, "BDAT octets [LAST]");
    return;
  }
  bdat_remaining_ = size;
  bdat_chunk_bytes_ = size;
  bdat_last_ = !marker.empty();
  bdat_discard_ = false;
  if (!mail_given_) {
    bdat_discard_ = true;
    bdat_discard_reply_ = Reply::kNeedMail;
  } else if (transaction_.envelope.recipients.empty()) {
    bdat_discard_ = true;
    bdat_discard_reply_ = Reply::kNeedRecipient;
  } else if (!used_bdat_) {
    used_bdat_ = true;
    BeginBody();
    if (body_observer_ != nullptr) {
      body_observer_->OnBodyStart();
    }
  }
  phase_ = Phase::kBdat;
  if (bdat_remaining_ == 0) {
    EndBdatChunk(0);
  }
}

size_t ServerSession::ProcessBdat(std::string_view input) {
  const size_t n = static_cast<size_t>(std::min<uint64_t>(bdat_remaining_, input.size()));
  if (!bdat_discard_) {
    ScanBody(input.substr(0, n), /*dot_terminated=*/false);
  }
  bdat_remaining_ -= n;
  if (bdat_remaining_ == 0) {
    EndBdatChunk(bdat_chunk_bytes_);
  }
  return n;
}

void ServerSession::EndBdatChunk(uint64_t chunk_bytes) {
  phase_ = Phase::kCommand;
  if (bdat_discard_) {
    Send(bdat_discard_reply_);
    return;
  }
  if (body_too_big_) {
    // RFC 3030 2: after a failed chunk the transaction is over; later chunks get 503.
    ResetTransaction();
    Send(Reply::kMessageTooBig);
    return;
  }
  if (!bdat_last_) {
    Send(Reply::kChunkReceived, base::StrCat(chunk_bytes));
    return;
  }
  if (line_state_ == LineState::kCr) {
    body_bare_line_ending_ = true;  // The message ends in a CR with no LF.
  } else if (line_state_ == LineState::kInLine) {
    AppendBody("\r\n");  // RFC 5322 messages end in CRLF; store them so.
  }
  FinishMessage();
}

void ServerSession::AppendBody(std::string_view bytes) {
  body_bytes_seen_ += bytes.size();
  if (body_too_big_ || body_over_budget_) {
    return;
  }
  if (body_bytes_seen_ > options_.message_bytes_max) {
    body_too_big_ = true;
  } else if (!StoreBody(bytes)) {
    body_over_budget_ = true;
    ++options_.receive_budget->refusals;
  } else {
    if (body_observer_ != nullptr) {
      body_observer_->OnBodyBytes(bytes);
    }
    return;
  }
  // Keep reading to the end of the message, holding nothing.
  DropBody();
}

void ServerSession::DropBody() {
  std::string().swap(transaction_.body);
  std::vector<std::string>().swap(body_chunks_);
  ReleaseBudget();
}

bool ServerSession::Charge(uint64_t bytes) {
  ReceiveBudget* budget = options_.receive_budget;
  if (budget == nullptr) {
    return true;
  }
  if (budget->bytes_used + bytes > budget->bytes_max) {
    return false;
  }
  budget->bytes_used += bytes;
  budget_charged_ += bytes;
  return true;
}

bool ServerSession::StoreBody(std::string_view bytes) {
  // The first kFirstPartBytes grow in one string (most messages end there); the rest goes into
  // chunks of kChunkBytes, all of one size, so that memory one session frees is what the next
  // one takes: growing one string to megabytes instead leaves a trail of freed buffers of
  // every size that the allocator keeps (measured: resident memory 70% above the budget).
  if (body_chunks_.empty() &&
      transaction_.body.size() + bytes.size() <= std::max(kFirstPartBytes, body_capacity_)) {
    if (!ReserveBody(transaction_.body.size() + bytes.size())) {
      return false;
    }
    transaction_.body.append(bytes);  // Within its capacity: no allocation.
    return true;
  }
  while (!bytes.empty()) {
    if (body_chunks_.empty() || body_chunks_.back().size() == kChunkBytes) {
      if (!Charge(kChunkBytes)) {
        return false;
      }
      body_chunks_.emplace_back().reserve(kChunkBytes);
    }
    std::string& chunk = body_chunks_.back();
    const size_t n = std::min(bytes.size(), kChunkBytes - chunk.size());
    chunk.append(bytes.substr(0, n));
    bytes.remove_prefix(n);
  }
  return true;
}

void ServerSession::JoinBody() {
  if (body_chunks_.empty()) {
    return;
  }
  // The spool takes the message as one string. Its buffer is charged like the chunks; the
  // chunks and the joined copy live together only for this copy, one message at a time per
  // shard: a fixed overhead of at most message_bytes_max, not a share of the budget.
  size_t total = transaction_.body.size();
  for (const std::string& chunk : body_chunks_) {
    total += chunk.size();
  }
  std::string joined;
  joined.reserve(total);
  joined.append(transaction_.body);
  for (const std::string& chunk : body_chunks_) {
    joined.append(chunk);
  }
  DropBody();
  transaction_.body.swap(joined);
  body_capacity_ = transaction_.body.capacity();
  if (options_.receive_budget != nullptr) {
    options_.receive_budget->bytes_used += body_capacity_;
    budget_charged_ = body_capacity_;
  }
}

bool ServerSession::ReserveBody(size_t need) {
  std::string& body = transaction_.body;
  if (need <= body.capacity()) {
    return true;
  }
  // Grow by half (at most 3 bytes copied per byte received, little slack), never past the
  // first part's size.
  constexpr size_t kFirstBytes = 4096;
  size_t target = std::max({need, body.capacity() + body.capacity() / 2, kFirstBytes});
  target = std::min(target, std::max(need, kFirstPartBytes));
  ReceiveBudget* budget = options_.receive_budget;
  const uint64_t others = budget == nullptr ? 0 : budget->bytes_used - budget_charged_;
  if (budget != nullptr && others + target > budget->bytes_max) {
    target = need;  // Exactly what is needed, if that still fits.
    if (others + target > budget->bytes_max) {
      return false;
    }
  }
  // The budget is charged with capacity, what the allocator holds, not length. A string
  // reserved from empty gets exactly `target` (growing one in place would let the library
  // double it, uncounted). While the bytes move, the old buffer lives on for one copy: a shard
  // does one at a time, so that is a fixed overhead (at most message_bytes_max), not a share.
  std::string grown;
  grown.reserve(target);
  grown.append(body);
  body.swap(grown);
  body_capacity_ = body.capacity();
  if (budget != nullptr) {
    budget->bytes_used = budget->bytes_used - budget_charged_ + body.capacity();
    budget_charged_ = body.capacity();
  }
  return true;
}

size_t ServerSession::ScanBody(std::string_view in, bool dot_terminated) {
  size_t i = 0;
  while (i < in.size()) {
    switch (line_state_) {
      case LineState::kLineStart:
        line_bytes_ = 0;
        if (dot_terminated && in[i] == '.') {
          line_state_ = LineState::kDotAtStart;
          line_bytes_ = 1;
          ++i;
        } else {
          line_state_ = LineState::kInLine;
        }
        break;
      case LineState::kDotAtStart:
        if (in[i] == '\r') {
          line_state_ = LineState::kDotCr;
          ++i;
        } else {
          line_state_ = LineState::kInLine;  // RFC 5321 4.5.2: drop the stuffed dot.
        }
        break;
      case LineState::kDotCr:
        if (in[i] == '\n') {
          data_ended_ = true;  // CRLF "." CRLF: the only end of DATA.
          return i + 1;
        }
        body_bare_line_ending_ = true;  // ".\r" without LF.
        AppendBody("\r");
        line_state_ = LineState::kInLine;
        break;
      case LineState::kInLine: {
        const char* start = in.data() + i;
        const size_t left = in.size() - i;
        const auto* cr = static_cast<const char*>(std::memchr(start, '\r', left));
        const size_t run = cr != nullptr ? static_cast<size_t>(cr - start) : left;
        if (std::memchr(start, '\n', run) != nullptr) {
          body_bare_line_ending_ = true;  // A bare LF is data, never a line end.
        }
        AppendBody(std::string_view(start, run));
        line_bytes_ += run;
        i += run;
        if (cr != nullptr) {
          line_state_ = LineState::kCr;
          ++i;
        }
        break;
      }
      case LineState::kCr:
        if (in[i] == '\n') {
          line_bytes_ += 2;
          if (line_bytes_ > options_.text_line_bytes_max) {
            body_line_too_long_ = true;  // RFC 5321 4.5.3.1.6.
          }
          AppendBody("\r\n");
          line_state_ = LineState::kLineStart;
          ++i;
        } else {
          body_bare_line_ending_ = true;  // A bare CR.
          AppendBody("\r");
          ++line_bytes_;
          line_state_ = LineState::kInLine;
        }
        break;
    }
  }
  return i;
}

void ServerSession::FinishMessage() {
  phase_ = Phase::kCommand;
  Reply refusal = Reply::kOk;
  if (body_too_big_) {
    refusal = Reply::kMessageTooBig;
  } else if (body_bare_line_ending_) {
    refusal = Reply::kBodyBareLineEnding;
  } else if (body_line_too_long_) {
    refusal = Reply::kBodyLineTooLong;
  } else if (!transaction_.body.empty() &&
             (transaction_.body.front() == ' ' || transaction_.body.front() == '\t')) {
    // RFC 5322 2.2: no header section starts with a continuation line. Stored, it would
    // continue the Received: (and any other field) written above it, letting the client
    // finish a trace field that the next hops trust. Refused rather than repaired: any repair
    // changes the client's bytes (and breaks its DKIM signatures), and no mail program
    // writes such a message.
    refusal = Reply::kBodyStartsWithWhitespace;
  } else if (body_over_budget_) {
    refusal = Reply::kSpoolFull;  // 452 4.3.1: memory, not the client, is short.
  }
  if (refusal != Reply::kOk) {
    ResetTransaction();
    Send(refusal);
    return;
  }
  JoinBody();
  phase_ = Phase::kAwaitCommit;
  commit_requested_ = true;
}

bool ServerSession::TakeCommitRequest() {
  const bool requested = commit_requested_;
  commit_requested_ = false;
  return requested;
}

void ServerSession::CompleteCommit(CommitOutcome outcome, const mail::MessageId& id) {
  RELAIS_CHECK(phase_ == Phase::kAwaitCommit) << "no commit in flight";
  phase_ = Phase::kCommand;
  ResetTransaction();
  switch (outcome) {
    case CommitOutcome::kDurable:
      ++messages_accepted_;
      Send(Reply::kQueued, id.ToString());
      break;
    case CommitOutcome::kFailed:
      Send(Reply::kSpoolFailed);
      break;
    case CommitOutcome::kNoSpace:
      Send(Reply::kSpoolFull);
      break;
    case CommitOutcome::kShutdown:
      Send(Reply::kShuttingDown);
      break;
  }
  Resume();
}

void ServerSession::ResetTransaction() {
  mail_given_ = false;
  used_bdat_ = false;
  transaction_.envelope = mail::Envelope();
  DropBody();
  BeginBody();
}

std::string ServerSession::TraceHeader(const mail::MessageId& id,
                                       std::string_view rfc5322_date) const {
  const mail::Envelope& env = transaction_.envelope;
  const std::string address = client_.ToString();
  const std::string literal = client_.family == AF_INET6 ? base::StrCat("[IPv6:", address, "]")
                                                         : base::StrCat("[", address, "]");
  // RFC 5321 4.4 / RFC 3848 / RFC 6531 3.7.3 protocol names: ESMTP, then S for TLS and A for
  // an authenticated client (ESMTPS, ESMTPA, ESMTPSA; UTF8SMTPS ...).
  std::string protocol(!esmtp_ ? "SMTP" : (env.smtputf8 ? "UTF8SMTP" : "ESMTP"));
  if (esmtp_ && tls_active_) {
    protocol.push_back('S');
  }
  if (esmtp_ && !authenticated_user_.empty()) {
    protocol.push_back('A');
  }
  // RFC 5321 4.4: every token the client chose is written so that it cannot end its clause,
  // close a comment or start the date: a HELO name that is a plain domain or address literal
  // as it is, any other in a comment after our literal of the client's address.
  std::string out = "Received: from ";
  if (IsPlainDomain(helo_) || IsPlainAddressLiteral(helo_)) {
    base::StrAppend(&out, helo_, " (", literal, ")");
  } else {
    base::StrAppend(&out, literal, " (helo=");
    AppendCommentText(out, helo_, env.smtputf8);
    out.push_back(')');
  }
  base::StrAppend(&out, "\r\n\tby ", options_.hostname, " (Relais) with ", protocol);
  if (tls_active_) {
    // The owner's strings (from the TLS library), still written as comment text.
    out.append(" (version=");
    AppendCommentText(out, tls_version_, /*utf8=*/false);
    out.append(" cipher=");
    AppendCommentText(out, tls_cipher_, /*utf8=*/false);
    out.push_back(')');
  }
  if (!authenticated_user_.empty()) {
    // Only a user the owner verified, yet escaped all the same: it cannot end the comment,
    // and no control byte gets into the header.
    out.append(" (authenticated as ");
    AppendCommentText(out, authenticated_user_, env.smtputf8);
    out.push_back(')');
  }
  base::StrAppend(&out, "\r\n\tid ", id.ToString());
  if (env.recipients.size() == 1 && IsPlainForPath(env.recipients[0].address, env.smtputf8)) {
    base::StrAppend(&out, "\r\n\tfor <", env.recipients[0].address, ">");
  }
  base::StrAppend(&out, "; ", rfc5322_date, "\r\n");
  return out;
}

void ServerSession::ConsumeOutput(size_t bytes) {
  output_offset_ += bytes;
  RELAIS_CHECK(output_offset_ <= output_.size());
  if (output_offset_ == output_.size()) {
    output_offset_ = 0;
    if (output_.capacity() > 16384) {
      std::string().swap(output_);  // An idle session holds no large buffer.
    } else {
      output_.clear();
    }
  }
}

bool ServerSession::WantsInput() const {
  return !closing_ && !input_ended_ && phase_ != Phase::kStartTls &&
         input_.size() < options_.pipeline_bytes_max &&
         output_.size() - output_offset_ < options_.pipeline_bytes_max;
}

uint32_t ServerSession::TimeoutMs() const {
  return (phase_ == Phase::kData || phase_ == Phase::kBdat) ? options_.data_timeout_ms
                                                            : options_.command_timeout_ms;
}

void ServerSession::OnTimeout() {
  if (phase_ == Phase::kAwaitCommit || phase_ == Phase::kAwaitSender ||
      phase_ == Phase::kAwaitAuth) {
    return;  // The owner answers first; the client is not at fault.
  }
  Send(Reply::kTimeout);
}

void ServerSession::OnTooSlow() {
  if (phase_ == Phase::kAwaitCommit || phase_ == Phase::kAwaitSender ||
      phase_ == Phase::kAwaitAuth) {
    return;
  }
  Send(Reply::kTooSlow);
}

void ServerSession::BeginShutdown() {
  shutting_down_ = true;
  // While the owner checks credentials the answer goes first; the next command gets 421.
  if (!in_transaction() && input_.empty() && phase_ != Phase::kAwaitAuth) {
    Send(Reply::kShuttingDown);
  }
}

void ServerSession::ForceShutdown() {
  shutting_down_ = true;
  if (phase_ == Phase::kAwaitCommit || phase_ == Phase::kAwaitSender ||
      phase_ == Phase::kAwaitAuth) {
    force_close_after_answer_ = true;
    return;
  }
  Send(Reply::kShuttingDown);
}

}  // namespace relais::smtp
