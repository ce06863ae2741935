// tools/relais-bench/sink_session.h — the SMTP/LMTP server side of `relais-bench sink`, as a
// sans-I/O state machine.
//
// A sink takes mail as fast as it can and throws it away, but counts it: every message that
// relais-bench sends carries a tracking header ("X-Relais-Bench: RUN SEQ RCPTS"), and the sink
// reports each one it took (and each it dropped on purpose) to its SinkHandler, so a run can
// tell lost and duplicated messages apart end to end. The handler also decides every reply
// (SinkAction): the default code, another code (--reply RCPT:451:0.05), a delay before it, or
// dropping the connection (at DATA-body time: "mid-DATA", once the tracking header is in).
//
// Speaks EHLO/HELO (or LHLO for LMTP: one reply per accepted recipient after the data),
// PIPELINING (replies to a batch leave together), CHUNKING (BDAT), SIZE, 8BITMIME, SMTPUTF8,
// ENHANCEDSTATUSCODES; RSET, NOOP, QUIT; and XSTAT RUN, whose reply is the handler's account of
// that run. Only CRLF.CRLF ends DATA. Owned by one thread; does no I/O and reads no clock.
//
// With SinkOptions::starttls, EHLO offers STARTTLS (RFC 3207) until TLS is on: the 220 is
// queued, everything the client pipelined after the command is discarded (never executed),
// the session reads nothing more and TakeStartTls() says so once; the owner switches the
// connection to TLS once the 220 is out and calls TlsStarted(), which forgets the EHLO (the
// client must say it again). Once TLS is on (TlsStarted, or implicit TLS), EHLO offers
// AUTH PLAIN LOGIN (RFC 4954) and any credentials are taken: a sink measures, it does not
// guard.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace relais::bench {

// The points where a sink decides what to answer.
enum class SinkStep : uint8_t { kConnect, kHelo, kMail, kRcpt, kData, kBody, kDataEnd, kCount };

struct SinkAction {
  uint16_t code = 0;  // 0: the normal reply for the step.
  bool drop = false;  // Close the connection instead of replying.
  uint32_t delay_ms = 0;
};

// The message's tracking header, when it had one.
struct TrackingId {
  std::string_view run;  // Empty: the message carried no (valid) tracking header.
  uint64_t seq = 0;
  uint32_t recipients = 0;
};

// Parses the value of an X-Relais-Bench header ("RUN SEQ RCPTS").
[[nodiscard]] bool ParseTrackingValue(std::string_view value, std::string& run, uint64_t& seq,
                                      uint32_t& recipients);

class SinkHandler {
 public:
  [[nodiscard]] virtual SinkAction Decide(SinkStep step) = 0;
  // A message was taken for `recipients` recipients (a 2xx after its data).
  virtual void OnMessage(const TrackingId& id, uint32_t recipients, uint64_t bytes) = 0;
  // A message was dropped mid-DATA by a `drop` decision for kBody.
  virtual void OnDropped(const TrackingId& id) = 0;
  // A failure reply was given after the data (the message was refused on purpose).
  virtual void OnRefused(const TrackingId& id) = 0;
  // The reply to XSTAT RUN: complete reply lines, CRLF-terminated.
  [[nodiscard]] virtual std::string StatReply(std::string_view run) = 0;

 protected:
  ~SinkHandler() = default;
};

struct SinkOptions {
  std::string hostname = "relais-bench-sink";
  bool lmtp = false;
  uint64_t message_bytes_max = 104'857'600;  // Advertised with SIZE; larger is refused (552).
  bool starttls = false;                     // Offer STARTTLS (the owner has a TLS context).
};

class SinkSession {
 public:
  SinkSession(const SinkOptions& options, SinkHandler& handler);

  // Queues the greeting (or drops, or delays it).
  void Start();
  void Feed(std::string_view bytes);
  [[nodiscard]] std::string_view PendingOutput() const {
    return std::string_view(output_).substr(output_offset_);
  }
  void ConsumeOutput(size_t bytes);
  // Milliseconds the session wants to wait before its next reply; 0 when none is held. The
  // owner calls ReleaseDelayed() once they have passed.
  [[nodiscard]] uint32_t delay_ms() const { return held_ ? held_delay_ms_ : 0; }
  void ReleaseDelayed();
  // Close once PendingOutput() is sent (QUIT, a drop, or a protocol error).
  [[nodiscard]] bool WantsClose() const { return closing_; }
  // Drop: close now without sending anything more.
  [[nodiscard]] bool WantsAbort() const { return aborting_; }
  [[nodiscard]] uint64_t messages() const { return messages_; }

  // False once STARTTLS was accepted, until TlsStarted(): nothing more is read in the clear.
  [[nodiscard]] bool WantsInput() const { return !starttls_accepted_; }
  // True once, when the 220 to STARTTLS is queued: switch to TLS after it is sent.
  [[nodiscard]] bool TakeStartTls() { return std::exchange(starttls_taken_, false); }
  // The connection is encrypted now (after STARTTLS, or from the start for implicit TLS).
  void TlsStarted();
  [[nodiscard]] bool tls() const { return tls_; }
  [[nodiscard]] bool authenticated() const { return authenticated_; }

 private:
  enum class Phase : uint8_t { kCommand, kData, kBdat, kClosed, kAuthLogin, kAuthPlain };

  void Process();
  bool HandleLine(std::string_view line);
  void FinishMessage();
  // Queues `text` (full reply lines) after `action`'s delay; false if the action was a drop.
  bool Reply(const SinkAction& action, std::string_view text);
  void ReplyNow(std::string_view text);
  void Abort();
  void ResetTransaction();
  // Feeds message bytes to the tracking-header reader.
  void ReadHeader(std::string_view bytes);
  [[nodiscard]] TrackingId Id() const { return {run_, seq_, id_recipients_}; }
  // Drops mid-DATA if so decided and the header is in (or the data ended). True if dropped.
  bool MaybeDropInBody(bool data_ended);

  const SinkOptions& options_;
  SinkHandler& handler_;
  Phase phase_ = Phase::kCommand;
  std::string input_;
  size_t input_offset_ = 0;
  std::string output_;
  size_t output_offset_ = 0;
  std::string held_text_;  // A delayed reply.
  uint32_t held_delay_ms_ = 0;
  bool held_ = false;
  bool held_closes_ = false;
  bool closing_ = false;
  bool aborting_ = false;
  bool greeted_ = false;
  bool tls_ = false;
  bool starttls_accepted_ = false;
  bool starttls_taken_ = false;
  bool authenticated_ = false;
  uint8_t auth_lines_ = 0;  // AUTH LOGIN: the lines still to come.

  // Transaction.
  bool mail_ok_ = false;
  uint32_t recipients_ok_ = 0;
  uint64_t message_bytes_ = 0;
  bool drop_in_body_ = false;
  uint8_t data_state_ = 0;  // Position in CRLF.CRLF, see Process.
  uint64_t bdat_remaining_ = 0;
  bool bdat_last_ = false;
  bool bdat_refused_ = false;
  // Tracking header.
  std::string header_;
  bool header_done_ = false;
  std::string run_;
  uint64_t seq_ = 0;
  uint32_t id_recipients_ = 0;
  uint64_t messages_ = 0;
};

}  // namespace relais::bench
