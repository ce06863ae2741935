// queue/bounce/dsn.h — the delivery status notification (bounce) for recipients that failed
// for good: RFC 3464 multipart/report with a human-readable part, a message/delivery-status
// part (RFC 3464 2.2, 2.3) and the original message's header section (text/rfc822-headers,
// RFC 6522). Pure: no I/O, no clock (the date comes in).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace relais::bounce {

struct FailedRecipient {
  std::string address;
  std::string reply;  // "550 5.7.1 ..." as the destination (or Relais) said it.
};

struct BounceInput {
  std::string reporting_mta;  // Our host name.
  std::string original_id;    // Queue ID of the failed message.
  std::string sender;         // Who gets the bounce; never empty (no bounce to <>).
  std::string arrival_date;   // RFC 5322 date the message arrived.
  std::string date;           // RFC 5322 date now.
  std::string boundary_seed;  // Makes the MIME boundary unique (e.g. the queue ID).
  std::vector<FailedRecipient> recipients;
  std::string_view original;  // The stored message (CRLF); only its header section is used.
};

// The whole bounce message, CRLF line endings, ready to spool.
[[nodiscard]] std::string BuildBounce(const BounceInput& input);

// "5.7.1" from "550 5.7.1 text"; "5.0.0" (or "4.0.0") when the reply has none.
[[nodiscard]] std::string StatusOf(std::string_view reply);

}  // namespace relais::bounce
