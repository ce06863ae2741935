#include "protocols/smtp/address.h"

#include <gtest/gtest.h>

#include <string>

namespace relais::smtp {
namespace {

ParsedPath Fwd(std::string_view s, bool utf8 = false) {
  return ParsePath(s, PathKind::kForwardPath, utf8);
}
ParsedPath Rev(std::string_view s, bool utf8 = false) {
  return ParsePath(s, PathKind::kReversePath, utf8);
}

TEST(AddressTest, AcceptsOrdinaryMailboxes) {
  auto p = Fwd("<user.name+tag@example.com> SIZE=10");
  ASSERT_EQ(p.error, PathError::kNone);
  EXPECT_EQ(p.mailbox, "user.name+tag@example.com");
  EXPECT_EQ(p.local_part, "user.name+tag");
  EXPECT_EQ(p.domain, "example.com");
  EXPECT_EQ(p.rest, " SIZE=10");
}

TEST(AddressTest, NullSenderOnlyForReversePath) {
  EXPECT_EQ(Rev("<>").error, PathError::kNone);
  EXPECT_EQ(Rev("<>").mailbox, "");
  EXPECT_EQ(Fwd("<>").error, PathError::kSyntax);
}

TEST(AddressTest, PostmasterWithoutDomainOnlyForForwardPath) {
  auto p = Fwd("<PostMaster>");
  EXPECT_EQ(p.error, PathError::kNone);
  EXPECT_EQ(p.domain, "");
  EXPECT_EQ(Rev("<postmaster>").error, PathError::kSyntax);
  EXPECT_EQ(Fwd("<postmasters>").error, PathError::kSyntax);
}

TEST(AddressTest, QuotedLocalParts) {
  auto p = Fwd(R"(<"john doe"@example.com>)");
  EXPECT_EQ(p.error, PathError::kNone);
  EXPECT_EQ(p.local_part, R"("john doe")");
  EXPECT_EQ(Fwd(R"(<"a\"b"@example.com>)").error, PathError::kNone);
  EXPECT_EQ(Fwd(R"(<"unterminated@example.com>)").error, PathError::kSyntax);
}

TEST(AddressTest, AddressLiterals) {
  EXPECT_EQ(Fwd("<u@[192.0.2.1]>").domain, "[192.0.2.1]");
  EXPECT_EQ(Fwd("<u@[IPv6:2001:db8::1]>").error, PathError::kNone);
  EXPECT_EQ(Fwd("<u@[999.0.2.1]>").error, PathError::kSyntax);
  EXPECT_EQ(Fwd("<u@[IPv6:zz::1]>").error, PathError::kSyntax);
  EXPECT_EQ(Fwd("<u@[x-tag:stuff]>").error, PathError::kNone);  // General-address-literal.
}

TEST(AddressTest, SourceRoutesAreAcceptedAndIgnored) {
  auto p = Fwd("<@relay1.example,@relay2.example:user@example.com>");
  EXPECT_EQ(p.error, PathError::kNone);
  EXPECT_EQ(p.mailbox, "user@example.com");
}

TEST(AddressTest, RejectsBadSyntax) {
  for (const char* bad :
       {"user@example.com", "<user@example.com", "<user>", "<@example.com>", "<.user@example.com>",
        "<user.@example.com>", "<us..er@example.com>", "<user@>", "<user@-example.com>",
        "<user@example-.com>", "<user@exa_mple.com>", "<user@example..com>", "<user@.com>",
        "<us er@example.com>", "<user@example.com.>", "<a@b@c.com>", "<", ""}) {
    EXPECT_NE(Fwd(bad).error, PathError::kNone) << bad;
  }
}

TEST(AddressTest, EnforcesRfc5321Lengths) {
  EXPECT_EQ(Fwd("<" + std::string(64, 'a') + "@example.com>").error, PathError::kNone);
  EXPECT_EQ(Fwd("<" + std::string(65, 'a') + "@example.com>").error, PathError::kTooLong);
  std::string domain;
  for (int i = 0; i < 50; ++i) {
    domain += "abcde.";
  }
  domain += "com";  // 303 octets.
  EXPECT_EQ(Fwd("<a@" + domain + ">").error, PathError::kTooLong);
}

TEST(AddressTest, Utf8NeedsSmtpUtf8) {
  const std::string addr =
      "<j\xC3\xB6rg@b\xC3\xBC"
      "cher.example>";
  EXPECT_EQ(Fwd(addr, false).error, PathError::kNeedsSmtpUtf8);
  EXPECT_EQ(Fwd(addr, true).error, PathError::kNone);
  // Malformed UTF-8 is a syntax error even with SMTPUTF8.
  EXPECT_EQ(Fwd("<j\xC3@example.com>", true).error, PathError::kSyntax);
  EXPECT_EQ(Fwd("<j\xC0\xAF@example.com>", true).error, PathError::kSyntax);      // Overlong.
  EXPECT_EQ(Fwd("<j\xED\xA0\x80@example.com>", true).error, PathError::kSyntax);  // Surrogate.
}

TEST(AddressTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("\xE2\x82\xAC"));
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // Above U+10FFFF.
}

}  // namespace
}  // namespace relais::smtp
