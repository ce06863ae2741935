#include "queue/bounce/dsn.h"

#include <algorithm>

#include "core/base/strings.h"
#include "core/mail/envelope.h"

namespace relais::bounce {

using base::StrAppend;
using base::StrCat;

namespace {

// RFC 3464 2.3.4 Status: the enhanced code as the result carries it.
std::string_view StatusField(const delivery::Status& status) {
  if (!status.enhanced.empty()) {
    return status.enhanced;
  }
  return status.outcome == delivery::Outcome::kDeferred ? "4.0.0" : "5.0.0";
}

bool HasReply(const delivery::Status& status) { return status.code != 0 || !status.detail.empty(); }

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

namespace {

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// True when `boundary` occurs anywhere in `parts`: it could then end a part early.
bool OccursIn(std::string_view boundary, std::initializer_list<std::string_view> parts) {
  return std::any_of(parts.begin(), parts.end(), [&](std::string_view p) {
    return p.find(boundary) != std::string_view::npos;
  });
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
  // 1. For people.
  std::string human = StrCat("This is the mail system at ", in.reporting_mta, ".\r\n\r\n");
  if (failed) {
    human.append(
        "Your message could not be delivered to one or more recipients. It has been\r\n"
        "given up on; the reasons are below.\r\n\r\n");
  } else if (delayed) {
    human.append(
        "Your message could not be delivered yet to one or more recipients. It will be\r\n"
        "tried again; this is only a warning, you need not send it again.\r\n\r\n");
  } else {
    human.append("Your message was delivered (or handed on) as you asked to be told.\r\n\r\n");
  }
  for (const ReportRecipient& r : in.recipients) {
    StrAppend(&human, "<", r.address, ">: ", ActionName(r.action));
    if (HasReply(r.status)) {
      StrAppend(&human, ": ", r.status.Text());
    }
    human.append("\r\n");
  }
  // 2. For programs (RFC 3464 2.2 per-message, 2.3 per-recipient fields; RFC 6533 3 and 6.1
  // for an SMTPUTF8 message: a non-ASCII address is of type utf-8).
  std::string status = StrCat("Reporting-MTA: dns; ", in.reporting_mta, "\r\n");
  if (!in.envid.empty()) {
    StrAppend(&status, "Original-Envelope-Id: ", HeaderValue(in.envid), "\r\n");
  }
  StrAppend(&status, "X-Relais-Queue-ID: ", in.original_id, "\r\n",
            "Arrival-Date: ", in.arrival_date, "\r\n");
  for (const ReportRecipient& r : in.recipients) {
    status.append("\r\n");
    if (!r.orcpt.empty()) {
      const size_t semi = r.orcpt.find(';');
      StrAppend(&status, "Original-Recipient: ", std::string_view(r.orcpt).substr(0, semi), "; ",
                HeaderValue(std::string_view(r.orcpt).substr(semi + 1)), "\r\n");
    }
    const bool success = r.action == Action::kDelivered || r.action == Action::kRelayed;
    const std::string_view address_type = in.smtputf8 && !IsAscii(r.address) ? "utf-8" : "rfc822";
    StrAppend(&status, "Final-Recipient: ", address_type, "; ", r.address, "\r\n",
              "Action: ", ActionName(r.action), "\r\n",
              "Status: ", success ? std::string_view("2.0.0") : StatusField(r.status), "\r\n");
    if (HasReply(r.status)) {
      StrAppend(&status, "Diagnostic-Code: smtp; ", r.status.Text(), "\r\n");
    }
    StrAppend(&status, "Last-Attempt-Date: ", in.date, "\r\n");
    if (!success && !r.bounce_class.empty() && r.bounce_class != "none") {
      StrAppend(&status, "X-Relais-Bounce-Class: ", r.bounce_class, "\r\n");
    }
  }
  // 3. What was sent: the whole message for a failure with RET=FULL, else the header section
  // only (the body may be large or private).
  const bool whole = failed && in.return_full;
  std::string_view returned = in.original;
  if (!whole) {
    const size_t end = in.original.find("\r\n\r\n");
    if (end != std::string_view::npos) {
      returned = in.original.substr(0, end + 2);
    }
  }
  const std::string_view returned_type =
      whole ? (in.smtputf8 ? "message/global" : "message/rfc822")
            : (in.smtputf8 ? "message/global-headers" : "text/rfc822-headers");
  // The boundary must occur in no part (RFC 2046 5.1.1), or the returned message could close
  // its part and add parts of its own. The random token makes that unlikely; the check makes
  // it impossible.
  std::string boundary = StrCat("=_relais_", in.boundary_seed);
  for (int n = 1; OccursIn(boundary, {returned, human, status, in.sender, in.reporting_mta}); ++n) {
    boundary = StrCat("=_relais_", in.boundary_seed, "_", n, "_", returned.size() % 9973);
  }
  std::string out;
  StrAppend(&out, "From: Mail Delivery System <MAILER-DAEMON@", in.reporting_mta, ">\r\n", "To: <",
            in.sender, ">\r\n", "Subject: ", subject, "\r\n", "Date: ", in.date, "\r\n",
            "Auto-Submitted: auto-replied\r\n",  // RFC 3834
            "MIME-Version: 1.0\r\n", "Content-Type: multipart/report; report-type=",
            in.smtputf8 ? "global-delivery-status" : "delivery-status", ";\r\n\tboundary=\"",
            boundary, "\"\r\n\r\n", "This is a MIME-encapsulated message.\r\n\r\n");
  StrAppend(&out, "--", boundary, "\r\n", "Content-Type: text/plain; charset=utf-8\r\n\r\n", human);
  StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: message/",
            in.smtputf8 ? "global-delivery-status" : "delivery-status", "\r\n\r\n", status);
  StrAppend(&out, "\r\n--", boundary, "\r\n", "Content-Type: ", returned_type, "\r\n\r\n");
  out.append(returned);
  if (!out.ends_with("\r\n")) {
    out.append("\r\n");
  }
  StrAppend(&out, "\r\n--", boundary, "--\r\n");
  return out;
}

}  // namespace relais::bounce
