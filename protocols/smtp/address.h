// protocols/smtp/address.h — RFC 5321 4.1.2 reverse-path and forward-path parsing, with the
// RFC 6531 (SMTPUTF8) extension of local parts and domains to UTF-8.
//
// Pure functions: no allocation, no state. Returned views point into the caller's text and die
// with it.
#pragma once

#include <cstdint>
#include <string_view>

namespace relais::smtp {

enum class [[nodiscard]] PathError : uint8_t{
    kNone,
    kSyntax,         // Not a Path per RFC 5321 4.1.2.
    kTooLong,        // RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets.
    kNeedsSmtpUtf8,  // Valid only under SMTPUTF8 (RFC 6531 3.3), which was not given.
};

enum class PathKind : uint8_t {
  kReversePath,  // MAIL FROM: "<>" allowed.
  kForwardPath,  // RCPT TO: "<Postmaster>" without a domain allowed (RFC 5321 4.1.1.3).
};

struct ParsedPath {
  PathError error = PathError::kNone;
  std::string_view mailbox;     // "local@domain" without brackets or source route; empty: <>.
  std::string_view local_part;  // As written, quotes included.
  std::string_view domain;      // Empty for <> and <Postmaster>; "[...]" for an IPv4 or IPv6
                                // address literal (General-address-literals are refused).
  std::string_view rest;        // What follows '>' (ESMTP parameters), unparsed.
};

// `text` starts at '<'. `smtputf8` says whether UTF-8 is permitted.
[[nodiscard]] ParsedPath ParsePath(std::string_view text, PathKind kind, bool smtputf8);

// True when `local_part` (as written, quotes included) asks the next hop to route the mail on:
// it holds '@', '%' or '!' (user%host@relay, "user@host"@relay, host!user@relay; RFC 5321
// 3.6.1 and 4.1.2, and UUCP bang paths). Such mail from untrusted clients is refused, as
// Postfix's allow_untrusted_routing = no does.
[[nodiscard]] bool HasSenderRouting(std::string_view local_part);

// True when `text` is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates).
[[nodiscard]] bool IsValidUtf8(std::string_view text);

}  // namespace relais::smtp
