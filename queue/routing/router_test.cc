#include "queue/routing/router.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/base/strings.h"

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
  EXPECT_EQ(r.MaildirFor(*route, "Bob", "Example.COM").directory, "/var/mail/example.com/bob");
  EXPECT_EQ(r.MaildirFor(*route, "\"john doe\"", "example.com").directory,
            "/var/mail/example.com/john doe");
  const Route templated{"*", RouteType::kMaildir, "/srv/{domain}/users/{local}/Maildir", {}, {}};
  EXPECT_EQ(r.MaildirFor(templated, "Bob", "Example.COM").directory,
            "/srv/example.com/users/bob/Maildir");
  std::string_view local, domain;
  r.Split("a@b@example.com", local, domain);
  EXPECT_EQ(local, "a@b");
  EXPECT_EQ(domain, "example.com");
  r.Split("Postmaster", local, domain);
  EXPECT_EQ(domain, "mx.example.com");
}

// <x@[x:/../../../../srv/escaped]> once became <root>/[x:/../../../../srv/escaped]/x: the
// domain is a path component too, checked where the path is built, under every template.
TEST(RouterTest, NoComponentBuiltFromAnAddressCanLeaveTheRoot) {
  Router r({Route{"*", RouteType::kMaildir, "./var/mail", {}, {}}}, "mx.example.com");
  const Route plain{"*", RouteType::kMaildir, "./var/mail", {}, {}};
  const Route templated{"*", RouteType::kMaildir, "/srv/{domain}/u/{local}", {}, {}};
  const Route glued{"*", RouteType::kMaildir, "/srv/.{domain}-{local}.", {}, {}};
  using SV = std::string_view;
  const SV bad_domains[] = {"[x:/../../../../srv/escaped]",
                            "..",
                            ".",
                            "a/b",
                            "../x",
                            ".hidden",
                            SV("a\0b", 3),
                            "a\x01",
                            "a\x7F",
                            "a\\b",
                            "a\nb",
                            "/",
                            "x/.."};
  const SV bad_locals[] = {"..",          ".",        "\"..\"", "\".\"",    "\"a/b\"",
                           "a/b",         "\"../x\"", "../x",   "\"\x01\"", SV("\"a\0b\"", 5),
                           SV("a\0b", 3), "\"\"",     "",       ".hidden",  "\"a\\/b\"",
                           "a\\b",        "\"\t\"",   "x\x7F",  "\"/\""};
  for (const Route* route : {&plain, &templated, &glued}) {
    for (SV d : bad_domains) {
      const MaildirPath p = r.MaildirFor(*route, "bob", d);
      EXPECT_EQ(p.verdict, Verdict::kUnsafeDomain) << d;
      EXPECT_EQ(p.directory, "") << d;
      EXPECT_EQ(r.Check("bob", d), Verdict::kUnsafeDomain) << d;
    }
    for (SV l : bad_locals) {
      const MaildirPath p = r.MaildirFor(*route, l, "example.com");
      EXPECT_EQ(p.verdict, Verdict::kUnsafeLocalPart) << l;
      EXPECT_EQ(p.directory, "") << l;
      EXPECT_EQ(r.Check(l, "example.com"), Verdict::kUnsafeLocalPart) << l;
    }
  }
  // What stays allowed, and stays one component: percent-encoding is just text, IDN domains
  // (dots and all, the ideographic full stop included) and look-alikes of '/' and '.'.
  for (SV d : {"example.com", "[192.0.2.1]", "[ipv6:2001:db8::1]",
               "b\xC3\xBC"
               "cher.example",
               "example\xE3\x80\x82"
               "com",
               "%2e%2e", "\xE2\x80\xA4\xE2\x80\xA4",
               "a\xEF\xBC\x8F"
               "b"}) {
    const MaildirPath p = r.MaildirFor(plain, "bob", d);
    ASSERT_EQ(p.verdict, Verdict::kAccept) << d;
    EXPECT_EQ(p.directory, base::StrCat("./var/mail/", base::AsciiStrToLower(d), "/bob"));
  }
  for (SV l :
       {"%2e%2e", "\"%2F\"", "a..b", "a.", "\"a b\"", "j\xC3\xB6rg", "\xE2\x80\xA4\xE2\x80\xA4"}) {
    EXPECT_EQ(r.MaildirFor(plain, l, "example.com").verdict, Verdict::kAccept) << l;
  }
  // The route's own path may hold ".." (the operator wrote it); the address adds none.
  const Route up{"*", RouteType::kMaildir, "/srv/../mail/{domain}/{local}", {}, {}};
  EXPECT_EQ(r.MaildirFor(up, "bob", "example.com").directory, "/srv/../mail/example.com/bob");
  // <Postmaster> without a domain takes the default one.
  EXPECT_EQ(r.MaildirFor(plain, "Postmaster", "").directory,
            "./var/mail/mx.example.com/postmaster");
}

// The default domain (server.hostname, for <Postmaster>) is a path component too.
TEST(RouterTest, DefaultDomainIsCheckedLikeAnyOther) {
  for (const char* hostname : {"../../etc", "a/b", "..", "mx\x01"}) {
    Router r({Route{"*", RouteType::kMaildir, "./var/mail", {}, {}}}, hostname);
    EXPECT_EQ(r.Check("postmaster", ""), Verdict::kUnsafeDomain) << hostname;
    EXPECT_EQ(r.MaildirFor(r.routes()[0], "postmaster", "").directory, "") << hostname;
  }
}

TEST(RouterTest, DuplicateRecipientsAreComparedAsRoutingDoes) {
  Router r = Make();  // example.com: Maildir; *.example.com: smarthost.
  EXPECT_EQ(r.DeliveryKey("Bob@EXAMPLE.com"), r.DeliveryKey("bob@example.com"));
  EXPECT_EQ(r.DeliveryKey("\"bob\"@example.com"), r.DeliveryKey("bob@example.com"));
  EXPECT_NE(r.DeliveryKey("bob@example.com"), r.DeliveryKey("rob@example.com"));
  // Beyond this host, only the domain is case-insensitive.
  EXPECT_EQ(r.DeliveryKey("Bob@A.Example.com"), r.DeliveryKey("Bob@a.example.com"));
  EXPECT_NE(r.DeliveryKey("Bob@a.example.com"), r.DeliveryKey("bob@a.example.com"));
  EXPECT_NE(r.DeliveryKey("bob@a.example.com"), r.DeliveryKey("bob@b.example.com"));
  // A quoted local part is its content with quoted-pairs undone (RFC 5321 4.1.2), on relayed
  // routes too: otherwise 2^n spellings of one mailbox each get a copy.
  for (const char* spelling :
       {"\"bob\"@a.example.com", "\"\\bob\"@a.example.com", "\"b\\o\\b\"@A.EXAMPLE.COM"}) {
    EXPECT_EQ(r.DeliveryKey(spelling), r.DeliveryKey("bob@a.example.com")) << spelling;
  }
  EXPECT_NE(r.DeliveryKey("\"b o\"@a.example.com"), r.DeliveryKey("bo@a.example.com"));
  EXPECT_NE(r.DeliveryKey("\"a\\\\b\"@a.example.com"), r.DeliveryKey("ab@a.example.com"));
  // Unrouted and unsafe ones still compare (they are refused at RCPT anyway).
  EXPECT_EQ(r.DeliveryKey("x@Nowhere.example"), r.DeliveryKey("x@nowhere.example"));

  std::vector<mail::Recipient> recipients;
  for (int i = 0; i < 200; ++i) {
    recipients.push_back({i % 2 == 0 ? "bob@example.com" : "BOB@Example.Com",
                          static_cast<uint8_t>(i == 0 ? mail::kNotifySuccess : 0),
                          i == 0 ? "rfc822;first" : "rfc822;later"});
  }
  recipients.push_back({"carol@example.com", 0, ""});
  recipients.push_back({"bob@example.com", 0, ""});
  EXPECT_EQ(DropDuplicateRecipients(r, recipients), 200u);
  ASSERT_EQ(recipients.size(), 2u);
  EXPECT_EQ(recipients[0].address, "bob@example.com");  // The first one, with its DSN.
  EXPECT_EQ(recipients[0].notify, mail::kNotifySuccess);
  EXPECT_EQ(recipients[0].orcpt, "rfc822;first");
  EXPECT_EQ(recipients[1].address, "carol@example.com");

  // A small transaction (the vector path) drops the same ones, keeping the first of each.
  std::vector<mail::Recipient> few = {{"bob@example.com", mail::kNotifySuccess, "rfc822;first"},
                                      {"carol@example.com", 0, ""},
                                      {"BOB@Example.Com", 0, "rfc822;later"},
                                      {"carol@EXAMPLE.com", 0, ""},
                                      {"dave@example.com", 0, ""}};
  EXPECT_EQ(DropDuplicateRecipients(r, few), 2u);
  ASSERT_EQ(few.size(), 3u);
  EXPECT_EQ(few[0].orcpt, "rfc822;first");
  EXPECT_EQ(few[1].address, "carol@example.com");
  EXPECT_EQ(few[2].address, "dave@example.com");
}

}  // namespace
}  // namespace relais::routing
