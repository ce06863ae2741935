// queue/delivery/mx_test.cc — tests of mx.h: MxEvaluation against a table of answers, and
// NextHopResolver over a fake Dns with a fake clock.
#include "queue/delivery/mx.h"

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace relais::delivery {
namespace {

using dns::AnswerStatus;
using dns::RecordType;

mail::IpAddress Ip(std::string_view text) {
  std::optional<mail::IpAddress> address = mail::IpAddress::Parse(text);
  EXPECT_TRUE(address.has_value()) << text;
  return address.value_or(mail::IpAddress{});
}

dns::Answer Mx(std::vector<dns::MxRecord> records, uint32_t ttl = 300) {
  dns::Answer answer;
  answer.status = AnswerStatus::kOk;
  answer.ttl_seconds = ttl;
  answer.mx = std::move(records);
  return answer;
}

dns::Answer Addresses(std::vector<std::string_view> texts, uint32_t ttl = 300) {
  dns::Answer answer;
  answer.status = AnswerStatus::kOk;
  answer.ttl_seconds = ttl;
  for (const std::string_view text : texts) {
    answer.addresses.push_back(Ip(text));
  }
  return answer;
}

dns::Answer WithStatus(AnswerStatus status, uint32_t ttl = 0) {
  dns::Answer answer;
  answer.status = status;
  answer.ttl_seconds = ttl;
  return answer;
}

std::string Key(RecordType type, std::string_view name) {
  return std::to_string(static_cast<int>(type)) + " " + dns::QuestionKey(name);
}

// Answers by "type name"; a question with no entry is NXDOMAIN. Records what was asked.
struct Zone {
  std::map<std::string, dns::Answer> answers;
  std::vector<std::string> asked;

  void Set(RecordType type, std::string_view name, dns::Answer answer) {
    answers[Key(type, name)] = std::move(answer);
  }
  dns::Answer Get(const dns::Question& question) const {
    const auto it = answers.find(Key(question.type, question.name));
    return it == answers.end() ? WithStatus(AnswerStatus::kNxDomain) : it->second;
  }
};

// Runs `evaluation` to the end on `zone`, answering every round's questions.
const Resolution& Evaluate(MxEvaluation& evaluation, Zone& zone) {
  for (int round = 0; round < 10 && evaluation.Run() == MxEvaluation::State::kNeedDns; ++round) {
    for (const dns::Question& question : evaluation.needed()) {
      zone.asked.push_back(Key(question.type, question.name));
      evaluation.Provide(question, zone.Get(question));
    }
  }
  EXPECT_EQ(evaluation.Run(), MxEvaluation::State::kDone);
  return evaluation.result();
}

std::vector<std::string> Names(const Resolution& resolution) {
  std::vector<std::string> names;
  for (const MxHost& host : resolution.hosts) {
    names.push_back(host.name);
  }
  return names;
}

std::vector<std::string> AddressTexts(const MxHost& host) {
  std::vector<std::string> texts;
  for (const mail::IpAddress& address : host.addresses) {
    texts.push_back(address.ToString());
  }
  return texts;
}

class MxTest : public ::testing::Test {
 protected:
  Resolution Resolve(std::string_view domain) {
    MxEvaluation evaluation(domain, options_, random_);
    Resolution resolution = Evaluate(evaluation, zone_);
    questions_ = evaluation.questions();
    return resolution;
  }

  MxOptions options_;
  base::Random random_{42};
  Zone zone_;
  uint32_t questions_ = 0;
};

TEST_F(MxTest, PreferenceOrder) {
  zone_.Set(RecordType::kMx, "example.com",
            Mx({{30, "c.example.net."}, {10, "A.Example.NET."}, {20, "b.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.2"}));
  zone_.Set(RecordType::kA, "c.example.net", Addresses({"192.0.2.3"}));
  const Resolution r = Resolve("Example.COM.");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(Names(r),
            (std::vector<std::string>{"a.example.net", "b.example.net", "c.example.net"}));
  EXPECT_EQ(r.hosts[0].preference, 10);
  EXPECT_EQ(r.hosts[2].preference, 30);
  EXPECT_FALSE(r.implicit);
  EXPECT_EQ(r.key, "a.example.net,b.example.net,c.example.net");
  EXPECT_EQ(AddressTexts(r.hosts[1]), std::vector<std::string>{"192.0.2.2"});
  // The MX question, then each host's A and AAAA (kAny) at once.
  EXPECT_EQ(questions_, 7u);
}

TEST_F(MxTest, EqualPreferenceSpreadOverSeeds) {
  zone_.Set(RecordType::kMx, "example.com",
            Mx({{10, "a.example.net"}, {10, "b.example.net"}, {5, "best.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.2"}));
  zone_.Set(RecordType::kA, "best.example.net", Addresses({"192.0.2.5"}));
  std::set<std::vector<std::string>> orders;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    base::Random random(seed);
    MxEvaluation evaluation("example.com", options_, random);
    const Resolution& r = Evaluate(evaluation, zone_);
    ASSERT_EQ(r.hosts.size(), 3u);
    EXPECT_EQ(r.hosts[0].name, "best.example.net");
    EXPECT_EQ(r.key, "a.example.net,b.example.net,best.example.net");
    orders.insert(Names(r));
  }
  EXPECT_EQ(orders.size(), 2u);  // Both orders of a and b were seen.
}

TEST_F(MxTest, ImplicitMxWhenNoData) {
  zone_.Set(RecordType::kMx, "example.com", WithStatus(AnswerStatus::kNoData));
  zone_.Set(RecordType::kA, "example.com", Addresses({"192.0.2.7"}, 120));
  zone_.Set(RecordType::kAaaa, "example.com", Addresses({"2001:db8::7"}, 60));
  const Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_TRUE(r.implicit);
  EXPECT_EQ(r.key, "example.com");
  ASSERT_EQ(r.hosts.size(), 1u);
  EXPECT_EQ(r.hosts[0].name, "example.com");
  EXPECT_EQ(r.hosts[0].preference, 0);
  EXPECT_EQ(AddressTexts(r.hosts[0]), (std::vector<std::string>{"192.0.2.7", "2001:db8::7"}));
  // The no-data answer without a TTL does not count; the smallest of the others does.
  EXPECT_EQ(r.ttl_seconds, 60u);
}

TEST_F(MxTest, ImplicitMxWithoutAddressIsNoMxAddress) {
  zone_.Set(RecordType::kMx, "example.com", WithStatus(AnswerStatus::kNoData));
  zone_.Set(RecordType::kA, "example.com", WithStatus(AnswerStatus::kNoData));
  zone_.Set(RecordType::kAaaa, "example.com", WithStatus(AnswerStatus::kNoData));
  const Resolution r = Resolve("example.com");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.code, 550);
  EXPECT_EQ(r.failure.enhanced, "5.4.4");
}

TEST_F(MxTest, NullMx) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{0, "."}}, 900));
  MxEvaluation evaluation("example.com", options_, random_);
  const Resolution& r = Evaluate(evaluation, zone_);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(evaluation.failure_reason(), Reason::kNullMx);
  EXPECT_EQ(r.failure.outcome, Outcome::kFailed);
  EXPECT_EQ(r.failure.code, 556);
  EXPECT_EQ(r.failure.enhanced, "5.1.10");
  EXPECT_NE(r.failure.detail.find("example.com"), std::string::npos);
  EXPECT_EQ(r.key, "");
  EXPECT_EQ(r.ttl_seconds, 900u);         // A permanent answer: cacheable for its TTL.
  EXPECT_EQ(evaluation.questions(), 1u);  // No address question at all.
  // The resolver's form of "." (an empty exchange) is the same null MX.
  zone_.Set(RecordType::kMx, "example.org", Mx({{0, ""}}));
  EXPECT_EQ(Resolve("example.org").failure.code, 556);
}

TEST_F(MxTest, NullMxAmongOthersIgnored) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{0, "."}, {10, "mx.example.net"}}));
  zone_.Set(RecordType::kA, "mx.example.net", Addresses({"192.0.2.1"}));
  const Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(Names(r), std::vector<std::string>{"mx.example.net"});
}

TEST_F(MxTest, NxDomain) {
  const Resolution r = Resolve("nowhere.example");  // Not in the zone: NXDOMAIN.
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.outcome, Outcome::kFailed);
  EXPECT_EQ(r.failure.code, 550);
  EXPECT_EQ(r.failure.enhanced, "5.1.2");
  EXPECT_EQ(questions_, 1u);
}

TEST_F(MxTest, ServfailOnMxIsTemporary) {
  zone_.Set(RecordType::kMx, "example.com", WithStatus(AnswerStatus::kTemporary));
  const Resolution r = Resolve("example.com");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.outcome, Outcome::kDeferred);
  EXPECT_EQ(r.failure.code, 451);
  EXPECT_EQ(r.failure.enhanced, "4.4.3");
  EXPECT_EQ(r.ttl_seconds, 0u);
}

TEST_F(MxTest, SomeHostAddressesTemporaryOthersFine) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}, {20, "b.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", WithStatus(AnswerStatus::kTemporary));
  zone_.Set(RecordType::kAaaa, "a.example.net", WithStatus(AnswerStatus::kTemporary));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.2"}));
  zone_.Set(RecordType::kAaaa, "b.example.net", WithStatus(AnswerStatus::kTemporary));
  const Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(Names(r), std::vector<std::string>{"b.example.net"});
  EXPECT_EQ(AddressTexts(r.hosts[0]), std::vector<std::string>{"192.0.2.2"});
}

TEST_F(MxTest, AllHostLookupsTemporary) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}, {20, "b.example.net"}}));
  for (const char* host : {"a.example.net", "b.example.net"}) {
    zone_.Set(RecordType::kA, host, WithStatus(AnswerStatus::kTemporary));
    zone_.Set(RecordType::kAaaa, host, WithStatus(AnswerStatus::kTemporary));
  }
  const Resolution r = Resolve("example.com");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.code, 451);
  EXPECT_EQ(r.failure.enhanced, "4.4.3");
}

TEST_F(MxTest, AllHostsNxDomainIsNoMxAddress) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}, {20, "b.example.net"}}));
  const Resolution r = Resolve("example.com");  // The hosts are not in the zone.
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.outcome, Outcome::kFailed);
  EXPECT_EQ(r.failure.code, 550);
  EXPECT_EQ(r.failure.enhanced, "5.4.4");
}

TEST_F(MxTest, SelfByNameIsLoop) {
  options_.self_names = {"MX.Relay.Example."};
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "mx.relay.example"}, {20, "b.example.net"}}));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.2"}));
  const Resolution r = Resolve("example.com");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.code, 550);
  EXPECT_EQ(r.failure.enhanced, "5.4.6");
  EXPECT_EQ(questions_, 1u);  // Dropped records are never looked up.
}

TEST_F(MxTest, SelfByAddressIsLoop) {
  options_.self_addresses = {Ip("198.51.100.1")};
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}, {10, "b.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.9", "198.51.100.1"}));
  const Resolution r = Resolve("example.com");
  EXPECT_FALSE(r.ok());  // b is this relay at 10: a, as good, is dropped too.
  EXPECT_EQ(r.failure.enhanced, "5.4.6");
}

TEST_F(MxTest, LowerPreferenceSelfKeepsTheBetterOnes) {
  options_.self_names = {"backup.relay.example"};
  options_.self_addresses = {Ip("2001:db8::99")};
  zone_.Set(RecordType::kMx, "example.com",
            Mx({{10, "a.example.net"},
                {20, "b.example.net"},
                {30, "backup.relay.example"},
                {40, "c.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.2"}));
  zone_.Set(RecordType::kA, "c.example.net", Addresses({"192.0.2.3"}));
  Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(Names(r), (std::vector<std::string>{"a.example.net", "b.example.net"}));
  EXPECT_EQ(r.key, "a.example.net,b.example.net");
  // By address: b (20) is this relay; only a is left.
  zone_.Set(RecordType::kAaaa, "b.example.net", Addresses({"2001:db8::99"}));
  r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(Names(r), std::vector<std::string>{"a.example.net"});
}

TEST_F(MxTest, ImplicitMxToSelf) {
  options_.self_addresses = {Ip("192.0.2.7")};
  zone_.Set(RecordType::kMx, "example.com", WithStatus(AnswerStatus::kNoData));
  zone_.Set(RecordType::kA, "example.com", Addresses({"192.0.2.7"}));
  EXPECT_EQ(Resolve("example.com").failure.enhanced, "5.4.6");
  options_.self_addresses.clear();
  options_.self_names = {"example.com"};
  EXPECT_EQ(Resolve("example.com").failure.enhanced, "5.4.6");
}

class MxFamilyTest : public MxTest {
 protected:
  void SetUp() override {
    zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}}));
    zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1", "192.0.2.2"}));
    zone_.Set(RecordType::kAaaa, "a.example.net", Addresses({"2001:db8::1"}));
  }
  std::vector<std::string> With(IpFamily family) {
    options_.family = family;
    zone_.asked.clear();
    const Resolution r = Resolve("example.com");
    EXPECT_TRUE(r.ok()) << r.failure.Text();
    return r.ok() ? AddressTexts(r.hosts[0]) : std::vector<std::string>{};
  }
};

TEST_F(MxFamilyTest, Modes) {
  EXPECT_EQ(With(IpFamily::kAny),
            (std::vector<std::string>{"192.0.2.1", "192.0.2.2", "2001:db8::1"}));
  EXPECT_EQ(With(IpFamily::kPreferIpv6),
            (std::vector<std::string>{"2001:db8::1", "192.0.2.1", "192.0.2.2"}));
  EXPECT_EQ(With(IpFamily::kIpv4), (std::vector<std::string>{"192.0.2.1", "192.0.2.2"}));
  EXPECT_EQ(zone_.asked, (std::vector<std::string>{Key(RecordType::kMx, "example.com"),
                                                   Key(RecordType::kA, "a.example.net")}));
  EXPECT_EQ(With(IpFamily::kIpv6), std::vector<std::string>{"2001:db8::1"});
  EXPECT_EQ(zone_.asked, (std::vector<std::string>{Key(RecordType::kMx, "example.com"),
                                                   Key(RecordType::kAaaa, "a.example.net")}));
}

TEST_F(MxFamilyTest, Ipv6OnlyWithOnlyARecordsIsNoMxAddress) {
  zone_.Set(RecordType::kAaaa, "a.example.net", WithStatus(AnswerStatus::kNoData));
  options_.family = IpFamily::kIpv6;
  const Resolution r = Resolve("example.com");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure.code, 550);
  EXPECT_EQ(r.failure.enhanced, "5.4.4");
}

TEST_F(MxFamilyTest, AnswersKeepOnlyTheirFamilyAndTheBound) {
  zone_.Set(RecordType::kA, "a.example.net",
            Addresses({"192.0.2.1", "2001:db8::5", "192.0.2.2", "192.0.2.3"}));
  options_.family = IpFamily::kIpv4;
  options_.addresses_per_host_max = 2;
  const Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(AddressTexts(r.hosts[0]), (std::vector<std::string>{"192.0.2.1", "192.0.2.2"}));
}

TEST_F(MxTest, MxRecordsMaxBoundsTheQuestions) {
  std::vector<dns::MxRecord> records;
  for (int i = 0; i < 50; ++i) {
    const std::string name = "mx" + std::to_string(i) + ".example.net";
    records.push_back({static_cast<uint16_t>(100 - i), name});
    zone_.Set(RecordType::kA, name, Addresses({"192.0.2.1"}));
  }
  zone_.Set(RecordType::kMx, "example.com", Mx(records));
  options_.mx_records_max = 3;
  const Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Names(r),
            (std::vector<std::string>{"mx49.example.net", "mx48.example.net", "mx47.example.net"}));
  EXPECT_EQ(questions_, 1u + 2u * 3u);
  EXPECT_EQ(zone_.asked.size(), 7u);
  options_.mx_records_max = 0;  // Read as 1: never an empty candidate list.
  EXPECT_EQ(Names(Resolve("example.com")), std::vector<std::string>{"mx49.example.net"});
}

TEST_F(MxTest, InvalidExchangeNamesSkipped) {
  zone_.Set(RecordType::kMx, "example.com",
            Mx({{1, "bad name.example"},
                {2, "semi;colon.example"},
                {3, std::string(300, 'a')},
                {4, "a..b.example"},
                {5, std::string(64, 'l') + ".example"},
                {6, "ok_host-1.example.net"}}));
  zone_.Set(RecordType::kA, "ok_host-1.example.net", Addresses({"192.0.2.1"}));
  const Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(Names(r), std::vector<std::string>{"ok_host-1.example.net"});
  EXPECT_EQ(questions_, 3u);
  // Only invalid names: no host, and never the implicit MX.
  zone_.Set(RecordType::kMx, "example.org", Mx({{1, "bad name"}}));
  zone_.Set(RecordType::kA, "example.org", Addresses({"192.0.2.1"}));
  EXPECT_EQ(Resolve("example.org").failure.enhanced, "5.4.4");
}

TEST_F(MxTest, DuplicateExchangeKeepsItsBestRecord) {
  zone_.Set(RecordType::kMx, "example.com",
            Mx({{30, "a.example.net"}, {20, "b.example.net"}, {10, "a.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kA, "b.example.net", Addresses({"192.0.2.2"}));
  const Resolution r = Resolve("example.com");
  EXPECT_EQ(Names(r), (std::vector<std::string>{"a.example.net", "b.example.net"}));
}

TEST_F(MxTest, InvalidDomainAsksNothing) {
  const Resolution r = Resolve("bad domain.example");
  EXPECT_EQ(r.failure.enhanced, "5.1.2");
  EXPECT_EQ(questions_, 0u);
}

TEST_F(MxTest, AddressLiteralsAnswerWithoutDns) {
  struct Case {
    std::string_view text;
    std::string_view address;
  };
  for (const Case& c : {Case{"[192.0.2.1]", "192.0.2.1"}, Case{"[IPv6:::1]", "::1"},
                        Case{"[ipv6:2001:DB8::1]", "2001:db8::1"}, Case{"::1", "::1"},
                        Case{"127.0.0.1", "127.0.0.1"}}) {
    MxEvaluation evaluation(c.text, options_, random_);
    ASSERT_EQ(evaluation.Run(), MxEvaluation::State::kDone) << c.text;
    const Resolution& r = evaluation.result();
    ASSERT_TRUE(r.ok()) << c.text << ": " << r.failure.Text();
    EXPECT_EQ(evaluation.questions(), 0u);
    EXPECT_EQ(r.hosts[0].name, c.address);
    EXPECT_EQ(r.key, c.address);
    EXPECT_EQ(AddressTexts(r.hosts[0]), std::vector<std::string>{std::string(c.address)});
    EXPECT_EQ(r.ttl_seconds, options_.ttl_max_seconds);
  }
  // Filtered by the family, and loop-checked as a recipient domain (not as a route's host).
  options_.family = IpFamily::kIpv4;
  MxEvaluation v6("[IPv6:::1]", options_, random_);
  ASSERT_EQ(v6.Run(), MxEvaluation::State::kDone);
  EXPECT_EQ(v6.result().failure.enhanced, "5.4.4");
  options_.self_addresses = {Ip("192.0.2.1")};
  MxEvaluation self("[192.0.2.1]", options_, random_);
  ASSERT_EQ(self.Run(), MxEvaluation::State::kDone);
  EXPECT_EQ(self.result().failure.enhanced, "5.4.6");
  MxEvaluation route = MxEvaluation::ForHost("[192.0.2.1]", options_, random_);
  ASSERT_EQ(route.Run(), MxEvaluation::State::kDone);
  EXPECT_TRUE(route.result().ok());
  // A bracketed text that is no address is no literal (and no valid name).
  MxEvaluation junk("[mx.example]", options_, random_);
  ASSERT_EQ(junk.Run(), MxEvaluation::State::kDone);
  EXPECT_FALSE(junk.result().ok());
}

TEST_F(MxTest, KeyIsTheSameForTheSameHostsInAnotherOrder) {
  zone_.Set(RecordType::kMx, "one.example",
            Mx({{10, "mx1.provider.example"}, {20, "MX2.provider.example."}}));
  zone_.Set(RecordType::kMx, "two.example",
            Mx({{5, "mx2.provider.example"}, {50, "mx1.provider.example"}}));
  zone_.Set(RecordType::kA, "mx1.provider.example", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kA, "mx2.provider.example", Addresses({"192.0.2.2"}));
  const Resolution one = Resolve("one.example");
  const Resolution two = Resolve("two.example");
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(two.ok());
  EXPECT_NE(Names(one), Names(two));
  EXPECT_EQ(one.key, "mx1.provider.example,mx2.provider.example");
  EXPECT_EQ(one.key, two.key);
}

TEST_F(MxTest, TtlIsTheSmallestCapped) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}}, 7200));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}, 5000));
  zone_.Set(RecordType::kAaaa, "a.example.net", WithStatus(AnswerStatus::kNoData));
  EXPECT_EQ(Resolve("example.com").ttl_seconds, 3600u);  // ttl_max_seconds.
  zone_.Set(RecordType::kAaaa, "a.example.net", WithStatus(AnswerStatus::kNoData, 30));
  EXPECT_EQ(Resolve("example.com").ttl_seconds, 30u);
}

TEST_F(MxTest, ForHostAsksOnlyAddressesAndNeverLoops) {
  options_.self_names = {"smarthost.example"};
  options_.self_addresses = {Ip("192.0.2.1")};
  zone_.Set(RecordType::kA, "smarthost.example", Addresses({"192.0.2.1"}));
  zone_.Set(RecordType::kAaaa, "smarthost.example", Addresses({"2001:db8::1"}));
  MxEvaluation evaluation = MxEvaluation::ForHost("SmartHost.Example", options_, random_);
  const Resolution& r = Evaluate(evaluation, zone_);
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(zone_.asked, (std::vector<std::string>{Key(RecordType::kA, "smarthost.example"),
                                                   Key(RecordType::kAaaa, "smarthost.example")}));
  EXPECT_EQ(r.key, "smarthost.example");
  EXPECT_EQ(AddressTexts(r.hosts[0]), (std::vector<std::string>{"192.0.2.1", "2001:db8::1"}));
  // No address (NXDOMAIN even): kHostUnresolved, a deferral.
  MxEvaluation missing = MxEvaluation::ForHost("gone.example", options_, random_);
  const Resolution& m = Evaluate(missing, zone_);
  EXPECT_EQ(missing.failure_reason(), Reason::kHostUnresolved);
  EXPECT_EQ(m.failure.outcome, Outcome::kDeferred);
  EXPECT_EQ(m.failure.enhanced, "4.4.3");
}

TEST_F(MxTest, ForHostAnswersFromTheHostsFileWithoutDns) {
  options_.hosts = std::make_shared<const dns::HostsTable>(dns::HostsTable::Parse(
      "192.0.2.30 relay.example relay\n2001:db8::30 relay.example\n192.0.2.31 relay.example\n"));
  options_.ttl_max_seconds = 900;
  // DNS would say otherwise: never asked.
  zone_.Set(RecordType::kA, "relay.example", Addresses({"198.51.100.1"}));
  MxEvaluation evaluation = MxEvaluation::ForHost("Relay.Example.", options_, random_);
  const Resolution& r = Evaluate(evaluation, zone_);
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_TRUE(zone_.asked.empty());
  EXPECT_EQ(evaluation.questions(), 0u);
  EXPECT_EQ(r.key, "relay.example");
  EXPECT_FALSE(r.implicit);
  EXPECT_EQ(r.ttl_seconds, 900u);
  // IPv4 first (kAny), each family in file order.
  EXPECT_EQ(AddressTexts(r.hosts[0]),
            (std::vector<std::string>{"192.0.2.30", "192.0.2.31", "2001:db8::30"}));
  // The family rules apply as to a DNS answer: IPv6 first, one address per family.
  options_.family = IpFamily::kPreferIpv6;
  options_.addresses_per_host_max = 1;
  MxEvaluation v6 = MxEvaluation::ForHost("relay.example", options_, random_);
  EXPECT_EQ(AddressTexts(Evaluate(v6, zone_).hosts[0]),
            (std::vector<std::string>{"2001:db8::30", "192.0.2.30"}));
  // Named only with IPv4 under ipv6: DNS is asked, as it would be without the file.
  options_.family = IpFamily::kIpv6;
  zone_.Set(RecordType::kAaaa, "relay", Addresses({"2001:db8::99"}));
  MxEvaluation only_v4 = MxEvaluation::ForHost("relay", options_, random_);
  const Resolution& o = Evaluate(only_v4, zone_);
  EXPECT_EQ(zone_.asked, std::vector<std::string>{Key(RecordType::kAaaa, "relay")});
  EXPECT_EQ(AddressTexts(o.hosts[0]), std::vector<std::string>{"2001:db8::99"});
}

TEST_F(MxTest, ForHostLocalhostWithoutAnEntry) {
  // No table at all, and a table from a file that does not name localhost (RFC 6761 6.3).
  for (const bool table : {false, true}) {
    options_.hosts =
        table ? std::make_shared<const dns::HostsTable>(dns::HostsTable::Parse("192.0.2.1 other\n"))
              : nullptr;
    MxEvaluation evaluation = MxEvaluation::ForHost("LocalHost", options_, random_);
    const Resolution& r = Evaluate(evaluation, zone_);
    ASSERT_TRUE(r.ok()) << r.failure.Text();
    EXPECT_EQ(r.hosts[0].name, "localhost");
    EXPECT_EQ(AddressTexts(r.hosts[0]), (std::vector<std::string>{"127.0.0.1", "::1"}));
  }
  EXPECT_TRUE(zone_.asked.empty());
}

TEST_F(MxTest, MxLookupsNeverUseTheHostsFile) {
  options_.hosts = std::make_shared<const dns::HostsTable>(
      dns::HostsTable::Parse("192.0.2.40 example.com mx.example.net\n"));
  // The recipient domain's MX, and its MX host's addresses, come from DNS only.
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "mx.example.net"}}));
  zone_.Set(RecordType::kA, "mx.example.net", Addresses({"198.51.100.7"}));
  Resolution r = Resolve("example.com");
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(AddressTexts(r.hosts[0]), std::vector<std::string>{"198.51.100.7"});
  EXPECT_EQ(questions_, 3u);
  // Even "localhost" as a recipient domain is a DNS question (NXDOMAIN here).
  EXPECT_EQ(Resolve("localhost").failure.enhanced, "5.1.2");
  EXPECT_EQ(questions_, 1u);
  // A domain whose implicit MX the table names: DNS has no address, so none.
  zone_.Set(RecordType::kMx, "example.com", WithStatus(AnswerStatus::kNoData));
  zone_.Set(RecordType::kA, "example.com", WithStatus(AnswerStatus::kNoData));
  zone_.Set(RecordType::kAaaa, "example.com", WithStatus(AnswerStatus::kNoData));
  EXPECT_EQ(Resolve("example.com").failure.enhanced, "5.4.4");
}

TEST_F(MxTest, UnaskedAnswersAreIgnored) {
  zone_.Set(RecordType::kMx, "example.com", Mx({{10, "a.example.net"}}));
  zone_.Set(RecordType::kA, "a.example.net", Addresses({"192.0.2.1"}));
  MxEvaluation evaluation("example.com", options_, random_);
  evaluation.Provide({"example.com", RecordType::kMx}, Mx({{0, "."}}));  // Before asked.
  const Resolution& r = Evaluate(evaluation, zone_);
  EXPECT_TRUE(r.ok());
}

// --- NextHopResolver --------------------------------------------------------------------------

// Answers from a Zone: FromCache for the keys in `cached`; Resolve later (Flush), or from
// inside the call when `immediate`.
class FakeDns final : public Dns {
 public:
  std::optional<dns::Answer> FromCache(const dns::Question& question) override {
    if (cached.contains(Key(question.type, question.name))) {
      return zone.Get(question);
    }
    return std::nullopt;
  }
  void Resolve(const dns::Question& question,
               std::function<void(const dns::Answer&)> done) override {
    ++resolves;
    if (immediate) {
      done(zone.Get(question));
      return;
    }
    pending.push_back({question, std::move(done)});
  }
  // Answers everything asked so far (and what those answers lead to).
  void Flush() {
    while (!pending.empty()) {
      std::vector<Pending> now = std::move(pending);
      pending.clear();
      for (Pending& p : now) {
        p.done(zone.Get(p.question));
      }
    }
  }

  struct Pending {
    dns::Question question;
    std::function<void(const dns::Answer&)> done;
  };
  Zone zone;
  std::set<std::string> cached;
  std::vector<Pending> pending;
  bool immediate = false;
  int resolves = 0;
};

class NextHopTest : public ::testing::Test {
 protected:
  NextHopTest() {
    dns_.zone.Set(RecordType::kMx, "example.com", Mx({{10, "mx.example.net"}}, 600));
    dns_.zone.Set(RecordType::kA, "mx.example.net", Addresses({"192.0.2.1"}, 300));
    dns_.zone.Set(RecordType::kAaaa, "mx.example.net", WithStatus(AnswerStatus::kNoData));
    resolver_ = std::make_unique<NextHopResolver>(options_, dns_, clock_, random_);
  }

  // Resolves `domain` through the fake DNS; the resolution either way.
  Resolution ResolveNow(std::string_view domain, bool* at_once = nullptr) {
    std::optional<Resolution> later;
    std::optional<Resolution> now =
        resolver_->ResolveMx(domain, [&](const Resolution& r) { later = r; });
    if (at_once != nullptr) {
      *at_once = now.has_value();
    }
    if (now) {
      return *now;
    }
    EXPECT_FALSE(later.has_value());
    dns_.Flush();
    EXPECT_TRUE(later.has_value());
    return later.value_or(Resolution{});
  }

  MxOptions options_;
  FakeDns dns_;
  base::FakeClock clock_;
  base::Random random_{7};
  std::unique_ptr<NextHopResolver> resolver_;
};

TEST_F(NextHopTest, AnswersLaterNeverFromInsideTheCall) {
  int calls = 0;
  Resolution got;
  const std::optional<Resolution> now =
      resolver_->ResolveMx("example.com", [&](const Resolution& r) {
        ++calls;
        got = r;
      });
  EXPECT_FALSE(now.has_value());
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(resolver_->in_flight(), 1u);
  dns_.Flush();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(got.ok());
  EXPECT_EQ(got.key, "mx.example.net");
  EXPECT_EQ(resolver_->in_flight(), 0u);
  EXPECT_EQ(resolver_->stats().evaluations, 1u);
}

TEST_F(NextHopTest, DnsCacheAnswersAtOnce) {
  dns_.cached = {Key(RecordType::kMx, "example.com"), Key(RecordType::kA, "mx.example.net"),
                 Key(RecordType::kAaaa, "mx.example.net")};
  bool called = false;
  const std::optional<Resolution> now =
      resolver_->ResolveMx("example.com", [&](const Resolution&) { called = true; });
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->ok());
  EXPECT_EQ(dns_.resolves, 0);
  EXPECT_FALSE(called);
  EXPECT_EQ(resolver_->in_flight(), 0u);
}

TEST_F(NextHopTest, DnsAnsweringInsideResolveIsTolerated) {
  dns_.immediate = true;  // Against the Dns contract, as an immediate c-ares failure might.
  bool called = false;
  const std::optional<Resolution> now =
      resolver_->ResolveMx("example.com", [&](const Resolution&) { called = true; });
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->ok());
  EXPECT_FALSE(called);
  EXPECT_EQ(resolver_->in_flight(), 0u);
}

TEST_F(NextHopTest, CacheHitThenTtlExpiry) {
  bool at_once = true;
  EXPECT_TRUE(ResolveNow("example.com", &at_once).ok());
  EXPECT_FALSE(at_once);
  EXPECT_EQ(resolver_->cached(), 1u);
  const Resolution hit = ResolveNow("Example.Com.", &at_once);
  EXPECT_TRUE(at_once);
  EXPECT_EQ(hit.key, "mx.example.net");
  EXPECT_EQ(hit.ttl_seconds, 300u);
  EXPECT_EQ(resolver_->stats().cache_hits, 1u);
  clock_.AdvanceMs(299'000);
  (void)ResolveNow("example.com", &at_once);
  EXPECT_TRUE(at_once);
  clock_.AdvanceMs(1'000);  // 300 s: expired.
  (void)ResolveNow("example.com", &at_once);
  EXPECT_FALSE(at_once);
  EXPECT_EQ(resolver_->stats().evaluations, 2u);
  EXPECT_EQ(resolver_->stats().lookups, 4u);
}

TEST_F(NextHopTest, CacheIsBoundedLeastRecentlyUsedFirst) {
  options_.cache_entries_max = 2;
  resolver_ = std::make_unique<NextHopResolver>(options_, dns_, clock_, random_);
  for (const char* domain : {"a.example", "b.example", "c.example"}) {
    dns_.zone.Set(RecordType::kMx, domain, Mx({{10, "mx.example.net"}}));
  }
  bool at_once = false;
  (void)ResolveNow("a.example");
  (void)ResolveNow("b.example");
  (void)ResolveNow("a.example", &at_once);  // a is now the most recent.
  EXPECT_TRUE(at_once);
  (void)ResolveNow("c.example");  // Forgets b.
  EXPECT_EQ(resolver_->cached(), 2u);
  (void)ResolveNow("a.example", &at_once);
  EXPECT_TRUE(at_once);
  (void)ResolveNow("b.example", &at_once);
  EXPECT_FALSE(at_once);
}

TEST_F(NextHopTest, TemporaryFailuresAreNotCached) {
  dns_.zone.Set(RecordType::kMx, "flaky.example", WithStatus(AnswerStatus::kTemporary));
  bool at_once = true;
  EXPECT_EQ(ResolveNow("flaky.example", &at_once).failure.enhanced, "4.4.3");
  EXPECT_EQ(resolver_->cached(), 0u);
  (void)ResolveNow("flaky.example", &at_once);
  EXPECT_FALSE(at_once);
  EXPECT_EQ(resolver_->stats().temporary, 2u);
  // A permanent failure with a TTL is cached.
  dns_.zone.Set(RecordType::kMx, "null.example", Mx({{0, "."}}, 600));
  EXPECT_EQ(ResolveNow("null.example").failure.code, 556);
  (void)ResolveNow("null.example", &at_once);
  EXPECT_TRUE(at_once);
  EXPECT_EQ(resolver_->stats().null_mx, 1u);
}

TEST_F(NextHopTest, ConcurrentRequestsShareOneEvaluation) {
  std::vector<std::string> keys;
  auto done = [&](const Resolution& r) { keys.push_back(r.key); };
  EXPECT_FALSE(resolver_->ResolveMx("example.com", done).has_value());
  EXPECT_FALSE(resolver_->ResolveMx("EXAMPLE.com", done).has_value());
  EXPECT_EQ(resolver_->in_flight(), 1u);
  EXPECT_EQ(dns_.pending.size(), 1u);  // One MX question.
  dns_.Flush();
  EXPECT_EQ(keys, (std::vector<std::string>{"mx.example.net", "mx.example.net"}));
  EXPECT_EQ(resolver_->stats().evaluations, 1u);
  EXPECT_EQ(dns_.resolves, 3);  // MX, A, AAAA.
}

TEST_F(NextHopTest, CallbackMayResolveAgain) {
  dns_.zone.Set(RecordType::kMx, "flaky.example", WithStatus(AnswerStatus::kTemporary));
  std::optional<Resolution> inner;
  bool inner_later = false;
  (void)resolver_->ResolveMx("example.com", [&](const Resolution&) {
    inner = resolver_->ResolveMx("example.com", [](const Resolution&) {});  // Cached now.
  });
  (void)resolver_->ResolveMx("flaky.example", [&](const Resolution&) {
    // Not cached: a new evaluation starts, answered later.
    inner_later = !resolver_->ResolveMx("flaky.example", [](const Resolution&) {}).has_value();
  });
  ASSERT_EQ(dns_.pending.size(), 2u);
  dns_.Flush();
  ASSERT_TRUE(inner.has_value());
  EXPECT_TRUE(inner->ok());
  EXPECT_TRUE(inner_later);
  EXPECT_EQ(resolver_->in_flight(), 0u);  // Flush answered the second evaluation too.
}

TEST_F(NextHopTest, DestroyedWithLookupsInFlight) {
  bool called = false;
  (void)resolver_->ResolveMx("example.com", [&](const Resolution&) { called = true; });
  resolver_.reset();
  dns_.Flush();  // The Dns answers after the resolver is gone: ignored.
  EXPECT_FALSE(called);
}

TEST_F(NextHopTest, DnsDestroyedFirstDropsTheCallbacks) {
  auto dns = std::make_unique<FakeDns>();
  dns->zone = dns_.zone;
  auto resolver = std::make_unique<NextHopResolver>(options_, *dns, clock_, random_);
  bool called = false;
  (void)resolver->ResolveMx("example.com", [&](const Resolution&) { called = true; });
  dns.reset();  // Drops its pending callbacks, as dns::Resolver does.
  EXPECT_EQ(resolver->in_flight(), 1u);
  resolver.reset();
  EXPECT_FALSE(called);
}

TEST_F(NextHopTest, CallbackMayDestroyTheResolver) {
  int calls = 0;
  auto done = [&](const Resolution&) {
    ++calls;
    resolver_.reset();
  };
  (void)resolver_->ResolveMx("example.com", done);
  (void)resolver_->ResolveMx("example.com", done);
  dns_.Flush();
  EXPECT_EQ(calls, 1);  // The second request died with the resolver.
  EXPECT_EQ(resolver_, nullptr);
}

TEST_F(NextHopTest, ResolveHost) {
  dns_.zone.Set(RecordType::kA, "smarthost.example", Addresses({"192.0.2.25"}, 60));
  std::optional<Resolution> later;
  EXPECT_FALSE(resolver_->ResolveHost("smarthost.example", [&](const Resolution& r) { later = r; })
                   .has_value());
  dns_.Flush();
  ASSERT_TRUE(later.has_value());
  ASSERT_TRUE(later->ok());
  EXPECT_EQ(AddressTexts(later->hosts[0]), std::vector<std::string>{"192.0.2.25"});
  // Cached apart from an MX lookup of the same name.
  EXPECT_TRUE(resolver_->ResolveHost("smarthost.example", {}).has_value());
  EXPECT_FALSE(resolver_->ResolveMx("smarthost.example", [](const Resolution&) {}).has_value());
  dns_.Flush();
  // A literal answers at once, without DNS.
  const int resolves = dns_.resolves;
  const std::optional<Resolution> literal = resolver_->ResolveHost("[IPv6:::1]", {});
  ASSERT_TRUE(literal.has_value());
  EXPECT_EQ(literal->hosts[0].name, "::1");
  EXPECT_EQ(dns_.resolves, resolves);
  // Unresolvable: a deferral, not cached.
  std::optional<Resolution> gone;
  (void)resolver_->ResolveHost("gone.example", [&](const Resolution& r) { gone = r; });
  dns_.Flush();
  ASSERT_TRUE(gone.has_value());
  EXPECT_EQ(gone->failure.code, 451);
  EXPECT_FALSE(resolver_->ResolveHost("gone.example", [](const Resolution&) {}).has_value());
  dns_.Flush();
}

TEST_F(NextHopTest, ResolveHostFromTheHostsFileAsksNoDns) {
  options_.hosts = std::make_shared<const dns::HostsTable>(
      dns::HostsTable::Parse("# pinned\n192.0.2.50 smarthost.example\n"));
  resolver_ = std::make_unique<NextHopResolver>(options_, dns_, clock_, random_);
  dns_.zone.Set(RecordType::kA, "smarthost.example", Addresses({"198.51.100.9"}, 60));
  bool called = false;
  const std::optional<Resolution> now =
      resolver_->ResolveHost("smarthost.example", [&](const Resolution&) { called = true; });
  ASSERT_TRUE(now.has_value());
  ASSERT_TRUE(now->ok());
  EXPECT_EQ(AddressTexts(now->hosts[0]), std::vector<std::string>{"192.0.2.50"});
  const std::optional<Resolution> localhost = resolver_->ResolveHost("localhost", {});
  ASSERT_TRUE(localhost.has_value());
  EXPECT_EQ(AddressTexts(localhost->hosts[0]), (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(dns_.resolves, 0);
  EXPECT_TRUE(dns_.pending.empty());
  EXPECT_FALSE(called);
  // The MX lookup of the same name still goes to DNS.
  EXPECT_FALSE(resolver_->ResolveMx("smarthost.example", [](const Resolution&) {}).has_value());
  EXPECT_GT(dns_.resolves, 0);
  dns_.Flush();
}

TEST_F(NextHopTest, StatsCountResults) {
  options_.self_names = {"self.example"};
  resolver_ = std::make_unique<NextHopResolver>(options_, dns_, clock_, random_);
  dns_.zone.Set(RecordType::kMx, "loop.example", Mx({{10, "self.example"}}, 60));
  EXPECT_EQ(ResolveNow("loop.example").failure.enhanced, "5.4.6");
  EXPECT_EQ(ResolveNow("nowhere.example").failure.enhanced, "5.1.2");
  const NextHopResolverStats& stats = resolver_->stats();
  dns_.zone.Set(RecordType::kMx, "dark.example", Mx({{10, "nowhere.example"}}));
  EXPECT_EQ(ResolveNow("dark.example").failure.enhanced, "5.4.4");
  EXPECT_TRUE(ResolveNow("example.com").ok());
  EXPECT_TRUE(ResolveNow("example.com").ok());  // A cache hit: no result counted again.
  EXPECT_EQ(stats.loops, 1u);
  EXPECT_EQ(stats.nxdomain, 1u);
  EXPECT_EQ(stats.no_address, 1u);
  EXPECT_EQ(stats.ok, 1u);
  EXPECT_EQ(stats.lookups, 5u);
  EXPECT_EQ(stats.cache_hits, 1u);
  EXPECT_EQ(stats.evaluations, 4u);
}

// --- ResolverDns over the shard's dns::Resolver ------------------------------------------------

// poll() over the resolver's sockets: a shard loop in miniature.
struct PollLoop final : dns::SocketWatcher {
  std::map<int, short> watched;
  void Watch(int fd, bool readable, bool writable) override {
    if (!readable && !writable) {
      watched.erase(fd);
    } else {
      watched[fd] = static_cast<short>((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
    }
  }
  void RunUntil(dns::Resolver& r, const std::function<bool()>& done) {
    for (int turns = 0; !done() && turns < 1000; ++turns) {
      std::vector<pollfd> fds;
      for (const auto& [fd, events] : watched) {
        fds.push_back({fd, events, 0});
      }
      const int64_t timeout = r.TimeoutMs();
      poll(fds.data(), fds.size(), timeout < 0 ? 100 : static_cast<int>(timeout));
      for (const pollfd& p : fds) {
        if ((p.revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
          r.OnReadable(p.fd);
        }
        if ((p.revents & POLLOUT) != 0) {
          r.OnWritable(p.fd);
        }
      }
      r.OnTimer();
    }
  }
};

// dnsmasq on a loopback port (skipped when it is not installed), as protocols/dns's tests run it.
class ResolverDnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dnsmasq = "/usr/sbin/dnsmasq";
    if (access(dnsmasq, X_OK) != 0) {
      GTEST_SKIP() << "dnsmasq is not installed";
    }
    for (int attempt = 0; attempt < 5 && resolver_ == nullptr; ++attempt) {
      Start(dnsmasq);
    }
    ASSERT_NE(resolver_, nullptr) << "dnsmasq did not start";
  }
  void Start(const char* dnsmasq) {
    const int probe = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(a);
    (void)bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    (void)getsockname(probe, reinterpret_cast<sockaddr*>(&a), &length);
    const uint16_t port = ntohs(a.sin_port);
    close(probe);
    pid_ = fork();
    if (pid_ == 0) {
      const std::string port_flag = "--port=" + std::to_string(port);
      execl(dnsmasq, dnsmasq, "--no-daemon", port_flag.c_str(), "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--pid-file=", "--local=/test/", "--local-ttl=60", "--mx-host=m.test,mx.m.test,10",
            "--host-record=mx.m.test,192.0.2.1", "--host-record=a.test,192.0.2.2",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    dns::ResolverOptions options;
    options.servers = {"127.0.0.1:" + std::to_string(port)};
    options.timeout_ms = 300;
    auto created = dns::Resolver::Create(options, loop_, clock_);
    ASSERT_TRUE(created.ok()) << created.status();
    std::unique_ptr<dns::Resolver> resolver = std::move(*created);
    for (int i = 0; i < 100; ++i) {  // Until our dnsmasq answers with our record.
      std::optional<dns::Answer> got;
      resolver->Resolve({"a.test", RecordType::kA},
                        [&](const dns::Answer& answer) { got = answer; });
      loop_.RunUntil(*resolver, [&] { return got.has_value(); });
      if (got && got->status == AnswerStatus::kOk) {
        // Forget that answer: the tests below start from an empty cache.
        clock_.AdvanceMs(61'000);
        resolver_ = std::move(resolver);
        return;
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;  // It could not bind: try another port.
        return;
      }
      usleep(20'000);
    }
    Stop();
  }
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  void TearDown() override {
    resolver_.reset();
    Stop();
  }
  // The resolution of `domain`, driving the loop until the callback ran.
  Resolution Resolve(NextHopResolver& resolver, std::string_view domain, bool* at_once) {
    std::optional<Resolution> later;
    std::optional<Resolution> now =
        resolver.ResolveMx(domain, [&](const Resolution& r) { later = r; });
    *at_once = now.has_value();
    if (now) {
      return *now;
    }
    loop_.RunUntil(*resolver_, [&] { return later.has_value(); });
    EXPECT_TRUE(later.has_value());
    return later.value_or(Resolution{});
  }

  pid_t pid_ = -1;
  PollLoop loop_;
  base::FakeClock clock_;
  base::Random random_{3};
  MxOptions options_;
  std::unique_ptr<dns::Resolver> resolver_;
};

TEST_F(ResolverDnsTest, ResolvesOnTheShardResolverThenFromItsCache) {
  ResolverDns dns(*resolver_);
  NextHopResolver resolver(options_, dns, clock_, random_);
  bool at_once = true;
  Resolution r = Resolve(resolver, "m.test", &at_once);
  EXPECT_FALSE(at_once);
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_EQ(r.key, "mx.m.test");
  EXPECT_EQ(r.hosts[0].preference, 10);
  EXPECT_EQ(AddressTexts(r.hosts[0]), std::vector<std::string>{"192.0.2.1"});
  r = Resolve(resolver, "a.test", &at_once);  // No MX: the implicit MX.
  ASSERT_TRUE(r.ok()) << r.failure.Text();
  EXPECT_TRUE(r.implicit);
  EXPECT_EQ(AddressTexts(r.hosts[0]), std::vector<std::string>{"192.0.2.2"});
  EXPECT_EQ(Resolve(resolver, "nothing.test", &at_once).failure.enhanced, "5.1.2");
  // Another shard-side resolver with an empty cache: the DNS cache answers every question.
  NextHopResolver fresh(options_, dns, clock_, random_);
  const uint64_t sent = resolver_->stats().queries_sent;
  r = Resolve(fresh, "m.test", &at_once);
  EXPECT_TRUE(at_once);
  EXPECT_EQ(r.key, "mx.m.test");
  EXPECT_EQ(resolver_->stats().queries_sent, sent);
}

TEST(ResolverDns, DeadServerIsATemporaryFailureLater) {
  PollLoop loop;
  base::FakeClock clock;
  base::Random random(1);
  dns::ResolverOptions o;
  o.servers = {"127.0.0.1:9"};  // Nothing answers there.
  o.timeout_ms = 100;
  o.tries = 1;
  auto dead = dns::Resolver::Create(o, loop, clock);
  ASSERT_TRUE(dead.ok());
  ResolverDns dns(**dead);
  MxOptions options;
  NextHopResolver resolver(options, dns, clock, random);
  std::optional<Resolution> got;
  EXPECT_FALSE(
      resolver.ResolveMx("example.com", [&](const Resolution& r) { got = r; }).has_value());
  loop.RunUntil(**dead, [&] { return got.has_value(); });
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->failure.enhanced, "4.4.3");
  EXPECT_EQ(resolver.cached(), 0u);
}

}  // namespace
}  // namespace relais::delivery
