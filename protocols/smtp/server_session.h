// protocols/smtp/server_session.h — one inbound SMTP conversation as a sans-I/O state machine.
//
// Bytes go in with Feed(); replies come out through PendingOutput()/ConsumeOutput(). When a
// message is complete the session pauses and TakeCommitRequest() returns true: the owner
// stores transaction() in the spool and answers with CompleteCommit(). The session replies
// 250 only for CommitOutcome::kDurable, so "250 OK" always means "on disk".
//
// Implements RFC 5321 with PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
// SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034/3463) and CHUNKING (RFC 3030).
// Smuggling-safe: only CRLF.CRLF ends DATA, and a bare CR or LF in a command or in message
// data is never taken as a line end; the command or message is refused with a 5xx.
//
// STARTTLS (RFC 3207), when SessionOptions offer it: the session answers 220 2.0.0, throws
// away every byte already received after the STARTTLS line (never executed: CVE-2011-0411;
// counted in discarded_after_starttls()) and wants no more input. TakeStartTls() returns true
// once; the owner switches the connection's transport to TLS once the 220 is sent, and calls
// TlsStarted(version, cipher): every piece of SMTP state is forgotten (greeting, transaction,
// HELO name, authentication) and the client must send EHLO again, which no longer offers
// STARTTLS. For implicit TLS (RFC 8314) the owner calls TlsStarted() before Start().
// STARTTLS is refused (503) before EHLO/HELO and inside a mail transaction (RFC 3207 4: it
// must end a pipelined group). A session closed while the handshake ran (timeout, shutdown)
// takes the TlsStarted() that follows as a no-op.
// With tls_required, every command but EHLO, HELO, STARTTLS, NOOP, RSET and QUIT is refused
// with 530 5.7.0 until TLS is active.
//
// AUTH (RFC 4954) with PLAIN (RFC 4616; initial response or 334 continuation) and LOGIN,
// offered in EHLO when auth_offered and TLS is active (or auth_in_clear: a trusted local
// listener). The session decodes the exchange and then pauses: TakeAuthRequest() returns true
// once, auth_request() holds {mechanism, user, password}, and the owner checks the
// credentials (never the session) and answers CompleteAuth(): 235 2.7.0, 535 5.7.8 or 454
// 4.7.0. The password is wiped once answered (auth_request() keeps the mechanism and user,
// for logs), and so are AUTH lines in the session's own input buffer; the owner's receive
// buffers are its own to clear. Input that arrives meanwhile waits, as during a sender check. An
// authenticated client may relay (like relay_networks); MAIL's AUTH= parameter (RFC 4954 5) is
// checked for xtext syntax and otherwise ignored.
//
// Owned by one shard; not thread-safe; never does I/O, reads no clock and allocates only per
// command line or per message (body growth), never per byte.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/mail/envelope.h"
#include "core/mail/ip_network.h"
#include "core/mail/message_id.h"
#include "core/metrics/metrics.h"
#include "protocols/smtp/reply_table.h"

namespace relais::smtp {

// Memory that the sessions of one shard hold for messages being received: the capacity of
// their buffers (not their length), charged before each allocation and released when the
// transaction ends; a message that would pass the limit is read to its end, dropped, and
// refused with 452 4.3.1. Owned by the shard, shared by its sessions (one thread).
struct ReceiveBudget {
  uint64_t bytes_max = UINT64_MAX;
  uint64_t bytes_used = 0;
  uint64_t refusals = 0;
};

// Decides at RCPT time whether a recipient can be taken at all (routing, mailbox names), so
// that nothing is accepted that could only be lost later. Returns Reply::kRecipientOk or the
// refusal to send. Implemented by the shard; must not block. Thread-compatible (const).
class RecipientPolicy {
 public:
  [[nodiscard]] virtual Reply Check(std::string_view local_part, std::string_view domain) const = 0;

 protected:
  ~RecipientPolicy() = default;
};

// Sees the message bytes of a transaction as they arrive (dot-unstuffed for DATA, as sent for
// BDAT): the owner hashes DKIM bodies on the stream this way. Set per session by the owner;
// must outlive the session.
class BodyObserver {
 public:
  // A transaction's message starts (DATA, or the first BDAT chunk).
  virtual void OnBodyStart() = 0;
  virtual void OnBodyBytes(std::string_view bytes) = 0;

 protected:
  ~BodyObserver() = default;
};

struct SessionOptions {
  std::string hostname = "localhost";
  uint32_t command_line_bytes_max = 512;  // Including CRLF.
  uint32_t text_line_bytes_max = 1000;    // Including CRLF.
  uint64_t message_bytes_max = 26'214'400;
  uint32_t recipients_max = 1000;
  uint32_t errors_max = 10;
  uint32_t pipeline_bytes_max = 262'144;
  uint32_t command_timeout_ms = 300'000;
  uint32_t data_timeout_ms = 180'000;
  std::vector<std::string> local_domains = {"*"};
  std::vector<std::string> relay_domains;
  std::vector<mail::IpNetwork> relay_networks;
  // relay.allow_untrusted_routing: false refuses local parts that route on (HasSenderRouting)
  // from clients outside relay_networks with 550 5.7.1.
  bool allow_untrusted_routing = false;
  // The shard's "spool cannot take more" flag, read at MAIL to refuse early with 452 4.3.1.
  // Null: never full. Must outlive the session.
  const bool* spool_full = nullptr;
  // The shard's receive budget; null: unbounded. Must outlive the session.
  ReceiveBudget* receive_budget = nullptr;
  // Null: every recipient that passes the relay rules is taken. Must outlive the session.
  const RecipientPolicy* recipient_policy = nullptr;
  // Replies sent, by class: element code / 100 (2 to 5) is incremented. Null: not counted.
  // Six counters owned by the shard; must outlive the session.
  metrics::Counter* replies_by_class = nullptr;
  // Advertise STARTTLS in EHLO and accept it (listener tls = "starttls" or "required"); the
  // owner must then be able to switch the connection to TLS (see TakeStartTls).
  bool starttls_offered = false;
  // Listener tls = "required": before TLS only EHLO, HELO, STARTTLS, NOOP, RSET and QUIT are
  // taken, anything else gets 530 5.7.0. Implies starttls_offered.
  bool tls_required = false;
  // Credentials are configured (smtp_auth.credentials): AUTH is offered over TLS.
  bool auth_offered = false;
  // A trusted listener (listener trusted = true): AUTH is offered without TLS too.
  bool auth_in_clear = false;
  // smtp_auth.require_sender_owned: an authenticated client's MAIL FROM domain must be one it
  // owns (CompleteAuth's owned_domains; the null sender is allowed), else 553 5.7.1.
  bool require_sender_owned = false;
};

// The owner's verdict on an AUTH request.
enum class AuthOutcome : uint8_t {
  kOk,         // 235 2.7.0: the client is authenticated.
  kFailed,     // 535 5.7.8: wrong user or password.
  kTemporary,  // 454 4.7.0: the check could not be done now.
  kLockedOut,  // 454 4.7.0: too many failures from this client or for this user.
};

// What the client sent in an AUTH exchange, decoded. `user` is the authentication identity
// (PLAIN authcid; a PLAIN authzid, when given, is equal to it). The session wipes the
// password once CompleteAuth has been called.
struct AuthRequest {
  std::string mechanism;  // "PLAIN" or "LOGIN".
  std::string user;
  std::string password;
};

enum class [[nodiscard]] CommitOutcome : uint8_t{
    kDurable,   // Written and fdatasync'd: reply 250.
    kFailed,    // I/O error: reply 451 4.3.0, nothing acknowledged.
    kNoSpace,   // ENOSPC or spool cap: reply 452 4.3.1.
    kShutdown,  // The shard is stopping and took nothing: reply 421 4.3.2.
};

// A completed message, ready for the spool. The body is the message as received: dot-unstuffed
// for DATA, raw for BDAT, always ending in CRLF. The trace header is not part of it.
struct Transaction {
  mail::Envelope envelope;
  std::string body;
};

class ServerSession {
 public:
  // `options` must outlive the session (the shard keeps one copy for all its sessions).
  ServerSession(const SessionOptions& options, const mail::IpAddress& client);
  ~ServerSession();
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Queues the 220 greeting.
  void Start();
  // Refuses the connection before it starts (connection caps): queues `reason` (a 421 row)
  // and closes.
  void Refuse(Reply reason);

  // Consumes all of `input` (what cannot be processed yet is kept, up to the pipeline bound
  // plus one read's worth). `input` may die when this returns.
  void Feed(std::string_view input);

  // True once per completed message; then transaction() holds it until CompleteCommit.
  [[nodiscard]] bool TakeCommitRequest();
  [[nodiscard]] Transaction& transaction() { return transaction_; }
  // Answers the commit request. Resumes processing input that arrived meanwhile.
  void CompleteCommit(CommitOutcome outcome, const mail::MessageId& id);

  // ---- STARTTLS (RFC 3207) ----
  // True once after the session answered STARTTLS with 220: the owner switches the transport
  // to TLS once that reply is sent (the session wants no input until then) and calls
  // TlsStarted.
  [[nodiscard]] bool TakeStartTls();
  // The TLS handshake is done (after STARTTLS, or before Start() for implicit TLS).
  // `version` and `cipher` name the protocol and cipher suite for the trace header and logs.
  // Resets the SMTP state: a fresh EHLO is required.
  void TlsStarted(std::string_view version, std::string_view cipher);
  // From the 220 to STARTTLS until TlsStarted: the session takes no input.
  [[nodiscard]] bool awaiting_tls() const { return phase_ == Phase::kStartTls; }
  [[nodiscard]] bool tls_active() const { return tls_active_; }
  [[nodiscard]] const std::string& tls_version() const { return tls_version_; }
  [[nodiscard]] const std::string& tls_cipher() const { return tls_cipher_; }
  // Bytes the client sent after STARTTLS in the clear, thrown away unread.
  [[nodiscard]] uint64_t discarded_after_starttls() const { return discarded_after_starttls_; }

  // ---- AUTH (RFC 4954) ----
  // True once per decoded AUTH exchange; then auth_request() holds it until CompleteAuth.
  [[nodiscard]] bool TakeAuthRequest();
  [[nodiscard]] const AuthRequest& auth_request() const { return auth_request_; }
  [[nodiscard]] bool awaiting_auth() const { return phase_ == Phase::kAwaitAuth; }
  // Answers the AUTH request; `owned_domains` (for require_sender_owned) are the domains an
  // authenticated user may send from. Wipes the password and resumes input.
  void CompleteAuth(AuthOutcome outcome, std::vector<std::string> owned_domains = {});
  // The authenticated user's owned domains (CompleteAuth's), as patterns; empty otherwise.
  [[nodiscard]] const std::vector<std::string>& owned_domains() const { return owned_domains_; }
  // The user the owner authenticated; empty when not authenticated.
  [[nodiscard]] const std::string& authenticated_user() const { return authenticated_user_; }

  // The Received: header for a message of this session (RFC 5321 4.4), CRLF-terminated. Its
  // protocol is SMTP, ESMTP or UTF8SMTP with S (TLS) and A (authenticated) per RFC 3848 and
  // RFC 6531; with TLS it carries "(version=... cipher=...)", and when authenticated
  // "(authenticated as USER)", both as comments whose text is escaped.
  [[nodiscard]] std::string TraceHeader(const mail::MessageId& id,
                                        std::string_view rfc5322_date) const;

  [[nodiscard]] std::string_view PendingOutput() const {
    return std::string_view(output_).substr(output_offset_);
  }
  void ConsumeOutput(size_t bytes);

  // The client will send nothing more (recv returned 0: it closed or shut down its sending
  // side, as Exim does after `BDAT n LAST` + `QUIT` in one write). It may still read: every
  // command already fed is processed and answered, the 250 that waits for the spool
  // included, before WantsClose() turns true (RFC 2920 3.1, RFC 5321 4.1.1.10). Input left
  // incomplete (half a line, an unfinished message) is dropped.
  void EndOfInput() { input_ended_ = true; }
  // False while the session cannot take more input: waiting for the spool, holding too much
  // unprocessed input or unsent output, closing, or after EndOfInput(). The owner stops
  // reading meanwhile.
  [[nodiscard]] bool WantsInput() const;
  // True when the connection should be closed once PendingOutput() is empty: after a closing
  // reply, or when input has ended and nothing the client sent waits for an answer.
  [[nodiscard]] bool WantsClose() const {
    return closing_ || (input_ended_ && phase_ != Phase::kAwaitCommit &&
                        phase_ != Phase::kAwaitSender && phase_ != Phase::kAwaitAuth);
  }
  [[nodiscard]] bool awaiting_commit() const { return phase_ == Phase::kAwaitCommit; }
  // True between MAIL and the end of its transaction.
  [[nodiscard]] bool in_transaction() const {
    return mail_given_ || phase_ == Phase::kData || phase_ == Phase::kBdat ||
           phase_ == Phase::kAwaitSender || phase_ == Phase::kAwaitCommit;
  }

  // Inline sender checks. With a sender check required, a valid MAIL is not answered at once:
  // TakeSenderCheck() returns true once, transaction().envelope holds the sender and the
  // owner answers with CompleteSenderCheck(): Reply::kSenderOk, or the refusal to send (the
  // transaction is then over). Input that arrives meanwhile waits, as during a commit.
  void RequireSenderCheck() { sender_check_required_ = true; }
  [[nodiscard]] bool TakeSenderCheck();
  void CompleteSenderCheck(Reply reply, std::string_view argument = {});
  [[nodiscard]] bool awaiting_sender_check() const { return phase_ == Phase::kAwaitSender; }
  void SetBodyObserver(BodyObserver* observer) { body_observer_ = observer; }
  // Instead of CompleteCommit: the message is refused (a policy verdict at the end of data);
  // `reply` is a 4xx or 5xx row.
  void RefuseMessage(Reply reply, std::string_view argument = {});

  // The timeout that applies now (RFC 5321 4.5.3.2), for the owner's timer.
  [[nodiscard]] uint32_t TimeoutMs() const;
  // The timer fired: reply 421 4.4.2 and close (unless a commit is in flight, which finishes
  // first).
  void OnTimeout();
  // Graceful stop: an idle session is told 421 4.3.2 now; one in a transaction may finish it
  // and is told 421 at its next command.
  void BeginShutdown();
  // The grace period is over: reply 421 4.3.2 and close as soon as no commit is in flight.
  void ForceShutdown();

  [[nodiscard]] uint64_t messages_accepted() const { return messages_accepted_; }
  // The client's EHLO/HELO name (empty before it gave one) and the errors it earned (5xx).
  [[nodiscard]] const std::string& helo() const { return helo_; }
  [[nodiscard]] uint32_t errors() const { return errors_; }
  // Complete command lines read so far, and whether message data is being read. The owner
  // restarts the timeout for message data on every block (RFC 5321 4.5.3.2.5) but for
  // commands only when a line completes: a client that trickles a byte at a time (slowloris)
  // gets command_timeout_ms per command line, not per byte.
  [[nodiscard]] uint64_t command_lines() const { return command_lines_; }
  [[nodiscard]] bool ReceivingData() const {
    return phase_ == Phase::kData || phase_ == Phase::kBdat;
  }
  // True from DATA's 354, or a transaction's first BDAT, until the message has been read to its
  // end: the span that the owner's per-message deadline covers (all chunks of one message, the
  // commands between them included). False while the owner answers (sender check, commit).
  [[nodiscard]] bool InMessageTransfer() const {
    return phase_ == Phase::kData || phase_ == Phase::kBdat ||
           (phase_ == Phase::kCommand && used_bdat_);
  }
  // Message data bytes read so far in this session (DATA and BDAT, discarded chunks too); the
  // owner credits each one to the deadline at its minimum data rate.
  [[nodiscard]] uint64_t data_bytes_read() const { return data_bytes_read_; }
  // The per-message deadline passed: reply 421 4.4.2 and close (unless the owner must answer
  // first, as for OnTimeout).
  void OnTooSlow();

 private:
  enum class Phase : uint8_t {
    kCommand,
    kData,
    kBdat,
    kAwaitSender,
    kAwaitCommit,
    kAwaitAuth,  // The owner checks credentials.
    kStartTls,   // 220 to STARTTLS queued: no input until TlsStarted.
    kClosed
  };
  // Where an AUTH exchange stands while the client owes a 334 response.
  enum class SaslStep : uint8_t { kNone, kPlain, kLoginUser, kLoginPassword };
  enum class LineState : uint8_t { kLineStart, kDotAtStart, kDotCr, kInLine, kCr };

  size_t Process(std::string_view input);
  size_t ProcessCommands(std::string_view input);
  size_t ProcessData(std::string_view input);
  size_t ProcessBdat(std::string_view input);
  void HandleLine(std::string_view line);
  void HandleEhlo(std::string_view argument, bool extended);
  void HandleMail(std::string_view argument);
  void HandleRcpt(std::string_view argument);
  void HandleData(std::string_view argument);
  void HandleBdat(std::string_view argument);
  void HandleStartTls(std::string_view argument);
  void HandleAuth(std::string_view argument);
  // A line sent in answer to 334.
  void HandleSaslResponse(std::string_view line);
  // Takes a PLAIN message (base64) and asks the owner, or refuses it.
  void TakePlain(std::string_view encoded);
  void RequestAuth();
  void EndSasl();
  // Removes the first `used` bytes of input_, zeroing them first when they held an AUTH line.
  void DropInput(size_t used);
  [[nodiscard]] bool AuthOfferedNow() const;
  [[nodiscard]] bool StartTlsOffered() const {
    return (options_.starttls_offered || options_.tls_required) && !tls_active_;
  }
  // Whether the client may relay as if in relay_networks (an address there, or authenticated).
  [[nodiscard]] bool TrustedClient() const;
  // The longest command line taken now: AUTH exchanges may be up to 12288 bytes (RFC 4954 4).
  [[nodiscard]] size_t LineBytesMax(std::string_view line_start) const;
  void FinishMessage();
  void EndBdatChunk(uint64_t chunk_bytes);
  void BeginBody();
  void ReleaseBudget();
  void AppendBody(std::string_view bytes);
  // Stores message bytes, charging the receive budget with the capacity it allocates. False:
  // over budget (nothing is stored).
  [[nodiscard]] bool StoreBody(std::string_view bytes);
  // Makes room for `need` bytes in the body's first part. False: over budget.
  [[nodiscard]] bool ReserveBody(size_t need);
  [[nodiscard]] bool Charge(uint64_t bytes);
  // Puts the message in transaction_.body in one piece (the chunks go).
  void JoinBody();
  // Frees what the message holds and gives its budget back.
  void DropBody();
  // Runs the body scanner over `input`; with `dot_terminated` (DATA) stops after CRLF.CRLF
  // and sets data_ended_. Returns the bytes consumed.
  size_t ScanBody(std::string_view input, bool dot_terminated);
  void ResetTransaction();
  // After the owner answered (sender check, commit): the forced close, if one waits, and the
  // input that arrived meanwhile.
  void Resume();
  void Send(Reply reply, std::string_view argument = {});
  bool RecipientAllowed(std::string_view domain) const;

  const SessionOptions& options_;
  const mail::IpAddress client_;
  Phase phase_ = Phase::kCommand;
  std::string input_;  // Unprocessed input kept between Feed calls.
  std::string output_;
  size_t output_offset_ = 0;

  bool greeted_ = false;     // EHLO or HELO seen.
  bool esmtp_ = false;       // EHLO (not HELO).
  bool mail_given_ = false;  // MAIL accepted in this transaction.
  bool used_bdat_ = false;   // BDAT seen in this transaction.
  bool closing_ = false;
  bool input_ended_ = false;  // EndOfInput(): nothing more will be fed.
  bool shutting_down_ = false;
  bool force_close_after_answer_ = false;  // Forced shutdown while the owner had to answer.
  bool commit_requested_ = false;
  bool sender_check_required_ = false;
  bool sender_check_requested_ = false;
  BodyObserver* body_observer_ = nullptr;
  bool discarding_long_line_ = false;  // An overlong command line is being skipped.
  uint32_t errors_ = 0;
  uint64_t command_lines_ = 0;
  uint64_t data_bytes_read_ = 0;
  std::string helo_;
  uint64_t messages_accepted_ = 0;

  // STARTTLS and AUTH.
  bool tls_active_ = false;
  bool starttls_requested_ = false;
  uint64_t discarded_after_starttls_ = 0;
  std::string tls_version_;
  std::string tls_cipher_;
  SaslStep sasl_step_ = SaslStep::kNone;
  bool secret_in_input_ = false;  // An AUTH line was processed since input_ was last trimmed.
  bool auth_requested_ = false;
  AuthRequest auth_request_;
  std::string authenticated_user_;
  std::vector<std::string> owned_domains_;

  // Message data state. The first kFirstPartBytes of a message are in transaction_.body, the
  // rest in body_chunks_ (each kChunkBytes of capacity) until JoinBody.
  static constexpr size_t kFirstPartBytes = 64 * 1024;
  static constexpr size_t kChunkBytes = 256 * 1024;
  Transaction transaction_;
  std::vector<std::string> body_chunks_;
  size_t body_capacity_ = 0;  // transaction_.body's capacity when it was last grown.
  LineState line_state_ = LineState::kLineStart;
  uint64_t line_bytes_ = 0;
  uint64_t body_bytes_seen_ = 0;
  bool body_too_big_ = false;
  bool body_bare_line_ending_ = false;
  bool body_line_too_long_ = false;
  bool body_over_budget_ = false;
  uint64_t budget_charged_ = 0;  // What this session holds of the shard's receive budget.
  bool data_ended_ = false;
  uint64_t bdat_chunk_bytes_ = 0;
  uint64_t bdat_remaining_ = 0;
  bool bdat_last_ = false;
  bool bdat_discard_ = false;  // The chunk is consumed and thrown away (no transaction).
  Reply bdat_discard_reply_ = Reply::kNeedMail;
};

}  // namespace relais::smtp
