// protocols/authcheck/authcheck_test.cc — From domains, the sender verdict, and the message
// check end to end over a zone held in memory: the field written, and the verdicts per policy.
#include "protocols/authcheck/authcheck.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/base/strings.h"

namespace relais::authcheck {
namespace {

using V = std::vector<std::string>;

TEST(FromDomains, MailboxForms) {
  EXPECT_EQ(FromDomains("From: Joe <joe@Example.COM>\r\n\r\n"), V{"example.com"});
  EXPECT_EQ(FromDomains("From: joe@example.com.\r\n\r\nbody From: x@y.org\r\n"), V{"example.com"});
  EXPECT_EQ(FromDomains("From: a@b.org, \"Doe, J <x@y.org>\" <c@d.org>\r\n\r\n"),
            (V{"b.org", "d.org"}));
  EXPECT_EQ(FromDomains("From: Team: a@x.org, b@y.org;, c@z.org\r\n\r\n"),
            (V{"x.org", "y.org", "z.org"}));
  EXPECT_EQ(FromDomains("From: (c@evil.org) joe@x.org (Joe (the) <x@evil.org>)\r\n\r\n"),
            V{"x.org"});
  EXPECT_EQ(FromDomains("From: \"a@evil.org\"@real.org\r\n\r\n"), V{"real.org"});
  EXPECT_EQ(FromDomains("from :\r\n a@one.org\r\nFROM: b@two.org\r\n\r\n"),
            (V{"one.org", "two.org"}));
  EXPECT_EQ(FromDomains("Sender: a@b.org\r\n\r\n"), V{});
  EXPECT_EQ(FromDomains("From: undisclosed\r\n\r\n"), V{});
  EXPECT_EQ(FromDomains("From: <@route.org:a@dest.org>\r\n\r\n"), V{"dest.org"});
  // Not names DNS can ask for: left out.
  EXPECT_EQ(FromDomains("From: a@[192.0.2.1]\r\n\r\n"), V{});
  EXPECT_EQ(FromDomains(std::string_view("From: a@ex\0ample.org\r\n\r\n", 28)), V{});
  EXPECT_EQ(FromDomains("From: a@ex..ample.org, b@.x.org\r\n\r\n"), V{});
  EXPECT_EQ(FromDomains("From: a@b\xC3\xA9.example\r\n\r\n"), V{"b\xC3\xA9.example"});
}

TEST(JudgeSender, PerPolicy) {
  spf::Outcome fail;
  fail.result = spf::Result::kFail;
  fail.domain = "example.org";
  Policy tag;
  EXPECT_EQ(JudgeSender(fail, tag).verdict, Verdict::kAccept);
  Policy reject;
  reject.spf = Mode::kReject;
  const Judgement j = JudgeSender(fail, reject);
  EXPECT_EQ(j.verdict, Verdict::kReject);
  EXPECT_EQ(j.text, "SPF of example.org does not permit this host");
  fail.explanation = "see https://example.org/why";
  EXPECT_EQ(JudgeSender(fail, reject).text, "see https://example.org/why");

  spf::Outcome temp;
  temp.result = spf::Result::kTempError;
  temp.domain = "example.org";
  temp.problem = "DNS failure";
  EXPECT_EQ(JudgeSender(temp, reject).verdict, Verdict::kAccept);
  reject.defer_temperror = true;
  EXPECT_EQ(JudgeSender(temp, reject).verdict, Verdict::kDefer);
  for (spf::Result r : {spf::Result::kSoftFail, spf::Result::kPermError, spf::Result::kNone,
                        spf::Result::kNeutral, spf::Result::kPass}) {
    spf::Outcome o;
    o.result = r;
    EXPECT_EQ(JudgeSender(o, reject).verdict, Verdict::kAccept);
  }
  EXPECT_EQ(ParseMode("reject"), Mode::kReject);
  EXPECT_EQ(ParseMode("Reject"), std::nullopt);
}

constexpr std::string_view kEd25519Pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIKWxAEbTXJnb0NwXdMuxOs7j1bxeV/a1BTH3fFrHgbM+\n"
    "-----END PRIVATE KEY-----\n";

constexpr std::string_view kMessage =
    "From: Joe <joe@mail.example.com>\r\n"
    "To: suzie@example.net\r\n"
    "Subject: dinner\r\n"
    "\r\n"
    "Hungry yet?\r\n";

struct Zone {
  std::map<std::string, dns::Answer> records;
  std::vector<std::string> asked;
  void Txt(const std::string& name, const std::string& text) {
    dns::Answer a{dns::AnswerStatus::kOk};
    a.texts = {text};
    records[name] = a;
  }
  // Runs `check` to the end over the zone; names not in it are NXDOMAIN, except those mapped
  // to a temporary failure.
  void Drive(MessageCheck& check) {
    for (int i = 0; i < 20 && !check.Run(); ++i) {
      asked.push_back(check.needed().name);
      const auto it = records.find(check.needed().name);
      check.Provide(check.needed(),
                    it != records.end() ? it->second : dns::Answer{dns::AnswerStatus::kNxDomain});
    }
  }
};

std::string Signed(std::string_view message, const std::string& domain) {
  const tls::PrivateKey key = std::move(*tls::PrivateKey::FromPem(kEd25519Pem));
  dkim::SignOptions o;
  o.domain = domain;
  o.selector = "s1";
  return *dkim::Sign(message, o, key) + std::string(message);
}

Zone ExampleZone(std::string_view p) {
  const tls::PrivateKey key = std::move(*tls::PrivateKey::FromPem(kEd25519Pem));
  Zone z;
  z.Txt("s1._domainkey.example.com",
        base::StrCat("v=DKIM1; k=ed25519; p=", tls::Base64Encode(key.PublicKeyBytes())));
  z.Txt("_dmarc.example.com", base::StrCat("v=DMARC1; p=", p));
  return z;
}

MessageRequest Request(spf::Result spf_result, std::string spf_domain = "example.com") {
  MessageRequest r;
  spf::Outcome o;
  o.result = spf_result;
  o.domain = std::move(spf_domain);
  r.spf = o;
  r.sender = "bounce@" + r.spf->domain;
  r.helo = "mx.example.com";
  r.now_unix_seconds = 1764000000;
  return r;
}

TEST(MessageCheck, SignedAndAlignedPasses) {
  Zone z = ExampleZone("reject");
  const std::string message = Signed(kMessage, "example.com");
  Policy policy;
  policy.authserv_id = "relay.example.net";
  policy.dmarc = Mode::kReject;
  dkim::BodyHashes hashes;
  hashes.Update(message);
  hashes.Finish();
  MessageCheck check(policy, Request(spf::Result::kSoftFail, "other.org"), message);
  check.UseBodyHashes(&hashes);
  z.Drive(check);
  EXPECT_EQ(check.judgement().verdict, Verdict::kAccept);
  EXPECT_EQ(check.from_domain(), "mail.example.com");
  EXPECT_EQ(check.Header(),
            "Authentication-Results: relay.example.net;\r\n"
            "\tspf=softfail smtp.mailfrom=bounce@other.org;\r\n"
            "\tdkim=pass header.d=example.com header.s=s1;\r\n"
            "\tdmarc=pass header.from=mail.example.com policy.dmarc=reject\r\n");
  // The key, then the policy at the From domain (none) and at its organizational domain.
  EXPECT_EQ(z.asked,
            (V{"s1._domainkey.example.com", "_dmarc.mail.example.com", "_dmarc.example.com"}));
}

TEST(MessageCheck, DmarcFailureRejectedOnlyWhenPolicySaysReject) {
  for (Mode mode : {Mode::kTag, Mode::kReject}) {
    Zone z = ExampleZone("reject");
    Policy policy;
    policy.dmarc = mode;
    const std::string message = Signed(kMessage, "spammer.org");
    MessageCheck check(policy, Request(spf::Result::kPass, "spammer.org"), message);
    z.Drive(check);
    EXPECT_EQ(check.dmarc_outcome()->result, dmarc::Result::kFail);
    EXPECT_EQ(check.judgement().verdict,
              mode == Mode::kReject ? Verdict::kReject : Verdict::kAccept);
    if (mode == Mode::kReject) {
      EXPECT_EQ(check.judgement().text, "Message rejected by the DMARC policy of mail.example.com");
    }
    EXPECT_NE(check.Header().find("dkim=permerror reason=\"no key at "
                                  "s1._domainkey.spammer.org\" header.d=spammer.org"),
              std::string::npos)
        << check.Header();
    EXPECT_NE(check.Header().find("dmarc=fail header.from=mail.example.com policy.dmarc=reject"),
              std::string::npos);
  }
  // p=quarantine is tagged, never refused.
  Zone z = ExampleZone("quarantine");
  Policy policy;
  policy.dmarc = Mode::kReject;
  MessageCheck check(policy, Request(spf::Result::kFail, "spammer.org"), kMessage);
  z.Drive(check);
  EXPECT_EQ(check.judgement().verdict, Verdict::kAccept);
  EXPECT_EQ(check.dmarc_outcome()->disposition, dmarc::Policy::kQuarantine);
  EXPECT_NE(check.Header().find("dkim=none"), std::string::npos);
}

TEST(MessageCheck, TemporaryFailureDeferredWhenAsked) {
  for (bool defer : {false, true}) {
    Zone z = ExampleZone("reject");
    z.records["_dmarc.mail.example.com"] = dns::Answer{dns::AnswerStatus::kTemporary};
    Policy policy;
    policy.dmarc = Mode::kReject;
    policy.defer_temperror = defer;
    MessageCheck check(policy, Request(spf::Result::kNone), kMessage);
    z.Drive(check);
    EXPECT_EQ(check.dmarc_outcome()->result, dmarc::Result::kTempError);
    EXPECT_EQ(check.judgement().verdict, defer ? Verdict::kDefer : Verdict::kAccept);
  }
}

TEST(MessageCheck, NoOrSeveralAuthorDomains) {
  for (std::string_view message :
       {std::string_view("Subject: x\r\n\r\nbody\r\n"),
        std::string_view("From: a@one.org, b@two.org\r\n\r\nbody\r\n")}) {
    Zone z;
    Policy policy;
    MessageCheck tagged(policy, Request(spf::Result::kPass), message);
    z.Drive(tagged);
    EXPECT_EQ(tagged.judgement().verdict, Verdict::kAccept);
    EXPECT_NE(tagged.Header().find("dmarc=permerror reason=\""), std::string::npos);
    policy.dmarc = Mode::kReject;
    MessageCheck refused(policy, Request(spf::Result::kPass), message);
    z.Drive(refused);
    EXPECT_EQ(refused.judgement().verdict, Verdict::kReject);
    EXPECT_TRUE(refused.judgement().text.starts_with("Message rejected: ")) << message;
  }
}

TEST(MessageCheck, EverythingOffAsksNothing) {
  Zone z = ExampleZone("reject");
  Policy policy;
  policy.spf = policy.dkim = policy.dmarc = Mode::kOff;
  MessageRequest r;
  const std::string message = Signed(kMessage, "example.com");
  MessageCheck check(policy, r, message);
  z.Drive(check);
  EXPECT_TRUE(z.asked.empty());
  EXPECT_EQ(check.Header(), "Authentication-Results: localhost; none\r\n");
}

// Two keys for example.com (dual signing): mail from mail.example.com gets both signatures,
// each of which verifies; mail from another domain, or with two author domains, gets none.
TEST(SignaturesFor, SignsMailOfTheDomainAndBelow) {
  std::vector<SigningKey> keys;
  for (const char* selector : {"s1", "s2"}) {
    SigningKey k{{}, std::move(*tls::PrivateKey::FromPem(kEd25519Pem))};
    k.options.domain = "example.com";
    k.options.selector = selector;
    keys.push_back(std::move(k));
  }
  absl::StatusOr<std::string> fields = SignaturesFor(kMessage, keys, 1764000000);
  ASSERT_TRUE(fields.ok()) << fields.status();
  const std::string message = *fields + std::string(kMessage);
  Zone z = ExampleZone("reject");
  z.records["s2._domainkey.example.com"] = z.records["s1._domainkey.example.com"];
  dkim::Verification v(message, 1764000000);
  for (int i = 0; i < 10 && !v.Run(); ++i) {
    v.Provide(v.needed(), z.records[v.needed().name]);
  }
  ASSERT_EQ(v.results().size(), 2u);
  EXPECT_EQ(v.results()[0].selector, "s1");
  EXPECT_EQ(v.results()[0].result, dkim::Result::kPass) << v.results()[0].reason;
  EXPECT_EQ(v.results()[1].selector, "s2");
  EXPECT_EQ(v.results()[1].result, dkim::Result::kPass) << v.results()[1].reason;
  EXPECT_NE(message.find("t=1764000000"), std::string::npos);

  EXPECT_EQ(*SignaturesFor("From: a@example.org\r\n\r\nx\r\n", keys, 1), "");
  EXPECT_EQ(*SignaturesFor("From: a@notexample.com\r\n\r\nx\r\n", keys, 1), "");
  EXPECT_EQ(*SignaturesFor("From: a@example.com, b@example.org\r\n\r\nx\r\n", keys, 1), "");
  EXPECT_EQ(*SignaturesFor(kMessage, {}, 1), "");
}

}  // namespace
}  // namespace relais::authcheck
