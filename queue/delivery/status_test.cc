#include "queue/delivery/status.h"

#include <gtest/gtest.h>

namespace relais::delivery {
namespace {

// The texts operators, log readers and senders (Diagnostic-Code) see, one per row: the table
// is the only place they are written.
TEST(StatusTableTest, EveryReasonHasItsReply) {
  const std::pair<Reason, std::string_view> rows[] = {
      {Reason::kExpired, "550 5.4.7 delivery time expired"},
      {Reason::kReturned, "550 5.0.0 returned to sender by the postmaster"},
      {Reason::kSegmentGone, "451 4.3.0 spool: the message's segment is gone"},
      {Reason::kSpoolUnreadable, "451 4.3.0 spool: "},
      {Reason::kNoRoute, "451 4.4.0 no route for the recipient domain"},
      {Reason::kRejectedByRoute, "550 5.7.1 recipient rejected by route"},
      {Reason::kUnsafeDomain, "550 5.1.2 domain not allowed in a mailbox path"},
      {Reason::kUnsafeMailbox, "550 5.1.3 mailbox name not allowed"},
      {Reason::kBounceNotQueued, "451 4.3.1 bounce could not be queued; was: "},
      {Reason::kStopping, "451 4.3.2 delivery stopped: the daemon is shutting down"},
      {Reason::kNoNextHop, "451 4.4.1 no next hop of the "},
      {Reason::kTlsFailed, "451 4.7.5 TLS required by the route failed "},
      {Reason::kTlsNotOffered, "451 4.7.10 TLS required by the route: "},
      {Reason::kMaildirDelivered, "250 2.0.0 delivered to maildir as "},
      {Reason::kMaildirFull, "452 4.2.2 maildir: mailbox full or out of space"},
      {Reason::kMaildirRefused, "550 5.1.3 maildir: refused, "},
      {Reason::kMaildirError, "451 4.3.0 maildir: the mailbox cannot be written now"},
  };
  for (const auto& [reason, text] : rows) {
    const Status s = Make(reason);
    EXPECT_EQ(s.Text(), text);
    // The outcome follows the code's class.
    const Outcome expected = s.code / 100 == 2   ? Outcome::kDelivered
                             : s.code / 100 == 4 ? Outcome::kDeferred
                                                 : Outcome::kFailed;
    EXPECT_EQ(s.outcome, expected) << text;
    EXPECT_EQ(s.enhanced[0], static_cast<char>('0' + s.code / 100)) << text;
  }
}

TEST(StatusTableTest, MoreIsAppendedToTheDetail) {
  const Status s = Make(Reason::kExpired, "; last reply: 451 4.4.1 busy");
  EXPECT_EQ(s.code, 550);
  EXPECT_EQ(s.enhanced, "5.4.7");
  EXPECT_EQ(s.detail, "delivery time expired; last reply: 451 4.4.1 busy");
  EXPECT_EQ(s.Text(), "550 5.4.7 delivery time expired; last reply: 451 4.4.1 busy");
}

TEST(StatusTableTest, TextWithoutDetailOrCode) {
  EXPECT_EQ((Status{Outcome::kDelivered, 250, "2.0.0", ""}).Text(), "250 2.0.0");
  EXPECT_EQ((Status{Outcome::kDeferred, 0, "", "free text"}).Text(), "free text");
}

TEST(RouteTest, FollowsTheConfigTypeAndNamesTheMetricLabel) {
  config::Route smarthost;
  smarthost.type = config::RouteType::kSmarthost;
  config::Route lmtp;
  lmtp.type = config::RouteType::kLmtp;
  EXPECT_EQ(RouteOf(&smarthost), Route::kSmarthost);
  EXPECT_EQ(RouteOf(&lmtp), Route::kLmtp);
  EXPECT_EQ(RouteOf(nullptr), Route::kNone);
  EXPECT_EQ(RouteName(Route::kMaildir), "maildir");
  EXPECT_EQ(RouteName(Route::kSmarthost), "smarthost");
  EXPECT_EQ(RouteName(Route::kLmtp), "lmtp");
  EXPECT_EQ(RouteName(Route::kReject), "reject");
  EXPECT_EQ(RouteName(Route::kNone), "none");
  EXPECT_EQ(OutcomeName(Outcome::kDeferred), "deferred");
}

}  // namespace
}  // namespace relais::delivery
