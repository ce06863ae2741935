// protocols/smtp/client_session.h — one outbound SMTP (RFC 5321) or LMTP (RFC 2033)
// conversation as a sans-I/O state machine.
//
// The owner connects, feeds the server's bytes in with Feed() and sends what
// PendingOutput()/ConsumeOutput() hold. Once ready(), Begin() starts a transaction for one
// message and several recipients; when transaction_done(), TakeResults() gives one result per
// recipient: delivered, deferred (4xx, or the connection failed before the server took
// responsibility) or failed (5xx). The session is then ready() again, so the owner can reuse
// the connection for the next message; a reused connection starts with RSET, which also shows
// a stale connection before a message is sent on it (transaction_untouched()).
//
// Extensions: PIPELINING (RFC 2920: the envelope, and with CHUNKING the whole message, in one
// write), SIZE (RFC 1870: checked before sending, on what is sent), 8BITMIME (RFC 6152: for a
// server without it, 8-bit content is converted to 7 bits by protocols/mime, or failed with
// 5.6.3 when that cannot be done faithfully), SMTPUTF8 (RFC 6531 3.4: left off for a server
// without it when the envelope and header are ASCII, else failed with 553 5.6.7 for a
// non-ASCII address or 550 5.6.9 for a UTF-8 header; never sent mangled), CHUNKING (RFC 3030:
// BDAT ... LAST), DSN (RFC 3461: parameters passed on when offered), ENHANCEDSTATUSCODES
// (RFC 2034). EHLO falls back to HELO on a 5xx (SMTP only).
//
// STARTTLS (RFC 3207), as ClientOptions::starttls asks: after EHLO the session sends
// STARTTLS when the server offers it; on 220, TakeStartTls() returns true once and the
// session sends nothing (and drops anything more the server sent in the clear) until the owner
// has switched the connection to TLS and calls TlsStarted(); then it sends EHLO again. With
// kRequired, a server that does not offer STARTTLS or refuses it fails the session with
// 451 4.7.10 (everything deferred, nothing sent in the clear); with kIfOffered a refusal
// leaves the session in plaintext.
// AUTH (RFC 4954), when ClientOptions carry a user: only once TLS is active, never in the
// clear; PLAIN (initial response) when offered, else LOGIN. 235 makes the session ready; any
// other reply, TLS not active, or AUTH not offered fails the session before any transaction
// (the owner defers its mail: a credentials problem never bounces mail), with the server's
// codes or a synthesized 4.7.x, typed in error_code()/error_enhanced(). The password is never
// part of an error text.
//
// A reply is 3 digits, then '-' (more lines follow) or ' ' or the line end; lines end in CRLF
// (a bare LF is tolerated, as most clients do). Anything else, a reply line over 4 KiB or a
// reply over 64 lines, is a protocol error: the session fails and what is pending is deferred.
//
// Owned by one shard; not thread-safe; never does I/O and reads no clock (TimeoutMs() tells the
// owner how long the current wait may last, per RFC 5321 4.5.3.2).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "core/mail/envelope.h"
#include "protocols/mime/seven_bit.h"

namespace relais::smtp {

// Whether to use STARTTLS (route tls = "none" / "may" / "encrypt" or "verify").
enum class StartTls : uint8_t {
  kNo,         // Never, even when offered.
  kIfOffered,  // When offered; a refusal leaves the session in plaintext.
  kRequired,   // Not offered or refused: the session fails (4.7.10), nothing sent in clear.
};

struct ClientOptions {
  std::string helo_name = "localhost";  // Our host name, for EHLO/LHLO/HELO.
  std::string peer_name;                // "127.0.0.1:25", named in result texts.
  bool lmtp = false;                    // LHLO and one reply per recipient after the data.
  bool use_pipelining = true;           // When offered.
  bool use_chunking = true;             // BDAT when offered.
  // RSET before each message on a reused connection, which shows a stale cached connection
  // before a message is risked on it. A load generator, which wants the bare transaction,
  // turns it off (a failed transaction is still followed by RSET).
  bool reset_before_reuse = true;
  // RFC 5321 4.5.3.2 minimums: greeting, EHLO, MAIL, RCPT, RSET (5 min); DATA initiation
  // (2 min); DATA termination (10 min). Sending a block of data is the owner's (3 min).
  uint32_t reply_timeout_ms = 300'000;
  uint32_t data_init_timeout_ms = 120'000;
  uint32_t data_end_timeout_ms = 600'000;
  // 8-bit messages for a server without 8BITMIME are converted to 7 bits (protocols/mime).
  mime::SevenBitOptions seven_bit;
  StartTls starttls = StartTls::kNo;
  // The owner runs TLS from the first byte (implicit TLS, RFC 8314, port 465): the session is
  // encrypted from the greeting on (tls_active(), AUTH may be sent) and never says STARTTLS
  // (starttls must be kNo).
  bool implicit_tls = false;
  // Outbound AUTH (route auth_user / auth_password_file): empty user: no AUTH. Sent only
  // over TLS.
  std::string auth_user;
  std::string auth_password;
};

// What the server offered in its EHLO/LHLO reply.
struct ServerExtensions {
  bool esmtp = false;  // EHLO/LHLO succeeded (not HELO).
  bool pipelining = false;
  bool size = false;
  uint64_t size_max = 0;  // 0: no limit stated.
  bool eightbitmime = false;
  bool smtputf8 = false;
  bool chunking = false;
  bool binarymime = false;
  bool dsn = false;
  bool enhanced_status_codes = false;
  bool starttls = false;
  bool auth_plain = false;  // "AUTH ... PLAIN ..." (RFC 4954).
  bool auth_login = false;
};

struct OutgoingRecipient {
  std::string_view address;  // Without angle brackets.
  std::string_view notify;   // RFC 3461 NOTIFY value ("SUCCESS,DELAY"); empty: none given.
  std::string_view orcpt;    // RFC 3461 ORCPT value, already xtext ("rfc822;a@b"); may be empty.
};

// One message to send. Every view must stay valid until the transaction is done.
struct OutgoingMessage {
  std::string_view sender;  // Empty: the null reverse-path <>.
  std::vector<OutgoingRecipient> recipients;
  std::string_view content;  // The message, CRLF lines, ending in CRLF, not dot-stuffed.
  mail::BodyType body_type = mail::BodyType::k7Bit;
  bool smtputf8 = false;
  std::string_view envid;  // RFC 3461 ENVID, xtext; empty: none.
  std::string_view ret;    // RFC 3461 RET: "FULL", "HDRS" or empty.
};

enum class RecipientStatus : uint8_t { kPending, kDelivered, kDeferred, kFailed };

struct RecipientReply {
  RecipientStatus status = RecipientStatus::kPending;
  // "250 2.0.0 text (in reply to end of data, at host:port)"; always starts with the code and
  // an enhanced status code (synthesized as X.0.0 when the server gave none).
  std::string reply;
  // The same two codes, typed, for the delivery side's status (it never parses `reply`): set
  // from the reply as parsed off the wire, or from the session's own verdict, never read back
  // from the text.
  uint16_t code = 0;
  std::string enhanced;
  // Delivered to a server that offered DSN: it took over the RFC 3461 duties (NOTIFY was
  // passed on), so a success report, if asked for, is its to send.
  bool dsn_passed_on = false;
};

class ClientSession {
 public:
  explicit ClientSession(ClientOptions options);
  ~ClientSession();
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  // Bytes from the server.
  void Feed(std::string_view bytes);
  // Bytes for the server, in order. A view stays valid until ConsumeOutput covers it.
  [[nodiscard]] std::string_view PendingOutput() const;
  void ConsumeOutput(size_t bytes);
  [[nodiscard]] bool HasOutput() const { return !pieces_.empty(); }

  // True when the greeting and EHLO are done and no transaction is open: Begin may be called.
  [[nodiscard]] bool ready() const { return phase_ == Phase::kReady; }
  // True when the connection is of no further use (failure, 421, or after QUIT). error() says
  // why, e.g. "421 4.3.2 shutting down (in reply to RCPT TO, at host:port)".
  [[nodiscard]] bool closed() const { return phase_ == Phase::kClosed; }
  [[nodiscard]] const std::string& error() const { return error_; }
  // The codes of error(), typed: the server's reply that failed the session, or the session's
  // own verdict (4xx for everything it decides itself). 0 / empty while not failed.
  [[nodiscard]] uint16_t error_code() const { return error_code_; }
  [[nodiscard]] const std::string& error_enhanced() const { return error_enhanced_; }

  // True once after the server answered STARTTLS with 220: the owner switches the transport
  // to TLS (nothing more is sent in the clear) and calls TlsStarted() when the handshake is
  // done; the session then sends EHLO again.
  [[nodiscard]] bool TakeStartTls();
  void TlsStarted();
  // From the 220 to STARTTLS until TlsStarted (or the session's end).
  [[nodiscard]] bool awaiting_tls() const { return phase_ == Phase::kTlsHandshake; }
  [[nodiscard]] bool tls_active() const { return tls_active_; }
  // True once AUTH succeeded on this connection.
  [[nodiscard]] bool authenticated() const { return authenticated_; }
  [[nodiscard]] const ServerExtensions& extensions() const { return extensions_; }
  // Messages started on this connection.
  [[nodiscard]] uint32_t transactions() const { return transactions_; }

  // Starts sending `message`. Requires ready().
  void Begin(const OutgoingMessage& message);
  [[nodiscard]] bool transaction_done() const { return done_; }
  // The transaction in hand (or just done) sends the message converted to 7 bits, or without
  // the SMTPUTF8 its client asked for (its envelope and header are ASCII): for counters.
  [[nodiscard]] bool converted_7bit() const { return converted_7bit_; }
  [[nodiscard]] bool smtputf8_dropped() const { return message_.smtputf8 && !send_smtputf8_; }
  // The transaction was failed before sending: its 8-bit content is not convertible.
  [[nodiscard]] bool not_convertible() const { return not_convertible_; }
  // True once the end of the message (".", or BDAT ... LAST with its data) is in the output
  // and its reply is awaited: from the moment that output is sent, the wait is the server's
  // end-of-data latency.
  [[nodiscard]] bool data_end_queued() const { return data_end_queued_ && !done_; }
  // True when the transaction on a reused connection failed before the server answered
  // anything but RSET: the message may be sent again on a fresh connection at no risk (the
  // cached one had gone stale).
  [[nodiscard]] bool transaction_untouched() const { return done_ && untouched_; }
  // One result per recipient of the message, in order. Clears transaction_done().
  [[nodiscard]] std::vector<RecipientReply> TakeResults();

  // Says goodbye; the owner may close once the output is sent.
  void Quit();
  // The connection failed (peer closed, reset, timeout; `why` says which). What was not final
  // is deferred and the session is closed.
  void OnConnectionLost(std::string_view why);
  // How long the current wait for a reply may last; 0 when nothing is awaited.
  [[nodiscard]] uint32_t TimeoutMs() const;

 private:
  enum class Phase : uint8_t {
    kGreeting,
    kHello,  // EHLO, STARTTLS, AUTH.
    kTlsHandshake,
    kReady,
    kTransaction,
    kQuitting,
    kClosed
  };
  enum class Step : uint8_t {
    kGreeting,
    kEhlo,
    kHelo,
    kStartTls,
    kAuth,
    kRset,
    kMail,
    kRcpt,
    kData,
    kEndOfData,
    kBdat,
    kQuit
  };
  struct Expect {
    Step step;
    uint32_t index;  // Recipient index for kRcpt.
  };
  struct Piece {
    bool is_borrowed = false;
    std::string owned;
    std::string_view borrowed;  // The caller's bytes (large message content), not copied.
    [[nodiscard]] std::string_view view() const { return is_borrowed ? borrowed : owned; }
  };

  void Append(std::string_view text);
  void AppendBorrowed(std::string_view text);
  void Send(std::string_view command_line, Step step, uint32_t index = 0);
  void OnReply(uint16_t code, std::string_view text);
  void OnEhloReply(uint16_t code);
  // After EHLO/HELO: STARTTLS, AUTH, or ready.
  void AfterHello();
  void OnStartTlsReply(uint16_t code, std::string_view text);
  void OnAuthReply(uint16_t code, std::string_view text);
  // The server's text with any trace of our credentials replaced (a server may echo them).
  [[nodiscard]] std::string Redacted(std::string_view text) const;
  void OnTransactionReply(Step step, uint32_t index, uint16_t code, std::string_view text);
  void SendNext();
  void SendBody();
  void FinishIfIdle();
  // A verdict as the session reports it: the reply code and enhanced code (parsed off the wire,
  // or the session's own) and the text made from them, "451 4.4.2 detail ...". The codes travel
  // as fields; the text is never read back for them.
  struct Verdict {
    uint16_t code = 0;
    std::string enhanced;
    std::string text;
  };
  // One of the session's own verdicts: "<code> <enhanced> <detail>".
  [[nodiscard]] static Verdict Own(uint16_t code, std::string_view enhanced,
                                   std::string_view detail);
  [[nodiscard]] static RecipientReply Settle(RecipientStatus status, const Verdict& verdict);

  void Fail(Verdict reason);
  void FailTransaction(const Verdict& reason);
  void SettleAccepted(const Verdict& verdict);
  // A server's reply (code off the wire, text after it) as a verdict that names the step.
  [[nodiscard]] Verdict Describe(uint16_t code, std::string_view text, Step step) const;
  [[nodiscard]] std::string_view StepName(Step step) const;
  [[nodiscard]] bool Precheck(size_t first_eight_bit);

  ClientOptions options_;  // Not const: the password is wiped once used.
  Phase phase_ = Phase::kGreeting;
  ServerExtensions extensions_;
  std::string error_;
  uint16_t error_code_ = 0;
  std::string error_enhanced_;

  // STARTTLS and AUTH.
  bool tls_active_ = false;
  bool starttls_tried_ = false;  // Sent once per connection (refused with kIfOffered: plain).
  bool starttls_taken_ = true;   // TakeStartTls() has reported the 220.
  bool authenticated_ = false;
  enum class AuthStage : uint8_t { kNone, kPlain, kLoginUser, kLoginPassword };
  AuthStage auth_stage_ = AuthStage::kNone;
  bool wipe_output_ = false;  // Output holds credentials: wipe it as it is consumed.
  std::deque<Piece> pieces_;
  size_t piece_offset_ = 0;
  // Set once PendingOutput has shown the front piece: it is not appended to any more, so the
  // owner's view of it stays valid while the send is in flight.
  mutable bool front_shown_ = false;

  // Reply assembly.
  std::string line_;
  std::string reply_text_;  // Text of all lines so far, joined by ' '.
  std::vector<std::string> ehlo_lines_;
  uint32_t reply_lines_ = 0;
  std::deque<Expect> expected_;

  // The transaction in hand.
  OutgoingMessage message_;
  std::vector<RecipientReply> results_;
  std::vector<uint32_t> accepted_;   // Recipients whose RCPT got 2xx, in order.
  uint32_t settled_after_data_ = 0;  // LMTP: replies seen after the data.
  std::deque<Expect> planned_;       // Commands not yet sent (without PIPELINING).
  bool eight_bit_ = false;           // The message declares or contains 8-bit bytes.
  bool send_smtputf8_ = false;       // MAIL carries SMTPUTF8.
  bool converted_7bit_ = false;
  bool not_convertible_ = false;
  // The message converted to 7 bits for a server without 8BITMIME; message_.content views it.
  // Freed by TakeResults once no output points into it, else by the next Begin.
  std::string converted_;
  bool mail_ok_ = false;
  bool mail_answered_ = false;
  bool need_rset_ = false;
  bool done_ = false;
  bool data_end_queued_ = false;
  bool untouched_ = false;
  uint32_t transactions_ = 0;
};

}  // namespace relais::smtp
