// protocols/smtp/client_session.cc — see client_session.h.
#include "protocols/smtp/client_session.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "protocols/mime/seven_bit.h"
#include "protocols/smtp/sasl.h"

namespace relais::smtp {
namespace {

using base::StrAppend;
using base::StrCat;

constexpr size_t kReplyLineBytesMax = 4096;
constexpr uint32_t kReplyLinesMax = 64;
constexpr size_t kReplyTextBytesMax = 400;  // Of the server's text kept in a result.
// Content below this size is copied into the command buffer so the whole transaction leaves in
// one send; larger content is sent from the caller's memory without a copy.
constexpr size_t kBorrowBytesMin = 16 * 1024;
constexpr uint32_t kIgnoreReply = UINT32_MAX;  // An end-of-data reply that decides nothing.

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Length of an RFC 3463 enhanced status code of class `cls` at the start of `text`, or 0.
size_t EnhancedLength(std::string_view text, char cls) {
  if (text.size() < 5 || text[0] != cls || text[1] != '.') {
    return 0;
  }
  size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    size_t digits = 0;
    while (i < text.size() && IsDigit(text[i]) && digits < 3) {
      ++i;
      ++digits;
    }
    if (digits == 0) {
      return 0;
    }
    if (part == 0) {
      if (i >= text.size() || text[i] != '.') {
        return 0;
      }
      ++i;
    }
  }
  return i == text.size() || text[i] == ' ' ? i : 0;
}

RecipientStatus Classify(uint16_t code) {
  switch (code / 100) {
    case 2:
      return RecipientStatus::kDelivered;
    case 5:
      return RecipientStatus::kFailed;
    default:
      return RecipientStatus::kDeferred;
  }
}

bool IsEightBit(char c) { return static_cast<unsigned char>(c) >= 0x80; }

bool IsAscii(std::string_view text) { return std::none_of(text.begin(), text.end(), IsEightBit); }

// Length of the header section: up to the empty line that ends it (RFC 5322 2.1), or all.
size_t HeaderBytes(std::string_view content) {
  if (content.starts_with("\r\n")) {
    return 0;
  }
  const size_t end = content.find("\r\n\r\n");
  return end == std::string_view::npos ? content.size() : end + 2;
}

}  // namespace

// A recipient's result: the verdict's codes go into the typed fields as they are, never read
// back from its text.
RecipientReply ClientSession::Settle(RecipientStatus status, const Verdict& verdict) {
  RecipientReply r;
  r.status = status;
  r.code = verdict.code;
  r.enhanced = verdict.enhanced;
  r.reply = verdict.text;
  return r;
}

ClientSession::Verdict ClientSession::Own(uint16_t code, std::string_view enhanced,
                                          std::string_view detail) {
  return Verdict{code, std::string(enhanced), StrCat(code, ' ', enhanced, ' ', detail)};
}

namespace {}  // namespace

ClientSession::ClientSession(ClientOptions options)
    : options_(std::move(options)), tls_active_(options_.implicit_tls) {
  RELAIS_CHECK(!options_.implicit_tls || options_.starttls == StartTls::kNo)
      << "implicit TLS and STARTTLS exclude each other";
  expected_.push_back({Step::kGreeting, 0});
}

ClientSession::~ClientSession() {
  Wipe(options_.auth_password);
  if (wipe_output_) {
    for (Piece& piece : pieces_) {
      Wipe(piece.owned);
    }
  }
}

// ---- Output ----

void ClientSession::Append(std::string_view text) {
  if (text.empty()) {
    return;
  }
  const bool can_merge =
      !pieces_.empty() && !pieces_.back().is_borrowed && !(pieces_.size() == 1 && front_shown_);
  if (can_merge) {
    pieces_.back().owned.append(text);
  } else {
    pieces_.push_back(Piece{false, std::string(text), {}});
  }
}

void ClientSession::AppendBorrowed(std::string_view text) {
  if (text.size() < kBorrowBytesMin) {
    Append(text);
  } else {
    pieces_.push_back(Piece{true, {}, text});
  }
}

std::string_view ClientSession::PendingOutput() const {
  if (pieces_.empty()) {
    return {};
  }
  front_shown_ = true;
  return pieces_.front().view().substr(piece_offset_);
}

void ClientSession::ConsumeOutput(size_t bytes) {
  while (bytes > 0 && !pieces_.empty()) {
    const size_t left = pieces_.front().view().size() - piece_offset_;
    if (bytes < left) {
      piece_offset_ += bytes;
      return;
    }
    bytes -= left;
    if (wipe_output_) {
      Wipe(pieces_.front().owned);  // It held an AUTH line.
    }
    pieces_.pop_front();
    piece_offset_ = 0;
    front_shown_ = false;
  }
}

void ClientSession::Send(std::string_view command_line, Step step, uint32_t index) {
  Append(command_line);
  Append("\r\n");
  expected_.push_back({step, index});
}

// ---- Input ----

void ClientSession::Feed(std::string_view bytes) {
  while (!bytes.empty() && phase_ != Phase::kClosed) {
    if (phase_ == Phase::kTlsHandshake) {
      // Sent in the clear after the 220 to STARTTLS: never read as a reply (the TLS reading of
      // RFC 3207 4.2 for the client side; a man in the middle could inject them).
      line_.clear();
      return;
    }
    const size_t newline = bytes.find('\n');
    const std::string_view part = bytes.substr(0, newline);
    if (line_.size() + part.size() > kReplyLineBytesMax) {
      Fail(Own(451, "4.5.0",
               StrCat("protocol error: reply line over ", kReplyLineBytesMax, " bytes from ",
                      options_.peer_name)));
      return;
    }
    line_.append(part);
    if (newline == std::string_view::npos) {
      return;
    }
    bytes.remove_prefix(newline + 1);
    if (!line_.empty() && line_.back() == '\r') {
      line_.pop_back();
    }
    std::string line = std::move(line_);
    line_.clear();
    // A next hop's reply text goes into log lines, bounces (Diagnostic-Code) and delivery
    // records: a bare CR, NUL or other control byte there could break a field we write.
    for (char& c : line) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        c = '?';
      }
    }

    const bool well_formed = line.size() >= 3 && line[0] >= '2' && line[0] <= '5' &&
                             IsDigit(line[1]) && IsDigit(line[2]) &&
                             (line.size() == 3 || line[3] == ' ' || line[3] == '-');
    if (!well_formed || ++reply_lines_ > kReplyLinesMax) {
      Fail(Own(451, "4.5.0",
               StrCat("protocol error: ",
                      well_formed ? "reply of too many lines" : "malformed reply line", " from ",
                      options_.peer_name)));
      return;
    }
    const std::string_view text = line.size() > 4 ? std::string_view(line).substr(4) : "";
    if (reply_lines_ == 1) {
      reply_text_.clear();
      ehlo_lines_.clear();
    } else if (!expected_.empty() && expected_.front().step == Step::kEhlo) {
      ehlo_lines_.emplace_back(text.substr(0, 200));
    }
    if (reply_text_.size() < kReplyTextBytesMax) {
      std::string_view more = text;
      if (reply_lines_ > 1) {
        // Continuation lines repeat the enhanced status code (RFC 2034): keep it once.
        const size_t enhanced = EnhancedLength(more, line[0]);
        more.remove_prefix(enhanced == 0 ? 0 : std::min(more.size(), enhanced + 1));
      }
      if (!reply_text_.empty()) {
        reply_text_.push_back(' ');
      }
      reply_text_.append(more.substr(0, kReplyTextBytesMax - reply_text_.size()));
    }
    if (line.size() > 3 && line[3] == '-') {
      continue;
    }
    reply_lines_ = 0;
    const auto code =
        static_cast<uint16_t>((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
    OnReply(code, reply_text_);
  }
}

void ClientSession::OnReply(uint16_t code, std::string_view text) {
  if (expected_.empty()) {
    // Unsolicited: typically 421 from a server closing an idle connection.
    Fail(code == 421 ? Describe(code, text, Step::kQuit)
                     : Own(451, "4.5.0",
                           StrCat("protocol error: unexpected reply from ", options_.peer_name)));
    return;
  }
  const Expect expect = expected_.front();
  expected_.pop_front();
  switch (expect.step) {
    case Step::kGreeting:
      if (code / 100 == 2) {
        phase_ = Phase::kHello;
        Send(StrCat(options_.lmtp ? "LHLO " : "EHLO ", options_.helo_name), Step::kEhlo);
      } else {
        Fail(Describe(code, text, expect.step));
      }
      return;
    case Step::kEhlo:
      OnEhloReply(code);
      return;
    case Step::kHelo:
      if (code / 100 == 2) {
        AfterHello();
      } else {
        Fail(Describe(code, text, expect.step));
      }
      return;
    case Step::kStartTls:
      OnStartTlsReply(code, text);
      return;
    case Step::kAuth:
      OnAuthReply(code, text);
      return;
    case Step::kQuit:
      phase_ = Phase::kClosed;
      return;
    default:
      break;
  }
  if (code == 421) {
    // The server is closing the connection: nothing more will be answered on it.
    if (expect.step != Step::kRset) {
      untouched_ = false;
    }
    Fail(Describe(code, text, expect.step));
    return;
  }
  OnTransactionReply(expect.step, expect.index, code, text);
}

void ClientSession::OnEhloReply(uint16_t code) {
  if (code / 100 == 2) {
    extensions_ = ServerExtensions{};
    extensions_.esmtp = true;
    for (const std::string& line : ehlo_lines_) {
      const std::string_view l(line);
      const size_t space = l.find(' ');
      const std::string_view keyword = l.substr(0, space);
      const std::string_view value = space == std::string_view::npos ? "" : l.substr(space + 1);
      auto is = [&](std::string_view name) { return base::EqualsIgnoreCase(keyword, name); };
      if (is("PIPELINING")) {
        extensions_.pipelining = true;
      } else if (is("SIZE")) {
        extensions_.size = true;
        uint64_t n = 0;
        bool digits = !value.empty() && value.size() <= 19;
        for (char c : value) {
          digits = digits && IsDigit(c);
          n = n * 10 + static_cast<uint64_t>(c - '0');
        }
        extensions_.size_max = digits ? n : 0;
      } else if (is("8BITMIME")) {
        extensions_.eightbitmime = true;
      } else if (is("SMTPUTF8")) {
        extensions_.smtputf8 = true;
      } else if (is("CHUNKING")) {
        extensions_.chunking = true;
      } else if (is("BINARYMIME")) {
        extensions_.binarymime = true;
      } else if (is("DSN")) {
        extensions_.dsn = true;
      } else if (is("ENHANCEDSTATUSCODES")) {
        extensions_.enhanced_status_codes = true;
      } else if (is("STARTTLS")) {
        extensions_.starttls = true;
      } else if (is("AUTH") || base::StartsWithIgnoreCase(keyword, "AUTH=")) {
        // "AUTH PLAIN LOGIN", or the pre-standard "AUTH=PLAIN LOGIN" some servers still send.
        std::string_view mechanisms = value;
        if (keyword.size() > 5) {
          mechanisms = l.substr(5);
        }
        while (!mechanisms.empty()) {
          const size_t end = mechanisms.find(' ');
          const std::string_view mechanism = mechanisms.substr(0, end);
          extensions_.auth_plain =
              extensions_.auth_plain || base::EqualsIgnoreCase(mechanism, "PLAIN");
          extensions_.auth_login =
              extensions_.auth_login || base::EqualsIgnoreCase(mechanism, "LOGIN");
          mechanisms = end == std::string_view::npos ? "" : mechanisms.substr(end + 1);
        }
      }
    }
    AfterHello();
  } else if (code / 100 == 5 && !options_.lmtp) {
    Send(StrCat("HELO ", options_.helo_name), Step::kHelo);  // RFC 5321 3.2.
  } else {
    Fail(Describe(code, reply_text_, Step::kEhlo));
  }
}

// ---- STARTTLS and AUTH ----

void ClientSession::AfterHello() {
  phase_ = Phase::kHello;
  if (!tls_active_ && options_.starttls != StartTls::kNo && !starttls_tried_) {
    if (extensions_.starttls) {
      starttls_tried_ = true;
      Send("STARTTLS", Step::kStartTls);
      return;
    }
    if (options_.starttls == StartTls::kRequired) {
      Fail(Own(451, "4.7.10",
               StrCat("TLS required but not offered by server ", options_.peer_name)));
      return;
    }
  }
  if (!options_.auth_user.empty() && !authenticated_) {
    if (!tls_active_) {
      // Credentials never go out in the clear.
      Fail(Own(451, "4.7.10",
               StrCat("AUTH configured but TLS not active with ", options_.peer_name,
                      "; credentials are not sent in the clear")));
      return;
    }
    if (extensions_.auth_plain) {
      auth_stage_ = AuthStage::kPlain;
      wipe_output_ = true;
      std::string line =
          StrCat("AUTH PLAIN ", EncodePlain(options_.auth_user, options_.auth_password));
      Send(line, Step::kAuth);
      Wipe(line);
      return;
    }
    if (extensions_.auth_login) {
      auth_stage_ = AuthStage::kLoginUser;
      Send("AUTH LOGIN", Step::kAuth);
      return;
    }
    Fail(Own(451, "4.7.0",
             StrCat("AUTH configured but not offered (PLAIN or LOGIN) by ", options_.peer_name)));
    return;
  }
  phase_ = Phase::kReady;
}

void ClientSession::OnStartTlsReply(uint16_t code, std::string_view text) {
  if (code == 220) {
    phase_ = Phase::kTlsHandshake;
    starttls_taken_ = false;
    return;
  }
  if (code == 421 || options_.starttls == StartTls::kRequired) {
    Verdict reason = Describe(code, text, Step::kStartTls);
    if (code != 421) {
      // Whatever the server's code, this next hop cannot take the mail now: deferred.
      reason = Own(451, "4.7.10", StrCat("TLS required but refused by server: ", reason.text));
    }
    Fail(std::move(reason));
    return;
  }
  AfterHello();  // kIfOffered: on in plaintext.
}

bool ClientSession::TakeStartTls() {
  if (phase_ != Phase::kTlsHandshake || starttls_taken_) {
    return false;
  }
  starttls_taken_ = true;
  return true;
}

void ClientSession::TlsStarted() {
  if (phase_ == Phase::kClosed) {
    return;  // Given up (Quit, lost) while the handshake ran.
  }
  RELAIS_CHECK(phase_ == Phase::kTlsHandshake) << "TlsStarted without a STARTTLS";
  tls_active_ = true;
  starttls_taken_ = true;
  // RFC 3207 4.2: what the server said before TLS is forgotten; EHLO again.
  extensions_ = ServerExtensions{};
  line_.clear();
  reply_lines_ = 0;
  phase_ = Phase::kHello;
  Send(StrCat(options_.lmtp ? "LHLO " : "EHLO ", options_.helo_name), Step::kEhlo);
}

void ClientSession::OnAuthReply(uint16_t code, std::string_view text) {
  if (code == 235) {
    authenticated_ = true;
    auth_stage_ = AuthStage::kNone;
    phase_ = Phase::kReady;
    return;
  }
  if (code == 334 &&
      (auth_stage_ == AuthStage::kLoginUser || auth_stage_ == AuthStage::kLoginPassword)) {
    wipe_output_ = true;
    std::string line = Base64Encode(auth_stage_ == AuthStage::kLoginUser ? options_.auth_user
                                                                         : options_.auth_password);
    auth_stage_ =
        auth_stage_ == AuthStage::kLoginUser ? AuthStage::kLoginPassword : AuthStage::kNone;
    Send(line, Step::kAuth);
    Wipe(line);
    return;
  }
  auth_stage_ = AuthStage::kNone;
  if (code / 100 != 4 && code / 100 != 5) {
    Fail(Own(451, "4.5.0",
             StrCat("protocol error: ", code, " in reply to AUTH from ", options_.peer_name)));
    return;
  }
  // The server's codes, typed; the owner defers (the session is not ready, no transaction).
  Fail(Describe(code, text, Step::kAuth));
}

std::string ClientSession::Redacted(std::string_view text) const {
  std::string out(text);
  if (options_.auth_password.empty()) {
    return out;
  }
  std::string encoded = Base64Encode(options_.auth_password);
  std::string plain = EncodePlain(options_.auth_user, options_.auth_password);
  const std::string* const secrets[] = {&options_.auth_password, &encoded, &plain};
  for (const std::string* secret : secrets) {
    for (size_t at = out.find(*secret); at != std::string::npos; at = out.find(*secret, at + 3)) {
      out.replace(at, secret->size(), "***");
    }
  }
  Wipe(encoded);
  Wipe(plain);
  return out;
}

// ---- Transactions ----

bool ClientSession::Precheck(size_t first_eight_bit) {
  std::optional<Verdict> refusal;
  send_smtputf8_ = message_.smtputf8;
  converted_7bit_ = false;
  not_convertible_ = false;
  if (message_.body_type == mail::BodyType::kBinaryMime &&
      !(extensions_.binarymime && extensions_.chunking && options_.use_chunking)) {
    refusal = Own(554, "5.6.3",
                  StrCat("binary message, and ", options_.peer_name, " does not offer BINARYMIME"));
  } else if (message_.smtputf8 && !extensions_.smtputf8) {
    // RFC 6531 3.4: a message whose envelope and header are ASCII does not need SMTPUTF8,
    // whatever its client said; it goes on without. One that does cannot go to this server.
    const bool ascii_envelope =
        IsAscii(message_.sender) &&
        std::all_of(message_.recipients.begin(), message_.recipients.end(),
                    [](const OutgoingRecipient& r) { return IsAscii(r.address); });
    if (!ascii_envelope) {
      refusal = Own(553, "5.6.7",
                    StrCat("non-ASCII address needs SMTPUTF8, and ", options_.peer_name,
                           " does not offer it"));
    } else if (first_eight_bit < HeaderBytes(message_.content)) {
      refusal = Own(
          550, "5.6.9",
          StrCat("UTF-8 header needs SMTPUTF8, and ", options_.peer_name, " does not offer it"));
    } else {
      send_smtputf8_ = false;
    }
  }
  if (!refusal && eight_bit_ && !extensions_.eightbitmime &&
      message_.body_type != mail::BodyType::kBinaryMime) {
    if (first_eight_bit == std::string_view::npos) {
      eight_bit_ = false;  // Declared 8BITMIME, but every byte is 7-bit: nothing to convert.
    } else {
      // RFC 6152 3: convert rather than return it; the same content a 8BITMIME server gets,
      // its 8-bit parts quoted-printable.
      const mime::SevenBitOutcome outcome =
          mime::ConvertTo7Bit(message_.content, options_.seven_bit, converted_);
      if (outcome == mime::SevenBitOutcome::kConverted) {
        message_.content = converted_;
        eight_bit_ = false;
        converted_7bit_ = true;
      } else {
        not_convertible_ = true;
        refusal = Own(554, "5.6.3",
                      StrCat("8-bit message not convertible to 7 bits (", mime::Describe(outcome),
                             "), and ", options_.peer_name, " does not offer 8BITMIME"));
      }
    }
  }
  const size_t size = message_.content.size();
  if (!refusal && extensions_.size && extensions_.size_max != 0 && size > extensions_.size_max) {
    refusal = Own(552, "5.3.4",
                  StrCat("message of ", size, " bytes exceeds the limit of ", extensions_.size_max,
                         " bytes at ", options_.peer_name));
  }
  if (!refusal) {
    return true;
  }
  for (RecipientReply& r : results_) {
    r = Settle(RecipientStatus::kFailed, *refusal);
  }
  return false;
}

void ClientSession::Begin(const OutgoingMessage& message) {
  RELAIS_CHECK(ready() && !done_) << "Begin needs an idle session";
  message_ = message;
  std::string().swap(converted_);  // The previous message's conversion, if any.
  // One scan of the content per message, for the 8BITMIME and SMTPUTF8 checks and MAIL's BODY=.
  const auto eight = std::find_if(message.content.begin(), message.content.end(), IsEightBit);
  const size_t first_eight_bit = eight == message.content.end()
                                     ? std::string_view::npos
                                     : static_cast<size_t>(eight - message.content.begin());
  eight_bit_ =
      message.body_type != mail::BodyType::k7Bit || first_eight_bit != std::string_view::npos;
  results_.assign(message.recipients.size(), RecipientReply{});
  accepted_.clear();
  settled_after_data_ = 0;
  mail_ok_ = false;
  mail_answered_ = false;
  data_end_queued_ = false;
  ++transactions_;
  // Only a reused connection can be stale; a fresh one that fails is the next hop's fault,
  // and sending the message again at once would only repeat that.
  untouched_ = transactions_ > 1 && options_.reset_before_reuse;
  if (!Precheck(first_eight_bit)) {
    untouched_ = false;
    done_ = true;  // Nothing sent; the connection stays ready.
    return;
  }
  phase_ = Phase::kTransaction;
  if ((transactions_ > 1 && options_.reset_before_reuse) || need_rset_) {
    planned_.push_back({Step::kRset, 0});  // Also proves a cached connection still works.
    need_rset_ = false;
  }
  planned_.push_back({Step::kMail, 0});
  for (uint32_t i = 0; i < message.recipients.size(); ++i) {
    planned_.push_back({Step::kRcpt, i});
  }
  const bool chunking = extensions_.chunking && options_.use_chunking;
  planned_.push_back({chunking ? Step::kBdat : Step::kData, 0});
  SendNext();
}

void ClientSession::SendNext() {
  const bool pipelining = extensions_.pipelining && options_.use_pipelining;
  while (!planned_.empty() && phase_ == Phase::kTransaction) {
    if (!pipelining && !expected_.empty()) {
      break;  // One command at a time.
    }
    const Expect next = planned_.front();
    planned_.pop_front();
    // Without PIPELINING, every earlier reply is in: skip what can no longer matter.
    const bool skip = !pipelining && mail_answered_ &&
                      (!mail_ok_ || ((next.step == Step::kData || next.step == Step::kBdat) &&
                                     accepted_.empty()));
    if (skip) {
      need_rset_ = true;
      continue;
    }
    switch (next.step) {
      case Step::kRset:
        Send("RSET", Step::kRset);
        break;
      case Step::kMail: {
        std::string line = StrCat("MAIL FROM:<", message_.sender, ">");
        if (extensions_.size) {
          StrAppend(&line, " SIZE=", message_.content.size());
        }
        if (message_.body_type == mail::BodyType::kBinaryMime) {
          line.append(" BODY=BINARYMIME");
        } else if (extensions_.eightbitmime && eight_bit_) {
          line.append(" BODY=8BITMIME");
        }
        if (send_smtputf8_) {
          line.append(" SMTPUTF8");
        }
        if (extensions_.dsn && !message_.ret.empty()) {
          StrAppend(&line, " RET=", message_.ret);
        }
        if (extensions_.dsn && !message_.envid.empty()) {
          StrAppend(&line, " ENVID=", message_.envid);
        }
        Send(line, Step::kMail);
        break;
      }
      case Step::kRcpt: {
        const OutgoingRecipient& r = message_.recipients[next.index];
        std::string line = StrCat("RCPT TO:<", r.address, ">");
        if (extensions_.dsn && !r.notify.empty()) {
          StrAppend(&line, " NOTIFY=", r.notify);
        }
        if (extensions_.dsn && !r.orcpt.empty()) {
          StrAppend(&line, " ORCPT=", r.orcpt);
        }
        Send(line, Step::kRcpt, next.index);
        break;
      }
      case Step::kData:
        Send("DATA", Step::kData);
        return;  // The body waits for 354.
      case Step::kBdat:
        Append(StrCat("BDAT ", message_.content.size(), " LAST\r\n"));
        AppendBorrowed(message_.content);
        expected_.push_back({Step::kBdat, 0});
        data_end_queued_ = true;
        break;
      default:
        RELAIS_CHECK(false) << "not a planned step";
    }
  }
  FinishIfIdle();
}

void ClientSession::SendBody() {
  // RFC 5321 4.5.2: a line that starts with '.' gets one more.
  const std::string_view content = message_.content;
  size_t start = 0;
  size_t dot = content.starts_with('.') ? 0 : content.find("\n.");
  while (dot != std::string_view::npos) {
    const size_t at = content[dot] == '.' ? dot : dot + 1;  // Position of the '.'.
    AppendBorrowed(content.substr(start, at - start));
    Append(".");
    start = at;
    dot = content.find("\n.", at);
  }
  AppendBorrowed(content.substr(start));
  Append(".\r\n");
  expected_.push_back({Step::kEndOfData, 0});
  data_end_queued_ = true;
}

void ClientSession::SettleAccepted(const Verdict& verdict) {
  for (uint32_t i : accepted_) {
    results_[i] = Settle(Classify(verdict.code), verdict);
  }
}

void ClientSession::OnTransactionReply(Step step, uint32_t index, uint16_t code,
                                       std::string_view text) {
  if (step != Step::kRset) {
    untouched_ = false;
  }
  if ((step == Step::kMail || step == Step::kRcpt) && code / 100 != 2 && code / 100 != 4 &&
      code / 100 != 5) {
    // RFC 5321 4.3.2: MAIL and RCPT are answered 2yz, 4yz or 5yz. Anything else is a server
    // out of step, never a verdict on a recipient (a "354" must not read as a deferral).
    Fail(Own(451, "4.5.0",
             StrCat("protocol error: ", code, " in reply to ",
                    step == Step::kMail ? "MAIL" : "RCPT", " from ", options_.peer_name)));
    return;
  }
  switch (step) {
    case Step::kRset:
      if (code / 100 != 2) {
        // Whatever the RSET was answered, the recipients waiting for this connection were
        // never refused: their attempt failed for now (a "5yz" here is no verdict on them).
        Fail(Own(451, "4.4.0", StrCat("RSET not accepted: ", Describe(code, text, step).text)));
        return;
      }
      break;
    case Step::kMail:
      mail_answered_ = true;
      mail_ok_ = code / 100 == 2;
      if (!mail_ok_) {
        const Verdict reply = Describe(code, text, step);
        for (RecipientReply& r : results_) {
          r = Settle(Classify(code), reply);
        }
        need_rset_ = true;
      }
      break;
    case Step::kRcpt:
      if (!mail_ok_) {
        break;  // Settled by the MAIL reply.
      }
      if (code / 100 == 2) {
        accepted_.push_back(index);
      } else {
        results_[index] = Settle(Classify(code), Describe(code, text, step));
      }
      break;
    case Step::kData:
      if (code == 354) {
        if (!mail_ok_ || accepted_.empty()) {
          // A server that should have refused DATA: end an empty message it cannot deliver.
          Append(".\r\n");
          expected_.push_back({Step::kEndOfData, kIgnoreReply});
          need_rset_ = true;
        } else {
          SendBody();
        }
      } else if (code / 100 == 2 || code / 100 == 3) {
        Fail(Own(451, "4.5.0",
                 StrCat("protocol error: ", code, " in reply to DATA from ", options_.peer_name)));
        return;
      } else {
        SettleAccepted(Describe(code, text, step));
        need_rset_ = true;
      }
      break;
    case Step::kEndOfData:
    case Step::kBdat:
      if (index == kIgnoreReply || !mail_ok_ || accepted_.empty()) {
        need_rset_ = true;  // The refusal of a message without recipients: nothing to settle.
        break;
      }
      if (code / 100 == 3) {
        Fail(Own(451, "4.5.0",
                 StrCat("protocol error: ", code, " in reply to the message data from ",
                        options_.peer_name)));
        return;
      }
      if (options_.lmtp) {
        // RFC 2033 4.2: one reply per accepted recipient, in RCPT order.
        const uint32_t r = accepted_[settled_after_data_++];
        results_[r] = Settle(Classify(code), Describe(code, text, step));
        if (settled_after_data_ < accepted_.size()) {
          expected_.push_front({step, 0});
        }
      } else {
        SettleAccepted(Describe(code, text, step));
      }
      if (code / 100 != 2) {
        need_rset_ = true;
      }
      break;
    default:
      RELAIS_CHECK(false) << "not a transaction step";
  }
  SendNext();
}

void ClientSession::FinishIfIdle() {
  if (phase_ != Phase::kTransaction || !expected_.empty() || !planned_.empty()) {
    return;
  }
  for (RecipientReply& r : results_) {
    if (r.status == RecipientStatus::kPending) {
      // Only reachable if a server answers out of turn; never count such a recipient as sent.
      r = Settle(
          RecipientStatus::kDeferred,
          Own(451, "4.5.0", StrCat("no reply for this recipient from ", options_.peer_name)));
    }
  }
  phase_ = Phase::kReady;
  done_ = true;
}

std::vector<RecipientReply> ClientSession::TakeResults() {
  RELAIS_CHECK(done_) << "TakeResults before the transaction is done";
  done_ = false;
  for (RecipientReply& r : results_) {
    r.dsn_passed_on = r.status == RecipientStatus::kDelivered && extensions_.dsn;
  }
  if (!HasOutput()) {
    // Nothing left to send can point into the converted copy: an idle connection does not
    // keep up to three times a message's size until its next message.
    message_.content = {};
    std::string().swap(converted_);
  }
  return std::move(results_);
}

// ---- Endings ----

void ClientSession::FailTransaction(const Verdict& reason) {
  for (RecipientReply& r : results_) {
    if (r.status == RecipientStatus::kPending) {
      r = Settle(RecipientStatus::kDeferred, reason);
    }
  }
  done_ = true;
}

void ClientSession::Fail(Verdict reason) {
  if (reason.code < 400 || reason.code >= 600) {
    // A 2xx or 3xx where a refusal was the only sense left (a "334" greeting): the server is
    // out of step, and the typed verdict stays a 4xx.
    reason = Own(451, "4.5.0", StrCat("protocol error: ", reason.text));
  }
  if (phase_ == Phase::kTransaction) {
    FailTransaction(reason);
  }
  error_code_ = reason.code;
  error_enhanced_ = std::move(reason.enhanced);
  error_ = std::move(reason.text);
  Wipe(options_.auth_password);  // No further use on this connection.
  phase_ = Phase::kClosed;
  expected_.clear();
  planned_.clear();
}

void ClientSession::Quit() {
  if (phase_ == Phase::kReady) {
    Send("QUIT", Step::kQuit);
    phase_ = Phase::kQuitting;
  } else if (phase_ != Phase::kQuitting && phase_ != Phase::kClosed) {
    Fail(Own(451, "4.4.2", StrCat("connection to ", options_.peer_name, " given up")));
  }
}

void ClientSession::OnConnectionLost(std::string_view why) {
  if (phase_ == Phase::kClosed) {
    return;
  }
  if (phase_ == Phase::kQuitting) {
    phase_ = Phase::kClosed;
    return;
  }
  const Step step = expected_.empty() ? Step::kQuit : expected_.front().step;
  std::string detail = StrCat("connection to ", options_.peer_name, " lost (", why, ")");
  if (!expected_.empty()) {
    StrAppend(&detail, " while waiting for the reply to ", StepName(step));
  }
  Fail(Own(451, "4.4.2", detail));
}

uint32_t ClientSession::TimeoutMs() const {
  if (expected_.empty()) {
    return 0;
  }
  switch (expected_.front().step) {
    case Step::kData:
      return options_.data_init_timeout_ms;
    case Step::kEndOfData:
    case Step::kBdat:
      return options_.data_end_timeout_ms;
    default:
      return options_.reply_timeout_ms;
  }
}

std::string_view ClientSession::StepName(Step step) const {
  switch (step) {
    case Step::kGreeting:
      return "the greeting";
    case Step::kEhlo:
      return options_.lmtp ? "LHLO" : "EHLO";
    case Step::kHelo:
      return "HELO";
    case Step::kStartTls:
      return "STARTTLS";
    case Step::kAuth:
      return "AUTH";
    case Step::kRset:
      return "RSET";
    case Step::kMail:
      return "MAIL FROM";
    case Step::kRcpt:
      return "RCPT TO";
    case Step::kData:
      return "DATA";
    case Step::kEndOfData:
      return "end of data";
    case Step::kBdat:
      return "BDAT";
    case Step::kQuit:
      return "QUIT";
  }
  return "?";
}

ClientSession::Verdict ClientSession::Describe(uint16_t code, std::string_view text,
                                               Step step) const {
  // A server may echo what it was sent: our credentials never reach a log line or a bounce.
  std::string redacted;
  if (!options_.auth_password.empty()) {
    redacted = Redacted(text);
    text = redacted;
  }
  const char cls = static_cast<char>('0' + code / 100);
  Verdict verdict;
  verdict.code = code;
  // The enhanced code as the server sent it (RFC 2034), or X.0.0 when it gave none.
  const size_t enhanced = EnhancedLength(text, cls);
  if (enhanced != 0) {
    verdict.enhanced = std::string(text.substr(0, enhanced));
    text.remove_prefix(std::min(text.size(), enhanced + 1));
  } else {
    verdict.enhanced = StrCat(cls, ".0.0");
  }
  std::string& out = verdict.text;
  out = StrCat(code, ' ', verdict.enhanced);
  if (!text.empty()) {
    out.push_back(' ');
    for (char c : text.substr(0, kReplyTextBytesMax)) {
      out.push_back(c >= 0x20 && c < 0x7f ? c : '?');  // Safe in logs and in a bounce.
    }
  }
  StrAppend(&out, " (in reply to ", StepName(step));
  if (!options_.peer_name.empty()) {
    StrAppend(&out, " at ", options_.peer_name);
  }
  out.push_back(')');
  return verdict;
}

}  // namespace relais::smtp
