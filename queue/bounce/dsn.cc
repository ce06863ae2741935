#include "queue/bounce/dsn.h"

#include <algorithm>

#include "core/base/strings.h"
#include "core/mail/envelope.h"

namespace relais::bounce {

using base::StrAppend;
using base::StrCat;

std::string StatusOf(std::string_view reply) {
  // RFC 3463: class "." subject "." detail, class 2, 4 or 5.
  if (reply.size() >= 9 && reply[3] == ' ') {
    const std::string_view rest = reply.substr(4);
    const size_t end = rest.find(' ');
    const std::string_view code = rest.substr(0, end);
    int dots = 0;
    bool ok = !code.empty() && (code[0] == '2' || code[0] == '4' || code[0] == '5');
    for (char c : code) {
      dots += c == '.';
      ok = ok && ((c >= '0' && c <= '9') || c == '.');
    }
    if (ok && dots == 2) {
      return std::string(code);
    }
  }
  return !reply.empty() && reply[0] == '4' ? "4.0.0" : "5.0.0";
}

namespace {

std::string_view ActionName(Action a) {
  switch (a) {
    case Action::kFailed:
      return "failed";
    case Action::kDelayed:
      return "delayed";
    case Action::kDelivered:
      return "delivered";
    case Action::kRelayed:
      return "relayed";
  }
  return "failed";
}

// A decoded xtext value for a header field: printable ASCII only, else the xtext as received.
std::string HeaderValue(std::string_view xtext) {
  std::string decoded = mail::XtextDecode(xtext);
  const bool printable =
      std::all_of(decoded.begin(), decoded.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  return printable ? decoded : std::string(xtext);
}

}  // namespace

std::string BuildReport(const ReportInput& in) {
  const auto any = [&](Action a) {
    return std::any_of(in.recipients.begin(), in.recipients.end(),
                       [a](const ReportRecipient& r) { return r.action == a; });
  };
  const bool failed = any(Action::kFailed);
  const bool delayed = any(Action::kDelayed);
  const std::string_view subject = failed    ? "Undelivered Mail Returned to Sender"
                                   : delayed ? "Delayed Mail (still being retried)"
                                             : "Successful Mail Delivery Report";
  const std::string boundary = StrCat("=_relais_", in.boundary_seed);
  std::string out;
  StrAppend(&out, "From: Mail Delivery System <MAILER-DAEMON@", in.reporting_mta, ">\r\n", "To: <",
            in.sender, ">\r\n", "Subject: ", subject, "\r\n", "Date: ", in.date, "\r\n",
            "Auto-Submitted: auto-replied\r\n",  // RFC 3834
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"",
            boundary, "\"\r\n\r\n", "This is a MIME-encapsulated message.\r\n\r\n");
  // 1. For people.
  StrAppend(&out, "--", boundary, "\r\n", "Content-Type: text/plain; charset=utf-8\r\n\r\n",
            "This is the mail system at ", in.reporting_mta, ".\r\n\r\n");
  if (failed) {
    out.append(
        "Your message could not be delivered to one or more recipients. It has been\r\n"
        "given up on; the reasons are below.\r\n\r\n");
  } else if (delayed) {
    out.append(
        "Your message could not be delivered yet to one or more recipients. It will be\r\n"
        "tried again; this is only a warning, you need not send it again.\r\n\r\n");
  } else {
    out.append("Your message was delivered (or handed on) as you asked to be told.\r\n\r\n");
  }
  for (const ReportRecipient& r : in.recipients) {
    StrAppend(&out, "<", r.address, ">: ", ActionName(r.action));
    if (!r.reply.empty()) {
      StrAppend(&out, ": ", r.reply);
    }
    out.append("\r\n");
  }
  // 2. For programs (RFC 3464 2.2 per-message, 2.3 per-recipient fields).
  StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: message/delivery-status\r\n\r\n",
            "Reporting-MTA: dns; ", in.reporting_mta, "\r\n");
  if (!in.envid.empty()) {
    StrAppend(&out, "Original-Envelope-Id: ", HeaderValue(in.envid), "\r\n");
  }
  StrAppend(&out, "X-Relais-Queue-ID: ", in.original_id, "\r\n", "Arrival-Date: ", in.arrival_date,
            "\r\n");
  for (const ReportRecipient& r : in.recipients) {
    out.append("\r\n");
    if (!r.orcpt.empty()) {
      const size_t semi = r.orcpt.find(';');
      StrAppend(&out, "Original-Recipient: ", std::string_view(r.orcpt).substr(0, semi), "; ",
                HeaderValue(std::string_view(r.orcpt).substr(semi + 1)), "\r\n");
    }
    const bool success = r.action == Action::kDelivered || r.action == Action::kRelayed;
    StrAppend(&out, "Final-Recipient: rfc822; ", r.address, "\r\n",
              "Action: ", ActionName(r.action), "\r\n",
              "Status: ", success ? std::string("2.0.0") : StatusOf(r.reply), "\r\n");
    if (!r.reply.empty()) {
      StrAppend(&out, "Diagnostic-Code: smtp; ", r.reply, "\r\n");
    }
    StrAppend(&out, "Last-Attempt-Date: ", in.date, "\r\n");
  }
  // 3. What was sent: the whole message for a failure with RET=FULL, else the header section
  // only (the body may be large or private).
  if (failed && in.return_full) {
    StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: message/rfc822\r\n\r\n");
    out.append(in.original);
  } else {
    StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: text/rfc822-headers\r\n\r\n");
    const size_t end = in.original.find("\r\n\r\n");
    out.append(end == std::string_view::npos ? in.original : in.original.substr(0, end + 2));
  }
  if (!out.ends_with("\r\n")) {
    out.append("\r\n");
  }
  StrAppend(&out, "\r\n--", boundary, "--\r\n");
  return out;
}

}  // namespace relais::bounce
