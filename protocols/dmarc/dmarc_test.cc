// protocols/dmarc/dmarc_test.cc — RFC 7489 record parsing, alignment and evaluation.
#include "protocols/dmarc/dmarc.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace relais::dmarc {
namespace {

TEST(Dmarc, OrganizationalDomainFromThePublicSuffixList) {
  EXPECT_EQ(OrganizationalDomain("Mail.Example.COM"), "example.com");
  EXPECT_EQ(OrganizationalDomain("a.b.example.co.uk"), "example.co.uk");
  EXPECT_EQ(OrganizationalDomain("example.com."), "example.com");
  EXPECT_EQ(OrganizationalDomain("co.uk"), "co.uk");  // A public suffix: itself.
  EXPECT_TRUE(Aligned("bounce.example.com", "example.com", Alignment::kRelaxed));
  EXPECT_FALSE(Aligned("bounce.example.com", "example.com", Alignment::kStrict));
  EXPECT_TRUE(Aligned("EXAMPLE.com", "example.COM", Alignment::kStrict));
  EXPECT_FALSE(Aligned("example.co.uk", "other.co.uk", Alignment::kRelaxed));
  EXPECT_FALSE(Aligned("", "example.com", Alignment::kRelaxed));
}

TEST(Dmarc, RecordTagsAndDefaults) {
  std::string problem;
  std::optional<Record> r = ParseRecord(
      "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=s; pct=25; "
      "rua=mailto:agg@example.com, mailto:x@example.net!10m; ruf=mailto:f@example.com; fo=1; "
      "ri=3600; future=tag",
      problem);
  ASSERT_TRUE(r) << problem;
  EXPECT_EQ(r->p, Policy::kReject);
  EXPECT_EQ(r->sp, Policy::kQuarantine);
  EXPECT_EQ(r->adkim, Alignment::kStrict);
  EXPECT_EQ(r->aspf, Alignment::kStrict);
  EXPECT_EQ(r->pct, 25);
  EXPECT_EQ(r->rua,
            (std::vector<std::string>{"mailto:agg@example.com", "mailto:x@example.net!10m"}));
  EXPECT_EQ(r->ruf, std::vector<std::string>{"mailto:f@example.com"});
  EXPECT_EQ(r->fo, "1");
  EXPECT_EQ(r->ri, 3600u);
  // Defaults, and bad values falling back to them.
  r = ParseRecord("v=DMARC1;p=none;adkim=x;pct=300", problem);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->adkim, Alignment::kRelaxed);
  EXPECT_EQ(r->aspf, Alignment::kRelaxed);
  EXPECT_EQ(r->pct, 100);
  EXPECT_FALSE(r->sp);
  EXPECT_EQ(r->rf, "afrf");
  EXPECT_EQ(r->ri, 86400u);
  // No usable p=: with rua= it reads as p=none, without it is not a record.
  r = ParseRecord("v=DMARC1; p=bogus; rua=mailto:a@example.com", problem);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->p, Policy::kNone);
  EXPECT_FALSE(ParseRecord("v=DMARC1; p=bogus", problem));
  EXPECT_FALSE(ParseRecord("p=reject; v=DMARC1", problem));
  EXPECT_FALSE(ParseRecord("v=DMARC2; p=reject", problem));
  EXPECT_FALSE(ParseRecord("", problem));
}

TEST(Dmarc, AuthorDomainRules) {
  std::string problem;
  EXPECT_EQ(AuthorDomain({"Example.com", "example.COM"}, problem), "example.com");
  EXPECT_FALSE(AuthorDomain({}, problem));
  EXPECT_NE(problem.find("no From"), std::string::npos);
  EXPECT_FALSE(AuthorDomain({"a.example", "b.example"}, problem));
}

// A TXT zone for the evaluations.
struct Zone {
  std::map<std::string, dns::Answer> txt;
  void Set(const std::string& name, std::vector<std::string> texts) {
    dns::Answer a{dns::AnswerStatus::kOk};
    a.texts = std::move(texts);
    txt[name] = a;
  }
  Outcome Run(Request r) {
    Evaluation e(std::move(r));
    int rounds = 0;
    while (!e.Run() && ++rounds < 10) {
      const auto it = txt.find(e.needed().name);
      e.Provide(e.needed(),
                it != txt.end() ? it->second : dns::Answer{dns::AnswerStatus::kNxDomain});
    }
    return e.outcome();
  }
};

Request Req(std::string from, std::optional<Identifier> spf, std::vector<Identifier> dkim = {},
            uint8_t sample = 0) {
  return Request{std::move(from), std::move(spf), std::move(dkim), sample};
}

TEST(Dmarc, PassByAlignedSpfOrDkim) {
  Zone z;
  z.Set("_dmarc.example.com", {"v=DMARC1; p=reject"});
  Outcome o = z.Run(Req("example.com", Identifier{true, "bounces.example.com"}));
  EXPECT_EQ(o.result, Result::kPass);
  EXPECT_TRUE(o.spf_aligned);
  EXPECT_EQ(o.disposition, Policy::kNone);
  EXPECT_EQ(o.policy, Policy::kReject);
  o = z.Run(Req("example.com", Identifier{true, "other.example"},
                {{false, "example.com"}, {true, "mail.example.com"}}));
  EXPECT_EQ(o.result, Result::kPass);
  EXPECT_TRUE(o.dkim_aligned);
  EXPECT_FALSE(o.spf_aligned);
  // SPF passed for another domain and DKIM failed: fail, rejected.
  o = z.Run(Req("example.com", Identifier{true, "other.example"}, {{false, "example.com"}}));
  EXPECT_EQ(o.result, Result::kFail);
  EXPECT_EQ(o.disposition, Policy::kReject);
}

TEST(Dmarc, StrictAlignment) {
  Zone z;
  z.Set("_dmarc.example.com", {"v=DMARC1; p=quarantine; aspf=s; adkim=s"});
  const Outcome o = z.Run(
      Req("example.com", Identifier{true, "bounces.example.com"}, {{true, "mail.example.com"}}));
  EXPECT_EQ(o.result, Result::kFail);
  EXPECT_EQ(o.disposition, Policy::kQuarantine);
}

TEST(Dmarc, SubdomainUsesTheOrganizationalRecordAndSp) {
  Zone z;
  z.Set("_dmarc.example.com", {"v=DMARC1; p=reject; sp=none"});
  const Outcome o = z.Run(Req("news.example.com", std::nullopt));
  EXPECT_EQ(o.record_domain, "example.com");
  EXPECT_EQ(o.result, Result::kFail);
  EXPECT_EQ(o.policy, Policy::kNone);
  EXPECT_EQ(o.disposition, Policy::kNone);
  // A record at the subdomain itself wins, with its p=.
  z.Set("_dmarc.news.example.com", {"v=DMARC1; p=quarantine"});
  EXPECT_EQ(z.Run(Req("news.example.com", std::nullopt)).policy, Policy::kQuarantine);
}

TEST(Dmarc, PctSamplesAndWeakens) {
  Zone z;
  z.Set("_dmarc.example.com", {"v=DMARC1; p=reject; pct=20"});
  EXPECT_EQ(z.Run(Req("example.com", std::nullopt, {}, 19)).disposition, Policy::kReject);
  EXPECT_EQ(z.Run(Req("example.com", std::nullopt, {}, 20)).disposition, Policy::kQuarantine);
  z.Set("_dmarc.q.example", {"v=DMARC1; p=quarantine; pct=0"});
  EXPECT_EQ(z.Run(Req("q.example", std::nullopt, {}, 0)).disposition, Policy::kNone);
}

TEST(Dmarc, NoneTempAndPermErrors) {
  Zone z;
  z.Set("_dmarc.text.example", {"hello", "v=spf1 -all"});
  EXPECT_EQ(z.Run(Req("nothing.example", std::nullopt)).result, Result::kNone);
  EXPECT_EQ(z.Run(Req("text.example", std::nullopt)).result, Result::kNone);
  z.txt["_dmarc.temp.example"] = dns::Answer{dns::AnswerStatus::kTemporary};
  EXPECT_EQ(z.Run(Req("temp.example", std::nullopt)).result, Result::kTempError);
}

// RFC 7489 6.6.3 as written: several records, a record without a valid p=, or with an invalid
// sp=, end the discovery and DMARC is not applied (none, no policy), unless a valid rua= makes
// the record read as p=none; such a record never lends its p= to a subdomain.
TEST(Dmarc, RecordsThatAreNotUsableAreNotApplied) {
  Zone z;
  z.Set("_dmarc.two.example", {"v=DMARC1; p=none", "v=DMARC1; p=reject"});
  Outcome o = z.Run(Req("two.example", std::nullopt));
  EXPECT_EQ(o.result, Result::kNone);
  EXPECT_FALSE(o.policy);
  EXPECT_EQ(o.disposition, Policy::kNone);
  EXPECT_NE(o.problem.find("DMARC not applied"), std::string::npos) << o.problem;
  // Several at the From domain: no fallback to the organizational domain's record either.
  z.Set("_dmarc.example.com", {"v=DMARC1; p=reject"});
  z.Set("_dmarc.two.example.com", {"v=DMARC1; p=none", "v=DMARC1; p=none"});
  EXPECT_EQ(z.Run(Req("two.example.com", std::nullopt)).result, Result::kNone);
  for (const char* text : {"v=DMARC1; p=maybe", "v=DMARC1", "v=DMARC1; sp=reject",
                           "v=DMARC1; p=reject; sp=bogus", "v=DMARC1; p=reject; sp="}) {
    z.Set("_dmarc.bad.example", {text});
    o = z.Run(Req("bad.example", std::nullopt));
    EXPECT_EQ(o.result, Result::kNone) << text;
    EXPECT_FALSE(o.policy) << text;
    EXPECT_EQ(o.disposition, Policy::kNone) << text;
    EXPECT_NE(o.problem.find("DMARC not applied"), std::string::npos) << o.problem;
  }
  // With a valid rua=: p=none, for the domain and its subdomains (the invalid sp= is dropped).
  z.Set("_dmarc.rua.example", {"v=DMARC1; p=reject; sp=bogus; rua=mailto:r@rua.example"});
  for (const char* from : {"rua.example", "sub.rua.example"}) {
    o = z.Run(Req(from, std::nullopt));
    EXPECT_EQ(o.result, Result::kFail) << from;
    EXPECT_EQ(o.policy, Policy::kNone) << from;
    EXPECT_EQ(o.disposition, Policy::kNone) << from;
  }
  std::string problem;
  const std::optional<Record> r =
      ParseRecord("v=DMARC1; p=reject; sp=x; rua=mailto:a@b.c", problem);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->p, Policy::kNone);
  EXPECT_FALSE(r->sp);
  EXPECT_FALSE(ParseRecord("v=DMARC1; p=reject; sp=maybe", problem));
}

// No aligned pass, but an aligned identifier that could not be decided (DKIM key lookup or SPF
// temperror): temperror with the policy at stake, not fail; an unaligned one changes nothing.
TEST(Dmarc, UndecidedAlignedIdentifierIsTempError) {
  Zone z;
  z.Set("_dmarc.example.com", {"v=DMARC1; p=reject"});
  Outcome o = z.Run(Req("example.com", std::nullopt, {{false, "example.com", true}}));
  EXPECT_EQ(o.result, Result::kTempError);
  EXPECT_EQ(o.policy, Policy::kReject);
  EXPECT_EQ(o.disposition, Policy::kReject);
  o = z.Run(Req("example.com", Identifier{false, "mail.example.com", true}));
  EXPECT_EQ(o.result, Result::kTempError);
  o = z.Run(Req("example.com", std::nullopt, {{false, "junk.example", true}}));
  EXPECT_EQ(o.result, Result::kFail);
  // A pass wins over an undecided one.
  o = z.Run(Req("example.com", std::nullopt,
                {{false, "example.com", true}, {true, "example.com", false}}));
  EXPECT_EQ(o.result, Result::kPass);
}

// A name asked for is found once answered, whatever dots end it: the evaluation ends (it
// used to ask for "_dmarc.x." forever when the From domain ended in two dots).
TEST(DmarcEvaluation, EndsWhateverTheDomainLooksLike) {
  for (const char* from : {"example.com..", "EXAMPLE.com.", "example.com...", "."}) {
    Evaluation e({from, std::nullopt, {}, 0});
    int rounds = 0;
    while (!e.Run()) {
      ASSERT_LT(++rounds, 5) << from << " asks " << e.needed().name << " again";
      e.Provide(e.needed(), dns::Answer{dns::AnswerStatus::kNxDomain});
    }
    EXPECT_EQ(e.outcome().result, Result::kNone) << from;
  }
}

}  // namespace
}  // namespace relais::dmarc
