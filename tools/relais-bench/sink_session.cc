// tools/relais-bench/sink_session.cc — see sink_session.h.
#include "tools/relais-bench/sink_session.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/base/strings.h"

namespace relais::bench {

using base::EqualsIgnoreCase;
using base::StartsWithIgnoreCase;
using base::StrCat;

namespace {

constexpr size_t kCommandLineBytesMax = 4096;
constexpr size_t kHeaderBytesMax = 16384;  // The tracking header is looked for in this much.
constexpr size_t kBufferedInputMax = 8u << 20;
constexpr std::string_view kTrackingName = "X-Relais-Bench:";

// "451 4.0.0 ..." for a code the operator asked for.
std::string CustomReply(uint16_t code, std::string_view step) {
  const uint16_t cls = code / 100;
  if (cls == 2 || cls == 4 || cls == 5) {
    return StrCat(code, ' ', cls, ".0.0 relais-bench sink: reply chosen for ", step, "\r\n");
  }
  return StrCat(code, " relais-bench sink: reply chosen for ", step, "\r\n");
}

bool ParseNumber(std::string_view text, uint64_t& out) {
  if (text.empty() || text.size() > 20) {
    return false;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

bool ParseTrackingValue(std::string_view value, std::string& run, uint64_t& seq,
                        uint32_t& recipients) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  const size_t a = value.find(' ');
  const size_t b = a == std::string_view::npos ? a : value.find(' ', a + 1);
  if (a == 0 || a > 64 || b == std::string_view::npos) {
    return false;
  }
  uint64_t n = 0;
  if (!ParseNumber(value.substr(a + 1, b - a - 1), seq) || !ParseNumber(value.substr(b + 1), n) ||
      n == 0 || n > 65'535) {
    return false;
  }
  run.assign(value.substr(0, a));
  recipients = static_cast<uint32_t>(n);
  return true;
}

SinkSession::SinkSession(const SinkOptions& options, SinkHandler& handler)
    : options_(options), handler_(handler) {}

void SinkSession::Start() {
  const SinkAction action = handler_.Decide(SinkStep::kConnect);
  if (action.code == 0 || action.code == 220) {
    Reply(action, StrCat("220 ", options_.hostname, " ESMTP relais-bench sink\r\n"));
  } else if (Reply(action, CustomReply(action.code, "the greeting"))) {
    // A refused greeting ends the session once it is sent.
    if (held_) {
      held_closes_ = true;
    } else {
      closing_ = true;
    }
  }
}

void SinkSession::ConsumeOutput(size_t bytes) {
  output_offset_ += bytes;
  if (output_offset_ == output_.size()) {
    output_.clear();
    output_offset_ = 0;
  }
}

void SinkSession::Feed(std::string_view bytes) {
  if (aborting_ || closing_ || phase_ == Phase::kClosed || starttls_accepted_) {
    return;  // After STARTTLS's 220 nothing in the clear is read (RFC 3207 5, CVE-2011-0411).
  }
  if (input_offset_ < input_.size() || held_) {
    if (input_.size() - input_offset_ + bytes.size() > kBufferedInputMax) {
      ReplyNow("421 4.7.0 too much input while a reply was held\r\n");
      closing_ = true;
      return;
    }
    input_.append(bytes);
  } else {
    input_.assign(bytes);
    input_offset_ = 0;
  }
  Process();
}

void SinkSession::TlsStarted() {
  tls_ = true;
  starttls_accepted_ = false;
  starttls_taken_ = false;
  greeted_ = false;  // RFC 3207 4.2: the client starts over with EHLO.
  authenticated_ = false;
  ResetTransaction();
}

void SinkSession::ReleaseDelayed() {
  if (!held_) {
    return;
  }
  held_ = false;
  output_.append(held_text_);
  held_text_.clear();
  if (held_closes_) {
    closing_ = true;
    return;
  }
  Process();
}

bool SinkSession::Reply(const SinkAction& action, std::string_view text) {
  if (action.drop) {
    Abort();
    return false;
  }
  if (action.delay_ms != 0) {
    held_ = true;
    held_delay_ms_ = action.delay_ms;
    held_text_.assign(text);
    return true;
  }
  output_.append(text);
  return true;
}

void SinkSession::ReplyNow(std::string_view text) { output_.append(text); }

void SinkSession::Abort() {
  aborting_ = true;
  phase_ = Phase::kClosed;
  input_.clear();
  input_offset_ = 0;
}

void SinkSession::ResetTransaction() {
  mail_ok_ = false;
  recipients_ok_ = 0;
  message_bytes_ = 0;
  drop_in_body_ = false;
  bdat_remaining_ = 0;
  bdat_last_ = false;
  bdat_refused_ = false;
  header_.clear();
  header_done_ = false;
  run_.clear();
  seq_ = 0;
  id_recipients_ = 0;
}

void SinkSession::Process() {
  while (input_offset_ < input_.size() && !held_ && !closing_ && !aborting_) {
    const std::string_view in = std::string_view(input_).substr(input_offset_);
    if (phase_ == Phase::kCommand) {
      const size_t newline = in.find('\n');
      if (newline == std::string_view::npos) {
        if (in.size() > kCommandLineBytesMax) {
          ReplyNow("500 5.5.2 command line too long\r\n");
          closing_ = true;
        }
        break;
      }
      std::string_view line = in.substr(0, newline);
      if (line.ends_with('\r')) {
        line.remove_suffix(1);
      }
      input_offset_ += newline + 1;
      HandleLine(line);
    } else if (phase_ == Phase::kAuthLogin || phase_ == Phase::kAuthPlain) {
      const size_t newline = in.find('\n');
      if (newline == std::string_view::npos) {
        if (in.size() > kCommandLineBytesMax) {
          ReplyNow("500 5.5.6 authentication line too long\r\n");
          closing_ = true;
        }
        break;
      }
      const std::string_view line = in.substr(0, newline);
      input_offset_ += newline + 1;
      if (line == "*" || line == "*\r") {
        phase_ = Phase::kCommand;
        ReplyNow("501 5.7.0 authentication cancelled\r\n");
      } else if (phase_ == Phase::kAuthLogin && --auth_lines_ > 0) {
        ReplyNow("334 UGFzc3dvcmQ6\r\n");  // "Password:"
      } else {
        phase_ = Phase::kCommand;
        authenticated_ = true;
        ReplyNow("235 2.7.0 authenticated\r\n");
      }
    } else if (phase_ == Phase::kData) {
      // Find CRLF.CRLF. data_state_: 0 in a line, 1 after CR, 2 at a line start, 3 after a
      // '.' at a line start, 4 after ".\r" at a line start.
      size_t i = 0;
      bool ended = false;
      while (i < in.size() && !ended) {
        if (data_state_ == 0) {
          const void* cr = std::memchr(in.data() + i, '\r', in.size() - i);
          if (cr == nullptr) {
            i = in.size();
            break;
          }
          i = static_cast<size_t>(static_cast<const char*>(cr) - in.data()) + 1;
          data_state_ = 1;
          continue;
        }
        const char c = in[i++];
        switch (data_state_) {
          case 1:
            data_state_ = c == '\n' ? 2 : (c == '\r' ? 1 : 0);
            break;
          case 2:
            data_state_ = c == '.' ? 3 : (c == '\r' ? 1 : 0);
            break;
          case 3:
            data_state_ = c == '\r' ? 4 : 0;
            break;
          default:  // 4
            if (c == '\n') {
              ended = true;
            } else {
              data_state_ = c == '\r' ? 1 : 0;
            }
            break;
        }
      }
      ReadHeader(in.substr(0, i));
      message_bytes_ += i;
      input_offset_ += i;
      if (ended) {
        phase_ = Phase::kCommand;
        FinishMessage();
      } else if (MaybeDropInBody(false)) {
        break;
      }
    } else if (phase_ == Phase::kBdat) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(bdat_remaining_, in.size()));
      if (!bdat_refused_) {
        ReadHeader(in.substr(0, take));
        message_bytes_ += take;
      }
      bdat_remaining_ -= take;
      input_offset_ += take;
      if (bdat_remaining_ != 0) {
        if (!bdat_refused_ && MaybeDropInBody(false)) {
          break;
        }
        continue;
      }
      phase_ = Phase::kCommand;
      if (bdat_refused_) {
        ReplyNow(mail_ok_ ? "554 5.5.1 no valid recipients\r\n" : "503 5.5.1 need MAIL first\r\n");
        ResetTransaction();
      } else if (bdat_last_) {
        FinishMessage();
      } else {
        ReplyNow("250 2.0.0 chunk received\r\n");
      }
    } else {
      break;
    }
  }
  if (input_offset_ == input_.size()) {
    input_.clear();
    input_offset_ = 0;
  }
}

bool SinkSession::HandleLine(std::string_view line) {
  const size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view argument = space == std::string_view::npos ? "" : line.substr(space + 1);
  auto is = [&](std::string_view name) { return EqualsIgnoreCase(verb, name); };
  if (is("EHLO") || is("HELO") || is("LHLO")) {
    if (options_.lmtp != is("LHLO")) {
      ReplyNow(options_.lmtp ? "500 5.5.1 this is LMTP: say LHLO\r\n"
                             : "500 5.5.1 LHLO is for LMTP\r\n");
      return true;
    }
    ResetTransaction();
    const SinkAction action = handler_.Decide(SinkStep::kHelo);
    if (action.code != 0 && action.code / 100 != 2) {
      return Reply(action, CustomReply(action.code, verb));
    }
    greeted_ = true;
    if (is("HELO")) {
      return Reply(action, StrCat("250 ", options_.hostname, "\r\n"));
    }
    return Reply(action, StrCat("250-", options_.hostname, "\r\n250-PIPELINING\r\n250-SIZE ",
                                options_.message_bytes_max,
                                "\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n",
                                options_.starttls && !tls_ ? "250-STARTTLS\r\n" : "",
                                tls_ ? "250-AUTH PLAIN LOGIN\r\n" : "", "250 CHUNKING\r\n"));
  }
  if (is("STARTTLS")) {
    if (!options_.starttls || tls_) {
      ReplyNow(tls_ ? "503 5.5.1 TLS already active\r\n" : "502 5.5.1 STARTTLS not offered\r\n");
    } else if (!argument.empty()) {
      ReplyNow("501 5.5.4 STARTTLS takes no argument\r\n");
    } else if (!greeted_) {
      ReplyNow("503 5.5.1 say EHLO first\r\n");
    } else {
      ReplyNow("220 2.0.0 ready to start TLS\r\n");
      starttls_accepted_ = true;
      starttls_taken_ = true;
      input_.clear();  // Whatever was pipelined behind STARTTLS is dropped.
      input_offset_ = 0;
    }
    return true;
  }
  if (is("AUTH")) {
    const size_t end = argument.find(' ');
    const std::string_view mechanism = argument.substr(0, end);
    const std::string_view initial = end == std::string_view::npos ? "" : argument.substr(end + 1);
    if (!tls_) {
      ReplyNow("538 5.7.11 encryption required for AUTH\r\n");
    } else if (authenticated_ || mail_ok_ || !greeted_) {
      ReplyNow("503 5.5.1 AUTH not allowed now\r\n");
    } else if (EqualsIgnoreCase(mechanism, "PLAIN")) {
      if (initial.empty()) {
        phase_ = Phase::kAuthPlain;
        ReplyNow("334 \r\n");
      } else {
        authenticated_ = true;
        ReplyNow("235 2.7.0 authenticated\r\n");
      }
    } else if (EqualsIgnoreCase(mechanism, "LOGIN")) {
      phase_ = Phase::kAuthLogin;
      auth_lines_ = initial.empty() ? 2 : 1;
      ReplyNow(initial.empty() ? "334 VXNlcm5hbWU6\r\n" : "334 UGFzc3dvcmQ6\r\n");
    } else {
      ReplyNow("504 5.5.4 unknown mechanism\r\n");
    }
    return true;
  }
  if (is("MAIL")) {
    if (!greeted_ || mail_ok_) {
      ReplyNow(greeted_ ? "503 5.5.1 nested MAIL\r\n" : "503 5.5.1 say hello first\r\n");
      return true;
    }
    const SinkAction action = handler_.Decide(SinkStep::kMail);
    mail_ok_ = action.code == 0 || action.code / 100 == 2;
    return Reply(action,
                 action.code == 0 ? "250 2.1.0 sender ok\r\n" : CustomReply(action.code, "MAIL"));
  }
  if (is("RCPT")) {
    if (!mail_ok_) {
      ReplyNow("503 5.5.1 need MAIL first\r\n");
      return true;
    }
    const SinkAction action = handler_.Decide(SinkStep::kRcpt);
    if (action.code == 0 || action.code / 100 == 2) {
      ++recipients_ok_;
    }
    return Reply(
        action, action.code == 0 ? "250 2.1.5 recipient ok\r\n" : CustomReply(action.code, "RCPT"));
  }
  if (is("DATA")) {
    if (!mail_ok_ || recipients_ok_ == 0) {
      ReplyNow(mail_ok_ ? "554 5.5.1 no valid recipients\r\n" : "503 5.5.1 need MAIL first\r\n");
      return true;
    }
    const SinkAction action = handler_.Decide(SinkStep::kData);
    if (action.code != 0 && action.code != 354) {
      return Reply(action, CustomReply(action.code, "DATA"));
    }
    if (!Reply(action, "354 end data with <CR><LF>.<CR><LF>\r\n")) {
      return false;
    }
    phase_ = Phase::kData;
    data_state_ = 2;
    drop_in_body_ = handler_.Decide(SinkStep::kBody).drop;
    return true;
  }
  if (is("BDAT")) {
    const size_t end = argument.find(' ');
    const std::string_view last = end == std::string_view::npos ? "" : argument.substr(end + 1);
    uint64_t size = 0;
    if (!ParseNumber(argument.substr(0, end), size) ||
        !(last.empty() || EqualsIgnoreCase(last, "LAST"))) {
      // The chunk's length is unknown, so the rest of the stream cannot be read.
      ReplyNow("501 5.5.4 BDAT needs a size and at most LAST; closing\r\n");
      closing_ = true;
      return true;
    }
    const bool first_chunk = message_bytes_ == 0 && !header_done_ && header_.empty();
    phase_ = Phase::kBdat;
    bdat_remaining_ = size;
    bdat_last_ = !last.empty();
    bdat_refused_ = !mail_ok_ || recipients_ok_ == 0;
    if (!bdat_refused_ && first_chunk) {
      drop_in_body_ = handler_.Decide(SinkStep::kBody).drop;
    }
    return true;
  }
  if (is("RSET")) {
    ResetTransaction();
    ReplyNow("250 2.0.0 ok\r\n");
  } else if (is("NOOP")) {
    ReplyNow("250 2.0.0 ok\r\n");
  } else if (is("QUIT")) {
    ReplyNow("221 2.0.0 bye\r\n");
    closing_ = true;
  } else if (is("XSTAT")) {
    ReplyNow(handler_.StatReply(argument));
  } else {
    ReplyNow("500 5.5.2 command not recognized\r\n");
  }
  return true;
}

void SinkSession::ReadHeader(std::string_view bytes) {
  if (header_done_ || bytes.empty()) {
    return;
  }
  const size_t before = header_.size();
  header_.append(bytes.substr(0, kHeaderBytesMax - std::min(kHeaderBytesMax, before)));
  const size_t end = header_.find("\r\n\r\n", before < 3 ? 0 : before - 3);
  if (end == std::string::npos && header_.size() < kHeaderBytesMax) {
    return;
  }
  header_done_ = true;
  const std::string_view head =
      std::string_view(header_).substr(0, end == std::string::npos ? header_.size() : end + 2);
  size_t line = 0;
  while (line < head.size()) {
    size_t next = head.find("\r\n", line);
    if (next == std::string_view::npos) {
      next = head.size();
    }
    const std::string_view text = head.substr(line, next - line);
    if (StartsWithIgnoreCase(text, kTrackingName)) {
      if (!ParseTrackingValue(text.substr(kTrackingName.size()), run_, seq_, id_recipients_)) {
        run_.clear();
      }
      break;
    }
    line = next + 2;
  }
  header_.clear();
  header_.shrink_to_fit();
}

bool SinkSession::MaybeDropInBody(bool data_ended) {
  if (!drop_in_body_ || (!header_done_ && !data_ended)) {
    return false;
  }
  handler_.OnDropped(Id());
  Abort();
  return true;
}

void SinkSession::FinishMessage() {
  if (!header_done_) {
    header_.append("\r\n\r\n");  // Read what came, even without a blank line.
    const std::string rest = std::move(header_);
    header_.clear();
    ReadHeader(rest);
  }
  if (MaybeDropInBody(true)) {
    return;
  }
  const TrackingId id = Id();
  if (message_bytes_ > options_.message_bytes_max) {
    ReplyNow("552 5.3.4 message too big\r\n");
    handler_.OnRefused(id);
    ResetTransaction();
    return;
  }
  std::string replies;
  uint32_t taken = 0;
  uint32_t delay_ms = 0;
  const uint32_t replies_due = options_.lmtp ? recipients_ok_ : 1;
  for (uint32_t i = 0; i < replies_due; ++i) {
    const SinkAction action = handler_.Decide(SinkStep::kDataEnd);
    if (action.drop) {
      if (taken != 0) {
        handler_.OnMessage(id, taken, message_bytes_);
      }
      Abort();
      return;
    }
    delay_ms = std::max(delay_ms, action.delay_ms);
    if (action.code == 0 || action.code / 100 == 2) {
      taken += options_.lmtp ? 1 : recipients_ok_;
      replies.append(action.code == 0 ? "250 2.0.0 message taken\r\n"
                                      : CustomReply(action.code, "end of data"));
    } else {
      replies.append(CustomReply(action.code, "end of data"));
    }
  }
  if (taken != 0) {
    ++messages_;
    handler_.OnMessage(id, taken, message_bytes_);
  } else {
    handler_.OnRefused(id);
  }
  ResetTransaction();
  (void)Reply({0, false, delay_ms}, replies);
}

}  // namespace relais::bench
