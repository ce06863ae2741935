// tools/relaisd/ingress_checks_test.cc — the ingress decisions that need no socket and no DNS:
// who is checked and who trusted, the header limits, and what a message check's verdict does
// to the session.
#include "tools/relaisd/ingress_checks.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace relais::relaisd {
namespace {

class NoListener final : public CheckListener {
 public:
  void OnSenderChecked(CheckState&) override { ++sender_checked; }
  void OnMessageChecked(CheckState&, const authcheck::Judgement& j, std::string h) override {
    ++message_checked;
    judgement = j;
    header = std::move(h);
  }
  authcheck::Judgement judgement;
  std::string header;
  int sender_checked = 0;
  int message_checked = 0;
};

authcheck::Policy Policy(authcheck::Mode spf, authcheck::Mode dkim, authcheck::Mode dmarc) {
  authcheck::Policy p;
  p.authserv_id = "mx.example";
  p.spf = spf;
  p.dkim = dkim;
  p.dmarc = dmarc;
  return p;
}

class IngressChecksTest : public testing::Test {
 protected:
  IngressChecksTest() {
    using authcheck::Mode;
    // Listener 0 checks everything, listener 1 nothing.
    options_.auth_by_listener = {Policy(Mode::kReject, Mode::kTag, Mode::kReject),
                                 Policy(Mode::kOff, Mode::kOff, Mode::kOff)};
    options_.auth_skip_networks = {*mail::IpNetwork::Parse("198.51.100.0/24")};
    options_.relay_networks = {*mail::IpNetwork::Parse("10.0.0.0/8")};
    options_.header_limits.received_max = 2;
    options_.hostname = "mx.example";
  }

  // A session from `client`, admitted on `listener`.
  std::unique_ptr<smtp::ServerSession> Admit(CheckState& state, const char* client,
                                             uint32_t listener) {
    const mail::IpAddress address = *mail::IpAddress::Parse(client);
    auto session = std::make_unique<smtp::ServerSession>(session_options_, address);
    checks_.Admit(state, *session, address, listener);
    session->Start();
    return session;
  }

  // Feeds the client's lines and takes what the session answered.
  static std::string Feed(smtp::ServerSession& session, std::string_view input) {
    session.Feed(input);
    std::string out(session.PendingOutput());
    session.ConsumeOutput(out.size());
    return out;
  }

  CheckOptions options_;
  smtp::SessionOptions session_options_;
  base::FakeClock clock_;
  base::Random random_{7};
  ShardMetrics metrics_;
  log::ShardLog log_{clock_, 0};
  NoListener listener_;
  IngressChecks checks_{options_, nullptr, clock_, random_, metrics_, log_, listener_};
};

TEST_F(IngressChecksTest, AnOutsiderIsCheckedAndItsMailFromWaitsForSpf) {
  CheckState state;
  auto session = Admit(state, "192.0.2.1", 0);
  EXPECT_TRUE(state.checked);
  EXPECT_FALSE(state.trusted);
  EXPECT_EQ(state.policy, &options_.auth_by_listener[0]);
  Feed(*session, "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n");
  EXPECT_TRUE(session->TakeSenderCheck());  // The shard must run SPF before answering.
}

TEST_F(IngressChecksTest, SkipAndRelayNetworksAreTrustedAndNotChecked) {
  for (const char* client : {"198.51.100.7", "10.1.2.3"}) {
    CheckState state;
    auto session = Admit(state, client, 0);
    EXPECT_FALSE(state.checked) << client;
    EXPECT_TRUE(state.trusted) << client;
    const std::string out =
        Feed(*session, "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n");
    EXPECT_FALSE(session->TakeSenderCheck()) << client;
    EXPECT_NE(out.find("250 2.1.0"), std::string::npos) << out;
  }
}

TEST_F(IngressChecksTest, WithTheChecksOffAnOutsiderIsNeitherCheckedNorTrusted) {
  CheckState state;
  auto session = Admit(state, "192.0.2.1", 1);
  EXPECT_FALSE(state.checked);
  EXPECT_FALSE(state.trusted);  // So its mail is never signed with our keys.
  EXPECT_TRUE(checks_.Signatures("From: a@sender.example\r\n\r\nbody\r\n").empty());
}

// [[dkim_sign]] users = [...]: an authenticated user's mail is signed with the keys naming it
// (whatever its From domain), anyone else's with the keys for the From domain.
TEST(IngressChecksSigningTest, KeysNamingTheUserSignItsMailElseByFromDomain) {
  constexpr std::string_view kEd25519Pem =
      "-----BEGIN PRIVATE KEY-----\n"
      "MC4CAQAwBQYDK2VwBCIEIKWxAEbTXJnb0NwXdMuxOs7j1bxeV/a1BTH3fFrHgbM+\n"
      "-----END PRIVATE KEY-----\n";
  auto key = [&](const char* domain, const char* selector) {
    dkim::SignOptions o;
    o.domain = domain;
    o.selector = selector;
    return authcheck::SigningKey{o, *crypto::PrivateKey::FromPem(kEd25519Pem)};
  };
  std::vector<authcheck::SigningKey> by_domain;
  by_domain.push_back(key("example.com", "domain"));
  std::vector<UserSigningKey> by_user;
  by_user.push_back(UserSigningKey{{"Alice@Example.COM"}, key("customer.example", "alice")});
  CheckOptions options;
  options.auth_by_listener = {authcheck::Policy{}};
  options.signing_keys = &by_domain;
  options.user_signing_keys = &by_user;
  base::FakeClock clock;
  base::Random random(1);
  ShardMetrics metrics;
  log::ShardLog log(clock, 0);
  NoListener listener;
  IngressChecks checks(options, nullptr, clock, random, metrics, log, listener);
  const std::string message = "From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n";
  // The user (its domain part in any case) gets its own key, not the From domain's.
  const std::string alice = checks.Signatures(message, "Alice@example.com");
  EXPECT_NE(alice.find("d=customer.example"), std::string::npos) << alice;
  EXPECT_NE(alice.find("s=alice"), std::string::npos) << alice;
  EXPECT_EQ(alice.find("d=example.com"), std::string::npos) << alice;
  // Another user: by From domain when it owns it; no user (a trusted network): by From domain.
  const std::vector<std::string> bob_owns = {"example.com"};
  const std::string bob = checks.Signatures(message, "bob@example.com", bob_owns);
  EXPECT_NE(bob.find("d=example.com"), std::string::npos) << bob;
  EXPECT_EQ(bob.find("d=customer.example"), std::string::npos) << bob;
  EXPECT_NE(checks.Signatures(message).find("s=domain"), std::string::npos);
  // A user is never signed for a From domain it does not own (else any submission user could
  // pass DMARC for every domain the relay signs): unsigned, counted.
  const std::vector<std::string> mallory_owns = {"other.example", "*.example.net"};
  EXPECT_EQ(checks.Signatures(message, "mallory@other.example", mallory_owns), "");
  EXPECT_EQ(checks.Signatures(message, "mallory@other.example"), "");
  EXPECT_EQ(metrics.dkim_sign_not_owned.value(), 2u);
  // The local part is compared exactly: "alice" is not "Alice", so by From domain, owned.
  EXPECT_EQ(checks.Signatures(message, "alice@example.com", bob_owns).find("d=customer.example"),
            std::string::npos);
  EXPECT_EQ(metrics.dkim_signed.value(), 4u);
}

TEST_F(IngressChecksTest, HeaderOverTheHopLimitIsRefusedAndCounted) {
  EXPECT_EQ(checks_.HeaderRefusal("Received: 1\r\nReceived: 2\r\nSubject: x\r\n\r\nbody\r\n"),
            smtp::Reply::kOk);
  EXPECT_EQ(metrics_.header_too_many_hops.value(), 0u);
  EXPECT_EQ(checks_.HeaderRefusal(
                "Received: 1\r\nReceived: 2\r\nReceived: 3\r\nSubject: x\r\n\r\nbody\r\n"),
            smtp::Reply::kTooManyHops);
  EXPECT_EQ(metrics_.header_too_many_hops.value(), 1u);
}

TEST_F(IngressChecksTest, AnyChecksIsFalseOnlyWhenEveryPolicyIsOff) {
  using authcheck::Mode;
  EXPECT_TRUE(AnyChecks(options_.auth_by_listener));
  EXPECT_FALSE(AnyChecks({Policy(Mode::kOff, Mode::kOff, Mode::kOff)}));
  EXPECT_TRUE(AnyChecks({Policy(Mode::kOff, Mode::kTag, Mode::kOff)}));
  EXPECT_FALSE(AnyChecks({}));
}

// poll() over the resolver's sockets: the shard's loop in miniature.
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
    for (int turns = 0; !done() && turns < 200; ++turns) {
      std::vector<pollfd> fds;
      for (const auto& [fd, events] : watched) {
        fds.push_back({fd, events, 0});
      }
      const int64_t timeout = r.TimeoutMs();
      poll(fds.data(), fds.size(), timeout < 0 ? 50 : static_cast<int>(timeout));
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

class DnsDownTest : public IngressChecksTest {
 protected:
  void SetUp() override {
    dns::ResolverOptions dns;
    dns.servers = {"127.0.0.1:9"};  // Discard: nothing answers there.
    dns.timeout_ms = 100;
    dns.tries = 1;
    auto resolver = dns::Resolver::Create(dns, loop_, clock_);
    ASSERT_TRUE(resolver.ok()) << resolver.status();
    resolver_ = std::move(*resolver);
  }
  PollLoop loop_;
  std::unique_ptr<dns::Resolver> resolver_;
};

// The whole sender check with DNS down (a server that does not answer): SPF is temperror, and
// a rejecting policy that defers temperrors makes MAIL FROM wait with 451 4.7.24.
TEST_F(DnsDownTest, SenderCheckDefersMailFrom) {
  options_.auth_by_listener[0].defer_temperror = true;
  IngressChecks checks(options_, resolver_.get(), clock_, random_, metrics_, log_, listener_);
  const mail::IpAddress client = *mail::IpAddress::Parse("192.0.2.1");
  smtp::ServerSession session(session_options_, client);
  CheckState state;
  checks.Admit(state, session, client, 0);
  session.Start();
  Feed(session, "EHLO client.example\r\nMAIL FROM:<a@sender.test>\r\n");
  ASSERT_TRUE(session.TakeSenderCheck());
  checks.StartSenderCheck(state, session, client);
  EXPECT_TRUE(state.pending);
  loop_.RunUntil(*resolver_, [&] { return listener_.sender_checked > 0; });
  ASSERT_EQ(listener_.sender_checked, 1);
  EXPECT_FALSE(state.pending);
  ASSERT_NE(state.spf_outcome, nullptr);
  EXPECT_EQ(state.spf_outcome->result, spf::Result::kTempError);
  std::string out(session.PendingOutput());
  EXPECT_EQ(out.rfind("451 4.7.24 ", 0), 0u) << out;
  EXPECT_EQ(metrics_.auth_deferred_spf.value(), 1u);
  EXPECT_EQ(metrics_.auth_spf[static_cast<size_t>(spf::Result::kTempError)].value(), 1u);
}

// The message check with DNS down: nothing could be verified, so the owner hears the verdict
// with an Authentication-Results field that says temperror (never "none"), and the check's
// state is released before the body changes.
TEST_F(DnsDownTest, MessageCheckEndsWithTemperrorResults) {
  options_.auth_by_listener[0].spf = authcheck::Mode::kOff;  // Straight to the message.
  IngressChecks checks(options_, resolver_.get(), clock_, random_, metrics_, log_, listener_);
  const mail::IpAddress client = *mail::IpAddress::Parse("192.0.2.1");
  smtp::ServerSession session(session_options_, client);
  CheckState state;
  checks.Admit(state, session, client, 0);
  session.Start();
  Feed(session,
       "EHLO client.example\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.com>\r\n"
       "DATA\r\n");
  Feed(session, "From: a@sender.test\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
  ASSERT_TRUE(session.TakeCommitRequest());
  ASSERT_NE(state.body_hashes, nullptr);  // The body observer saw the message.
  checks.StartMessageCheck(state, session, client);
  loop_.RunUntil(*resolver_, [&] { return listener_.message_checked > 0; });
  ASSERT_EQ(listener_.message_checked, 1);
  EXPECT_FALSE(state.pending);
  EXPECT_EQ(state.message_check, nullptr);
  EXPECT_EQ(state.body_hashes, nullptr);
  EXPECT_EQ(listener_.header.rfind("Authentication-Results: mx.example;", 0), 0u)
      << listener_.header;
  EXPECT_NE(listener_.header.find("dmarc=temperror"), std::string::npos) << listener_.header;
  EXPECT_EQ(listener_.judgement.verdict, authcheck::Verdict::kAccept);  // No policy was found.
  EXPECT_EQ(metrics_.auth_dmarc[static_cast<size_t>(dmarc::Result::kTempError)].value(), 1u);
}

class IngressVerdictTest : public IngressChecksTest {
 protected:
  // A checked session that has sent a whole message and waits for its commit.
  std::unique_ptr<smtp::ServerSession> AtEndOfData(CheckState& state) {
    auto session = Admit(state, "192.0.2.1", 1);  // No SPF: MAIL FROM is answered at once.
    Feed(*session,
         "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<b@example.com>\r\n"
         "DATA\r\n");
    Feed(*session,
         "Authentication-Results: mx.example; dmarc=pass\r\nFrom: a@sender.example\r\n"
         "\r\nbody\r\n.\r\n");
    EXPECT_TRUE(session->TakeCommitRequest());
    return session;
  }
};

TEST_F(IngressVerdictTest, ARejectIsRefusedWith550AndCounted) {
  CheckState state;
  auto session = AtEndOfData(state);
  authcheck::Judgement j;
  j.verdict = authcheck::Verdict::kReject;
  j.text = "DMARC policy of sender.example says reject";
  EXPECT_FALSE(checks_.ApplyVerdict(state, *session, *mail::IpAddress::Parse("192.0.2.1"), j));
  std::string out(session->PendingOutput());
  EXPECT_EQ(out.rfind("550 5.7.1 ", 0), 0u) << out;
  EXPECT_NE(out.find("says reject"), std::string::npos) << out;
  EXPECT_EQ(metrics_.auth_rejected_dmarc.value(), 1u);
  EXPECT_EQ(metrics_.auth_deferred_dmarc.value(), 0u);
}

TEST_F(IngressVerdictTest, ATempErrorIsDeferredWith451) {
  CheckState state;
  auto session = AtEndOfData(state);
  authcheck::Judgement j;
  j.verdict = authcheck::Verdict::kDefer;
  j.temperror = true;
  EXPECT_FALSE(checks_.ApplyVerdict(state, *session, *mail::IpAddress::Parse("192.0.2.1"), j));
  std::string out(session->PendingOutput());
  EXPECT_EQ(out.rfind("451 4.7.5", 0), 0u) << out;
  EXPECT_EQ(metrics_.auth_deferred_dmarc.value(), 1u);
}

TEST_F(IngressVerdictTest, AnAcceptedMessageLosesForgedResultsOfOurIdentity) {
  CheckState state;
  auto session = AtEndOfData(state);
  EXPECT_TRUE(checks_.ApplyVerdict(state, *session, *mail::IpAddress::Parse("192.0.2.1"),
                                   authcheck::Judgement{}));
  const std::string& body = session->transaction().body;
  EXPECT_EQ(body.find("Authentication-Results"), std::string::npos) << body;
  EXPECT_NE(body.find("From: a@sender.example"), std::string::npos) << body;
  EXPECT_EQ(metrics_.auth_rejected_dmarc.value() + metrics_.auth_deferred_dmarc.value(), 0u);
}

}  // namespace
}  // namespace relais::relaisd
