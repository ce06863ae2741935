#include "protocols/smtp/sasl.h"

#include <gtest/gtest.h>

#include <string>

namespace relais::smtp {
namespace {

using namespace std::string_literals;

TEST(SaslTest, Base64RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    const std::string encoded = Base64Encode(data);
    EXPECT_EQ(encoded.size() % 4, 0u);
    const auto decoded = Base64Decode(encoded);
    ASSERT_TRUE(decoded.has_value()) << encoded;
    EXPECT_EQ(*decoded, data);
    data.push_back(static_cast<char>(i * 37 + 200));
  }
  EXPECT_EQ(Base64Encode("Username:"), "VXNlcm5hbWU6");
  EXPECT_EQ(Base64Encode("\0a@b\0pw"s), "AGFAYgBwdw==");
}

TEST(SaslTest, Base64DecodeIsStrict) {
  EXPECT_EQ(Base64Decode(""), "");
  EXPECT_FALSE(Base64Decode("abc").has_value());       // Not a multiple of 4.
  EXPECT_FALSE(Base64Decode("ab=c").has_value());      // Padding inside.
  EXPECT_FALSE(Base64Decode("a===").has_value());      // Too much padding.
  EXPECT_FALSE(Base64Decode("ab==cdef").has_value());  // Padding before the end.
  EXPECT_FALSE(Base64Decode("ab c").has_value());      // White space.
  EXPECT_FALSE(Base64Decode("ab*=").has_value());      // Outside the alphabet.
  EXPECT_FALSE(Base64Decode("QR==").has_value());      // Bits set in the padding.
  EXPECT_EQ(Base64Decode("QQ=="), "A");
}

TEST(SaslTest, PlainMessage) {
  const std::string message = "\0alice\0secret"s;
  const auto c = ParsePlain(message);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->authzid, "");
  EXPECT_EQ(c->authcid, "alice");
  EXPECT_EQ(c->password, "secret");
  const std::string with_authzid = "bob\0alice\0pw"s;  // The views point into it.
  const auto z = ParsePlain(with_authzid);
  ASSERT_TRUE(z.has_value());
  EXPECT_EQ(z->authzid, "bob");
  EXPECT_FALSE(ParsePlain("alice").has_value());
  EXPECT_FALSE(ParsePlain("\0alice"s).has_value());
  EXPECT_FALSE(ParsePlain("\0\0pw"s).has_value());     // No authcid.
  EXPECT_FALSE(ParsePlain("\0alice\0"s).has_value());  // No password.
  EXPECT_FALSE(ParsePlain("\0a\0b\0c"s).has_value());  // A third NUL.
  EXPECT_EQ(*Base64Decode(EncodePlain("alice", "secret")), message);
}

TEST(SaslTest, WipeEmpties) {
  std::string secret = "hunter2";
  Wipe(secret);
  EXPECT_TRUE(secret.empty());
}

}  // namespace
}  // namespace relais::smtp
