#include "queue/bounce/dsn.h"

#include "core/base/strings.h"

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

std::string BuildBounce(const BounceInput& in) {
  const std::string boundary = StrCat("=_relais_", in.boundary_seed);
  std::string out;
  StrAppend(&out, "From: Mail Delivery System <MAILER-DAEMON@", in.reporting_mta, ">\r\n", "To: <",
            in.sender, ">\r\n", "Subject: Undelivered Mail Returned to Sender\r\n",
            "Date: ", in.date, "\r\n", "Auto-Submitted: auto-replied\r\n",  // RFC 3834
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"",
            boundary, "\"\r\n\r\n", "This is a MIME-encapsulated message.\r\n\r\n");
  // 1. For people.
  StrAppend(&out, "--", boundary, "\r\n", "Content-Type: text/plain; charset=utf-8\r\n\r\n",
            "This is the mail system at ", in.reporting_mta, ".\r\n\r\n",
            "Your message could not be delivered to one or more recipients. It has been\r\n"
            "given up on; the reasons are below.\r\n\r\n");
  for (const FailedRecipient& r : in.recipients) {
    StrAppend(&out, "<", r.address, ">: ", r.reply, "\r\n");
  }
  // 2. For programs (RFC 3464 2.2 per-message, 2.3 per-recipient fields).
  StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: message/delivery-status\r\n\r\n",
            "Reporting-MTA: dns; ", in.reporting_mta, "\r\n", "X-Relais-Queue-ID: ", in.original_id,
            "\r\n", "Arrival-Date: ", in.arrival_date, "\r\n");
  for (const FailedRecipient& r : in.recipients) {
    StrAppend(&out, "\r\n", "Final-Recipient: rfc822; ", r.address, "\r\n", "Action: failed\r\n",
              "Status: ", StatusOf(r.reply), "\r\n", "Diagnostic-Code: smtp; ", r.reply, "\r\n",
              "Last-Attempt-Date: ", in.date, "\r\n");
  }
  // 3. What was sent: the header section only (no body: it may be large or private).
  StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: text/rfc822-headers\r\n\r\n");
  const size_t end = in.original.find("\r\n\r\n");
  const std::string_view headers =
      end == std::string_view::npos ? in.original : in.original.substr(0, end + 2);
  out.append(headers);
  if (!headers.empty() && !headers.ends_with("\r\n")) {
    out.append("\r\n");
  }
  StrAppend(&out, "\r\n--", boundary, "--\r\n");
  return out;
}

}  // namespace relais::bounce
