#include "queue/bounce/dsn.h"

#include <gtest/gtest.h>

namespace relais::bounce {
namespace {

// A typed status as the delivery side hands it over.
delivery::Status S(uint16_t code, std::string enhanced, std::string detail) {
  const delivery::Outcome o = code / 100 == 2   ? delivery::Outcome::kDelivered
                              : code / 100 == 4 ? delivery::Outcome::kDeferred
                                                : delivery::Outcome::kFailed;
  return {o, code, std::move(enhanced), std::move(detail)};
}

ReportInput Sample() {
  ReportInput in;
  in.reporting_mta = "mx.example.net";
  in.original_id = "0123";
  in.sender = "alice@sender.example";
  in.arrival_date = "Thu, 26 Nov 2026 21:00:00 +0000";
  in.date = "Thu, 26 Nov 2026 22:00:00 +0000";
  in.boundary_seed = "0123";
  in.recipients = {{"bob@example.com", S(550, "5.7.1", "recipient rejected by route")},
                   {"carol@example.com", S(451, "4.4.7", "delivery time expired")}};  // Failed.
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
  in.recipients = {{"bob@example.com", S(451, "4.4.1", "no next hop"), Action::kDelayed, ""}};
  in.return_full = true;  // Only failure reports return the body.
  std::string b = BuildReport(in);
  EXPECT_NE(b.find("Subject: Delayed Mail (still being retried)\r\n"), std::string::npos);
  EXPECT_NE(b.find("Action: delayed\r\nStatus: 4.4.1\r\n"), std::string::npos);
  EXPECT_EQ(b.find("secret body"), std::string::npos);

  in.recipients = {{"bob@example.com", S(250, "2.0.0", "ok"), Action::kDelivered, ""},
                   {"carol@example.com", S(250, "2.0.0", "ok"), Action::kRelayed, ""}};
  b = BuildReport(in);
  EXPECT_NE(b.find("Subject: Successful Mail Delivery Report\r\n"), std::string::npos);
  EXPECT_NE(b.find("Action: delivered\r\nStatus: 2.0.0\r\n"), std::string::npos);
  EXPECT_NE(b.find("Action: relayed\r\nStatus: 2.0.0\r\n"), std::string::npos);
}

// RFC 3464 2.4 extension field: the bounce class of each failed or delayed recipient, none for
// a success (nor for a recipient with no class).
TEST(DsnTest, BounceClassField) {
  ReportInput in = Sample();
  in.recipients = {
      {"bob@example.com", S(550, "5.1.1", "user unknown"), Action::kFailed, "", "bad-mailbox"},
      {"carol@example.com", S(421, "4.7.0", "[TS01] complaints"), Action::kDelayed, "",
       "spam-related"},
      {"dave@example.com", S(550, "5.0.0", "no"), Action::kFailed, "", ""},
      {"erin@example.com", S(250, "2.0.0", "ok"), Action::kDelivered, "", "none"}};
  const std::string b = BuildReport(in);
  EXPECT_NE(b.find("Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\n"
                   "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
                   "Last-Attempt-Date: Thu, 26 Nov 2026 22:00:00 +0000\r\n"
                   "X-Relais-Bounce-Class: bad-mailbox\r\n"),
            std::string::npos)
      << b;
  EXPECT_NE(b.find("Action: delayed\r\nStatus: 4.7.0\r\nDiagnostic-Code: smtp; 421 4.7.0 [TS01] "
                   "complaints\r\nLast-Attempt-Date: Thu, 26 Nov 2026 22:00:00 +0000\r\n"
                   "X-Relais-Bounce-Class: spam-related\r\n"),
            std::string::npos)
      << b;
  size_t fields = 0;
  for (size_t at = b.find("X-Relais-Bounce-Class:"); at != std::string::npos;
       at = b.find("X-Relais-Bounce-Class:", at + 1)) {
    ++fields;
  }
  EXPECT_EQ(fields, 2u);  // Not for dave (no class) nor erin (delivered).
}

// The boundary as the report declares it, and how many lines open a part and close the whole.
struct Structure {
  std::string boundary;
  int parts = 0;
  int closings = 0;
};

Structure Parse(const std::string& report) {
  Structure s;
  const size_t at = report.find("boundary=\"");
  if (at == std::string::npos) {
    return s;
  }
  s.boundary = report.substr(at + 10, report.find('"', at + 10) - at - 10);
  for (size_t pos = 0; pos < report.size();) {
    size_t end = report.find("\r\n", pos);
    if (end == std::string::npos) {
      end = report.size();
    }
    const std::string_view line(report.data() + pos, end - pos);
    s.parts += line == "--" + s.boundary;
    s.closings += line == "--" + s.boundary + "--";
    pos = end + 2;
  }
  return s;
}

// A sender who guesses the boundary writes it into a message that will bounce, hoping for a
// part of his own (a text/html one, from MAILER-DAEMON) in the report: in the body (RET=FULL),
// in the header section (returned by default), in a reply text a next hop echoes, and as the
// closing delimiter. Each time the report has exactly its three parts.
TEST(DsnTest, ReturnedContentCannotAddParts) {
  const std::string predicted = "=_relais_0123";
  const std::string forged = "--" + predicted +
                             "\r\nContent-Type: text/html\r\n\r\n<a href=x>log in</a>\r\n--" +
                             predicted + "--\r\n";
  for (int variant = 0; variant < 4; ++variant) {
    ReportInput in = Sample();
    std::string original;
    if (variant == 0) {
      in.return_full = true;
      original = "Subject: hi\r\n\r\nbody\r\n" + forged;
    } else if (variant == 1) {
      original = "Subject: hi\r\nX-Folded: a\r\n" + forged + "\r\nbody\r\n";
    } else if (variant == 2) {
      in.recipients[0].status = S(550, "5.1.1", forged.substr(0, 20));
      original = "Subject: hi\r\n\r\nbody\r\n";
    } else {
      original = "Subject: hi\r\n\r\n--" + predicted + "--\r\n";
      in.return_full = true;
    }
    in.original = original;
    const std::string b = BuildReport(in);
    const Structure st = Parse(b);
    EXPECT_NE(st.boundary, predicted) << variant;
    EXPECT_TRUE(st.boundary.starts_with(predicted)) << variant;  // Derived, still random.
    EXPECT_EQ(st.parts, 3) << variant;
    EXPECT_EQ(st.closings, 1) << variant;
    EXPECT_EQ(b.find(st.boundary, b.find("Content-Type: text/plain")),
              b.find("--" + st.boundary, b.find("Content-Type: text/plain")) + 2);
  }
  // Without the boundary in the content, it is the random token as given.
  EXPECT_EQ(Parse(BuildReport(Sample())).boundary, predicted);
}

// RFC 6533: the report on an SMTPUTF8 message uses the global types and the utf-8 address
// type for a non-ASCII recipient.
TEST(DsnTest, SmtpUtf8MessagesGetGlobalReports) {
  ReportInput in = Sample();
  in.smtputf8 = true;
  in.recipients = {{"j\xC3\xB6rg@b\xC3\xBC\x63her.example", S(550, "5.1.1", "unknown")},
                   {"bob@example.com", S(550, "5.1.1", "unknown")}};
  in.original = "From: j\xC3\xB6rg@example\r\nSubject: \xC3\xA9t\xC3\xA9\r\n\r\nbody\r\n";
  std::string b = BuildReport(in);
  EXPECT_NE(b.find("Content-Type: multipart/report; report-type=global-delivery-status;"),
            std::string::npos);
  EXPECT_NE(b.find("Content-Type: message/global-delivery-status\r\n"), std::string::npos);
  EXPECT_EQ(b.find("message/delivery-status"), std::string::npos);
  EXPECT_NE(b.find("Final-Recipient: utf-8; j\xC3\xB6rg@b\xC3\xBC\x63her.example\r\n"),
            std::string::npos);
  EXPECT_NE(b.find("Final-Recipient: rfc822; bob@example.com\r\n"), std::string::npos);
  EXPECT_NE(b.find("Content-Type: message/global-headers\r\n\r\nFrom: j\xC3\xB6rg"),
            std::string::npos);
  EXPECT_EQ(b.find("text/rfc822-headers"), std::string::npos);
  in.return_full = true;
  b = BuildReport(in);
  EXPECT_NE(b.find("Content-Type: message/global\r\n\r\nFrom: j\xC3\xB6rg"), std::string::npos);
  EXPECT_EQ(b.find("message/rfc822"), std::string::npos);
  EXPECT_EQ(Parse(b).parts, 3);
}

// The Status field is the result's enhanced code and the Diagnostic-Code its text, as typed:
// nothing is read back out of reply text.
TEST(DsnTest, StatusComesFromTheTypedResult) {
  ReportInput in = Sample();
  in.recipients = {{"bob@example.com", S(550, "5.1.1", "no such user")},
                   {"carol@example.com", S(452, "4.2.2", "mailbox full"), Action::kFailed, ""},
                   {"dave@example.com", {delivery::Outcome::kFailed, 554, "", "no enhanced"}}};
  const std::string b = BuildReport(in);
  EXPECT_NE(b.find("Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"),
            std::string::npos);
  EXPECT_NE(b.find("Status: 4.2.2\r\nDiagnostic-Code: smtp; 452 4.2.2 mailbox full\r\n"),
            std::string::npos);
  EXPECT_NE(b.find("Final-Recipient: rfc822; dave@example.com\r\nAction: failed\r\n"
                   "Status: 5.0.0\r\n"),
            std::string::npos);
}

}  // namespace
}  // namespace relais::bounce
