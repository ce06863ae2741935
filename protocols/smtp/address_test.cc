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
  EXPECT_EQ(Fwd("<u@[IPV6:2001:db8::1]>").domain, "[IPV6:2001:db8::1]");  // Tags ignore case.
  EXPECT_EQ(Fwd("<u@[ipv6:::1]>").error, PathError::kNone);
  EXPECT_EQ(Fwd("<u@[IPv6:::ffff:192.0.2.1]>").error, PathError::kNone);
}

// A General-address-literal reached the Maildir path as the domain: <x@[x:/../../escaped]>
// wrote outside the mail root. Every tag but IPv6 is refused, and an IPv4 or IPv6 literal
// holds nothing but what such an address is written with.
TEST(AddressTest, RefusesGeneralAddressLiteralsAndJunkInLiterals) {
  using namespace std::string_literals;
  for (const std::string& text :
       {"<x@[x:/../../../../srv/escaped]>"s, "<u@[x-tag:stuff]>"s, "<u@[tag:..]>"s,
        "<u@[IPv4:192.0.2.1]>"s, "<u@[IPv6x:::1]>"s, "<u@[IPv6:::1%eth0]>"s,
        "<u@[IPv6:::1/../../x]>"s, "<u@[192.0.2.1/../x]>"s, "<u@[192.0.2.1\0/../x]>"s,
        "<u@[192.0.2.1\0]>"s, "<u@[192.0.2.1\x01]>"s, "<u@[%2e%2e]>"s, "<u@[..]>"s, "<u@[]>"s,
        "<u@[ 192.0.2.1]>"s, "<u@[192.0.2.1 ]>"s, "<u@[IPv6:]>"s, "<u@[\\x:y]>"s}) {
    std::string input = text;
    // Spell NUL and \x01 for real.
    for (size_t at; (at = input.find("\\0")) != std::string::npos;) {
      input.replace(at, 2, std::string(1, '\0'));
    }
    for (size_t at; (at = input.find("\\x01")) != std::string::npos;) {
      input.replace(at, 4, "\x01");
    }
    EXPECT_EQ(Fwd(input).error, PathError::kSyntax) << text;
    EXPECT_EQ(Rev(input).error, PathError::kSyntax) << text;
  }
}

TEST(AddressTest, SenderSpecifiedRouting) {
  for (const char* routed :
       {"user%evil", "\"u@evil\"", "evil!u", "\"u\\%evil\"", "a%b%c", "%", "!", "\"@\""}) {
    EXPECT_TRUE(HasSenderRouting(routed)) << routed;
  }
  for (const char* plain : {"user", "user.name+tag", "\"john doe\"", "a-b_c", "j\xC3\xB6rg"}) {
    EXPECT_FALSE(HasSenderRouting(plain)) << plain;
  }
  // What the parser hands over for the reported cases.
  EXPECT_TRUE(HasSenderRouting(Fwd(R"(<"u@evil"@example.net>)").local_part));
  EXPECT_TRUE(HasSenderRouting(Fwd("<user%evil@example.net>").local_part));
  EXPECT_TRUE(HasSenderRouting(Fwd("<evil!u@example.net>").local_part));
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
