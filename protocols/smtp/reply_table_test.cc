#include "protocols/smtp/reply_table.h"

#include <gtest/gtest.h>

namespace relais::smtp {
namespace {

// Every row: a valid code, an enhanced code of the same class (RFC 3463 3.1) where one is
// sent, text, and "closes" exactly for 221 and 421.
TEST(ReplyTableTest, EveryRowIsWellFormed) {
  for (int i = 0; i < static_cast<int>(Reply::kCount); ++i) {
    const Reply reply = static_cast<Reply>(i);
    const ReplyRow& row = Row(reply);
    SCOPED_TRACE(i);
    EXPECT_GE(row.code, 200);
    EXPECT_LT(row.code, 600);
    EXPECT_FALSE(row.text.empty());
    if (!row.enhanced.empty()) {
      EXPECT_EQ(row.enhanced[0], static_cast<char>('0' + row.code / 100));
      EXPECT_EQ(row.enhanced[1], '.');
    } else {
      // Only the greeting, the HELO answer, 354 and AUTH's 334 go without one.
      EXPECT_TRUE(reply == Reply::kGreeting || reply == Reply::kHeloOk ||
                  reply == Reply::kStartData || reply == Reply::kAuthChallenge);
    }
    EXPECT_EQ(row.closes, row.code == 221 || row.code == 421);
    EXPECT_EQ(IsError(reply), row.code >= 400);
    EXPECT_EQ(IsTransient(reply), row.code >= 400 && row.code < 500);
  }
}

TEST(ReplyTableTest, FormatsWithArgument) {
  std::string out;
  AppendReply(out, Reply::kQueued, "abc");
  AppendReply(out, Reply::kGreeting, "mx.test");
  AppendReply(out, Reply::kRelayDenied);
  EXPECT_EQ(out,
            "250 2.0.0 OK: queued as abc\r\n220 mx.test ESMTP Relais\r\n"
            "554 5.7.1 Relay access denied\r\n");
}

// An argument from outside (an SPF explanation from DNS) cannot add a line or a reply.
TEST(ReplyTableTest, ArgumentsStayOnOneLine) {
  std::string out;
  AppendReply(out, Reply::kSpfFail, "bad\r\n250 2.0.0 OK\x01\xC3\xA9");
  EXPECT_EQ(out, "550 5.7.23 SPF validation failed: bad??250 2.0.0 OK???\r\n");
  out.clear();
  AppendReply(out, Reply::kPolicyRejected, std::string(1000, 'x'));
  EXPECT_EQ(out.size(), std::string("550 5.7.1 \r\n").size() + 400);
}

TEST(ReplyTableTest, EhloOffersStartTlsAndAuthOnlyWhenAsked) {
  std::string plain;
  AppendEhloReply(plain, "mx.test", 100);
  EXPECT_EQ(plain.find("STARTTLS"), std::string::npos);
  EXPECT_EQ(plain.find("AUTH"), std::string::npos);
  std::string both;
  AppendEhloReply(both, "mx.test", 100, EhloOffers{.starttls = true, .auth = true});
  EXPECT_NE(both.find("250-STARTTLS\r\n"), std::string::npos);
  EXPECT_NE(both.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
  EXPECT_TRUE(both.ends_with("250 CHUNKING\r\n"));
}

TEST(ReplyTableTest, TlsAndAuthRows) {
  std::string out;
  AppendReply(out, Reply::kStartTlsReady);
  AppendReply(out, Reply::kTlsRequired);
  AppendReply(out, Reply::kAuthChallenge, "");
  AppendReply(out, Reply::kAuthNeedsTls);
  AppendReply(out, Reply::kAuthFailed);
  EXPECT_EQ(out,
            "220 2.0.0 Ready to start TLS\r\n"
            "530 5.7.0 Must issue a STARTTLS command first\r\n"
            "334 \r\n"
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
            "535 5.7.8 Authentication credentials invalid\r\n");
}

}  // namespace
}  // namespace relais::smtp
