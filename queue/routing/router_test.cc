#include "queue/routing/router.h"

#include <gtest/gtest.h>

namespace relais::routing {
namespace {

using config::Route;
using config::RouteType;

Router Make() {
  return Router({Route{"example.com", RouteType::kMaildir, "/var/mail", {}, {}},
                 Route{"*.example.com", RouteType::kSmarthost, "", {"127.0.0.1:25"}, {}},
                 Route{"blocked.example", RouteType::kReject, "", {}, {}}},
                "Mx.Example.COM");
}

TEST(RouterTest, FirstMatchingRouteWins) {
  Router r = Make();
  ASSERT_NE(r.Find("EXAMPLE.com"), nullptr);
  EXPECT_EQ(r.Find("example.com")->type, RouteType::kMaildir);
  EXPECT_EQ(r.Find("a.example.com")->type, RouteType::kSmarthost);
  EXPECT_EQ(r.Find("elsewhere.example"), nullptr);
  EXPECT_EQ(r.Find("")->type, RouteType::kSmarthost);  // Default domain mx.example.com.
}

TEST(RouterTest, RecipientVerdicts) {
  Router r = Make();
  EXPECT_EQ(r.Check("bob", "example.com"), Verdict::kAccept);
  EXPECT_EQ(r.Check("bob", "nowhere.example"), Verdict::kNoRoute);
  EXPECT_EQ(r.Check("bob", "blocked.example"), Verdict::kRejectedByRoute);
  EXPECT_EQ(r.Check("../etc", "example.com"), Verdict::kUnsafeLocalPart);
  EXPECT_EQ(r.Check("\"a/b\"", "example.com"), Verdict::kUnsafeLocalPart);
  // A smarthost route does not care what the local part looks like.
  EXPECT_EQ(r.Check(".odd", "x.example.com"), Verdict::kAccept);
}

TEST(RouterTest, SafeLocalParts) {
  for (const char* ok : {"bob", "Bob.Smith", "a+tag", "\"john doe\"", "j\xC3\xB6rg"}) {
    EXPECT_TRUE(SafeLocalPart(ok)) << ok;
  }
  for (std::string_view bad :
       {std::string_view(""), std::string_view("."), std::string_view(".."),
        std::string_view(".hidden"), std::string_view("a/b"), std::string_view("a\\b"),
        std::string_view("\"..\""), std::string_view("a\0b", 3), std::string_view("a\x01")}) {
    EXPECT_FALSE(SafeLocalPart(bad)) << bad;
  }
}

TEST(RouterTest, MaildirPathIsLowercasedUnderTheRoot) {
  Router r = Make();
  const Route* route = r.Find("example.com");
  EXPECT_EQ(r.MaildirFor(*route, "Bob", "Example.COM"), "/var/mail/example.com/bob");
  EXPECT_EQ(r.MaildirFor(*route, "\"john doe\"", "example.com"), "/var/mail/example.com/john doe");
  const Route templated{"*", RouteType::kMaildir, "/srv/{domain}/users/{local}/Maildir", {}, {}};
  EXPECT_EQ(r.MaildirFor(templated, "Bob", "Example.COM"), "/srv/example.com/users/bob/Maildir");
  std::string_view local, domain;
  r.Split("a@b@example.com", local, domain);
  EXPECT_EQ(local, "a@b");
  EXPECT_EQ(domain, "example.com");
  r.Split("Postmaster", local, domain);
  EXPECT_EQ(domain, "mx.example.com");
}

}  // namespace
}  // namespace relais::routing
