// protocols/smtp/client_session_test.cc — the outbound SMTP/LMTP client, driven by scripted
// server replies.
#include "protocols/smtp/client_session.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocols/smtp/sasl.h"

namespace relais::smtp {
namespace {

constexpr std::string_view kEhloAll =
    "250-sink.example\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"
    "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 CHUNKING\r\n";

std::string Drain(ClientSession& s) {
  std::string out;
  while (s.HasOutput()) {
    const std::string_view v = s.PendingOutput();
    out.append(v);
    s.ConsumeOutput(v.size());
  }
  return out;
}

ClientOptions Options(bool lmtp = false) {
  ClientOptions o;
  o.helo_name = "relay.example";
  o.peer_name = "192.0.2.1:25";
  o.lmtp = lmtp;
  return o;
}

// Greets and negotiates with `ehlo` as the server's EHLO reply.
void Open(ClientSession& s, std::string_view ehlo) {
  s.Feed("220 sink.example ESMTP\r\n");
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
  s.Feed(ehlo);
  ASSERT_TRUE(s.ready());
}

struct Message {
  std::vector<std::string> rcpts;
  std::string content = "Subject: t\r\n\r\nhello\r\n";
  OutgoingMessage Out() const {
    OutgoingMessage m;
    m.sender = "a@x.example";
    for (const std::string& r : rcpts) {
      m.recipients.push_back({r, "", ""});
    }
    m.content = content;
    return m;
  }
};

TEST(ClientSession, ParsesExtensions) {
  ClientSession s(Options());
  EXPECT_EQ(s.TimeoutMs(), 300'000u);
  Open(s, kEhloAll);
  const ServerExtensions& e = s.extensions();
  EXPECT_TRUE(e.esmtp && e.pipelining && e.size && e.eightbitmime && e.smtputf8 &&
              e.enhanced_status_codes && e.dsn && e.chunking);
  EXPECT_EQ(e.size_max, 100000u);
  EXPECT_FALSE(e.starttls);
  EXPECT_EQ(s.TimeoutMs(), 0u);
}

TEST(ClientSession, PipelinedDataTransactionWithPerRecipientReplies) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
  Message m{{"b@y.example", "c@y.example"}, ".leading dot\r\nmiddle\r\n.\r\n..two\r\n"};
  const OutgoingMessage out = m.Out();
  s.Begin(out);
  // The envelope and DATA leave in one write.
  EXPECT_EQ(s.PendingOutput(),
            "MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\n"
            "DATA\r\n");
  Drain(s);
  EXPECT_EQ(s.TimeoutMs(), 300'000u);
  s.Feed("250 ok\r\n250 ok\r\n550 no such user\r\n");
  EXPECT_EQ(s.TimeoutMs(), 120'000u);  // Waiting for 354.
  s.Feed("354 go\r\n");
  EXPECT_EQ(Drain(s), "..leading dot\r\nmiddle\r\n..\r\n...two\r\n.\r\n");
  EXPECT_EQ(s.TimeoutMs(), 600'000u);
  EXPECT_FALSE(s.transaction_done());
  s.Feed("250 2.0.0 queued as X\r\n");
  ASSERT_TRUE(s.transaction_done());
  EXPECT_FALSE(s.transaction_untouched());
  const auto results = s.TakeResults();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].status, RecipientStatus::kDelivered);
  EXPECT_EQ(results[0].reply, "250 2.0.0 queued as X (in reply to end of data at 192.0.2.1:25)");
  EXPECT_EQ(results[1].status, RecipientStatus::kFailed);
  EXPECT_EQ(results[1].reply, "550 5.0.0 no such user (in reply to RCPT TO at 192.0.2.1:25)");
  EXPECT_TRUE(s.ready());

  // The next message on this connection starts with RSET, pipelined with the rest.
  s.Begin(out);
  EXPECT_TRUE(Drain(s).starts_with("RSET\r\nMAIL FROM:<a@x.example>\r\n"));
}

TEST(ClientSession, ChunkingSendsTheWholeTransactionInOneWrite) {
  ClientSession s(Options());
  Open(s, kEhloAll);
  Message m{{"b@y.example"}, "Subject: \xc3\xa9\r\n\r\n.x\r\n"};
  s.Begin(m.Out());
  EXPECT_EQ(s.PendingOutput(),
            "MAIL FROM:<a@x.example> SIZE=19 BODY=8BITMIME\r\nRCPT TO:<b@y.example>\r\n"
            "BDAT 19 LAST\r\nSubject: \xc3\xa9\r\n\r\n.x\r\n");  // BDAT: no dot-stuffing.
  Drain(s);
  s.Feed("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 done\r\n");
  ASSERT_TRUE(s.transaction_done());
  EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDelivered);
}

TEST(ClientSession, WithoutPipeliningOneCommandAtATimeAndMailRefusalSettlesAll) {
  ClientSession s(Options());
  Open(s, "250 sink\r\n");
  Message m{{"b@y.example", "c@y.example"}};
  s.Begin(m.Out());
  EXPECT_EQ(Drain(s), "MAIL FROM:<a@x.example>\r\n");
  s.Feed("451 4.3.0 try later\r\n");
  EXPECT_EQ(Drain(s), "");  // No RCPT after a refused MAIL.
  ASSERT_TRUE(s.transaction_done());
  for (const RecipientReply& r : s.TakeResults()) {
    EXPECT_EQ(r.status, RecipientStatus::kDeferred);
    EXPECT_TRUE(r.reply.starts_with("451 4.3.0 try later")) << r.reply;
  }
  // Next transaction: RSET first, and its reply is awaited before MAIL.
  s.Begin(m.Out());
  EXPECT_EQ(Drain(s), "RSET\r\n");
  s.Feed("250 ok\r\n");
  EXPECT_EQ(Drain(s), "MAIL FROM:<a@x.example>\r\n");
  s.Feed("250 ok\r\n");
  EXPECT_EQ(Drain(s), "RCPT TO:<b@y.example>\r\n");
  s.Feed("550 5.1.1 unknown\r\n");
  EXPECT_EQ(Drain(s), "RCPT TO:<c@y.example>\r\n");
  s.Feed("550 5.1.1 unknown\r\n");
  EXPECT_EQ(Drain(s), "");  // Nobody accepted: no DATA.
  ASSERT_TRUE(s.transaction_done());
  for (const RecipientReply& r : s.TakeResults()) {
    EXPECT_EQ(r.status, RecipientStatus::kFailed);
  }
}

TEST(ClientSession, HeloFallbackAndEightBitRefusedWithoutSending) {
  ClientSession s(Options());
  s.Feed("220 old\r\n");
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
  s.Feed("502 5.5.1 what?\r\n");
  EXPECT_EQ(Drain(s), "HELO relay.example\r\n");
  s.Feed("250 old\r\n");
  ASSERT_TRUE(s.ready());
  EXPECT_FALSE(s.extensions().esmtp);
  Message m{{"b@y.example"}, "Subject: caf\xc3\xa9\r\n\r\nx\r\n"};
  s.Begin(m.Out());
  EXPECT_EQ(Drain(s), "");
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
  EXPECT_TRUE(r[0].reply.starts_with("554 5.6.3 ")) << r[0].reply;
  EXPECT_TRUE(s.ready());

  EXPECT_NE(r[0].reply.find("8-bit bytes in a header section"), std::string::npos) << r[0].reply;

  // Declared 8BITMIME, though every byte is 7-bit: sent as it is, without BODY=.
  OutgoingMessage declared = m.Out();
  m.content = "plain\r\n";
  declared.content = m.content;
  declared.body_type = mail::BodyType::k8BitMime;
  s.Begin(declared);
  EXPECT_EQ(Drain(s), "RSET\r\n");
  s.Feed("250 ok\r\n");
  EXPECT_EQ(Drain(s), "MAIL FROM:<a@x.example>\r\n");
  EXPECT_FALSE(s.converted_7bit());
}

TEST(ClientSession, SizeAndSmtpUtf8AreCheckedBeforeSending) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250-SIZE 10\r\n250 8BITMIME\r\n");
  Message m{{"b@y.example"}};
  s.Begin(m.Out());
  EXPECT_EQ(Drain(s), "");
  auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
  EXPECT_TRUE(r[0].reply.starts_with("552 5.3.4 ")) << r[0].reply;

  m.content = "Subject: \xc3\xa9\r\n\r\nx\r\n";
  OutgoingMessage utf8 = m.Out();
  utf8.smtputf8 = true;
  s.Begin(utf8);
  r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
  EXPECT_TRUE(r[0].reply.starts_with("550 5.6.9 ")) << r[0].reply;
}

// Issue 18.12, RFC 6531 3.4: SMTPUTF8 is needed only by a non-ASCII envelope or header.
TEST(ClientSession, SmtpUtf8IsDroppedWhenEnvelopeAndHeaderAreAscii) {
  constexpr std::string_view kNoUtf8 = "250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
  struct Case {
    std::string sender;
    std::string rcpt;
    std::string content;
    std::string_view expect;  // Reply prefix when refused; empty when sent.
  };
  const std::vector<Case> cases = {
      {"a@x.example", "b@y.example", "Subject: plain\r\n\r\nbody\r\n", ""},
      // UTF-8 after the header section only: a body matter (8BITMIME), not SMTPUTF8's.
      {"a@x.example", "b@y.example", "Subject: plain\r\n\r\n\xc3\xa9\r\n", ""},
      {"a@x.example", "b@y.example", "\r\n\xc3\xa9 no header at all\r\n", ""},
      {"a@x.example", "b@y.example", "Subject: \xc3\xa9\r\n\r\nbody\r\n", "550 5.6.9 "},
      // In a folded line, in the last field, in a header that never ends.
      {"a@x.example", "b@y.example", "Subject: x\r\n \xc3\xa9\r\n\r\nb\r\n", "550 5.6.9 "},
      {"a@x.example", "b@y.example", "A: b\r\nFrom: \xc3\xa9 <a@x.example>\r\n\r\n", "550 5.6.9 "},
      {"a@x.example", "b@y.example", "Subject: x\r\nX: \xc3\xa9\r\n", "550 5.6.9 "},
      {"\xc3\xa9@x.example", "b@y.example", "Subject: x\r\n\r\nb\r\n", "553 5.6.7 "},
      {"a@x.example", "b@\xc3\xa9.example", "Subject: x\r\n\r\nb\r\n", "553 5.6.7 "},
  };
  for (const Case& c : cases) {
    ClientSession s(Options());
    Open(s, kNoUtf8);
    OutgoingMessage m;
    m.sender = c.sender;
    m.recipients.push_back({c.rcpt, "", ""});
    m.content = c.content;
    m.smtputf8 = true;
    s.Begin(m);
    const std::string out = Drain(s);
    if (c.expect.empty()) {
      EXPECT_TRUE(out.starts_with("MAIL FROM:<a@x.example>")) << out;
      EXPECT_EQ(out.find("SMTPUTF8"), std::string::npos) << out;
      EXPECT_TRUE(s.smtputf8_dropped());
      s.Feed("250 ok\r\n250 ok\r\n354 go\r\n");
      EXPECT_EQ(Drain(s), c.content + ".\r\n");
      s.Feed("250 2.0.0 done\r\n");
      ASSERT_TRUE(s.transaction_done());
      EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDelivered);
    } else {
      EXPECT_EQ(out, "");
      ASSERT_TRUE(s.transaction_done());
      const auto r = s.TakeResults();
      EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
      EXPECT_TRUE(r[0].reply.starts_with(c.expect)) << c.content << " -> " << r[0].reply;
    }
  }
  // A server that offers SMTPUTF8 gets it, needed or not.
  ClientSession s(Options());
  Open(s, kEhloAll);
  Message m{{"b@y.example"}};
  OutgoingMessage out = m.Out();
  out.smtputf8 = true;
  s.Begin(out);
  EXPECT_NE(Drain(s).find(" SMTPUTF8\r\n"), std::string::npos);
  EXPECT_FALSE(s.smtputf8_dropped());
}

// Issue 18.13, RFC 6152 3: 8-bit mail to a server without 8BITMIME is converted, not bounced.
TEST(ClientSession, EightBitMessageIsConvertedForAServerWithout8BitMime) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
  Message m{{"b@y.example"},
            "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"};
  OutgoingMessage out = m.Out();
  out.body_type = mail::BodyType::k8BitMime;
  s.Begin(out);
  EXPECT_TRUE(s.converted_7bit());
  const std::string expected =
      "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n";
  // SIZE is the converted size; no BODY=8BITMIME for a server that does not know it.
  EXPECT_EQ(Drain(s), "MAIL FROM:<a@x.example> SIZE=" + std::to_string(expected.size()) +
                          "\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
  s.Feed("250 ok\r\n250 ok\r\n354 go\r\n");
  EXPECT_EQ(Drain(s), expected + ".\r\n");
  s.Feed("250 2.0.0 done\r\n");
  ASSERT_TRUE(s.transaction_done());
  EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDelivered);

  // The limit applies to what is sent: a message that fits only before conversion does not.
  m.content = "Subject: s\r\n\r\n" + std::string(700, '\xe9') + "\r\n";
  s.Begin(m.Out());
  EXPECT_FALSE(s.converted_7bit() && s.HasOutput());
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  EXPECT_TRUE(r[0].reply.starts_with("552 5.3.4 ")) << r[0].reply;

  // What cannot be converted faithfully is refused with the reason.
  m.content = "Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\n\xe9\r\n";
  s.Begin(m.Out());
  ASSERT_TRUE(s.transaction_done());
  const auto refused = s.TakeResults();
  EXPECT_TRUE(refused[0].reply.starts_with("554 5.6.3 8-bit message not convertible"))
      << refused[0].reply;
}

TEST(ClientSession, LmtpGivesOneReplyPerAcceptedRecipient) {
  ClientSession s(Options(/*lmtp=*/true));
  s.Feed("220 lmtp\r\n");
  EXPECT_EQ(Drain(s), "LHLO relay.example\r\n");
  s.Feed("250-lmtp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
  ASSERT_TRUE(s.ready());
  Message m{{"a@l.example", "b@l.example", "c@l.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.Feed("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n");
  EXPECT_TRUE(Drain(s).ends_with("\r\n.\r\n"));
  s.Feed("250 2.0.0 a delivered\r\n");
  EXPECT_FALSE(s.transaction_done());
  s.Feed("452 4.2.2 c over quota\r\n");
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kDelivered);
  EXPECT_EQ(r[1].status, RecipientStatus::kFailed);
  EXPECT_EQ(r[2].status, RecipientStatus::kDeferred);
  EXPECT_TRUE(r[2].reply.starts_with("452 4.2.2 c over quota")) << r[2].reply;
}

TEST(ClientSession, LmtpHangupAfterSomeRepliesDefersOnlyTheRest) {
  ClientSession s(Options(/*lmtp=*/true));
  s.Feed("220 lmtp\r\n250-lmtp\r\n250 PIPELINING\r\n");
  Drain(s);
  Message m{{"a@l.example", "b@l.example"}};
  s.Begin(m.Out());
  s.Feed("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
  Drain(s);  // The body goes out before any reply to it can come.
  s.Feed("250 a ok\r\n");
  s.OnConnectionLost("connection reset");
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kDelivered);
  EXPECT_EQ(r[1].status, RecipientStatus::kDeferred);
  EXPECT_TRUE(s.closed());
}

TEST(ClientSession, HangupMidDataIsNeverCountedAsSent) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.Feed("250 ok\r\n250 ok\r\n354 go\r\n");
  Drain(s);                                          // The body and the final dot went out...
  s.OnConnectionLost("peer closed the connection");  // ...but no reply came.
  ASSERT_TRUE(s.transaction_done());
  EXPECT_FALSE(s.transaction_untouched());
  const auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kDeferred);
  EXPECT_EQ(r[0].reply,
            "451 4.4.2 connection to 192.0.2.1:25 lost (peer closed the connection) while "
            "waiting for the reply to end of data");
  EXPECT_TRUE(s.closed());
}

// The typed codes of a result come from where the verdict was made: the server's reply as
// parsed off the wire (its enhanced code, or X.0.0 when it gave none), or the session's own
// verdict. A server text that looks like another code changes nothing.
TEST(ClientSession, ResultCodesAreTheVerdictsNotReadBackFromTheText) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250-PIPELINING\r\n250 SIZE 100000\r\n");
  Message m{{"b@y.example", "c@y.example", "d@y.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.Feed(
      "250 ok\r\n550 5.1.1 no such user\r\n450 mailbox 5.7.1 busy\r\n250 ok\r\n"
      "354 go\r\n");
  Drain(s);
  s.OnConnectionLost("reset");
  ASSERT_TRUE(s.transaction_done());
  auto r = s.TakeResults();
  EXPECT_EQ(r[0].code, 550);
  EXPECT_EQ(r[0].enhanced, "5.1.1");
  EXPECT_EQ(r[1].code, 450);
  EXPECT_EQ(r[1].enhanced, "4.0.0");  // None given: synthesized from the class.
  EXPECT_TRUE(r[1].reply.starts_with("450 4.0.0 mailbox 5.7.1 busy")) << r[1].reply;
  EXPECT_EQ(r[2].status, RecipientStatus::kDeferred);
  EXPECT_EQ(r[2].code, 451);  // The session's own: connection lost.
  EXPECT_EQ(r[2].enhanced, "4.4.2");

  ClientSession t(Options());
  Open(t, "250-sink\r\n250 SIZE 10\r\n");
  t.Begin(m.Out());
  r = t.TakeResults();
  EXPECT_EQ(r[0].code, 552);  // The session's own refusal before sending.
  EXPECT_EQ(r[0].enhanced, "5.3.4");
}

TEST(ClientSession, Reply421ClosesAndDefersEverythingPending) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example", "c@y.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.Feed("250 ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n");
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
  EXPECT_EQ(r[1].status, RecipientStatus::kDeferred);
  EXPECT_TRUE(r[1].reply.starts_with("421 4.3.2 shutting down")) << r[1].reply;
  EXPECT_TRUE(s.closed());
}

TEST(ClientSession, StaleCachedConnectionLeavesTheTransactionUntouched) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example"}};
  s.Begin(m.Out());
  s.Feed("250 ok\r\n250 ok\r\n354 go\r\n");
  Drain(s);
  s.Feed("250 ok\r\n");
  ASSERT_TRUE(s.transaction_done());
  static_cast<void>(s.TakeResults());
  s.Begin(m.Out());
  Drain(s);
  s.OnConnectionLost("connection reset");  // Before even RSET was answered.
  EXPECT_TRUE(s.transaction_untouched());
  EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDeferred);
}

TEST(ClientSession, FreshConnectionLostBeforeAnyReplyIsAnOrdinaryDeferral) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.OnConnectionLost("connection reset");
  ASSERT_TRUE(s.transaction_done());
  EXPECT_FALSE(s.transaction_untouched());  // Not retried at once: the scheduler backs off.
  EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDeferred);
}

TEST(ClientSession, IdleConnectionClosedByServer) {
  ClientSession s(Options());
  Open(s, "250 sink\r\n");
  s.Feed("421 4.4.2 idle too long\r\n");
  EXPECT_TRUE(s.closed());
  EXPECT_TRUE(s.error().starts_with("421 4.4.2 idle too long")) << s.error();
}

TEST(ClientSession, GreetingRefusalAndMalformedRepliesClose) {
  {
    ClientSession s(Options());
    s.Feed("554 5.3.2 no service\r\n");
    EXPECT_TRUE(s.closed());
    EXPECT_TRUE(s.error().starts_with("554 5.3.2 no service")) << s.error();
  }
  for (std::string_view bad : {"hello\r\n", "25\r\n", "250x\r\n", "150 ok\r\n", "6000 x\r\n"}) {
    ClientSession s(Options());
    s.Feed(bad);
    EXPECT_TRUE(s.closed()) << bad;
    EXPECT_TRUE(s.error().starts_with("451 4.5.0 protocol error")) << bad;
  }
  ClientSession s(Options());
  s.Feed(std::string(5000, '2'));  // No line end in sight.
  EXPECT_TRUE(s.closed());
}

TEST(ClientSession, ReplyLinesArriveInPieces) {
  ClientSession s(Options());
  for (char c : std::string_view("220 hi\r\n")) {
    s.Feed(std::string_view(&c, 1));
  }
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
  s.Feed("250-a\n250-PIPEL");  // A bare LF is tolerated.
  s.Feed("INING\r\n250 b\r\n");
  EXPECT_TRUE(s.ready());
  EXPECT_TRUE(s.extensions().pipelining);
}

TEST(ClientSession, DsnParametersOnlyWhenOffered) {
  Message m{{"b@y.example"}};
  OutgoingMessage out = m.Out();
  out.recipients[0].notify = "SUCCESS,FAILURE";
  out.recipients[0].orcpt = "rfc822;b@y.example";
  out.envid = "QQ123";
  out.ret = "HDRS";
  {
    ClientSession s(Options());
    Open(s, "250-sink\r\n250-PIPELINING\r\n250 DSN\r\n");
    s.Begin(out);
    EXPECT_EQ(Drain(s),
              "MAIL FROM:<a@x.example> RET=HDRS ENVID=QQ123\r\n"
              "RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.example\r\nDATA\r\n");
  }
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  s.Begin(out);
  EXPECT_EQ(Drain(s), "MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
}

TEST(ClientSession, LargeContentIsSentWithoutACopyAndViewsStayValid) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
  Message m{{"b@y.example"}, std::string(100'000, 'x') + "\r\n"};
  const OutgoingMessage out = m.Out();
  s.Begin(out);
  const std::string_view envelope = s.PendingOutput();
  EXPECT_TRUE(envelope.ends_with("BDAT 100002 LAST\r\n"));
  const std::string copy(envelope);
  s.Feed("250 ok\r\n");  // A reply while the envelope is "in flight" must not move it.
  EXPECT_EQ(envelope, copy);
  s.ConsumeOutput(envelope.size());
  EXPECT_EQ(s.PendingOutput().data(), m.content.data());  // The caller's bytes, not a copy.
  s.ConsumeOutput(50'000);
  EXPECT_EQ(s.PendingOutput().size(), 50'002u);
  s.ConsumeOutput(50'002);
  EXPECT_FALSE(s.HasOutput());
  s.Feed("250 ok\r\n250 ok\r\n");
  EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDelivered);
}

TEST(ClientSession, AllRecipientsRefusedThenDataRefused) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.Feed("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n");
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
  EXPECT_TRUE(r[0].reply.starts_with("550 5.1.1 no")) << r[0].reply;
  EXPECT_TRUE(s.ready());
}

// A next hop's reply text reaches bounces and log lines: a bare CR, NUL or other control byte
// in it never comes through (a Diagnostic-Code field it could break, a line it could forge).
TEST(ClientSession, ControlBytesInReplyTextAreReplaced) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example"}};
  s.Begin(m.Out());
  Drain(s);
  s.Feed(
      std::string_view("250 ok\r\n550 5.1.1 no\rContent-Type: text/html\0\x1b\x7f!\r\n"
                       "554 5.5.1 no valid recipients\r\n",
                       81));
  ASSERT_TRUE(s.transaction_done());
  const auto r = s.TakeResults();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
  EXPECT_TRUE(
      r[0].reply.starts_with("550 5.1.1 no?Content-Type: text/html??"
                             "?!"))
      << r[0].reply;
  for (char c : r[0].reply) {
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << r[0].reply;
  }
}

// The server side of one pipelined transaction: the greeting and EHLO reply, then every reply
// of the transaction in one batch.
constexpr std::string_view kGreeting =
    "220 sink ESMTP\r\n250-sink\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n";
constexpr std::string_view kBatch =
    "250 2.1.0 ok\r\n250 2.1.5 ok\r\n450 4.2.0 busy\r\n550 5.1.1 unknown\r\n"
    "354 go ahead\r\n"
    "250-2.0.0 queued\r\n250 2.0.0 as ABC\r\n";

// Opens a session, begins a 3-recipient transaction, feeds `pieces`; when the replies run out
// before the end, the connection is lost. Returns the results.
std::vector<RecipientReply> Replay(const std::vector<std::string_view>& pieces) {
  ClientSession s(Options());
  s.Feed(kGreeting);
  Drain(s);
  EXPECT_TRUE(s.ready());
  Message m{{"a@y.example", "b@y.example", "c@y.example"}};
  const OutgoingMessage out = m.Out();
  s.Begin(out);
  Drain(s);
  // The body goes out on the 354, before the server can answer it: a piece that holds the end
  // of the 354 line and more is fed in two, with the body drained in between.
  constexpr std::string_view k354 = "354 go ahead\r\n";
  const size_t body_at = kBatch.find(k354) + k354.size();
  size_t offset = 0;
  for (std::string_view piece : pieces) {
    if (offset < body_at && body_at < offset + piece.size()) {
      s.Feed(piece.substr(0, body_at - offset));
      Drain(s);
      s.Feed(piece.substr(body_at - offset));
    } else {
      s.Feed(piece);
    }
    offset += piece.size();
    Drain(s);
  }
  if (!s.transaction_done()) {
    s.OnConnectionLost("cut");
  }
  EXPECT_TRUE(s.transaction_done());
  return s.TakeResults();
}

TEST(ClientSession, RepliesSplitAtEveryByteBoundary) {
  for (size_t cut = 0; cut <= kBatch.size(); ++cut) {
    const auto r = Replay({kBatch.substr(0, cut), kBatch.substr(cut)});
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].status, RecipientStatus::kDelivered) << "cut at " << cut;
    EXPECT_EQ(r[0].reply, "250 2.0.0 queued as ABC (in reply to end of data at 192.0.2.1:25)");
    EXPECT_EQ(r[1].status, RecipientStatus::kDeferred) << cut;
    EXPECT_EQ(r[2].status, RecipientStatus::kFailed) << cut;
  }
}

TEST(ClientSession, DisconnectAtEveryStepNeverCountsASend) {
  // The server's replies end at every possible point: only the full final reply delivers, and
  // a recipient refused before the cut keeps its refusal.
  for (size_t end = 0; end < kBatch.size(); ++end) {
    const auto r = Replay({kBatch.substr(0, end)});
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].status, RecipientStatus::kDeferred) << "ended at " << end;
    EXPECT_NE(r[1].status, RecipientStatus::kDelivered) << "ended at " << end;
    const bool refusal_seen = end >= kBatch.find("354");
    EXPECT_EQ(r[2].status, refusal_seen ? RecipientStatus::kFailed : RecipientStatus::kDeferred)
        << "ended at " << end;
  }
  // And before the session was even ready.
  for (size_t end = 0; end < kGreeting.size(); ++end) {
    ClientSession s(Options());
    s.Feed(kGreeting.substr(0, end));
    s.OnConnectionLost("cut");
    EXPECT_TRUE(s.closed());
    EXPECT_FALSE(s.ready());
  }
}

TEST(ClientSession, WithoutResetBeforeReuseTheNextMailGoesStraightOut) {
  ClientOptions o = Options();
  o.reset_before_reuse = false;
  ClientSession s(o);
  Open(s, "250-sink\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
  Message m{{"b@y.example"}};
  const OutgoingMessage out = m.Out();
  for (int i = 0; i < 2; ++i) {
    s.Begin(out);
    EXPECT_TRUE(s.data_end_queued());
    EXPECT_TRUE(Drain(s).starts_with("MAIL FROM:<a@x.example>\r\n")) << i;
    s.Feed("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 queued\r\n");
    ASSERT_TRUE(s.transaction_done());
    EXPECT_FALSE(s.data_end_queued());
    EXPECT_FALSE(s.transaction_untouched());
    EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDelivered);
  }
  // A refused transaction is still cleared with RSET before the next one.
  s.Begin(out);
  Drain(s);
  s.Feed("451 4.3.0 try later\r\n554 5.5.1 no valid recipients\r\n554 5.5.1 no\r\n");
  ASSERT_TRUE(s.transaction_done());
  (void)s.TakeResults();
  s.Begin(out);
  EXPECT_TRUE(Drain(s).starts_with("RSET\r\nMAIL FROM:"));
}

TEST(ClientSession, DataEndIsQueuedOnlyAfterThe354) {
  ClientSession s(Options());
  Open(s, "250-sink\r\n250 PIPELINING\r\n");
  Message m{{"b@y.example"}};
  const OutgoingMessage out = m.Out();
  s.Begin(out);
  Drain(s);
  EXPECT_FALSE(s.data_end_queued());
  s.Feed("250 ok\r\n250 ok\r\n354 go\r\n");
  EXPECT_TRUE(s.data_end_queued());
  EXPECT_TRUE(Drain(s).ends_with("\r\n.\r\n"));
  s.Feed("250 queued\r\n");
  EXPECT_FALSE(s.data_end_queued());
}

TEST(ClientSession, QuitAfterReady) {
  ClientSession s(Options());
  Open(s, "250 sink\r\n");
  s.Quit();
  EXPECT_EQ(Drain(s), "QUIT\r\n");
  s.Feed("221 bye\r\n");
  EXPECT_TRUE(s.closed());
  EXPECT_TRUE(s.error().empty());
}

// ---- STARTTLS (RFC 3207) and AUTH (RFC 4954) ----

constexpr std::string_view kEhloStartTls =
    "250-sink.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

ClientOptions TlsOptions(StartTls mode) {
  ClientOptions o = Options();
  o.starttls = mode;
  return o;
}

// Greets, gets `ehlo`, and expects the session to send `expect` next.
void Hello(ClientSession& s, std::string_view ehlo, std::string_view expect) {
  s.Feed("220 sink.example ESMTP\r\n");
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
  s.Feed(ehlo);
  EXPECT_EQ(Drain(s), expect);
}

// Up to a TLS session: STARTTLS answered, handshake done, EHLO sent again.
void UpToTls(ClientSession& s) {
  Hello(s, kEhloStartTls, "STARTTLS\r\n");
  EXPECT_FALSE(s.ready());
  s.Feed("220 2.0.0 Ready to start TLS\r\n");
  ASSERT_TRUE(s.TakeStartTls());
  EXPECT_FALSE(s.TakeStartTls());  // Once.
  EXPECT_TRUE(s.awaiting_tls());
  EXPECT_FALSE(s.HasOutput());
  s.TlsStarted();
  EXPECT_FALSE(s.awaiting_tls());
  EXPECT_TRUE(s.tls_active());
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
}

TEST(ClientSession, StartTlsWhenOfferedThenEhloAgain) {
  ClientSession s(TlsOptions(StartTls::kIfOffered));
  Hello(s, kEhloStartTls, "STARTTLS\r\n");
  EXPECT_TRUE(s.extensions().starttls);
  EXPECT_EQ(s.TimeoutMs(), 300'000u);
  // A reply pushed in the clear after the 220 is never read as the answer to anything.
  s.Feed("220 2.0.0 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n");
  EXPECT_FALSE(s.HasOutput());  // Nothing is sent until the handshake is done.
  ASSERT_TRUE(s.TakeStartTls());
  EXPECT_FALSE(s.tls_active());
  s.TlsStarted();
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
  s.Feed(kEhloAll);
  ASSERT_TRUE(s.ready());
  EXPECT_TRUE(s.tls_active());
  EXPECT_FALSE(s.extensions().starttls);  // What the server says over TLS counts.
  EXPECT_TRUE(s.extensions().chunking);
  EXPECT_FALSE(s.extensions().auth_plain);
  // And mail goes out as usual.
  Message m{{"b@y.example"}};
  const OutgoingMessage out = m.Out();
  s.Begin(out);
  EXPECT_TRUE(Drain(s).starts_with("MAIL FROM:<a@x.example>"));
  s.Feed("250 ok\r\n250 ok\r\n250 queued\r\n");
  ASSERT_TRUE(s.transaction_done());
  EXPECT_EQ(s.TakeResults()[0].status, RecipientStatus::kDelivered);
}

TEST(ClientSession, StartTlsIsNotUsedUnlessAsked) {
  ClientSession s(Options());  // kNo, the default.
  Hello(s, kEhloStartTls, "");
  EXPECT_TRUE(s.ready());
  EXPECT_FALSE(s.tls_active());
  EXPECT_FALSE(s.TakeStartTls());
}

TEST(ClientSession, StartTlsRequiredButNotOfferedDefers) {
  ClientSession s(TlsOptions(StartTls::kRequired));
  Hello(s, "250-sink\r\n250 PIPELINING\r\n", "");
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_code(), 451);
  EXPECT_EQ(s.error_enhanced(), "4.7.10");
  EXPECT_EQ(s.error(), "451 4.7.10 TLS required but not offered by server 192.0.2.1:25");
}

TEST(ClientSession, StartTlsRequiredAfterHeloFallbackDefers) {
  ClientSession s(TlsOptions(StartTls::kRequired));
  Hello(s, "500 what\r\n", "HELO relay.example\r\n");
  s.Feed("250 ok\r\n");
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_enhanced(), "4.7.10");
}

TEST(ClientSession, StartTlsRefused) {
  for (const std::string reply : {"454 4.7.0 TLS not available\r\n", "502 5.5.1 no\r\n"}) {
    {
      ClientSession s(TlsOptions(StartTls::kRequired));
      Hello(s, kEhloStartTls, "STARTTLS\r\n");
      s.Feed(reply);
      EXPECT_TRUE(s.closed()) << reply;
      EXPECT_FALSE(s.TakeStartTls());
      // Deferred whatever the server's class: the next hop may offer TLS again later.
      EXPECT_EQ(s.error_code(), 451);
      EXPECT_EQ(s.error_enhanced(), "4.7.10");
      EXPECT_TRUE(s.error().starts_with("451 4.7.10 TLS required but refused by server: "))
          << s.error();
    }
    {
      ClientSession s(TlsOptions(StartTls::kIfOffered));
      Hello(s, kEhloStartTls, "STARTTLS\r\n");
      s.Feed(reply);
      EXPECT_TRUE(s.ready()) << reply;  // On in plaintext.
      EXPECT_FALSE(s.tls_active());
      EXPECT_FALSE(s.HasOutput());
    }
  }
  ClientSession s(TlsOptions(StartTls::kIfOffered));
  Hello(s, kEhloStartTls, "STARTTLS\r\n");
  s.Feed("421 4.3.2 closing\r\n");
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_code(), 421);
}

TEST(ClientSession, ConnectionLostDuringTheHandshake) {
  ClientSession s(TlsOptions(StartTls::kRequired));
  Hello(s, kEhloStartTls, "STARTTLS\r\n");
  s.Feed("220 go\r\n");
  ASSERT_TRUE(s.TakeStartTls());
  s.OnConnectionLost("handshake failed");
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_code(), 451);
  EXPECT_EQ(s.error_enhanced(), "4.4.2");
  s.TlsStarted();  // A completion that raced the loss changes nothing.
  EXPECT_TRUE(s.closed());
  EXPECT_FALSE(s.HasOutput());
  // Given up by the owner mid-handshake: no QUIT in the clear, nothing more sent.
  ClientSession q(TlsOptions(StartTls::kRequired));
  Hello(q, kEhloStartTls, "STARTTLS\r\n");
  q.Feed("220 go\r\n");
  ASSERT_TRUE(q.TakeStartTls());
  q.Quit();
  EXPECT_TRUE(q.closed());
  EXPECT_FALSE(q.HasOutput());
  q.TlsStarted();
  EXPECT_FALSE(q.HasOutput());
}

ClientOptions AuthClientOptions() {
  ClientOptions o = TlsOptions(StartTls::kRequired);
  o.auth_user = "relay@x.example";
  o.auth_password = "p4ss w0rd";
  return o;
}

TEST(ClientSession, AuthPlainOverTlsThenMail) {
  ClientSession s(AuthClientOptions());
  UpToTls(s);
  s.Feed("250-sink\r\n250-PIPELINING\r\n250-AUTH LOGIN PLAIN\r\n250 CHUNKING\r\n");
  EXPECT_TRUE(s.extensions().auth_plain && s.extensions().auth_login);
  EXPECT_EQ(Drain(s), "AUTH PLAIN " + EncodePlain("relay@x.example", "p4ss w0rd") + "\r\n");
  EXPECT_FALSE(s.ready());
  EXPECT_EQ(s.TimeoutMs(), 300'000u);
  s.Feed("235 2.7.0 Authentication successful\r\n");
  ASSERT_TRUE(s.ready());
  EXPECT_TRUE(s.authenticated());
  Message m{{"b@y.example"}};
  const OutgoingMessage out = m.Out();
  s.Begin(out);
  EXPECT_TRUE(Drain(s).starts_with("MAIL FROM:<a@x.example>\r\n"));
}

// Implicit TLS (port 465): encrypted from the greeting, so no STARTTLS and AUTH right after
// the first EHLO.
TEST(ClientSession, ImplicitTlsAuthenticatesAfterTheFirstEhlo) {
  ClientOptions o = AuthClientOptions();
  o.starttls = StartTls::kNo;
  o.implicit_tls = true;
  ClientSession s(o);
  EXPECT_TRUE(s.tls_active());
  s.Feed("220 sink ESMTP\r\n");
  EXPECT_EQ(Drain(s), "EHLO relay.example\r\n");
  s.Feed("250-sink\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n");
  EXPECT_FALSE(s.TakeStartTls());
  EXPECT_EQ(Drain(s), "AUTH PLAIN " + EncodePlain("relay@x.example", "p4ss w0rd") + "\r\n");
  s.Feed("235 2.7.0 ok\r\n");
  EXPECT_TRUE(s.ready());
  EXPECT_TRUE(s.authenticated());
}

TEST(ClientSession, AuthLoginWhenPlainIsNotOffered) {
  ClientSession s(AuthClientOptions());
  UpToTls(s);
  s.Feed("250-sink\r\n250 AUTH=LOGIN\r\n");  // The pre-standard spelling.
  EXPECT_EQ(Drain(s), "AUTH LOGIN\r\n");
  s.Feed("334 VXNlcm5hbWU6\r\n");
  EXPECT_EQ(Drain(s), Base64Encode("relay@x.example") + "\r\n");
  s.Feed("334 UGFzc3dvcmQ6\r\n");
  EXPECT_EQ(Drain(s), Base64Encode("p4ss w0rd") + "\r\n");
  s.Feed("235 2.7.0 ok\r\n");
  EXPECT_TRUE(s.ready());
  EXPECT_TRUE(s.authenticated());
}

// A refused login fails the session with the server's codes, typed; the owner defers the mail
// (the session never became ready). The password appears nowhere, even when the server echoes
// it.
TEST(ClientSession, AuthRefusalFailsTheSessionWithoutThePassword) {
  for (const std::string& reply :
       {std::string("535 5.7.8 bad credentials for p4ss w0rd\r\n"),
        std::string("454 4.7.0 try later\r\n"),
        "535 5.7.8 echo " + EncodePlain("relay@x.example", "p4ss w0rd") + "\r\n"}) {
    ClientSession s(AuthClientOptions());
    UpToTls(s);
    s.Feed("250-sink\r\n250 AUTH PLAIN\r\n");
    Drain(s);
    s.Feed(reply);
    EXPECT_TRUE(s.closed());
    EXPECT_FALSE(s.ready());
    EXPECT_EQ(s.error_code(), std::stoi(reply.substr(0, 3)));
    EXPECT_EQ(s.error_enhanced(), reply.substr(4, 5));
    EXPECT_NE(s.error().find("(in reply to AUTH at 192.0.2.1:25)"), std::string::npos);
    EXPECT_EQ(s.error().find("p4ss"), std::string::npos) << s.error();
    EXPECT_EQ(s.error().find(EncodePlain("relay@x.example", "p4ss w0rd")), std::string::npos);
  }
  // Refused at the password step of LOGIN.
  ClientSession s(AuthClientOptions());
  UpToTls(s);
  s.Feed("250-sink\r\n250 AUTH LOGIN\r\n");
  Drain(s);
  s.Feed("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n");
  Drain(s);
  s.Feed("535 5.7.8 " + Base64Encode("p4ss w0rd") + "\r\n");
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_code(), 535);
  EXPECT_EQ(s.error().find(Base64Encode("p4ss w0rd")), std::string::npos) << s.error();
}

TEST(ClientSession, AuthNotOfferedFailsWithA4xx) {
  ClientSession s(AuthClientOptions());
  UpToTls(s);
  s.Feed("250-sink\r\n250 AUTH CRAM-MD5\r\n");
  EXPECT_FALSE(s.HasOutput());
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_code(), 451);
  EXPECT_EQ(s.error_enhanced(), "4.7.0");
  EXPECT_EQ(s.error(),
            "451 4.7.0 AUTH configured but not offered (PLAIN or LOGIN) by 192.0.2.1:25");
}

TEST(ClientSession, AuthIsNeverSentInTheClear) {
  for (const StartTls mode : {StartTls::kNo, StartTls::kIfOffered}) {
    ClientOptions o = AuthClientOptions();
    o.starttls = mode;
    ClientSession s(o);
    // kIfOffered: STARTTLS offered but refused; kNo: never tried.
    s.Feed("220 sink\r\n");
    Drain(s);
    s.Feed("250-sink\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n");
    std::string out = Drain(s);
    if (mode == StartTls::kIfOffered) {
      EXPECT_EQ(out, "STARTTLS\r\n");
      s.Feed("454 4.7.0 not now\r\n");
      out = Drain(s);
    }
    EXPECT_EQ(out, "");
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.error_code(), 451);
    EXPECT_EQ(s.error_enhanced(), "4.7.10");
  }
}

TEST(ClientSession, UnexpectedAuthReplyIsAProtocolError) {
  ClientSession s(AuthClientOptions());
  UpToTls(s);
  s.Feed("250-sink\r\n250 AUTH PLAIN\r\n");
  Drain(s);
  s.Feed("334 \r\n");  // PLAIN went with its initial response: no challenge is due.
  EXPECT_TRUE(s.closed());
  EXPECT_EQ(s.error_code(), 451);
  EXPECT_EQ(s.error_enhanced(), "4.5.0");
}

}  // namespace
}  // namespace relais::smtp
