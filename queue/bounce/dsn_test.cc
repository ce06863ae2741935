#include "queue/bounce/dsn.h"

#include <gtest/gtest.h>

namespace relais::bounce {
namespace {

BounceInput Sample() {
  BounceInput in;
  in.reporting_mta = "mx.example.net";
  in.original_id = "0123";
  in.sender = "alice@sender.example";
  in.arrival_date = "Thu, 26 Nov 2026 21:00:00 +0000";
  in.date = "Thu, 26 Nov 2026 22:00:00 +0000";
  in.boundary_seed = "0123";
  in.recipients = {{"bob@example.com", "550 5.7.1 recipient rejected by route"},
                   {"carol@example.com", "451 4.4.7 delivery time expired"}};
  in.original = "Received: x\r\nSubject: hi\r\n\r\nsecret body\r\n";
  return in;
}

TEST(DsnTest, IsAThreePartReport) {
  const std::string b = BuildBounce(Sample());
  EXPECT_TRUE(b.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"));
  EXPECT_NE(b.find("To: <alice@sender.example>\r\n"), std::string::npos);
  EXPECT_NE(b.find("Auto-Submitted: auto-replied\r\n"), std::string::npos);
  EXPECT_NE(b.find("Content-Type: multipart/report; report-type=delivery-status;"),
            std::string::npos);
  EXPECT_NE(b.find("Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; "
                   "mx.example.net\r\n"),
            std::string::npos);
  EXPECT_NE(b.find("Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\n"
                   "Status: 5.7.1\r\nDiagnostic-Code: smtp; 550 5.7.1 recipient rejected"),
            std::string::npos);
  EXPECT_NE(b.find("Status: 4.4.7\r\n"), std::string::npos);
  EXPECT_NE(b.find("Content-Type: text/rfc822-headers\r\n\r\nReceived: x\r\nSubject: hi\r\n"),
            std::string::npos);
  EXPECT_EQ(b.find("secret body"), std::string::npos);  // Headers only.
  EXPECT_TRUE(b.ends_with("\r\n--=_relais_0123--\r\n"));
  // Three parts, each opened by the boundary.
  size_t parts = 0;
  for (size_t pos = 0; (pos = b.find("\r\n--=_relais_0123\r\n", pos)) != std::string::npos; ++pos) {
    ++parts;
  }
  EXPECT_EQ(parts, 3u);
  // No bare LF anywhere: it goes out over SMTP as it is.
  for (size_t i = 0; i < b.size(); ++i) {
    if (b[i] == '\n') {
      ASSERT_GT(i, 0u);
      EXPECT_EQ(b[i - 1], '\r') << i;
    }
  }
}

TEST(DsnTest, StatusComesFromTheReply) {
  EXPECT_EQ(StatusOf("550 5.1.1 no such user"), "5.1.1");
  EXPECT_EQ(StatusOf("452 4.2.2 mailbox full"), "4.2.2");
  EXPECT_EQ(StatusOf("550 no enhanced code"), "5.0.0");
  EXPECT_EQ(StatusOf("451 oops"), "4.0.0");
  EXPECT_EQ(StatusOf(""), "5.0.0");
}

}  // namespace
}  // namespace relais::bounce
