// queue/bounce/dsn.h — delivery status notifications: the bounce for recipients that failed
// for good, and the delay and success reports that RFC 3461 NOTIFY asks for. An RFC 3464
// multipart/report with a human-readable part, a message/delivery-status part (RFC 3464 2.2,
// 2.3) and the original's header section (text/rfc822-headers, RFC 6522), or the whole
// original (message/rfc822) for a failure with RET=FULL. For an SMTPUTF8 message the RFC 6533
// forms: message/global-delivery-status with the utf-8 address type, message/global-headers
// and message/global.
//
// The MIME boundary is the caller's random token (a sender cannot predict it) and is checked
// against everything the report carries: should any part contain it, another is derived, so
// the returned message stays inside its part whatever it contains. Pure: no I/O, no clock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "queue/delivery/status.h"

namespace relais::bounce {

// RFC 3464 2.3.3 Action.
enum class Action : uint8_t { kFailed, kDelayed, kDelivered, kRelayed };

struct ReportRecipient {
  std::string address;
  // What the destination (or Relais) said, typed: the Status field is its enhanced code, the
  // Diagnostic-Code its Text(). A success reports 2.0.0 whatever it carries.
  delivery::Status status;
  Action action = Action::kFailed;
  std::string orcpt;  // RFC 3461 ORCPT as received ("rfc822;" xtext); empty: none.
  // Its bounce class (queue/delivery/bounce_class.h), a static name: "X-Relais-Bounce-Class:"
  // (an RFC 3464 2.4 extension field) for a failed or delayed recipient; empty or "none": no
  // field.
  std::string_view bounce_class;
};

struct ReportInput {
  std::string reporting_mta;  // Our host name.
  std::string original_id;    // Queue ID of the message reported on.
  std::string sender;         // Who gets the report; never empty (no report to <>).
  std::string arrival_date;   // RFC 5322 date the message arrived.
  std::string date;           // RFC 5322 date now.
  std::string boundary_seed;  // Random, from a CSPRNG (>= 96 bits): the MIME boundary's core.
  std::string envid;          // RFC 3461 ENVID as received (xtext); empty: none.
  bool return_full = false;   // RFC 3461 RET=FULL: a failure report returns the whole message.
  bool smtputf8 = false;      // The message came with SMTPUTF8: RFC 6533 report formats.
  std::vector<ReportRecipient> recipients;
  std::string_view original;  // The stored message (CRLF).
};

// The whole report, CRLF line endings, ready to spool: a failure report ("bounce") when any
// recipient failed, else a delay or success report.
[[nodiscard]] std::string BuildReport(const ReportInput& input);

}  // namespace relais::bounce
