// protocols/spf/spf_test.cc — RFC 7208 check_host() over a scripted DNS.
#include "protocols/spf/spf.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/base/strings.h"

namespace relais::spf {
namespace {

using dns::Answer;
using dns::AnswerStatus;
using dns::RecordType;

// A zone: (name, type) -> answer. A name with no entry at all is NXDOMAIN; a name with some
// other type is NODATA.
class FakeDns {
 public:
  FakeDns& Txt(const std::string& name, std::vector<std::string> texts) {
    Answer a{AnswerStatus::kOk};
    a.texts = std::move(texts);
    zone_[{base::AsciiStrToLower(name), RecordType::kTxt}] = a;
    return *this;
  }
  FakeDns& Addr(const std::string& name, std::vector<std::string> ips) {
    Answer v4{AnswerStatus::kOk}, v6{AnswerStatus::kOk};
    for (const std::string& ip : ips) {
      const mail::IpAddress a = *mail::IpAddress::Parse(ip);
      (ip.find(':') == std::string::npos ? v4 : v6).addresses.push_back(a);
    }
    if (!v4.addresses.empty()) {
      zone_[{base::AsciiStrToLower(name), RecordType::kA}] = v4;
    }
    if (!v6.addresses.empty()) {
      zone_[{base::AsciiStrToLower(name), RecordType::kAaaa}] = v6;
    }
    return *this;
  }
  FakeDns& Mx(const std::string& name, std::vector<std::string> exchanges) {
    Answer a{AnswerStatus::kOk};
    uint16_t pref = 10;
    for (const std::string& x : exchanges) {
      a.mx.push_back({pref++, x});
    }
    zone_[{base::AsciiStrToLower(name), RecordType::kMx}] = a;
    return *this;
  }
  FakeDns& Ptr(const std::string& name, std::vector<std::string> names) {
    Answer a{AnswerStatus::kOk};
    a.texts = std::move(names);
    zone_[{base::AsciiStrToLower(name), RecordType::kPtr}] = a;
    return *this;
  }
  FakeDns& Fail(const std::string& name, RecordType type) {
    zone_[{base::AsciiStrToLower(name), type}] = Answer{AnswerStatus::kTemporary};
    return *this;
  }

  Answer Resolve(dns::Question q) {
    q.name = base::AsciiStrToLower(q.name);  // DNS names compare without case.
    asked.push_back(q);
    // As the real resolver does: c-ares refuses to build a question for a malformed name
    // (ARES_EBADNAME), and that maps to a temporary failure.
    std::string_view name = q.name;
    if (name.ends_with('.')) {
      name.remove_suffix(1);
    }
    for (size_t start = 0;;) {
      const size_t dot = name.find('.', start);
      const size_t length = (dot == std::string_view::npos ? name.size() : dot) - start;
      if (length == 0 || length > 63) {
        return Answer{AnswerStatus::kTemporary};
      }
      if (dot == std::string_view::npos) {
        break;
      }
      start = dot + 1;
    }
    const auto it = zone_.find({q.name, q.type});
    if (it != zone_.end()) {
      return it->second;
    }
    for (const auto& [key, answer] : zone_) {
      if (key.first == q.name) {
        return Answer{AnswerStatus::kNoData};
      }
    }
    return Answer{AnswerStatus::kNxDomain};
  }
  std::vector<dns::Question> asked;

 private:
  std::map<std::pair<std::string, RecordType>, Answer> zone_;
};

Outcome Check(FakeDns& dns, const std::string& ip, const std::string& sender,
              const std::string& helo = "mx.example.org", bool helo_identity = false) {
  Request r;
  r.ip = *mail::IpAddress::Parse(ip);
  r.sender = sender;
  r.helo = helo;
  r.helo_identity = helo_identity;
  r.receiver = "relais.example.net";
  r.now_unix_seconds = 1764000000;
  Evaluation e(r);
  int rounds = 0;
  while (!e.Run()) {
    EXPECT_LT(++rounds, 200) << "the evaluation does not converge";
    if (rounds >= 200) {
      break;
    }
    e.Provide(e.needed(), dns.Resolve(e.needed()));
  }
  return e.outcome();
}

Result R(FakeDns& dns, const std::string& ip, const std::string& sender) {
  return Check(dns, ip, sender).result;
}

// Names ending in dots (a sender domain, an include, a macro expansion) are found once
// answered: the evaluation ends.
TEST(Spf, TrailingDotsDoNotMakeItAskForever) {
  FakeDns dns;
  dns.Txt("dots.example", {"v=spf1 include:inc.example.. a:%{d}.. -all"})
      .Txt("inc.example", {"v=spf1 ip4:192.0.2.0/24 -all"});
  for (const char* sender : {"a@dots.example..", "a@dots.example.", "a@DOTS.example..."}) {
    const Outcome o = Check(dns, "198.51.100.1", sender);
    EXPECT_TRUE(o.result == Result::kFail || o.result == Result::kPermError ||
                o.result == Result::kNone)
        << sender << " " << ResultName(o.result) << " " << o.problem;
    EXPECT_LT(dns.asked.size(), 40u);
    dns.asked.clear();
  }
}

// RFC 7208 4.3, 4.8: a target name no DNS question can carry (an empty label, a label over
// 63 bytes, written so or made by a macro) is not a DNS error: never temperror. The
// mechanism does not match and counts as a void lookup; include and redirect of such a name
// are permerror (their check_host would be "none"); exp= of one gives no explanation.
TEST(Spf, MalformedTargetNamesAreNotTemporaryErrors) {
  const std::string long_local(70, 'x');
  FakeDns dns;
  dns.Txt("a.example", {"v=spf1 a:foo..a.example -all"})
      .Txt("mx.example", {"v=spf1 mx:.mx.example ip4:192.0.2.1 -all"})
      .Txt("macro.example", {"v=spf1 exists:%{l}.macro.example -all"})
      .Txt("macro-a.example", {"v=spf1 a:%{l}.x.macro-a.example/24 ?all"})
      .Txt("long.example", {"v=spf1 a:" + std::string(64, 'y') + ".long.example -all"})
      .Txt("inc.example", {"v=spf1 include:x..inc.example -all"})
      .Txt("redir.example", {"v=spf1 redirect=%{l}.redir.example"})
      .Txt("voids.example", {"v=spf1 a:a..v.example a:b..v.example a:c..v.example -all"})
      .Txt("exp.example", {"v=spf1 -all exp=%{l}.exp.example"});
  const auto check = [&](const std::string& sender, Result want) {
    const Outcome o = Check(dns, "198.51.100.1", sender);
    EXPECT_EQ(o.result, want) << sender << ": " << ResultName(o.result) << " " << o.problem;
    return o;
  };
  EXPECT_EQ(check("u@a.example", Result::kFail).void_lookups, 1u);
  check("u@mx.example", Result::kFail);
  EXPECT_EQ(R(dns, "192.0.2.1", "u@mx.example"), Result::kPass);  // Later terms still count.
  check(long_local + "@macro.example", Result::kFail);
  check("@macro.example", Result::kFail);  // Becomes postmaster: a usable name, NXDOMAIN.
  check(long_local + "@macro-a.example", Result::kNeutral);
  check("u@long.example", Result::kFail);
  check("u@inc.example", Result::kPermError);
  check(long_local + "@redir.example", Result::kPermError);
  check("u@voids.example", Result::kPermError);  // The third void lookup.
  const Outcome exp = check(long_local + "@exp.example", Result::kFail);
  EXPECT_EQ(exp.explanation, "");
  for (const dns::Question& q : dns.asked) {
    EXPECT_EQ(q.name.find(".."), std::string::npos) << "asked about " << q.name;
    EXPECT_EQ(q.name.find(long_local), std::string::npos) << "asked about " << q.name;
  }
}

// RFC 7208 5.3, 5.4, 7.1: a domain-spec may contain ':' and '/'; only a trailing "/digits" or
// "//digits" is a prefix length.
TEST(Spf, DomainSpecsMayContainColonsAndSlashes) {
  FakeDns dns;
  dns.Txt("s.example", {"v=spf1 a:foo/bar.s.example -all"})
      .Addr("foo/bar.s.example", {"192.0.2.1"})
      .Txt("c.example", {"v=spf1 a:foo:bar.c.example/24 -all"})
      .Addr("foo:bar.c.example", {"192.0.2.1"})
      .Txt("m.example", {"v=spf1 mx:a/b:c.m.example/24//64 -all"})
      .Mx("a/b:c.m.example", {"mail.m.example"})
      .Addr("mail.m.example", {"192.0.2.1", "2001:db8::1"})
      .Txt("i.example", {"v=spf1 include:x/y.i.example -all"})
      .Txt("x/y.i.example", {"v=spf1 ip4:192.0.2.1 -all"})
      .Txt("e.example", {"v=spf1 exists:%{i}.list/v1:x.e.example -all"})
      .Addr("192.0.2.1.list/v1:x.e.example", {"127.0.0.2"})
      .Txt("r.example", {"v=spf1 redirect=r/x.r.example"})
      .Txt("r/x.r.example", {"v=spf1 ip4:192.0.2.1 -all"})
      .Txt("bad.example", {"v=spf1 a:bad.example/33 -all"});
  for (const char* domain : {"s", "c", "m", "i", "e", "r"}) {
    const std::string sender = base::StrCat("u@", domain, ".example");
    const Outcome o = Check(dns, "192.0.2.1", sender);
    EXPECT_EQ(o.result, Result::kPass) << sender << ": " << o.problem;
  }
  EXPECT_EQ(R(dns, "192.0.2.200", "u@c.example"), Result::kPass);  // The /24 applied.
  EXPECT_EQ(R(dns, "192.0.2.200", "u@s.example"), Result::kFail);
  EXPECT_EQ(R(dns, "192.0.2.200", "u@m.example"), Result::kPass);
  EXPECT_EQ(R(dns, "2001:db8::ffff", "u@m.example"), Result::kPass);  // The //64 applied.
  EXPECT_EQ(R(dns, "192.0.2.1", "u@bad.example"), Result::kPermError);
}

// RFC 4291 2.2: ip6 takes the mixed notation; an IPv4-mapped network compares with IPv4
// clients as the IPv4 network it names. ip4 still takes dotted IPv4 only.
TEST(Spf, Ip6AcceptsMixedNotation) {
  FakeDns dns;
  dns.Txt("m.example", {"v=spf1 ip6:::FFFF:192.0.2.0/120 -all"})
      .Txt("h.example", {"v=spf1 ip6:::ffff:192.0.2.7 -all"})
      .Txt("n.example", {"v=spf1 ip6:64:ff9b::192.0.2.7 -all"})
      .Txt("w.example", {"v=spf1 ip4:::ffff:192.0.2.7 -all"})
      .Txt("v.example", {"v=spf1 ip6:192.0.2.7 -all"});
  EXPECT_EQ(R(dns, "192.0.2.99", "u@m.example"), Result::kPass);
  EXPECT_EQ(R(dns, "198.51.100.1", "u@m.example"), Result::kFail);
  EXPECT_EQ(R(dns, "192.0.2.7", "u@h.example"), Result::kPass);
  EXPECT_EQ(R(dns, "192.0.2.8", "u@h.example"), Result::kFail);
  EXPECT_EQ(R(dns, "64:ff9b::c000:207", "u@n.example"), Result::kPass);
  EXPECT_EQ(R(dns, "192.0.2.7", "u@w.example"), Result::kPermError);
  EXPECT_EQ(R(dns, "192.0.2.7", "u@v.example"), Result::kPermError);
}

TEST(Spf, Ip4AndAll) {
  FakeDns dns;
  dns.Txt("example.com", {"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all", "other text"});
  const Outcome pass = Check(dns, "192.0.2.5", "a@example.com");
  EXPECT_EQ(pass.result, Result::kPass);
  EXPECT_EQ(pass.mechanism, "ip4:192.0.2.0/24");
  EXPECT_EQ(pass.domain, "example.com");
  EXPECT_EQ(R(dns, "2001:db8:1::5", "a@example.com"), Result::kPass);
  const Outcome fail = Check(dns, "198.51.100.1", "a@example.com");
  EXPECT_EQ(fail.result, Result::kFail);
  EXPECT_EQ(fail.mechanism, "-all");
  EXPECT_EQ(fail.dns_terms, 0u);
  // Host bits in a CIDR are ignored; an IPv4 network never matches an IPv6 client.
  FakeDns host_bits;
  host_bits.Txt("h.example", {"v=spf1 ip4:192.0.2.77/30 -all"});
  EXPECT_EQ(R(host_bits, "192.0.2.78", "a@h.example"), Result::kPass);
  EXPECT_EQ(R(host_bits, "192.0.2.80", "a@h.example"), Result::kFail);
  EXPECT_EQ(R(host_bits, "::ffff:192.0.2.78", "a@h.example"), Result::kPass);  // Unmapped.
  EXPECT_EQ(R(host_bits, "2001:db8::1", "a@h.example"), Result::kFail);
}

TEST(Spf, QualifiersAndDefault) {
  FakeDns dns;
  dns.Txt("soft.example", {"v=spf1 ~all"})
      .Txt("neutral.example", {"v=spf1 ?all"})
      .Txt("plus.example", {"v=spf1 +all"})
      .Txt("empty.example", {"v=spf1"});
  EXPECT_EQ(R(dns, "192.0.2.1", "x@soft.example"), Result::kSoftFail);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@neutral.example"), Result::kNeutral);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@plus.example"), Result::kPass);
  const Outcome o = Check(dns, "192.0.2.1", "x@empty.example");
  EXPECT_EQ(o.result, Result::kNeutral);
  EXPECT_EQ(o.mechanism, "default");
}

TEST(Spf, NoneCases) {
  FakeDns dns;
  dns.Txt("text.example", {"v=spf10 -all", "hello"}).Addr("nodata.example", {"192.0.2.1"});
  EXPECT_EQ(R(dns, "192.0.2.1", "x@missing.example"), Result::kNone);  // NXDOMAIN
  EXPECT_EQ(R(dns, "192.0.2.1", "x@nodata.example"), Result::kNone);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@text.example"), Result::kNone);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@localhost"), Result::kNone);  // Not multi-label.
  EXPECT_EQ(R(dns, "192.0.2.1", "x@" + std::string(64, 'a') + ".example"), Result::kNone);
}

TEST(Spf, ErrorsArePermOrTemp) {
  FakeDns dns;
  dns.Txt("two.example", {"v=spf1 -all", "v=spf1 +all"})
      .Fail("temp.example", RecordType::kTxt)
      .Txt("bad1.example", {"v=spf1 foo:bar -all"})
      .Txt("bad2.example", {"v=spf1 ip4:300.1.1.1"})
      .Txt("bad3.example", {"v=spf1 a/33"})
      .Txt("bad4.example", {"v=spf1 redirect=a.example redirect=b.example"})
      .Txt("bad5.example", {"v=spf1 include:"})
      .Txt("bad6.example", {"v=spf1 ip6:192.0.2.1"})
      .Txt("bad7.example", {"v=spf1 exists:%{x}.example"})
      .Txt("bad8.example", {"v=spf1 a:example.123"})
      .Txt("bad9.example", {"v=spf1 all:x"})
      .Txt("bad10.example", {"v=spf1 exists:%{d0}.x.example"})
      .Txt("ok-mod.example", {"v=spf1 moo=cow foo.bar=%{d} -all"});
  EXPECT_EQ(R(dns, "192.0.2.1", "x@two.example"), Result::kPermError);
  const Outcome temp = Check(dns, "192.0.2.1", "x@temp.example");
  EXPECT_EQ(temp.result, Result::kTempError);
  EXPECT_NE(temp.problem.find("TXT of temp.example"), std::string::npos);
  for (int i = 1; i <= 10; ++i) {
    const Outcome o = Check(dns, "192.0.2.1", "x@bad" + std::to_string(i) + ".example");
    EXPECT_EQ(o.result, Result::kPermError) << i;
    EXPECT_FALSE(o.problem.empty()) << i;
  }
  EXPECT_EQ(R(dns, "192.0.2.1", "x@ok-mod.example"), Result::kFail);  // Unknown modifiers ignored.
}

TEST(Spf, IncludeResults) {
  FakeDns dns;
  dns.Txt("main.example", {"v=spf1 include:pass.example include:fail.example ?all"})
      .Txt("pass.example", {"v=spf1 ip4:192.0.2.1 -all"})
      .Txt("fail.example", {"v=spf1 -all"})
      .Txt("tempinc.example", {"v=spf1 include:temp.example -all"})
      .Fail("temp.example", RecordType::kTxt)
      .Txt("noneinc.example", {"v=spf1 include:nothing.example -all"})
      .Txt("perminc.example", {"v=spf1 include:two.example -all"})
      .Txt("two.example", {"v=spf1 -all", "v=spf1 ~all"});
  const Outcome pass = Check(dns, "192.0.2.1", "x@main.example");
  EXPECT_EQ(pass.result, Result::kPass);
  EXPECT_EQ(pass.mechanism, "include:pass.example");
  // A fail inside an include is only "no match".
  EXPECT_EQ(R(dns, "192.0.2.9", "x@main.example"), Result::kNeutral);
  EXPECT_EQ(R(dns, "192.0.2.9", "x@tempinc.example"), Result::kTempError);
  EXPECT_EQ(R(dns, "192.0.2.9", "x@noneinc.example"), Result::kPermError);
  EXPECT_EQ(R(dns, "192.0.2.9", "x@perminc.example"), Result::kPermError);
}

TEST(Spf, RedirectRules) {
  FakeDns dns;
  dns.Txt("r.example", {"v=spf1 ip4:198.51.100.0/24 redirect=target.example"})
      .Txt("target.example", {"v=spf1 ip4:192.0.2.1 -all"})
      .Txt("r-none.example", {"v=spf1 redirect=nothing.example"})
      .Txt("r-all.example", {"v=spf1 ~all redirect=target.example"});
  EXPECT_EQ(R(dns, "198.51.100.7", "x@r.example"), Result::kPass);  // Before the redirect.
  EXPECT_EQ(R(dns, "192.0.2.1", "x@r.example"), Result::kPass);     // Via the redirect.
  EXPECT_EQ(R(dns, "192.0.2.2", "x@r.example"), Result::kFail);
  EXPECT_EQ(R(dns, "192.0.2.2", "x@r-none.example"), Result::kPermError);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@r-all.example"), Result::kSoftFail);  // all wins.
}

TEST(Spf, AMxPtrExistsWithCidr) {
  FakeDns dns;
  dns.Txt("a.example", {"v=spf1 a -all"})
      .Addr("a.example", {"192.0.2.10", "2001:db8::10"})
      .Txt("acidr.example", {"v=spf1 a:hosts.example/24//64 -all"})
      .Addr("hosts.example", {"198.51.100.1", "2001:db8:5::1"})
      .Txt("mx.example", {"v=spf1 mx/30 -all"})
      .Mx("mx.example", {"mx1.mx.example", "mx2.mx.example"})
      .Addr("mx1.mx.example", {"203.0.113.1"})
      .Addr("mx2.mx.example", {"203.0.113.100"})
      .Txt("ptr.example", {"v=spf1 ptr -all"})
      .Ptr("5.2.0.192.in-addr.arpa", {"host.ptr.example", "liar.ptr.example"})
      .Addr("host.ptr.example", {"192.0.2.5"})
      .Ptr("6.2.0.192.in-addr.arpa", {"liar.ptr.example"})
      .Addr("liar.ptr.example", {"192.0.2.99"})
      .Txt("exists.example", {"v=spf1 exists:%{ir}.list.exists.example -all"})
      .Addr("1.2.0.192.list.exists.example", {"127.0.0.2"});
  EXPECT_EQ(R(dns, "192.0.2.10", "x@a.example"), Result::kPass);
  EXPECT_EQ(R(dns, "2001:db8::10", "x@a.example"), Result::kPass);
  EXPECT_EQ(R(dns, "192.0.2.11", "x@a.example"), Result::kFail);
  EXPECT_EQ(R(dns, "198.51.100.200", "x@acidr.example"), Result::kPass);
  EXPECT_EQ(R(dns, "2001:db8:5::ffff", "x@acidr.example"), Result::kPass);
  EXPECT_EQ(R(dns, "2001:db8:6::1", "x@acidr.example"), Result::kFail);
  EXPECT_EQ(R(dns, "203.0.113.3", "x@mx.example"), Result::kPass);
  EXPECT_EQ(R(dns, "203.0.113.101", "x@mx.example"), Result::kPass);
  EXPECT_EQ(R(dns, "203.0.113.50", "x@mx.example"), Result::kFail);
  EXPECT_EQ(R(dns, "192.0.2.5", "x@ptr.example"), Result::kPass);
  EXPECT_EQ(R(dns, "192.0.2.6", "x@ptr.example"), Result::kFail);  // Not validated.
  EXPECT_EQ(R(dns, "192.0.2.1", "x@exists.example"), Result::kPass);
  EXPECT_EQ(R(dns, "192.0.2.2", "x@exists.example"), Result::kFail);
}

TEST(Spf, MxAndDnsFailures) {
  FakeDns dns;
  std::vector<std::string> many;
  for (int i = 0; i < 11; ++i) {
    many.push_back("mx" + std::to_string(i) + ".big.example");
  }
  dns.Txt("big.example", {"v=spf1 mx -all"})
      .Mx("big.example", many)
      .Txt("mxtemp.example", {"v=spf1 mx -all"})
      .Fail("mxtemp.example", RecordType::kMx)
      .Txt("atemp.example", {"v=spf1 a:down.example -all"})
      .Fail("down.example", RecordType::kA)
      .Txt("ptrtemp.example", {"v=spf1 ptr -all"})
      .Fail("1.2.0.192.in-addr.arpa", RecordType::kPtr);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@big.example"), Result::kPermError);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@mxtemp.example"), Result::kTempError);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@atemp.example"), Result::kTempError);
  // A PTR failure only means no match (5.5).
  EXPECT_EQ(R(dns, "192.0.2.1", "x@ptrtemp.example"), Result::kFail);
}

TEST(Spf, TenTermLimitAndVoidLimit) {
  FakeDns dns;
  for (int i = 0; i < 12; ++i) {
    dns.Txt("c" + std::to_string(i) + ".example",
            {"v=spf1 include:c" + std::to_string(i + 1) + ".example -all"});
  }
  dns.Txt("c12.example", {"v=spf1 +all"});
  // c0 -> c1 -> ... -> c11: 11 includes before c11's record... over the limit.
  const Outcome deep = Check(dns, "192.0.2.1", "x@c0.example");
  EXPECT_EQ(deep.result, Result::kPermError);
  EXPECT_NE(deep.problem.find("more than 10"), std::string::npos);
  // Nine includes are fine.
  EXPECT_EQ(R(dns, "192.0.2.1", "x@c3.example"), Result::kPass);
  dns.Txt("voids.example", {"v=spf1 a:v1.example a:v2.example a:v3.example +all"})
      .Txt("twovoids.example", {"v=spf1 a:v1.example a:v2.example +all"});
  const Outcome voids = Check(dns, "192.0.2.1", "x@voids.example");
  EXPECT_EQ(voids.result, Result::kPermError);
  EXPECT_NE(voids.problem.find("void"), std::string::npos);
  EXPECT_EQ(R(dns, "192.0.2.1", "x@twovoids.example"), Result::kPass);
}

TEST(Spf, MacroExpansionPerRfcExamples) {
  // RFC 7208 7.4, sender strong-bad@email.example.com from 192.0.2.3.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"%{s}", "strong-bad@email.example.com"},
      {"%{o}", "email.example.com"},
      {"%{d}", "email.example.com"},
      {"%{d4}", "email.example.com"},
      {"%{d3}", "email.example.com"},
      {"%{d2}", "example.com"},
      {"%{d1}", "com"},
      {"%{dr}", "com.example.email"},
      {"%{d2r}", "example.email"},
      {"%{l}", "strong-bad"},
      {"%{l-}", "strong.bad"},
      {"%{lr}", "strong-bad"},
      {"%{lr-}", "bad.strong"},
      {"%{l1r-}", "strong"},
      {"%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
      {"%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
      {"%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
      {"%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
      {"%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
  };
  for (const auto& [macro, expected] : cases) {
    FakeDns dns;
    dns.Txt("email.example.com", {"v=spf1 exists:" + macro + " -all"});
    if (!macro.ends_with('}') && !expected.empty()) {
      // domain-spec needs a toplabel or a macro at the end: all these qualify.
    }
    dns.Addr(expected, {"127.0.0.2"});
    const Outcome o = Check(dns, "192.0.2.3", "strong-bad@email.example.com");
    EXPECT_EQ(o.result, Result::kPass)
        << macro << " -> " << (dns.asked.empty() ? "" : dns.asked.back().name);
  }
  // IPv6 nibbles.
  FakeDns dns;
  dns.Txt("email.example.com", {"v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all"})
      .Addr("1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com",
            {"127.0.0.2"});
  EXPECT_EQ(R(dns, "2001:db8::cb01", "strong-bad@email.example.com"), Result::kPass);
}

TEST(Spf, UppercaseMacrosAreUrlEscapedAndLiteralsWork) {
  FakeDns dns;
  dns.Txt("e.example", {"v=spf1 exists:%{L}.%%x%_y%-z.e.example -all"});
  dns.Addr("a%2Bb.%x y%20z.e.example", {"127.0.0.2"});
  EXPECT_EQ(R(dns, "192.0.2.3", "a+b@e.example"), Result::kPass);
}

TEST(Spf, ExplanationOnFail) {
  FakeDns dns;
  dns.Txt("email.example.com", {"v=spf1 -all exp=explain._spf.%{d}"})
      .Txt("explain._spf.email.example.com",
           {"%{i} is not one of %{d}'s designated mail servers; see %{r} at %{t}"});
  const Outcome o = Check(dns, "192.0.2.3", "strong-bad@email.example.com");
  EXPECT_EQ(o.result, Result::kFail);
  EXPECT_EQ(o.explanation,
            "192.0.2.3 is not one of email.example.com's designated mail servers; see "
            "relais.example.net at 1764000000");
  // A broken exp gives no explanation, never an error.
  FakeDns broken;
  broken.Txt("b.example", {"v=spf1 -all exp=nothing.b.example"});
  const Outcome b = Check(broken, "192.0.2.3", "x@b.example");
  EXPECT_EQ(b.result, Result::kFail);
  EXPECT_EQ(b.explanation, "");
  // An include's explanation is not used.
  FakeDns inc;
  inc.Txt("i.example", {"v=spf1 include:j.example -all"})
      .Txt("j.example", {"v=spf1 +all exp=x.j.example"});
  EXPECT_EQ(Check(inc, "192.0.2.3", "x@i.example").explanation, "");
}

TEST(Spf, HeloIdentityAndNullSender) {
  FakeDns dns;
  dns.Txt("mx.example.org", {"v=spf1 exists:%{l}.%{o}.check.example -all"})
      .Addr("postmaster.mx.example.org.check.example", {"127.0.0.2"});
  // Null sender: postmaster@HELO.
  const Outcome null = Check(dns, "192.0.2.3", "");
  EXPECT_EQ(null.result, Result::kPass);
  EXPECT_EQ(null.domain, "mx.example.org");
  const Outcome helo = Check(dns, "192.0.2.3", "someone@else.example", "mx.example.org", true);
  EXPECT_EQ(helo.result, Result::kPass);
}

TEST(Spf, PMacroUsesValidatedNames) {
  FakeDns dns;
  dns.Txt("p.example", {"v=spf1 exists:%{p}.ok.p.example -all"})
      .Ptr("7.2.0.192.in-addr.arpa", {"mail.p.example"})
      .Addr("mail.p.example", {"192.0.2.7"})
      .Addr("mail.p.example.ok.p.example", {"127.0.0.2"})
      .Addr("unknown.ok.p.example", {"127.0.0.3"});
  EXPECT_EQ(R(dns, "192.0.2.7", "x@p.example"), Result::kPass);
  // Without a validated name %{p} is "unknown".
  EXPECT_EQ(R(dns, "192.0.2.8", "x@p.example"), Result::kPass);
}

TEST(Spf, EveryQuestionIsAskedOnceAndCaseDoesNotMatter) {
  FakeDns dns;
  dns.Txt("case.example", {"V=SpF1 A:Case.Example MX -ALL"}).Addr("case.example", {"192.0.2.1"});
  Request r;
  r.ip = *mail::IpAddress::Parse("192.0.2.1");
  r.sender = "x@CASE.example";
  Evaluation e(r);
  while (!e.Run()) {
    e.Provide(e.needed(), dns.Resolve(e.needed()));
  }
  EXPECT_EQ(e.outcome().result, Result::kPass);
  std::set<std::pair<std::string, RecordType>> distinct;
  for (const auto& q : dns.asked) {
    EXPECT_TRUE(distinct.insert({q.name, q.type}).second) << q.name;
  }
}

}  // namespace
}  // namespace relais::spf
