// protocols/smtp/reply_table.h — every reply the SMTP server can send, in one table.
//
// Each internal reason maps to a reply code, an RFC 3463 enhanced status code and its text;
// reply_table.cc is the only place where reply text is written. Pure; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace relais::smtp {

enum class Reply : uint8_t {
  kGreeting,                      // 220, argument: host name.
  kHeloOk,                        // 250, argument: host name.
  kOk,                            // 250 2.0.0
  kSenderOk,                      // 250 2.1.0
  kRecipientOk,                   // 250 2.1.5
  kStartData,                     // 354
  kQueued,                        // 250 2.0.0, argument: message ID.
  kChunkReceived,                 // 250 2.0.0, argument: octet count.
  kResetOk,                       // 250 2.0.0
  kVrfy,                          // 252 2.0.0
  kHelp,                          // 214 2.0.0
  kBye,                           // 221 2.0.0
  kNeedHelo,                      // 503 5.5.1
  kNestedMail,                    // 503 5.5.1
  kNeedMail,                      // 503 5.5.1
  kNeedRecipient,                 // 503 5.5.1
  kNoValidRecipients,             // 554 5.5.1
  kDataAfterBdat,                 // 503 5.5.1
  kUnknownCommand,                // 500 5.5.2
  kNotImplemented,                // 502 5.5.1
  kSyntax,                        // 501 5.5.4, argument: what was expected.
  kLineTooLong,                   // 500 5.5.2
  kBareLineEnding,                // 500 5.5.2
  kBadSenderSyntax,               // 501 5.1.7
  kBadRecipientSyntax,            // 501 5.1.3
  kUnknownParameter,              // 555 5.5.4
  kBadDsnParameter,               // 501 5.5.4, argument: the parameter (RFC 3461).
  kNeedSmtpUtf8,                  // 553 5.6.7
  kDeclaredSizeTooBig,            // 552 5.3.4
  kMessageTooBig,                 // 552 5.3.4
  kTooManyRecipients,             // 452 4.5.3
  kRelayDenied,                   // 554 5.7.1
  kNoRoute,                       // 550 5.1.2
  kRecipientRejected,             // 550 5.7.1
  kUnsafeMailbox,                 // 550 5.1.3
  kUnsafeDomain,                  // 550 5.1.2 (a domain that cannot name a mailbox path)
  kSenderRouting,                 // 550 5.7.1 (user%host, "u@host", host!user from outside)
  kBodyBareLineEnding,            // 554 5.6.0
  kBodyLineTooLong,               // 554 5.6.0
  kBodyStartsWithWhitespace,      // 550 5.6.0
  kSpfFail,                       // 550 5.7.23, argument: why (RFC 7372).
  kSpfTempError,                  // 451 4.7.24, argument: why.
  kPolicyRejected,                // 550 5.7.1, argument: why (DMARC).
  kPolicyDeferred,                // 451 4.7.1, argument: why (DMARC).
  kAuthTempError,                 // 451 4.7.5, argument: why (DMARC temperror, fail closed).
  kHeaderTooBig,                  // 552 5.3.4 (limits.header_bytes_max)
  kTooManyHeaderFields,           // 552 5.3.4 (limits.header_fields_max)
  kTooManyHops,                   // 554 5.4.6 (limits.received_max: a mail loop)
  kSpoolFailed,                   // 451 4.3.0
  kSpoolFull,                     // 452 4.3.1
  kTooManyErrors,                 // 421 4.7.0
  kTimeout,                       // 421 4.4.2
  kTooSlow,                       // 421 4.4.2
  kShuttingDown,                  // 421 4.3.2
  kTooManyConnections,            // 421 4.7.0
  kTooManyConnectionsFromClient,  // 421 4.7.0
  // STARTTLS (RFC 3207).
  kStartTlsReady,          // 220 2.0.0
  kTlsAlreadyActive,       // 503 5.5.1
  kStartTlsInTransaction,  // 503 5.5.1
  kTlsRequired,            // 530 5.7.0 (listener tls = "required", before STARTTLS)
  // AUTH (RFC 4954).
  kAuthChallenge,         // 334, argument: the base64 challenge (may be empty).
  kAuthOk,                // 235 2.7.0
  kAuthFailed,            // 535 5.7.8
  kAuthTemporary,         // 454 4.7.0
  kAuthLockedOut,         // 454 4.7.0 (too many failures)
  kAuthNeedsTls,          // 538 5.7.11 (offered only after STARTTLS)
  kAuthNotEnabled,        // 503 5.5.1
  kAlreadyAuthenticated,  // 503 5.5.1
  kAuthInTransaction,     // 503 5.5.1
  kUnknownMechanism,      // 504 5.5.4
  kAuthCancelled,         // 501 5.0.0 (the client sent "*")
  kAuthBadResponse,       // 501 5.5.2 (not base64, or not a PLAIN message)
  kSenderNotOwned,        // 553 5.7.1 (smtp_auth.require_sender_owned)
  kCount,
};

struct ReplyRow {
  uint16_t code;
  std::string_view enhanced;  // Empty for replies sent before EHLO could negotiate it.
  std::string_view text;      // "%s" is replaced by the reply's argument.
  bool closes;                // The session ends after this reply.
};

[[nodiscard]] const ReplyRow& Row(Reply reply);
// Appends "code enhanced text\r\n". `argument` fills the row's "%s".
void AppendReply(std::string& out, Reply reply, std::string_view argument = {});
// Extensions offered in one EHLO reply beyond the fixed set.
struct EhloOffers {
  bool starttls = false;  // "STARTTLS" (RFC 3207).
  bool auth = false;      // "AUTH PLAIN LOGIN" (RFC 4954).
};
// The EHLO response: greeting line plus one line per extension (RFC 5321 4.1.1.1).
void AppendEhloReply(std::string& out, std::string_view hostname, uint64_t message_bytes_max,
                     EhloOffers offers = {});
[[nodiscard]] bool IsTransient(Reply reply);  // 4xx.
[[nodiscard]] bool IsError(Reply reply);      // 4xx or 5xx.

}  // namespace relais::smtp
