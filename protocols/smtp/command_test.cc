#include "protocols/smtp/command.h"

#include <gtest/gtest.h>

namespace relais::smtp {
namespace {

TEST(CommandTest, RecognisesVerbsCaseInsensitively) {
  EXPECT_EQ(ParseCommand("ehlo client.example").verb, Verb::kEhlo);
  EXPECT_EQ(ParseCommand("EHLO client.example").argument, "client.example");
  EXPECT_EQ(ParseCommand("HeLo x").verb, Verb::kHelo);
  EXPECT_EQ(ParseCommand("DATA").verb, Verb::kData);
  EXPECT_EQ(ParseCommand("bdat 10 LAST").argument, "10 LAST");
  EXPECT_EQ(ParseCommand("RSET").verb, Verb::kRset);
  EXPECT_EQ(ParseCommand("NOOP anything").verb, Verb::kNoop);
  EXPECT_EQ(ParseCommand("QUIT").verb, Verb::kQuit);
  EXPECT_EQ(ParseCommand("VRFY bob").verb, Verb::kVrfy);
  EXPECT_EQ(ParseCommand("HELP").verb, Verb::kHelp);
  EXPECT_EQ(ParseCommand("STARTTLS").verb, Verb::kStartTls);
  EXPECT_EQ(ParseCommand("auth PLAIN AGFAYg==").verb, Verb::kAuth);
  EXPECT_EQ(ParseCommand("auth PLAIN AGFAYg==").argument, "PLAIN AGFAYg==");
  EXPECT_EQ(ParseCommand("EXPN list").verb, Verb::kNotImplemented);
  EXPECT_EQ(ParseCommand("DATAX").verb, Verb::kUnknown);
  EXPECT_EQ(ParseCommand("").verb, Verb::kUnknown);
}

TEST(CommandTest, MailAndRcptNeedTheirPrefix) {
  Command m = ParseCommand("MAIL FROM:<a@b.example> SIZE=5");
  EXPECT_EQ(m.verb, Verb::kMail);
  EXPECT_TRUE(m.syntax_ok);
  EXPECT_EQ(m.argument, "<a@b.example> SIZE=5");
  EXPECT_EQ(ParseCommand("mail from: <a@b.example>").argument, "<a@b.example>");
  EXPECT_FALSE(ParseCommand("MAIL <a@b.example>").syntax_ok);
  EXPECT_TRUE(ParseCommand("RCPT TO:<a@b.example>").syntax_ok);
  EXPECT_FALSE(ParseCommand("RCPT FROM:<a@b.example>").syntax_ok);
}

TEST(CommandTest, SplitsEsmtpParameters) {
  std::string_view params = " SIZE=100  BODY=8BITMIME SMTPUTF8";
  Parameter p;
  bool malformed = false;
  ASSERT_TRUE(NextParameter(params, p, malformed));
  EXPECT_EQ(p.keyword, "SIZE");
  EXPECT_EQ(p.value, "100");
  ASSERT_TRUE(NextParameter(params, p, malformed));
  EXPECT_EQ(p.keyword, "BODY");
  ASSERT_TRUE(NextParameter(params, p, malformed));
  EXPECT_EQ(p.keyword, "SMTPUTF8");
  EXPECT_FALSE(p.has_value);
  EXPECT_FALSE(NextParameter(params, p, malformed));
  EXPECT_FALSE(malformed);
  for (std::string_view bad : {"=5", "SIZE=", "SI_ZE=1", "-X"}) {
    std::string_view rest = bad;
    EXPECT_FALSE(NextParameter(rest, p, malformed)) << bad;
    EXPECT_TRUE(malformed) << bad;
  }
}

}  // namespace
}  // namespace relais::smtp
