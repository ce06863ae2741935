// queue/delivery/bounce_class_test.cc — tests of bounce_class.h: real receivers' replies, the
// enhanced codes, Relais's own statuses, operator rules and their errors.
#include "queue/delivery/bounce_class.h"

#include <gtest/gtest.h>

#include <string>

namespace relais::delivery {
namespace {

using C = BounceClass;

std::unique_ptr<BounceClassifier> Shipped() {
  auto c = BounceClassifier::Create("");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

Status Reply(uint16_t code, std::string enhanced, std::string detail) {
  return Status{code / 100 == 4 ? Outcome::kDeferred : Outcome::kFailed, code, std::move(enhanced),
                std::move(detail)};
}

struct Case {
  Status status;
  BounceClass want;
};

void ExpectClasses(const BounceClassifier& c, const std::vector<Case>& cases) {
  for (const Case& k : cases) {
    EXPECT_EQ(BounceClassName(c.Classify(k.status)), BounceClassName(k.want)) << k.status.Text();
  }
}

// Replies as the big receivers and common servers send them (their texts, their codes).
TEST(BounceClassTest, RealRepliesFallInTheirClass) {
  const auto c = Shipped();
  ASSERT_NE(c, nullptr);
  ExpectClasses(
      *c,
      {
          // Gmail.
          {Reply(550, "5.1.1",
                 "The email account that you tried to reach does not exist. Please try "
                 "double-checking the recipient's email address for typos or unnecessary spaces. "
                 "https://support.google.com/mail/?p=NoSuchUser"),
           C::kBadMailbox},
          {Reply(550, "5.2.1",
                 "The email account that you tried to reach is disabled. "
                 "https://support.google.com/mail/?p=DisabledUser"),
           C::kInactiveMailbox},
          {Reply(452, "4.2.2",
                 "The email account that you tried to reach is over quota. Please direct the "
                 "recipient to https://support.google.com/mail/?p=OverQuotaTemp"),
           C::kQuotaIssues},
          {Reply(550, "5.7.1",
                 "[192.0.2.10] Our system has detected that this message is likely unsolicited "
                 "mail. To reduce the amount of spam sent to Gmail, this message has been "
                 "blocked."),
           C::kSpamRelated},
          {Reply(421, "4.7.28",
                 "[192.0.2.10] Our system has detected an unusual rate of unsolicited mail "
                 "originating from your IP address."),
           C::kSpamRelated},
          {Reply(550, "5.7.26",
                 "Unauthenticated email from example.com is not accepted due to domain's DMARC "
                 "policy."),
           C::kPolicyRelated},
          {Reply(550, "5.7.26",
                 "This mail has been blocked because the sender is unauthenticated. Gmail "
                 "requires all senders to authenticate with either SPF or DKIM."),
           C::kPolicyRelated},
          {Reply(552, "5.7.0",
                 "This message was blocked because its content presents a potential security "
                 "issue."),
           C::kContentRelated},
          {Reply(550, "5.7.25",
                 "[192.0.2.10] The IP address sending this message does not have a PTR record "
                 "setup, or the corresponding forward DNS entry does not point to the sending "
                 "IP."),
           C::kPolicyRelated},
          // Microsoft.
          {Reply(550, "5.7.1",
                 "Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your "
                 "Internet service provider since part of their network is on our block list "
                 "(S3150). You can also refer your provider to "
                 "http://mail.live.com/mail/troubleshooting.aspx#errors."),
           C::kSpamRelated},
          {Reply(550, "5.7.1",
                 "Service unavailable, Client host [192.0.2.10] blocked using Spamhaus. To "
                 "request removal from this list see https://www.spamhaus.org/query/ip/"
                 "192.0.2.10"),
           C::kSpamRelated},
          {Reply(550, "5.4.1",
                 "Recipient address rejected: Access denied. AS(201806281) "
                 "[DM6NAM11FT012.eop-nam11.prod.protection.outlook.com]"),
           C::kBadMailbox},
          {Reply(550, "5.5.0", "Requested action not taken: mailbox unavailable"), C::kBadMailbox},
          {Reply(552, "5.2.2", "Mailbox size limit exceeded"), C::kQuotaIssues},
          // Yahoo and AOL.
          {Reply(421, "4.7.0",
                 "[TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume "
                 "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"),
           C::kSpamRelated},
          {Reply(421, "4.7.0",
                 "[TS01] Messages from 192.0.2.10 temporarily deferred due to user complaints"),
           C::kSpamRelated},
          {Reply(554, "5.7.9",
                 "Message not accepted for policy reasons.  See "
                 "https://postmaster.yahooinc.com/error-codes"),
           C::kPolicyRelated},
          {Reply(554, "",
                 "delivery error: dd This user doesn't have a yahoo.com account "
                 "(bob@yahoo.com) [0] - mta1234.mail.bf1.yahoo.com"),
           C::kBadMailbox},
          {Reply(554, "",
                 "delivery error: dd Sorry your message to bob@aol.com cannot be delivered. This "
                 "mailbox is disabled (554.30). - mta1.mail.aol.com"),
           C::kInactiveMailbox},
          // Postfix, Exim, Sendmail and the like.
          {Reply(550, "5.1.1",
                 "<bob@example.org>: Recipient address rejected: User unknown in virtual mailbox "
                 "table"),
           C::kBadMailbox},
          {Reply(550, "", "unrouteable address"), C::kBadMailbox},
          {Reply(550, "5.1.1", "<bob@example.org>... User unknown"), C::kBadMailbox},
          {Reply(554, "5.7.1", "<bob@example.org>: Relay access denied"), C::kPolicyRelated},
          {Reply(450, "4.2.0",
                 "<bob@example.org>: Recipient address rejected: Greylisted, see "
                 "http://postgrey.schweikert.ch/help/example.org.html"),
           C::kPolicyRelated},
          {Reply(450, "4.1.2",
                 "<bob@nowhere.example>: Recipient address rejected: Domain not "
                 "found"),
           C::kBadDomain},
          {Reply(553, "5.7.1",
                 "<alice@sender.example>: Sender address rejected: not owned by "
                 "user bob"),
           C::kPolicyRelated},
          {Reply(554, "5.7.1",
                 "Service unavailable; Client host [192.0.2.10] blocked using "
                 "zen.spamhaus.org"),
           C::kSpamRelated},
          {Reply(554, "5.7.1", "Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.10"),
           C::kSpamRelated},
          {Reply(552, "5.3.4", "Message size exceeds fixed limit"), C::kContentRelated},
          {Reply(550, "5.7.1", "Virus detected: Eicar-Signature"), C::kContentRelated},
          {Reply(421, "4.7.0", "Too many connections from your IP, rate limit exceeded"),
           C::kPolicyRelated},
          {Reply(451, "4.7.1", "Sending rate limit exceeded, slow down"), C::kPolicyRelated},
          {Reply(550, "5.7.1", "Email rejected per SPF policy: 192.0.2.10 not allowed"),
           C::kPolicyRelated},
          {Reply(550, "", "Your IP 192.0.2.10 is listed at bl.example (blacklist)"),
           C::kSpamRelated},
          {Reply(500, "5.5.1", "Unrecognized command"), C::kProtocolErrors},
          {Reply(451, "4.4.2", "connection to mx.example.org given up"), C::kNoAnswerFromHost},
          {Reply(421, "4.4.1", "Connection timed out"), C::kNoAnswerFromHost},
          {Reply(554, "5.6.3", "conversion required but not supported"), C::kContentRelated},
          {Reply(550, "5.4.7", "Delivery time expired"), C::kMessageExpired},
          {Reply(554, "5.4.6", "Routing loop detected"), C::kRoutingErrors},
          {Reply(556, "5.1.10", "Recipient address has null MX"), C::kBadDomain},
          {Reply(550, "5.2.2", "mailbox full"), C::kQuotaIssues},
          {Reply(451, "4.3.0", "Temporary local problem, please try again later"), C::kOther},
          {Reply(550, "5.0.0", "Something went wrong"), C::kOther},
          {Reply(550, "", "no"), C::kOther},
      });
}

// The enhanced codes alone, when the text says nothing a rule knows; whole numbers only.
TEST(BounceClassTest, EnhancedCodesAlone) {
  const auto c = Shipped();
  ASSERT_NE(c, nullptr);
  ExpectClasses(*c, {
                        {Reply(550, "5.1.1", "x"), C::kBadMailbox},
                        {Reply(550, "5.1.10", "x"), C::kBadDomain},  // Not 5.1.1.
                        {Reply(550, "5.1.2", "x"), C::kBadDomain},
                        {Reply(550, "5.1.6", "x"), C::kInactiveMailbox},
                        {Reply(550, "5.2.1", "x"), C::kInactiveMailbox},
                        {Reply(452, "4.2.2", "x"), C::kQuotaIssues},
                        {Reply(552, "5.2.2", "x"), C::kQuotaIssues},
                        {Reply(550, "5.7.1", "x"), C::kPolicyRelated},
                        {Reply(421, "4.7.0", "x"), C::kPolicyRelated},
                        {Reply(550, "5.7.28", "x"), C::kSpamRelated},
                        {Reply(554, "5.6.0", "x"), C::kContentRelated},
                        {Reply(550, "5.4.4", "x"), C::kRoutingErrors},
                        {Reply(451, "4.4.1", "x"), C::kNoAnswerFromHost},
                        {Reply(451, "4.4.2", "x"), C::kNoAnswerFromHost},
                        {Reply(550, "5.4.7", "x"), C::kMessageExpired},
                        {Reply(501, "5.5.4", "x"), C::kProtocolErrors},
                        {Reply(550, "5.1.100", "x"), C::kBadMailbox},  // 5.1.x.
                        {Reply(550, "5.1.1000", "x"), C::kOther},      // Not a code.
                        {Reply(550, "5.0.0", "x"), C::kOther},
                        {Reply(550, "", "x"), C::kOther},
                    });
  // A delivery is never a bounce, whatever its text says.
  EXPECT_EQ(c->Classify(Status{Outcome::kDelivered, 250, "2.0.0", "user unknown"}), C::kNone);
}

// Relais's own statuses have a fixed class, whatever the reply they quote.
TEST(BounceClassTest, RelaisOwnStatuses) {
  const auto c = Shipped();
  ASSERT_NE(c, nullptr);
  ExpectClasses(
      *c,
      {
          {Make(Reason::kExpired, "; last reply: 550 5.1.1 user unknown"), C::kMessageExpired},
          {Make(Reason::kExpired, "; last reply: 421 4.7.0 blocked using Spamhaus"),
           C::kMessageExpired},
          {Make(Reason::kNoNextHop, "smarthost route: 421 4.7.0 [TS01] user complaints"),
           C::kNoAnswerFromHost},
          {Make(Reason::kDnsTemporary, "example.org"), C::kRoutingErrors},
          {Make(Reason::kHostUnresolved, "smart.example"), C::kRoutingErrors},
          {Make(Reason::kNoMxAddress, "example.org"), C::kRoutingErrors},
          {Make(Reason::kMxLoop, "example.org"), C::kRoutingErrors},
          {Make(Reason::kNoRoute), C::kRoutingErrors},
          {Make(Reason::kNullMx, "example.org"), C::kBadDomain},
          {Make(Reason::kNoSuchDomain, "nowhere.example"), C::kBadDomain},
          {Make(Reason::kTlsFailed, "with mx.example.org: certificate verify failed"),
           C::kPolicyRelated},
          {Make(Reason::kTlsNotOffered, "mx.example.org offers no STARTTLS"), C::kPolicyRelated},
          {Make(Reason::kSuspended, "until 12:00 (too many spam complaints)"), C::kPolicyRelated},
          {Make(Reason::kWarmupCap, "gmail.com"), C::kPolicyRelated},
          {Make(Reason::kRejectedByRoute), C::kPolicyRelated},
          {Make(Reason::kMaildirFull), C::kQuotaIssues},
          {Make(Reason::kMaildirRefused, "path escapes"), C::kBadMailbox},
          {Make(Reason::kUnsafeMailbox), C::kBadMailbox},
          {Make(Reason::kUnsafeDomain), C::kBadDomain},
          {Make(Reason::kMaildirError), C::kOther},
          {Make(Reason::kStopping), C::kOther},
          {Make(Reason::kSegmentGone), C::kOther},
          {Make(Reason::kReturned, "; last reply: 550 5.1.1 user unknown"), C::kOther},
          {Make(Reason::kSpoolUnreadable, "EIO; was: 550 5.1.1 user unknown"), C::kOther},
          // A [[shaping.reply]] bounce is classified by the reply it quotes.
          {Make(Reason::kBouncedByRule, "550 5.7.1 blocked using Spamhaus"), C::kSpamRelated},
      });
}

TEST(BounceClassTest, OperatorRulesComeFirst) {
  auto c = BounceClassifier::Create(
      "# Our receivers' own words.\n"
      "\n"
      "spam-related - listed at\n"
      "  quota-issues   4.2.1   \r\n"
      "bad-mailbox 5.7.1 no such (user|person) here\n"
      "routing-errors x.4.1\n"
      "OTHER 5.1.1\n");
  ASSERT_TRUE(c.ok()) << c.status();
  const size_t shipped = Shipped()->rules();
  EXPECT_EQ((*c)->rules(), shipped + 5);
  ExpectClasses(**c, {
                         {Reply(550, "", "Your IP is listed at dnsbl.example"), C::kSpamRelated},
                         {Reply(450, "4.2.1", "too quickly"), C::kQuotaIssues},
                         {Reply(550, "5.2.1", "x"), C::kInactiveMailbox},  // Shipped: 5 not 4.
                         {Reply(550, "5.7.1", "No such person here"), C::kBadMailbox},
                         {Reply(550, "5.7.1", "not allowed"), C::kPolicyRelated},
                         {Reply(451, "4.4.1", "timeout"), C::kRoutingErrors},
                         // Even before Relais's own: the operator said so.
                         {Make(Reason::kNoNextHop, "smarthost route"), C::kRoutingErrors},
                         {Reply(550, "5.1.1", "user unknown"), C::kOther},
                         {Reply(550, "5.1.10", "x"), C::kBadDomain},
                     });
  // The patterns are case-insensitive, and a pattern is searched, not anchored.
  EXPECT_EQ((*c)->Classify(Reply(550, "", "... LISTED AT x")), C::kSpamRelated);
}

TEST(BounceClassTest, BadRuleLinesAreRefusedWithTheirLine) {
  const struct {
    std::string_view text;
    std::string_view error;  // Part of the message.
  } cases[] = {
      {"bad-mailbox 5.1.1\nmailbox-gone 5.1.1\n", "line 2: unknown class \"mailbox-gone\""},
      {"none 5.1.1\n", "line 1: unknown class \"none\""},
      {"\n\n# c\nbad-mailbox 6.1.1\n", "line 4: bad enhanced-code prefix \"6.1.1\""},
      {"bad-mailbox 5.1.1.1\n", "line 1: bad enhanced-code prefix"},
      {"bad-mailbox 5.a\n", "line 1: bad enhanced-code prefix"},
      {"bad-mailbox 5.1000\n", "line 1: bad enhanced-code prefix"},
      {"bad-mailbox 5..1\n", "line 1: bad enhanced-code prefix"},
      {"bad-mailbox .\n", "line 1: bad enhanced-code prefix"},
      {"quota-issues - (over quota\n", "line 1: bad pattern \"(over quota\""},
      {"quota-issues 4.2.2\nspam-related - a{2000000}\n", "line 2: bad pattern"},
      {"quota-issues -\n", "line 1: a rule needs an enhanced-code prefix, a pattern or both"},
      {"quota-issues\n", "line 1: an enhanced-code prefix"},
  };
  for (const auto& k : cases) {
    auto c = BounceClassifier::Create(k.text);
    ASSERT_FALSE(c.ok()) << k.text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(c.status().message()).find(k.error), std::string::npos)
        << c.status().message();
  }
}

// RE2 is linear: a hostile reply of 100 KB against every rule finishes (no timing asserted).
TEST(BounceClassTest, AHugeHostileTextIsClassified) {
  auto c = BounceClassifier::Create("spam-related - (a+)+b\nbad-mailbox - (x|xx)*y$\n");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string as(100 * 1024, 'a');
  EXPECT_EQ((*c)->Classify(Reply(550, "5.0.0", as)), C::kOther);
  EXPECT_EQ((*c)->Classify(Reply(550, "5.0.0", std::string(100 * 1024, 'x'))), C::kOther);
  EXPECT_EQ((*c)->Classify(Reply(550, "5.0.0", as + "b")), C::kSpamRelated);
  std::string mixed;
  while (mixed.size() < 100 * 1024) {
    mixed += "user mailbox spam over block listed ";
  }
  EXPECT_EQ((*c)->Classify(Reply(451, "4.0.0", mixed)), C::kSpamRelated);  // "spam".
}

TEST(BounceClassTest, EveryClassHasItsName) {
  EXPECT_EQ(BounceClassName(C::kNone), "none");
  EXPECT_EQ(BounceClassName(C::kBadMailbox), "bad-mailbox");
  EXPECT_EQ(BounceClassName(C::kNoAnswerFromHost), "no-answer-from-host");
  EXPECT_EQ(BounceClassName(C::kOther), "other");
  EXPECT_EQ(kBounceClassNames.size(), static_cast<size_t>(C::kOther) + 1);
}

}  // namespace
}  // namespace relais::delivery
