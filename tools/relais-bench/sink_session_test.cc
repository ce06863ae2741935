// tools/relais-bench/sink_session_test.cc — the sink's protocol, tracking and fault choices.
#include "tools/relais-bench/sink_session.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace relais::bench {
namespace {

struct Recorder final : SinkHandler {
  std::map<SinkStep, std::vector<SinkAction>> script;  // Consumed front first.
  std::vector<std::string> messages;                   // "RUN SEQ n=RCPTS bytes=B".
  std::vector<std::string> dropped;
  std::vector<std::string> refused;

  SinkAction Decide(SinkStep step) override {
    auto& v = script[step];
    if (v.empty()) {
      return {};
    }
    SinkAction a = v.front();
    v.erase(v.begin());
    return a;
  }
  static std::string Name(const TrackingId& id) {
    return id.run.empty() ? "untracked" : std::string(id.run) + " " + std::to_string(id.seq);
  }
  void OnMessage(const TrackingId& id, uint32_t recipients, uint64_t bytes) override {
    messages.push_back(Name(id) + " n=" + std::to_string(recipients) +
                       " bytes=" + std::to_string(bytes));
  }
  void OnDropped(const TrackingId& id) override { dropped.push_back(Name(id)); }
  void OnRefused(const TrackingId& id) override { refused.push_back(Name(id)); }
  std::string StatReply(std::string_view run) override {
    return "250-run " + std::string(run) + "\r\n250 end\r\n";
  }
};

std::string Drain(SinkSession& s) {
  std::string out(s.PendingOutput());
  s.ConsumeOutput(out.size());
  return out;
}

constexpr std::string_view kMessage =
    "Received: from x\r\n\tby y\r\nX-Relais-Bench: r1 42 2\r\nSubject: t\r\n\r\nbody\r\n"
    "..dot\r\n";

TEST(SinkSession, PipelinedSmtpTransactionIsCountedByTrackingHeader) {
  SinkOptions options;
  Recorder r;
  SinkSession s(options, r);
  s.Start();
  EXPECT_TRUE(Drain(s).starts_with("220 "));
  s.Feed("EHLO c\r\n");
  const std::string ehlo = Drain(s);
  EXPECT_NE(ehlo.find("250-PIPELINING\r\n"), std::string::npos);
  EXPECT_TRUE(ehlo.ends_with("250 CHUNKING\r\n"));
  s.Feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n");
  EXPECT_EQ(Drain(s),
            "250 2.1.0 sender ok\r\n250 2.1.5 recipient ok\r\n250 2.1.5 recipient ok\r\n"
            "354 end data with <CR><LF>.<CR><LF>\r\n");
  // The body arrives split at an awkward place: between CR and LF of the final dot.
  const std::string body = std::string(kMessage) + ".\r";
  s.Feed(body);
  EXPECT_EQ(Drain(s), "");
  s.Feed("\nQUIT\r\n");
  EXPECT_EQ(Drain(s), "250 2.0.0 message taken\r\n221 2.0.0 bye\r\n");
  EXPECT_TRUE(s.WantsClose());
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "r1 42 n=2 bytes=" + std::to_string(body.size() + 1));
}

TEST(SinkSession, OnlyCrLfDotCrLfEndsData) {
  SinkOptions options;
  Recorder r;
  SinkSession s(options, r);
  s.Start();
  s.Feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
  Drain(s);
  // Smuggling attempts: none of these end the message.
  s.Feed("X-Relais-Bench: r1 1 1\r\n\r\na\n.\nb\r.\rc\r\n.\rd\n.\r\ne\r\n.\nf\r\n");
  EXPECT_EQ(Drain(s), "");
  EXPECT_TRUE(r.messages.empty());
  s.Feed(".\r\n");
  EXPECT_EQ(Drain(s), "250 2.0.0 message taken\r\n");
  EXPECT_EQ(r.messages.size(), 1u);
}

TEST(SinkSession, BdatChunksAndLast) {
  SinkOptions options;
  Recorder r;
  SinkSession s(options, r);
  s.Start();
  Drain(s);
  const std::string part1 = "X-Relais-Bench: run 7 1\r\n";
  const std::string part2 = "\r\nhello\r\n";
  s.Feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT " + std::to_string(part1.size()) +
         "\r\n" + part1 + "BDAT " + std::to_string(part2.size()) + " LAST\r\n" +
         part2.substr(0, 3));
  Drain(s);
  s.Feed(part2.substr(3));
  EXPECT_TRUE(Drain(s).ends_with("250 2.0.0 message taken\r\n"));
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "run 7 n=1 bytes=" + std::to_string(part1.size() + part2.size()));
  // BDAT without a transaction is read and refused; a bad size closes.
  s.Feed("BDAT 3 LAST\r\nabc");
  EXPECT_EQ(Drain(s), "503 5.5.1 need MAIL first\r\n");
  s.Feed("BDAT x\r\n");
  EXPECT_TRUE(Drain(s).starts_with("501 5.5.4"));
  EXPECT_TRUE(s.WantsClose());
}

TEST(SinkSession, LmtpRepliesOncePerAcceptedRecipient) {
  SinkOptions options;
  options.lmtp = true;
  Recorder r;
  r.script[SinkStep::kRcpt] = {{}, {550, false, 0}, {}};
  r.script[SinkStep::kDataEnd] = {{}, {452, false, 0}};
  SinkSession s(options, r);
  s.Start();
  Drain(s);
  s.Feed("EHLO c\r\n");
  EXPECT_TRUE(Drain(s).starts_with("500 5.5.1 this is LMTP"));
  s.Feed(
      "LHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nRCPT TO:<3@d>\r\nDATA\r\n");
  EXPECT_NE(Drain(s).find("550 5.0.0"), std::string::npos);
  s.Feed(std::string(kMessage) + ".\r\n");
  EXPECT_EQ(Drain(s),
            "250 2.0.0 message taken\r\n452 4.0.0 relais-bench sink: reply chosen for "
            "end of data\r\n");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].substr(0, 11), "r1 42 n=1 b");
}

TEST(SinkSession, ChosenRepliesRefuseAndAreNotCounted) {
  SinkOptions options;
  Recorder r;
  r.script[SinkStep::kMail] = {{451, false, 0}};
  r.script[SinkStep::kDataEnd] = {{554, false, 0}};
  SinkSession s(options, r);
  s.Start();
  s.Feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
  const std::string out = Drain(s);
  EXPECT_NE(out.find("451 4.0.0 relais-bench sink: reply chosen for MAIL\r\n503 5.5.1 need MAIL"),
            std::string::npos);
  s.Feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
  Drain(s);
  s.Feed(std::string(kMessage) + ".\r\n");
  EXPECT_TRUE(Drain(s).starts_with("554 5.0.0"));
  EXPECT_TRUE(r.messages.empty());
  EXPECT_EQ(r.refused, std::vector<std::string>{"r1 42"});
}

TEST(SinkSession, DropMidDataOnceTheTrackingHeaderIsIn) {
  SinkOptions options;
  Recorder r;
  r.script[SinkStep::kBody] = {{0, true, 0}};
  SinkSession s(options, r);
  s.Start();
  s.Feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
  Drain(s);
  s.Feed("X-Relais-Bench: r1 9 1\r\nSubj");  // The header block is not complete yet.
  EXPECT_FALSE(s.WantsAbort());
  s.Feed("ect: x\r\n\r\nbody goes on");
  EXPECT_TRUE(s.WantsAbort());
  EXPECT_EQ(r.dropped, std::vector<std::string>{"r1 9"});
  EXPECT_TRUE(r.messages.empty());
  s.Feed("\r\n.\r\n");  // Ignored after the drop.
  EXPECT_TRUE(r.messages.empty());
}

TEST(SinkSession, DelayedReplyHoldsLaterInputInOrder) {
  SinkOptions options;
  Recorder r;
  r.script[SinkStep::kRcpt] = {{0, false, 250}};
  SinkSession s(options, r);
  s.Start();
  Drain(s);
  s.Feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nNOOP\r\n");
  EXPECT_EQ(s.delay_ms(), 250u);
  EXPECT_TRUE(Drain(s).ends_with("250 2.1.0 sender ok\r\n"));
  s.Feed("RSET\r\n");
  EXPECT_EQ(Drain(s), "");
  s.ReleaseDelayed();
  EXPECT_EQ(s.delay_ms(), 0u);
  EXPECT_EQ(Drain(s), "250 2.1.5 recipient ok\r\n250 2.0.0 ok\r\n250 2.0.0 ok\r\n");
}

TEST(SinkSession, RefusedOrDroppedGreeting) {
  SinkOptions options;
  Recorder r;
  r.script[SinkStep::kConnect] = {{421, false, 0}, {0, true, 0}};
  SinkSession a(options, r);
  a.Start();
  EXPECT_TRUE(Drain(a).starts_with("421 4.0.0"));
  EXPECT_TRUE(a.WantsClose());
  SinkSession b(options, r);
  b.Start();
  EXPECT_TRUE(b.WantsAbort());
}

TEST(SinkSession, ProtocolErrorsAndStat) {
  SinkOptions options;
  Recorder r;
  SinkSession s(options, r);
  s.Start();
  Drain(s);
  s.Feed("MAIL FROM:<a@b>\r\nEHLO c\r\nRCPT TO:<x@y>\r\nDATA\r\nBOGUS\r\nXSTAT r9\r\n");
  const std::string out = Drain(s);
  EXPECT_NE(out.find("503 5.5.1 say hello first\r\n"), std::string::npos);
  EXPECT_NE(out.find("503 5.5.1 need MAIL first\r\n503 5.5.1 need MAIL first\r\n"
                     "500 5.5.2 command not recognized\r\n250-run r9\r\n250 end\r\n"),
            std::string::npos);
  s.Feed(std::string(5000, 'x'));
  EXPECT_TRUE(Drain(s).starts_with("500 5.5.2 command line too long"));
  EXPECT_TRUE(s.WantsClose());
}

TEST(SinkSession, TrackingValueParsing) {
  std::string run;
  uint64_t seq = 0;
  uint32_t n = 0;
  EXPECT_TRUE(ParseTrackingValue(" 0123abcd 18446744073709551615 3 ", run, seq, n));
  EXPECT_EQ(run, "0123abcd");
  EXPECT_EQ(seq, UINT64_MAX);
  EXPECT_EQ(n, 3u);
  for (std::string_view bad : {"", "run", "run 1", "run x 1", "run 1 0", "run 1 70000", " 1 1"}) {
    EXPECT_FALSE(ParseTrackingValue(bad, run, seq, n)) << bad;
  }
}

TEST(SinkSession, StartTlsDiscardsWhatWasPipelinedAndStartsOver) {
  SinkOptions options;
  options.starttls = true;
  Recorder r;
  SinkSession s(options, r);
  s.Start();
  Drain(s);
  s.Feed("STARTTLS\r\n");
  EXPECT_TRUE(Drain(s).starts_with("503 "));  // EHLO first.
  s.Feed("EHLO c\r\n");
  const std::string ehlo = Drain(s);
  EXPECT_NE(ehlo.find("250-STARTTLS\r\n"), std::string::npos);
  EXPECT_EQ(ehlo.find("AUTH"), std::string::npos);  // Not in the clear.
  s.Feed("AUTH PLAIN AHUAcA==\r\n");
  EXPECT_TRUE(Drain(s).starts_with("538 "));
  // The injection: commands behind STARTTLS in the same packet are never executed.
  s.Feed("STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n");
  EXPECT_EQ(Drain(s), "220 2.0.0 ready to start TLS\r\n");
  EXPECT_TRUE(s.TakeStartTls());
  EXPECT_FALSE(s.TakeStartTls());
  EXPECT_FALSE(s.WantsInput());
  s.Feed("RCPT TO:<x@example.com>\r\n");  // Still in the clear: dropped.
  EXPECT_EQ(Drain(s), "");
  s.TlsStarted();
  EXPECT_TRUE(s.WantsInput());
  EXPECT_TRUE(s.tls());
  s.Feed("MAIL FROM:<a@example.com>\r\n");
  EXPECT_TRUE(Drain(s).starts_with("503 5.5.1 say hello first"));  // The EHLO was forgotten.
  s.Feed("EHLO c\r\n");
  const std::string again = Drain(s);
  EXPECT_EQ(again.find("STARTTLS"), std::string::npos);
  EXPECT_NE(again.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
  s.Feed("STARTTLS\r\n");
  EXPECT_TRUE(Drain(s).starts_with("503 "));
}

TEST(SinkSession, AuthPlainAndLoginOverTls) {
  SinkOptions options;
  Recorder r;
  {
    SinkSession s(options, r);
    s.TlsStarted();  // Implicit TLS.
    s.Start();
    Drain(s);
    s.Feed("EHLO c\r\nAUTH PLAIN AHUAcA==\r\n");
    EXPECT_NE(Drain(s).find("235 2.7.0"), std::string::npos);
    EXPECT_TRUE(s.authenticated());
    s.Feed("AUTH PLAIN AHUAcA==\r\n");
    EXPECT_TRUE(Drain(s).starts_with("503 "));
  }
  {
    SinkSession s(options, r);
    s.TlsStarted();
    s.Start();
    Drain(s);
    s.Feed("EHLO c\r\nAUTH LOGIN\r\n");
    EXPECT_NE(Drain(s).find("334 VXNlcm5hbWU6\r\n"), std::string::npos);
    s.Feed("dQ==\r\n");
    EXPECT_EQ(Drain(s), "334 UGFzc3dvcmQ6\r\n");
    s.Feed("cA==\r\n");
    EXPECT_EQ(Drain(s), "235 2.7.0 authenticated\r\n");
    EXPECT_TRUE(s.authenticated());
  }
  {
    SinkSession s(options, r);
    s.TlsStarted();
    s.Start();
    Drain(s);
    s.Feed("EHLO c\r\nAUTH PLAIN\r\n");
    EXPECT_NE(Drain(s).find("334 \r\n"), std::string::npos);
    s.Feed("*\r\n");
    EXPECT_TRUE(Drain(s).starts_with("501 "));
    EXPECT_FALSE(s.authenticated());
    s.Feed("AUTH CRAM-MD5\r\n");
    EXPECT_TRUE(Drain(s).starts_with("504 "));
  }
}

}  // namespace
}  // namespace relais::bench
