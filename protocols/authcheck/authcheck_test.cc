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
  // A label over 63 octets is no DNS name: no author domain, so a reject policy refuses it
  // (RFC 7489 6.6.1) rather than a lookup that cannot be sent turning into temperror.
  const std::string label63(63, 'a');
  EXPECT_EQ(FromDomains("From: ceo@" + label63 + ".victim.example\r\n\r\n"),
            V{label63 + ".victim.example"});
  EXPECT_EQ(FromDomains("From: ceo@" + label63 + "a.victim.example\r\n\r\n"), V{});
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

// Like the shard: every pending question of a round answered together, at most `budget`
// questions in all; past it the check is given up. Returns the questions asked.
size_t DriveConcurrently(Zone& z, MessageCheck& check, size_t budget = 256) {
  size_t asked = 0;
  while (!check.Run()) {
    const std::vector<dns::Question> round = check.pending();
    if (asked + round.size() > budget) {
      check.GiveUp();
      return asked;
    }
    asked += round.size();
    for (const dns::Question& q : round) {
      z.asked.push_back(q.name);
      const auto it = z.records.find(q.name);
      check.Provide(q,
                    it != z.records.end() ? it->second : dns::Answer{dns::AnswerStatus::kNxDomain});
    }
  }
  return asked;
}

std::string Signed(std::string_view message, const std::string& domain) {
  const crypto::PrivateKey key = std::move(*crypto::PrivateKey::FromPem(kEd25519Pem));
  dkim::SignOptions o;
  o.domain = domain;
  o.selector = "s1";
  return *dkim::Sign(message, o, key) + std::string(message);
}

Zone ExampleZone(std::string_view p) {
  const crypto::PrivateKey key = std::move(*crypto::PrivateKey::FromPem(kEd25519Pem));
  Zone z;
  z.Txt("s1._domainkey.example.com",
        base::StrCat("v=DKIM1; k=ed25519; p=", crypto::Base64Encode(key.PublicKeyBytes())));
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
    SigningKey k{{}, std::move(*crypto::PrivateKey::FromPem(kEd25519Pem))};
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

std::string Junk(int count, std::string_view suffix = ".example") {
  std::string junk;
  for (int i = 0; i < count; ++i) {
    junk += base::StrCat("DKIM-Signature: v=1; a=rsa-sha256; d=junk", i, suffix,
                         "; s=s; h=from; bh=YQ==; b=YQ==\r\n");
  }
  return junk;
}

// The forgery of issue 24: p=reject, a spoofed From, and hundreds or thousands of junk
// signatures of other domains. They are not evaluated past the bound (a dkim=policy entry says
// so), the lookups stay few, and the spoof is refused as without them.
TEST(MessageCheck, JunkSignaturesNeitherHideAForgeryNorMultiplyLookups) {
  for (int junk : {300, 3000}) {
    Zone z = ExampleZone("reject");
    Policy policy;
    policy.dmarc = Mode::kReject;
    const std::string message = Junk(junk) + std::string(kMessage);
    MessageCheck check(policy, Request(spf::Result::kNone, "spoofer.org"), message);
    const size_t asked = DriveConcurrently(z, check);
    EXPECT_LE(asked, policy.dkim_signatures_max + 2u) << junk;
    EXPECT_EQ(check.dkim_results().size(), policy.dkim_signatures_max);
    EXPECT_EQ(check.dkim_skipped(), junk - policy.dkim_signatures_max);
    EXPECT_EQ(check.judgement().verdict, Verdict::kReject) << junk;
    EXPECT_NE(check.Header().find(base::StrCat("dkim=policy reason=\"", junk - 8,
                                               " more signatures not evaluated")),
              std::string::npos)
        << check.Header();
  }
}

// One valid aligned signature below 300 junk ones is evaluated first and passes DKIM and DMARC.
TEST(MessageCheck, AlignedSignatureAmongJunkStillPasses) {
  Zone z = ExampleZone("reject");
  Policy policy;
  policy.dmarc = Mode::kReject;
  const std::string message = Junk(300) + Signed(kMessage, "example.com");
  MessageCheck check(policy, Request(spf::Result::kNone, "spoofer.org"), message);
  const size_t asked = DriveConcurrently(z, check);
  EXPECT_LE(asked, 10u);
  EXPECT_EQ(check.judgement().verdict, Verdict::kAccept);
  EXPECT_EQ(check.dmarc_outcome()->result, dmarc::Result::kPass);
  EXPECT_NE(check.Header().find("dkim=pass header.d=example.com header.s=s1"), std::string::npos)
      << check.Header();
  // Junk of the author's own organizational domain is preferred too, but still bounded.
  Zone y = ExampleZone("reject");
  const std::string own = Junk(300, ".example.com") + Signed(kMessage, "example.com");
  MessageCheck mixed(policy, Request(spf::Result::kNone, "spoofer.org"), own);
  EXPECT_LE(DriveConcurrently(y, mixed), 10u);
  EXPECT_EQ(mixed.judgement().verdict, Verdict::kReject);  // The valid one was pushed out.
}

// Out of budget: what is undecided is temperror, and with a reject policy at stake the message
// is deferred (4.7.5) by default, accepted or refused as configured: never accepted unchecked.
TEST(MessageCheck, OutOfBudgetIsTempErrorAndFailsClosed) {
  for (TempErrorAction action :
       {TempErrorAction::kDefer, TempErrorAction::kAccept, TempErrorAction::kReject}) {
    Zone z = ExampleZone("reject");
    Policy policy;
    policy.dmarc = Mode::kReject;
    policy.dmarc_temperror = action;
    const std::string message = Signed(kMessage, "example.com");
    MessageCheck check(policy, Request(spf::Result::kNone, "spoofer.org"), message);
    EXPECT_EQ(DriveConcurrently(z, check, /*budget=*/0), 0u);
    ASSERT_EQ(check.dkim_results().size(), 1u);
    EXPECT_EQ(check.dkim_results()[0].result, dkim::Result::kTempError);
    EXPECT_EQ(check.dmarc_outcome()->result, dmarc::Result::kTempError);
    const Judgement& j = check.judgement();
    EXPECT_TRUE(j.temperror);
    EXPECT_EQ(j.verdict, action == TempErrorAction::kDefer    ? Verdict::kDefer
                         : action == TempErrorAction::kReject ? Verdict::kReject
                                                              : Verdict::kAccept);
    EXPECT_NE(check.Header().find("dkim=temperror"), std::string::npos) << check.Header();
  }
  // A DNS failure of the aligned key with the policy known: the same.
  Zone z = ExampleZone("quarantine");
  z.records["s1._domainkey.example.com"] = dns::Answer{dns::AnswerStatus::kTemporary};
  Policy policy;
  policy.dmarc = Mode::kReject;
  const std::string signed_message = Signed(kMessage, "example.com");
  MessageCheck check(policy, Request(spf::Result::kNone, "spoofer.org"), signed_message);
  (void)DriveConcurrently(z, check);
  EXPECT_EQ(check.judgement().verdict, Verdict::kDefer);
  EXPECT_TRUE(check.judgement().temperror);
  // p=none: nothing at stake, tagged only.
  Zone n = ExampleZone("none");
  n.records["s1._domainkey.example.com"] = dns::Answer{dns::AnswerStatus::kTemporary};
  MessageCheck relaxed(policy, Request(spf::Result::kNone, "spoofer.org"), signed_message);
  (void)DriveConcurrently(n, relaxed);
  EXPECT_EQ(relaxed.judgement().verdict, Verdict::kAccept);
  EXPECT_EQ(relaxed.dmarc_outcome()->result, dmarc::Result::kTempError);
}

// Two From fields: no DKIM pass, and for DMARC no single author (rejected under dmarc=reject),
// whether the fields name one domain or two.
TEST(MessageCheck, SeveralFromFields) {
  Zone z = ExampleZone("reject");
  Policy policy;
  policy.dmarc = Mode::kReject;
  for (const char* extra : {"From: other@mail.example.com\r\n", "from : evil@bank.example\r\n"}) {
    const std::string message = Signed(std::string(extra) + std::string(kMessage), "example.com");
    MessageCheck check(policy, Request(spf::Result::kPass), message);
    (void)DriveConcurrently(z, check);
    EXPECT_EQ(check.judgement().verdict, Verdict::kReject) << extra;
    ASSERT_EQ(check.dkim_results().size(), 1u);
    EXPECT_EQ(check.dkim_results()[0].result, dkim::Result::kPolicy);
    EXPECT_NE(check.Header().find("dmarc=permerror reason=\"more than one From field"),
              std::string::npos)
        << check.Header();
  }
}

TEST(CheckHeader, Limits) {
  HeaderLimits limits;
  limits.header_bytes_max = 1000;
  limits.header_fields_max = 20;
  limits.received_max = 5;
  auto received = [](int n) {
    std::string h;
    for (int i = 0; i < n; ++i) {
      h += "Received: from a by b; Thu, 26 Nov 2026 10:00:00 +0000\r\n";
    }
    return h;
  };
  EXPECT_EQ(CheckHeader(received(5) + "\r\nbody", limits), HeaderVerdict::kOk);
  EXPECT_EQ(CheckHeader(received(6) + "\r\nbody", limits), HeaderVerdict::kTooManyHops);
  // Spellings of the name count; a continuation line, the body, X-Received do not.
  EXPECT_EQ(CheckHeader("received: 1\r\nRECEIVED : 2\r\nReceived\t:3\r\n Received: 4\r\n"
                        "X-Received: 5\r\nReceived: 6\r\nReceived: 7\r\nReceived: 8\r\n",
                        limits),
            HeaderVerdict::kTooManyHops);
  EXPECT_EQ(
      CheckHeader("Received: 1\r\n Received: 2\r\nX-Received: 3\r\n\r\n" + received(9), limits),
      HeaderVerdict::kOk);
  std::string fields;
  for (int i = 0; i < 21; ++i) {
    fields += "X: 1\r\n";
  }
  EXPECT_EQ(CheckHeader(fields + "\r\n", limits), HeaderVerdict::kTooManyFields);
  EXPECT_EQ(CheckHeader("Subject: " + std::string(980, 'a') + "\r\n\r\n", limits),
            HeaderVerdict::kOk);
  EXPECT_EQ(CheckHeader("Subject: " + std::string(1000, 'a') + "\r\n\r\n", limits),
            HeaderVerdict::kTooBig);
  // Folded or not, without an end: the bound still holds.
  EXPECT_EQ(CheckHeader("Subject: a\r\n" + std::string(2000, ' '), limits), HeaderVerdict::kTooBig);
  EXPECT_EQ(CheckHeader("", limits), HeaderVerdict::kOk);
  EXPECT_EQ(CheckHeader("\r\n" + std::string(5000, 'b'), limits), HeaderVerdict::kOk);
}

}  // namespace
}  // namespace relais::authcheck
