#include "protocols/smtp/reply_table.h"

#include <array>

#include "core/base/check.h"
#include "core/base/strings.h"

namespace relais::smtp {
namespace {

using R = Reply;

struct Entry {
  Reply reply;
  ReplyRow row;
};

// RFC 5321 4.2 for the codes, RFC 3463 / RFC 5248 for the enhanced codes.
constexpr Entry kEntries[] = {
    {R::kGreeting, {220, "", "%s ESMTP Relais", false}},
    {R::kHeloOk, {250, "", "%s", false}},
    {R::kOk, {250, "2.0.0", "OK", false}},
    {R::kSenderOk, {250, "2.1.0", "Sender OK", false}},
    {R::kRecipientOk, {250, "2.1.5", "Recipient OK", false}},
    {R::kStartData, {354, "", "End data with <CR><LF>.<CR><LF>", false}},
    {R::kQueued, {250, "2.0.0", "OK: queued as %s", false}},
    {R::kChunkReceived, {250, "2.0.0", "%s octets received", false}},
    {R::kResetOk, {250, "2.0.0", "Reset OK", false}},
    {R::kVrfy,
     {252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery", false}},
    {R::kHelp,
     {214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT", false}},
    {R::kBye, {221, "2.0.0", "Bye", true}},
    {R::kNeedHelo, {503, "5.5.1", "Send EHLO or HELO first", false}},
    {R::kNestedMail, {503, "5.5.1", "Sender already specified", false}},
    {R::kNeedMail, {503, "5.5.1", "Send MAIL first", false}},
    {R::kNeedRecipient, {503, "5.5.1", "Send RCPT first", false}},
    {R::kNoValidRecipients, {554, "5.5.1", "No valid recipients", false}},
    {R::kDataAfterBdat, {503, "5.5.1", "DATA not allowed after BDAT in one transaction", false}},
    {R::kUnknownCommand, {500, "5.5.2", "Command not recognized", false}},
    {R::kNotImplemented, {502, "5.5.1", "Command not implemented", false}},
    {R::kSyntax, {501, "5.5.4", "Syntax: %s", false}},
    {R::kLineTooLong, {500, "5.5.2", "Line too long", false}},
    {R::kBareLineEnding, {500, "5.5.2", "Bare CR or LF not allowed; lines end with CRLF", false}},
    {R::kBadSenderSyntax, {501, "5.1.7", "Bad sender address syntax", false}},
    {R::kBadRecipientSyntax, {501, "5.1.3", "Bad recipient address syntax", false}},
    {R::kUnknownParameter, {555, "5.5.4", "Unsupported or malformed parameter", false}},
    {R::kBadDsnParameter, {501, "5.5.4", "Invalid DSN parameter: %s", false}},
    {R::kNeedSmtpUtf8, {553, "5.6.7", "Non-ASCII address needs SMTPUTF8", false}},
    {R::kDeclaredSizeTooBig, {552, "5.3.4", "Declared message size exceeds the limit", false}},
    {R::kMessageTooBig, {552, "5.3.4", "Message size exceeds the limit", false}},
    {R::kTooManyRecipients, {452, "4.5.3", "Too many recipients", false}},
    {R::kRelayDenied, {554, "5.7.1", "Relay access denied", false}},
    {R::kNoRoute, {550, "5.1.2", "Recipient domain is not served here", false}},
    {R::kRecipientRejected, {550, "5.7.1", "Recipient rejected by policy", false}},
    {R::kUnsafeMailbox, {550, "5.1.3", "Recipient mailbox name not allowed", false}},
    {R::kUnsafeDomain, {550, "5.1.2", "Recipient domain not allowed in a mailbox name", false}},
    {R::kSenderRouting,
     {550, "5.7.1", "Sender-specified routing is not allowed from your address", false}},
    {R::kBodyBareLineEnding,
     {554, "5.6.0", "Message rejected: bare CR or LF in message data", false}},
    {R::kBodyLineTooLong, {554, "5.6.0", "Message rejected: a line exceeds the limit", false}},
    // RFC 5322 2.2: a header section cannot start with a continuation line (it would extend
    // the trace fields written above it).
    {R::kBodyStartsWithWhitespace,
     {550, "5.6.0", "Message rejected: its first line starts with white space", false}},
    {R::kSpfFail, {550, "5.7.23", "SPF validation failed: %s", false}},
    {R::kSpfTempError, {451, "4.7.24", "SPF validation error: %s; try again later", false}},
    {R::kPolicyRejected, {550, "5.7.1", "%s", false}},
    {R::kPolicyDeferred, {451, "4.7.1", "%s; try again later", false}},
    {R::kAuthTempError, {451, "4.7.5", "%s; try again later", false}},
    {R::kHeaderTooBig, {552, "5.3.4", "Message header section exceeds the limit", false}},
    {R::kTooManyHeaderFields, {552, "5.3.4", "Too many header fields", false}},
    {R::kTooManyHops, {554, "5.4.6", "Too many hops (Received fields): mail loop?", false}},
    {R::kSpoolFailed,
     {451, "4.3.0", "Temporary failure storing the message, try again later", false}},
    {R::kSpoolFull, {452, "4.3.1", "Insufficient system storage", false}},
    {R::kTooManyErrors, {421, "4.7.0", "Too many errors, closing connection", true}},
    {R::kTimeout, {421, "4.4.2", "Timeout exceeded, closing connection", true}},
    {R::kTooSlow,
     {421, "4.4.2", "Message transfer too slow or past its deadline, closing connection", true}},
    {R::kShuttingDown, {421, "4.3.2", "Service shutting down, closing connection", true}},
    {R::kTooManyConnections, {421, "4.7.0", "Too many connections, try again later", true}},
    {R::kTooManyConnectionsFromClient,
     {421, "4.7.0", "Too many connections from your address, try again later", true}},
    {R::kStartTlsReady, {220, "2.0.0", "Ready to start TLS", false}},
    {R::kTlsAlreadyActive, {503, "5.5.1", "TLS already active", false}},
    {R::kStartTlsInTransaction,
     {503, "5.5.1", "STARTTLS not allowed inside a mail transaction", false}},
    {R::kTlsRequired, {530, "5.7.0", "Must issue a STARTTLS command first", false}},
    {R::kAuthChallenge, {334, "", "%s", false}},
    {R::kAuthOk, {235, "2.7.0", "Authentication successful", false}},
    {R::kAuthFailed, {535, "5.7.8", "Authentication credentials invalid", false}},
    {R::kAuthTemporary, {454, "4.7.0", "Temporary authentication failure", false}},
    {R::kAuthLockedOut, {454, "4.7.0", "Too many authentication failures, try again later", false}},
    {R::kAuthNeedsTls,
     {538, "5.7.11", "Encryption required for requested authentication mechanism", false}},
    {R::kAuthNotEnabled, {503, "5.5.1", "Authentication not enabled", false}},
    {R::kAlreadyAuthenticated, {503, "5.5.1", "Already authenticated", false}},
    {R::kAuthInTransaction, {503, "5.5.1", "AUTH not allowed inside a mail transaction", false}},
    {R::kUnknownMechanism, {504, "5.5.4", "Unrecognized authentication mechanism", false}},
    {R::kAuthCancelled, {501, "5.0.0", "Authentication cancelled", false}},
    {R::kAuthBadResponse, {501, "5.5.2", "Malformed authentication response", false}},
    {R::kSenderNotOwned,
     {553, "5.7.1", "Sender address not owned by the authenticated user", false}},
};

constexpr std::array<ReplyRow, static_cast<size_t>(Reply::kCount)> BuildTable() {
  std::array<ReplyRow, static_cast<size_t>(Reply::kCount)> table{};
  for (const Entry& e : kEntries) {
    table[static_cast<size_t>(e.reply)] = e.row;
  }
  return table;
}
constexpr auto kTable = BuildTable();

// Every reason has exactly one row.
static_assert([] {
  for (const ReplyRow& row : kTable) {
    if (row.code == 0) {
      return false;
    }
  }
  return std::size(kEntries) == static_cast<size_t>(Reply::kCount);
}());

}  // namespace

const ReplyRow& Row(Reply reply) { return kTable[static_cast<size_t>(reply)]; }

void AppendReply(std::string& out, Reply reply, std::string_view argument) {
  const ReplyRow& row = Row(reply);
  base::StrAppend(&out, static_cast<uint32_t>(row.code), ' ');
  if (!row.enhanced.empty()) {
    base::StrAppend(&out, row.enhanced, ' ');
  }
  const size_t hole = row.text.find("%s");
  if (hole == std::string_view::npos) {
    out.append(row.text);
  } else {
    out.append(row.text.substr(0, hole));
    // Arguments may carry text from outside (an SPF explanation from DNS): a reply is one line
    // of printable ASCII whatever they hold, at most kArgumentBytesMax of it.
    constexpr size_t kArgumentBytesMax = 400;
    for (char c : argument.substr(0, kArgumentBytesMax)) {
      out.push_back(c >= 0x20 && c < 0x7F ? c : '?');
    }
    out.append(row.text.substr(hole + 2));
  }
  out.append("\r\n");
}

void AppendEhloReply(std::string& out, std::string_view hostname, uint64_t message_bytes_max,
                     EhloOffers offers) {
  base::StrAppend(&out, "250-", hostname, "\r\n");
  base::StrAppend(&out, "250-PIPELINING\r\n", "250-SIZE ", message_bytes_max, "\r\n");
  out.append(
      "250-8BITMIME\r\n"
      "250-SMTPUTF8\r\n"
      "250-ENHANCEDSTATUSCODES\r\n"
      "250-DSN\r\n");
  if (offers.starttls) {
    out.append("250-STARTTLS\r\n");
  }
  if (offers.auth) {
    out.append("250-AUTH PLAIN LOGIN\r\n");
  }
  out.append("250 CHUNKING\r\n");
}

bool IsTransient(Reply reply) { return Row(reply).code / 100 == 4; }
bool IsError(Reply reply) { return Row(reply).code >= 400; }

}  // namespace relais::smtp
