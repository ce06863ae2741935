// queue/delivery/status.h — what one delivery attempt of one recipient came to, as a typed
// value: {outcome, code, enhanced code, detail}. The delivery side's texts live in ONE table
// (status.cc, as protocols/smtp/reply_table.cc holds the ingress replies); a next hop's own
// reply is kept with the code and enhanced code its client session parsed off the wire and its
// text as the detail. Nothing reads a code back out of reply text: the scheduler, the DSN
// report (queue/bounce) and the metrics take these fields.
//
// Also the route type as delivery sees it: config::RouteType, plus kNone for a recipient whose
// domain no route matches (the config changed since the message was accepted). Log lines and
// the relais_delivery_attempts_total label name it through RouteName.
//
// Vocabulary only: header-only types and inline helpers, no state, no I/O; the table is in
// status.cc (relais::delivery).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/strings.h"
#include "core/config/config.h"

namespace relais::delivery {

enum class [[nodiscard]] Outcome : uint8_t{kDelivered, kDeferred, kFailed};

inline constexpr std::array<std::string_view, 3> kOutcomeNames = {"delivered", "deferred",
                                                                  "failed"};
[[nodiscard]] inline std::string_view OutcomeName(Outcome outcome) {
  return kOutcomeNames[static_cast<size_t>(outcome)];
}

// config::RouteType's values, then kNone.
enum class Route : uint8_t { kMaildir, kSmarthost, kLmtp, kReject, kMx, kNone };
static_assert(static_cast<int>(Route::kMaildir) == static_cast<int>(config::RouteType::kMaildir) &&
              static_cast<int>(Route::kSmarthost) ==
                  static_cast<int>(config::RouteType::kSmarthost) &&
              static_cast<int>(Route::kLmtp) == static_cast<int>(config::RouteType::kLmtp) &&
              static_cast<int>(Route::kReject) == static_cast<int>(config::RouteType::kReject) &&
              static_cast<int>(Route::kMx) == static_cast<int>(config::RouteType::kMx));

inline constexpr std::array<std::string_view, 6> kRouteNames = {"maildir", "smarthost", "lmtp",
                                                                "reject",  "mx",        "none"};
[[nodiscard]] inline std::string_view RouteName(Route route) {
  return kRouteNames[static_cast<size_t>(route)];
}
// The route type of `route` (a route of the router), kNone for null.
[[nodiscard]] inline Route RouteOf(const config::Route* route) {
  return route == nullptr ? Route::kNone : static_cast<Route>(route->type);
}

struct Status {
  Outcome outcome = Outcome::kDeferred;
  uint16_t code = 0;     // SMTP reply code: 250, 451, 550, ...
  std::string enhanced;  // RFC 3463 "class.subject.detail", e.g. "4.3.0".
  std::string detail;    // Free text after the codes; never a file-system path.

  // "451 4.3.0 detail": for the delivery_attempt log line, the spool's last-reply record and
  // the report's Diagnostic-Code. Written from the fields, never parsed back.
  [[nodiscard]] std::string Text() const {
    if (code == 0) {
      return detail;
    }
    return detail.empty() ? base::StrCat(code, " ", enhanced)
                          : base::StrCat(code, " ", enhanced, " ", detail);
  }
};

// Every delivery-side status Relais writes itself. Each has one row in status.cc.
enum class Reason : uint8_t {
  kExpired,           // The queue lifetime is over (+ "; last reply: ...").
  kReturned,          // An operator returned the message (+ "; last reply: ...").
  kSegmentGone,       // The message's spool segment cannot be located.
  kSpoolUnreadable,   // Reading the body back failed (+ the reason).
  kNoRoute,           // No route matches the domain any more.
  kRejectedByRoute,   // A reject route.
  kUnsafeDomain,      // The domain cannot be a Maildir path component.
  kUnsafeMailbox,     // The local part cannot be a Maildir path component.
  kBounceNotQueued,   // The failure report could not be spooled (+ "was: " the failure).
  kStopping,          // The daemon is stopping: queued outbound tasks are deferred.
  kNoNextHop,         // Every next hop of a route failed (+ route and last error).
  kTlsFailed,         // tls = encrypt/verify: the handshake or verification failed (+ why).
  kTlsNotOffered,     // tls = encrypt/verify: no STARTTLS, or it was refused (+ which hop).
  kMaildirDelivered,  // + the file name.
  kMaildirFull,       // ENOSPC or EDQUOT.
  kMaildirRefused,    // + why (the mailbox, relative to its root, would leave it).
  kMaildirError,      // Permissions, I/O: an operator can fix it; the cause goes to the log.
  // MX resolution (queue/delivery/mx.h), each + the domain (and what failed):
  kNullMx,           // RFC 7505: the domain accepts no mail. 556 5.1.10.
  kNoSuchDomain,     // NXDOMAIN for the domain. 550 5.1.2.
  kDnsTemporary,     // SERVFAIL, timeout, ... for the domain or its every MX host. 451 4.4.3.
  kMxLoop,           // The best MX is this relay (its names or addresses). 550 5.4.6.
  kNoMxAddress,      // No MX host (or the implicit MX) has an address of the allowed family.
  kHostUnresolved,   // A smarthost or LMTP host name with no address (for now). 451 4.4.3.
  // Shaping (queue/delivery/destinations.h):
  kSuspended,        // The destination is suspended (+ until when and why). 451 4.4.5.
  kBouncedByRule,    // A [[shaping.reply]] rule bounced the destination's queue (+ the reply).
  kWarmupCap,        // Every source of the pool is at its warm-up cap for the destination.
};

// The row of `reason`, its text followed by `more`.
[[nodiscard]] Status Make(Reason reason, std::string_view more = {});

}  // namespace relais::delivery
