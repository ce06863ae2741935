#include "queue/delivery/outbound.h"

#include <gtest/gtest.h>

namespace relais::delivery {
namespace {

smtp::RecipientReply Remote(smtp::RecipientStatus status, uint16_t code, std::string enhanced,
                            std::string reply) {
  smtp::RecipientReply r;
  r.status = status;
  r.code = code;
  r.enhanced = std::move(enhanced);
  r.reply = std::move(reply);
  return r;
}

TEST(OutboundTest, ANextHopsReplyKeepsItsParsedCodesAndItsTextAsDetail) {
  const Status s = FromReply(Remote(smtp::RecipientStatus::kFailed, 550, "5.1.1",
                                    "550 5.1.1 no such user (in reply to RCPT TO at h:25)"));
  EXPECT_EQ(s.outcome, Outcome::kFailed);
  EXPECT_EQ(s.code, 550);
  EXPECT_EQ(s.enhanced, "5.1.1");
  EXPECT_EQ(s.detail, "no such user (in reply to RCPT TO at h:25)");
  EXPECT_EQ(s.Text(), "550 5.1.1 no such user (in reply to RCPT TO at h:25)");
  EXPECT_EQ(FromReply(Remote(smtp::RecipientStatus::kDelivered, 250, "2.0.0", "250 2.0.0")).outcome,
            Outcome::kDelivered);
  EXPECT_EQ(FromReply(Remote(smtp::RecipientStatus::kDeferred, 451, "4.4.2", "451 4.4.2 x")).detail,
            "x");
}

TEST(OutboundTest, OurOwnDeferralsTravelAsOutboundResultsAndBack) {
  const smtp::RecipientReply r = ToReply(Make(Reason::kStopping));
  EXPECT_EQ(r.status, smtp::RecipientStatus::kDeferred);
  EXPECT_EQ(r.reply, "451 4.3.2 delivery stopped: the daemon is shutting down");
  const Status back = FromReply(r);
  EXPECT_EQ(back.Text(), r.reply);
  EXPECT_EQ(back.enhanced, "4.3.2");
}

}  // namespace
}  // namespace relais::delivery
