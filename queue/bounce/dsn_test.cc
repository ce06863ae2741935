#include "queue/bounce/dsn.h"

#include <gtest/gtest.h>

namespace relais::bounce {
namespace {

ReportInput Sample() {
  ReportInput in;
  in.reporting_mta = "mx.example.net";
  in.original_id = "0123";
  in.sender = "alice@sender.example";
  in.arrival_date = "Thu, 26 Nov 2026 21:00:00 +0000";
  in.date = "Thu, 26 Nov 2026 22:00:00 +0000";
  in.boundary_seed = "0123";
  in.recipients = {{"bob@example.com", "550 5.7.1 recipient rejected by route"},
                   {"carol@example.com", "451 4.4.7 delivery time expired"}};  // Failed.
  in.original = "Received: x\r\nSubject: hi\r\n\r\nsecret body\r\n";
  return in;
}

TEST(DsnTest, IsAThreePartReport) {
  const std::string b = BuildReport(Sample());
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

TEST(DsnTest, FullReturnAndDsnFields) {
  ReportInput in = Sample();
  in.return_full = true;
  in.envid = "QQ+2B1";
  in.recipients[0].orcpt = "rfc822;Bob+2Bx@example.com";
  const std::string b = BuildReport(in);
  EXPECT_NE(b.find("Content-Type: message/rfc822\r\n\r\nReceived: x\r\nSubject: hi\r\n\r\n"
                   "secret body\r\n"),
            std::string::npos);
  EXPECT_NE(b.find("Original-Envelope-Id: QQ+1\r\n"), std::string::npos);
  EXPECT_NE(b.find("Original-Recipient: rfc822; Bob+x@example.com\r\nFinal-Recipient: rfc822; "
                   "bob@example.com\r\n"),
            std::string::npos);
}

TEST(DsnTest, DelayAndSuccessReports) {
  ReportInput in = Sample();
  in.recipients = {{"bob@example.com", "451 4.4.1 no next hop", Action::kDelayed, ""}};
  in.return_full = true;  // Only failure reports return the body.
  std::string b = BuildReport(in);
  EXPECT_NE(b.find("Subject: Delayed Mail (still being retried)\r\n"), std::string::npos);
  EXPECT_NE(b.find("Action: delayed\r\nStatus: 4.4.1\r\n"), std::string::npos);
  EXPECT_EQ(b.find("secret body"), std::string::npos);

  in.recipients = {{"bob@example.com", "250 2.0.0 ok", Action::kDelivered, ""},
                   {"carol@example.com", "250 2.0.0 ok", Action::kRelayed, ""}};
  b = BuildReport(in);
  EXPECT_NE(b.find("Subject: Successful Mail Delivery Report\r\n"), std::string::npos);
  EXPECT_NE(b.find("Action: delivered\r\nStatus: 2.0.0\r\n"), std::string::npos);
  EXPECT_NE(b.find("Action: relayed\r\nStatus: 2.0.0\r\n"), std::string::npos);
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
