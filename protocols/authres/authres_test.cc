// protocols/authres/authres_test.cc — writing our field, finding and removing forged ones.
#include "protocols/authres/authres.h"

#include <gtest/gtest.h>

namespace relais::authres {
namespace {

TEST(AuthenticationResults, HeaderFormat) {
  EXPECT_EQ(Header("relais.example.net", {}),
            "Authentication-Results: relais.example.net; none\r\n");
  const std::string h =
      Header("relais.example.net",
             {{"spf", "pass", "", {{"smtp.mailfrom", "user@example.com"}}},
              {"dkim",
               "fail",
               "body hash mismatch",
               {{"header.d", "example.com"}, {"header.s", "sel"}, {"header.b", "abcd/efg"}}},
              {"dmarc", "fail", "", {{"header.from", "example.com"}, {"policy.dmarc", "reject"}}}});
  EXPECT_EQ(h,
            "Authentication-Results: relais.example.net;\r\n"
            "\tspf=pass smtp.mailfrom=user@example.com;\r\n"
            "\tdkim=fail reason=\"body hash mismatch\" header.d=example.com header.s=sel "
            "header.b=\"abcd/efg\";\r\n"
            "\tdmarc=fail header.from=example.com policy.dmarc=reject\r\n");
  // A local part that is not a token is quoted whole; quotes inside are escaped.
  EXPECT_NE(Header("x", {{"spf", "fail", "", {{"smtp.mailfrom", "\"a b\"@example.com"}}}})
                .find("smtp.mailfrom=\"\\\"a b\\\"@example.com\""),
            std::string::npos);
}

TEST(AuthenticationResults, AuthservIdSkipsCommentsAndWhitespace) {
  EXPECT_EQ(AuthservId(" relais.example.net; spf=pass"), "relais.example.net");
  EXPECT_EQ(AuthservId(" (a (nested) comment)\r\n\tRelais.Example.Net 1; none"),
            "Relais.Example.Net");
  EXPECT_EQ(AuthservId("\"quoted.example\"; none"), "quoted.example");
  EXPECT_EQ(AuthservId("   "), "");
}

TEST(AuthenticationResults, RemovesOnlyFieldsClaimingToBeOurs) {
  const std::string message =
      "Received: from x\r\n"
      "Authentication-Results: relais.example.net; spf=pass\r\n"
      "authentication-results : (forged)\r\n RELAIS.example.net;\r\n dkim=pass\r\n"
      "Authentication-Results: mx.other.example; spf=fail\r\n"
      "Subject: hi\r\n"
      "\r\n"
      "Authentication-Results: relais.example.net; in the body, untouched\r\n";
  std::string clean = message;
  EXPECT_EQ(RemoveForged(clean, "relais.example.net"), 2);
  EXPECT_EQ(clean,
            "Received: from x\r\n"
            "Authentication-Results: mx.other.example; spf=fail\r\n"
            "Subject: hi\r\n"
            "\r\n"
            "Authentication-Results: relais.example.net; in the body, untouched\r\n");
  std::string plain = "Subject: x\r\n\r\nbody\r\n";
  EXPECT_EQ(RemoveForged(plain, "relais.example.net"), 0);
  EXPECT_EQ(plain, "Subject: x\r\n\r\nbody\r\n");
}

}  // namespace
}  // namespace relais::authres
