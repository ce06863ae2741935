// tools/relaisd/ingress_checks_test.cc — the ingress decisions that need no socket and no DNS:
// who is checked and who trusted, the header limits, and what a message check's verdict does
// to the session.
#include "tools/relaisd/ingress_checks.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace relais::relaisd {
namespace {

class NoListener final : public CheckListener {
 public:
  void OnSenderChecked(CheckState&) override { ++sender_checked; }
  void OnMessageChecked(CheckState&, const authcheck::Judgement&, std::string) override {
    ++message_checked;
  }
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
  ShardLog log_{clock_, 0};
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
