// queue/delivery/status.cc — the delivery side's one status table (see status.h).
#include "queue/delivery/status.h"

#include "core/base/check.h"

namespace relais::delivery {
namespace {

struct Row {
  Reason reason;
  Outcome outcome;
  uint16_t code;
  std::string_view enhanced;
  std::string_view text;  // `more` is appended to it.
};

using O = Outcome;
using R = Reason;

// RFC 5321 4.2 for the codes, RFC 3463 for the enhanced codes.
constexpr Row kRows[] = {
    {R::kExpired, O::kFailed, 550, "5.4.7", "delivery time expired"},
    {R::kReturned, O::kFailed, 550, "5.0.0", "returned to sender by the postmaster"},
    {R::kSegmentGone, O::kDeferred, 451, "4.3.0", "spool: the message's segment is gone"},
    {R::kSpoolUnreadable, O::kDeferred, 451, "4.3.0", "spool: "},
    {R::kNoRoute, O::kDeferred, 451, "4.4.0", "no route for the recipient domain"},
    {R::kRejectedByRoute, O::kFailed, 550, "5.7.1", "recipient rejected by route"},
    {R::kUnsafeDomain, O::kFailed, 550, "5.1.2", "domain not allowed in a mailbox path"},
    {R::kUnsafeMailbox, O::kFailed, 550, "5.1.3", "mailbox name not allowed"},
    {R::kBounceNotQueued, O::kDeferred, 451, "4.3.1", "bounce could not be queued; was: "},
    {R::kStopping, O::kDeferred, 451, "4.3.2", "delivery stopped: the daemon is shutting down"},
    {R::kNoNextHop, O::kDeferred, 451, "4.4.1", "no next hop of the "},
    // RFC 3463 X.7.5 cryptographic failure; RFC 5248 X.7.10 encryption needed. Deferred: the
    // next hop may be fixed, and the message is never sent in the clear meanwhile.
    {R::kTlsFailed, O::kDeferred, 451, "4.7.5", "TLS required by the route failed "},
    {R::kTlsNotOffered, O::kDeferred, 451, "4.7.10", "TLS required by the route: "},
    {R::kMaildirDelivered, O::kDelivered, 250, "2.0.0", "delivered to maildir as "},
    {R::kMaildirFull, O::kDeferred, 452, "4.2.2", "maildir: mailbox full or out of space"},
    {R::kMaildirRefused, O::kFailed, 550, "5.1.3", "maildir: refused, "},
    {R::kMaildirError, O::kDeferred, 451, "4.3.0", "maildir: the mailbox cannot be written now"},
    {R::kNullMx, O::kFailed, 556, "5.1.10", "the domain accepts no mail (null MX): "},
    {R::kNoSuchDomain, O::kFailed, 550, "5.1.2", "the domain does not exist: "},
    {R::kDnsTemporary, O::kDeferred, 451, "4.4.3", "DNS lookup failed for now: "},
    {R::kMxLoop, O::kFailed, 550, "5.4.6", "mail for the domain loops back to this relay: "},
    {R::kNoMxAddress, O::kFailed, 550, "5.4.4", "no mail exchanger of the domain has an address: "},
    {R::kHostUnresolved, O::kDeferred, 451, "4.4.3", "the next hop's name has no address now: "},
    {R::kSuspended, O::kDeferred, 451, "4.4.5", "the destination is suspended: "},
    {R::kBouncedByRule, O::kFailed, 550, "5.0.0", "the destination's queue was bounced: "},
    {R::kWarmupCap, O::kDeferred, 451, "4.4.5", "every source is at its warm-up cap for "},
};

constexpr bool InOrder() {
  for (size_t i = 0; i < std::size(kRows); ++i) {
    if (static_cast<size_t>(kRows[i].reason) != i) {
      return false;
    }
  }
  return true;
}
static_assert(InOrder(), "one row per Reason, in the enum's order");

}  // namespace

Status Make(Reason reason, std::string_view more) {
  const auto index = static_cast<size_t>(reason);
  RELAIS_CHECK(index < std::size(kRows));
  const Row& row = kRows[index];
  return Status{row.outcome, row.code, std::string(row.enhanced), base::StrCat(row.text, more)};
}

}  // namespace relais::delivery
