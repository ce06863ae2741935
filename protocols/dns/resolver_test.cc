// protocols/dns/resolver_test.cc — the shard resolver against a real DNS server: dnsmasq on a
// loopback port (skipped when dnsmasq is not installed), driven by poll() as a shard's loop
// would drive it; and the reply-section readers on hand-made replies.
#include "protocols/dns/resolver.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "protocols/dns/blocking_resolver.h"

namespace relais::dns {
namespace {

TEST(DnsReply, TtlsFromTheAnswerAndAuthoritySections) {
  // Header: id, flags, 1 question, 1 answer, 1 authority, 0 additional.
  std::vector<unsigned char> r = {0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 1, 0, 0};
  auto name = [&](std::initializer_list<std::string_view> labels) {
    for (std::string_view l : labels) {
      r.push_back(static_cast<unsigned char>(l.size()));
      r.insert(r.end(), l.begin(), l.end());
    }
    r.push_back(0);
  };
  auto u16 = [&](uint16_t v) {
    r.push_back(static_cast<unsigned char>(v >> 8));
    r.push_back(static_cast<unsigned char>(v));
  };
  auto u32 = [&](uint32_t v) {
    u16(static_cast<uint16_t>(v >> 16));
    u16(static_cast<uint16_t>(v));
  };
  name({"a", "test"});
  u16(1);                         // A
  u16(1);                         // IN
  r.insert(r.end(), {0xC0, 12});  // Answer: a pointer to the question's name.
  u16(1);
  u16(1);
  u32(120);
  u16(4);
  r.insert(r.end(), {192, 0, 2, 1});
  name({"test"});  // Authority: SOA with MINIMUM 60, TTL 90.
  u16(6);
  u16(1);
  u32(90);
  u16(2 + 2 + 20);
  r.insert(r.end(), {0xC0, 14});  // mname -> "test"
  r.insert(r.end(), {0xC0, 14});  // rname
  u32(1);
  u32(2);
  u32(3);
  u32(4);
  u32(60);
  EXPECT_EQ(AnswerTtl(r.data(), static_cast<int>(r.size())), 120u);
  EXPECT_EQ(NegativeTtl(r.data(), static_cast<int>(r.size())), 60u);
  EXPECT_FALSE(NegativeTtl(r.data(), 20));  // Cut short: unreadable.
  EXPECT_FALSE(AnswerTtl(nullptr, 0));
}

// poll() over the sockets the resolver asks to watch: a shard loop in miniature.
struct PollLoop final : SocketWatcher {
  std::map<int, short> watched;
  void Watch(int fd, bool readable, bool writable) override {
    if (!readable && !writable) {
      watched.erase(fd);
    } else {
      watched[fd] = static_cast<short>((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
    }
  }
  void RunUntil(Resolver& r, const std::function<bool()>& done) {
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

class ResolverTest : public testing::Test {
 protected:
  void SetUp() override {
    const char* dnsmasq = "/usr/sbin/dnsmasq";
    if (access(dnsmasq, X_OK) != 0) {
      GTEST_SKIP() << "dnsmasq is not installed";
    }
    // A port probed free may be taken by another test's server before dnsmasq binds it; then
    // dnsmasq exits (or another server answers): start again on another port.
    for (int attempt = 0; attempt < 5 && !ready_; ++attempt) {
      StartDnsmasq(dnsmasq);
    }
    ASSERT_TRUE(ready_) << "dnsmasq did not start";
  }
  void StartDnsmasq(const char* dnsmasq) {
    const int probe = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(a);
    bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    getsockname(probe, reinterpret_cast<sockaddr*>(&a), &length);
    port_ = ntohs(a.sin_port);
    close(probe);
    pid_ = fork();
    if (pid_ == 0) {
      const std::string port = "--port=" + std::to_string(port_);
      execl(dnsmasq, dnsmasq, "--no-daemon", port.c_str(), "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--pid-file=", "--local=/test/", "--local-ttl=60", "--host-record=a.test,192.0.2.1",
            "--txt-record=t.test,v=spf1 -all", "--mx-host=m.test,mx.m.test,10",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    options_.servers = {"127.0.0.1:" + std::to_string(port_)};
    options_.timeout_ms = 300;
    auto r = Resolver::Create(options_, loop_, clock_);
    ASSERT_TRUE(r.ok()) << r.status();
    resolver_ = std::move(*r);
    // Until our dnsmasq answers with our record (not another test's server on the port).
    for (int i = 0; i < 100; ++i) {
      std::optional<Answer> got;
      resolver_->Resolve({"a.test", RecordType::kA}, [&](const Answer& answer) { got = answer; });
      loop_.RunUntil(*resolver_, [&] { return got.has_value(); });
      if (got && got->status == AnswerStatus::kOk) {
        ready_ = true;
        return;
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;  // It could not bind: try another port.
        resolver_.reset();
        return;
      }
      usleep(20'000);
    }
    resolver_.reset();
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void TearDown() override {
    resolver_.reset();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  Answer Ask(const Question& q) {
    std::optional<Answer> got;
    resolver_->Resolve(q, [&](const Answer& a) { got = a; });
    loop_.RunUntil(*resolver_, [&] { return got.has_value(); });
    EXPECT_TRUE(got.has_value());
    return got.value_or(Answer{});
  }

  uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
  ResolverOptions options_;
  PollLoop loop_;
  base::FakeClock clock_;
  std::unique_ptr<Resolver> resolver_;
};

TEST_F(ResolverTest, AnswersKeepTheOutcomesApart) {
  const Answer a = Ask({"a.test", RecordType::kA});
  ASSERT_EQ(a.status, AnswerStatus::kOk);
  ASSERT_EQ(a.addresses.size(), 1u);
  EXPECT_EQ(a.addresses[0].ToString(), "192.0.2.1");
  EXPECT_EQ(a.ttl_seconds, 60u);
  const Answer t = Ask({"t.test", RecordType::kTxt});
  ASSERT_EQ(t.status, AnswerStatus::kOk);
  EXPECT_EQ(t.texts, std::vector<std::string>{"v=spf1 -all"});
  const Answer m = Ask({"m.test", RecordType::kMx});
  ASSERT_EQ(m.mx.size(), 1u);
  EXPECT_EQ(m.mx[0].exchange, "mx.m.test");
  EXPECT_EQ(Ask({"nothing.test", RecordType::kA}).status, AnswerStatus::kNxDomain);
  EXPECT_EQ(Ask({"a.test", RecordType::kMx}).status, AnswerStatus::kNoData);
  // Names DNS cannot carry are refused locally: no such name, never a temporary failure.
  EXPECT_EQ(Ask({std::string(64, 'a') + ".test", RecordType::kTxt}).status,
            AnswerStatus::kNxDomain);
  EXPECT_EQ(Ask({"_dmarc." + std::string(250, 'a'), RecordType::kTxt}).status,
            AnswerStatus::kNxDomain);
}

TEST_F(ResolverTest, CachesForTheTtlAndSharesQueriesInFlight) {
  const ResolverStats before = resolver_->stats();
  int answered = 0;
  for (int i = 0; i < 3; ++i) {
    resolver_->Resolve({"T.test.", RecordType::kTxt}, [&](const Answer&) { ++answered; });
  }
  loop_.RunUntil(*resolver_, [&] { return answered == 3; });
  EXPECT_EQ(answered, 3);
  EXPECT_EQ(resolver_->stats().queries_sent - before.queries_sent, 1u);
  EXPECT_EQ(resolver_->stats().joined - before.joined, 2u);
  // Answered from the cache now, before Resolve returns.
  bool at_once = false;
  resolver_->Resolve({"t.test", RecordType::kTxt}, [&](const Answer&) { at_once = true; });
  EXPECT_TRUE(at_once);
  const uint64_t hits = resolver_->stats().cache_hits;
  ASSERT_TRUE(resolver_->FromCache({"t.test", RecordType::kTxt}));
  EXPECT_EQ(resolver_->stats().cache_hits, hits + 1);
  ASSERT_TRUE(resolver_->Cached({"t.test", RecordType::kTxt}));
  EXPECT_EQ(resolver_->stats().cache_hits, hits + 1);  // A peek is not a lookup.
  clock_.AdvanceMs(61'000);                            // Past the 60 s TTL.
  EXPECT_FALSE(resolver_->Cached({"t.test", RecordType::kTxt}));
  // NXDOMAIN is cached too (no SOA from dnsmasq here: the default negative TTL).
  Ask({"gone.test", RecordType::kA});
  ASSERT_TRUE(resolver_->Cached({"gone.test", RecordType::kA}));
  EXPECT_EQ(resolver_->Cached({"gone.test", RecordType::kA})->status, AnswerStatus::kNxDomain);
  clock_.AdvanceMs(uint64_t{options_.negative_ttl_default_seconds} * 1000 + 1);
  EXPECT_FALSE(resolver_->Cached({"gone.test", RecordType::kA}));
}

TEST_F(ResolverTest, TemporaryFailuresAreNotCachedAndTheCacheIsBounded) {
  PollLoop loop;
  ResolverOptions o;
  o.servers = {"127.0.0.1:9"};  // Nothing answers there.
  o.timeout_ms = 100;
  o.tries = 1;
  o.cache_entries_max = 2;
  auto dead = Resolver::Create(o, loop, clock_);
  ASSERT_TRUE(dead.ok());
  std::optional<Answer> got;
  (*dead)->Resolve({"a.test", RecordType::kA}, [&](const Answer& a) { got = a; });
  loop.RunUntil(**dead, [&] { return got.has_value(); });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, AnswerStatus::kTemporary);
  EXPECT_FALSE((*dead)->Cached({"a.test", RecordType::kA}));
  EXPECT_EQ((*dead)->stats().temporary_failures, 1u);

  ResolverOptions small = options_;
  small.cache_entries_max = 2;
  PollLoop loop2;
  auto bounded = Resolver::Create(small, loop2, clock_);
  ASSERT_TRUE(bounded.ok());
  int done = 0;
  for (const char* name : {"a.test", "t.test", "m.test"}) {
    (*bounded)->Resolve({name, RecordType::kA}, [&](const Answer&) { ++done; });
    loop2.RunUntil(**bounded, [&] { return done > 0; });
    done = 0;
  }
  EXPECT_EQ((*bounded)->cache_entries(), 2u);
  EXPECT_FALSE((*bounded)->Cached({"a.test", RecordType::kA}));  // The oldest went.
}

}  // namespace
}  // namespace relais::dns
