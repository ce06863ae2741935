#include "protocols/smtp/server_session.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "protocols/smtp/sasl.h"

namespace relais::smtp {
namespace {

// Drives a session the way the shard does: feed bytes, complete commits, collect output.
class Harness {
 public:
  explicit Harness(SessionOptions options = {}, const char* client = "192.0.2.10",
                   bool implicit_tls = false)
      : options_(std::move(options)), session_(options_, *mail::IpAddress::Parse(client)) {
    if (implicit_tls) {
      session_.TlsStarted("TLSv1.3", "TLS_AES_256_GCM_SHA384");  // RFC 8314: TLS first.
    }
    session_.Start();
    Drain();
    greeting = TakeOutput();
  }

  // Feeds `input` in pieces of `chunk` bytes (0: whole), answering commits with `outcome`.
  std::string Run(std::string_view input, size_t chunk = 0) {
    const size_t step = chunk == 0 ? input.size() : chunk;
    for (size_t i = 0; i < input.size(); i += step) {
      session_.Feed(input.substr(i, step));
      Settle();
    }
    return TakeOutput();
  }

  void Settle() {
    bool answered = true;
    while (answered) {
      answered = false;
      while (session_.TakeCommitRequest()) {
        committed.push_back(session_.transaction());
        const auto id = mail::MessageId::Make(1, 0, committed.size());
        session_.CompleteCommit(outcome, id);
        answered = true;
      }
      while (session_.TakeAuthRequest()) {
        auth_requests.push_back(session_.auth_request());
        session_.CompleteAuth(auth_outcome, owned_domains);
        answered = true;
      }
      if (session_.TakeStartTls()) {
        ++starttls_taken;
        Drain();  // The 220 goes out in the clear, then the handshake.
        if (start_tls) {
          session_.TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");
        }
        answered = true;
      }
    }
    Drain();
  }

  std::string TakeOutput() {
    std::string out;
    out.swap(output_);
    return out;
  }

  ServerSession& session() { return session_; }
  CommitOutcome outcome = CommitOutcome::kDurable;
  AuthOutcome auth_outcome = AuthOutcome::kOk;
  std::vector<std::string> owned_domains;
  std::vector<AuthRequest> auth_requests;
  bool start_tls = true;  // Complete STARTTLS handshakes at once.
  int starttls_taken = 0;
  std::string greeting;
  std::vector<Transaction> committed;

 private:
  void Drain() {
    const std::string_view pending = session_.PendingOutput();
    output_.append(pending);
    session_.ConsumeOutput(pending.size());
  }

  SessionOptions options_;
  ServerSession session_;
  std::string output_;
};

std::vector<std::string> Lines(const std::string& out) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < out.size()) {
    const size_t end = out.find("\r\n", pos);
    lines.push_back(out.substr(pos, end - pos));
    pos = end + 2;
  }
  return lines;
}

// The reply codes in `out`, one per reply (continuation lines "250-" are skipped).
std::vector<int> Codes(const std::string& out) {
  std::vector<int> codes;
  for (const std::string& line : Lines(out)) {
    if (line.size() >= 4 && line[3] == ' ') {
      codes.push_back(std::stoi(line.substr(0, 3)));
    }
  }
  return codes;
}

// "250 2.1.0 text": a 2xx/4xx/5xx code, then an RFC 3463 code of the same class.
bool HasEnhancedCode(const std::string& line) {
  if (line.size() < 10 || line[0] < '2' || line[0] > '5' || (line[3] != ' ' && line[3] != '-') ||
      line[4] != line[0] || line[5] != '.') {
    return false;
  }
  size_t i = 6;
  for (int part = 0; part < 2; ++part) {
    const size_t start = i;
    while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) {
      ++i;
    }
    if (i == start || i - start > 3 || i >= line.size() || line[i] != (part == 0 ? '.' : ' ')) {
      return false;
    }
    ++i;
  }
  return i < line.size();
}

constexpr char kEnvelope[] =
    "EHLO client.example\r\n"
    "MAIL FROM:<alice@sender.example>\r\n"
    "RCPT TO:<bob@example.com>\r\n";

TEST(ServerSessionTest, GreetsWithHostName) {
  SessionOptions o;
  o.hostname = "mx.test";
  Harness h(o);
  EXPECT_EQ(h.greeting, "220 mx.test ESMTP Relais\r\n");
}

TEST(ServerSessionTest, FullTransactionIsQueuedWithDotUnstuffing) {
  Harness h;
  const std::string out = h.Run(std::string(kEnvelope) +
                                "DATA\r\n"
                                "Subject: hi\r\n"
                                "\r\n"
                                "..leading dot\r\n"
                                ".\r\n"
                                "QUIT\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, 250, 221}));
  EXPECT_NE(out.find("250 2.0.0 OK: queued as "), std::string::npos);
  ASSERT_EQ(h.committed.size(), 1u);
  EXPECT_EQ(h.committed[0].body, "Subject: hi\r\n\r\n.leading dot\r\n");
  EXPECT_EQ(h.committed[0].envelope.sender, "alice@sender.example");
  ASSERT_EQ(h.committed[0].envelope.recipients.size(), 1u);
  EXPECT_EQ(h.committed[0].envelope.recipients[0].address, "bob@example.com");
  EXPECT_EQ(h.committed[0].envelope.helo, "client.example");
  EXPECT_EQ(h.committed[0].envelope.client_address, "192.0.2.10");
  EXPECT_TRUE(h.session().WantsClose());
}

TEST(ServerSessionTest, EhloAdvertisesExtensions) {
  Harness h;
  const std::string out = h.Run("EHLO c.example\r\n");
  for (const char* ext : {"PIPELINING", "SIZE 26214400", "8BITMIME", "SMTPUTF8",
                          "ENHANCEDSTATUSCODES", "DSN", "250 CHUNKING"}) {
    EXPECT_NE(out.find(ext), std::string::npos) << ext;
  }
}

TEST(ServerSessionTest, EmptyMessageIsAccepted) {
  Harness h;
  EXPECT_EQ(Codes(h.Run(std::string(kEnvelope) + "DATA\r\n.\r\n")),
            (std::vector<int>{250, 250, 250, 354, 250}));
  ASSERT_EQ(h.committed.size(), 1u);
  EXPECT_EQ(h.committed[0].body, "");
}

TEST(ServerSessionTest, PipelinedRepliesAreReadyTogether) {
  Harness h;
  h.Run("EHLO c.example\r\n");
  h.session().Feed(
      "MAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
      "DATA\r\n");
  // All four replies are pending before the owner sends anything: one write.
  EXPECT_EQ(Codes(std::string(h.session().PendingOutput())),
            (std::vector<int>{250, 250, 250, 354}));
}

// A pipelined batch split at every byte offset gives the same replies and messages.
TEST(ServerSessionTest, PipelinedBatchSplitAtEveryOffset) {
  const std::string batch = std::string(kEnvelope) +
                            "RCPT TO:<carol@example.com>\r\n"
                            "DATA\r\n"
                            "Line one\r\n"
                            "..two\r\n"
                            ".\r\n"
                            "MAIL FROM:<>\r\n"
                            "RCPT TO:<postmaster>\r\n"
                            "BDAT 7\r\n"
                            "Chunk\r\n"
                            "BDAT 0 LAST\r\n"
                            "RSET\r\n"
                            "NOOP\r\n"
                            "QUIT\r\n";
  Harness whole;
  const std::string expected = whole.Run(batch);
  ASSERT_EQ(whole.committed.size(), 2u);
  EXPECT_EQ(whole.committed[0].body, "Line one\r\n.two\r\n");
  EXPECT_EQ(whole.committed[1].body, "Chunk\r\n");
  EXPECT_EQ(whole.committed[1].envelope.sender, "");
  for (size_t split = 1; split < batch.size(); ++split) {
    Harness h;
    std::string out = h.Run(batch.substr(0, split));
    out += h.Run(batch.substr(split));
    ASSERT_EQ(out, expected) << "split at " << split;
    ASSERT_EQ(h.committed.size(), 2u) << "split at " << split;
    EXPECT_EQ(h.committed[0].body, whole.committed[0].body);
    EXPECT_EQ(h.committed[1].body, whole.committed[1].body);
  }
  for (size_t chunk : {1, 2, 3, 7, 13}) {
    Harness h;
    EXPECT_EQ(h.Run(batch, chunk), expected) << "chunk " << chunk;
  }
}

// SMTP smuggling: none of these sequences may end DATA; whatever follows stays message data,
// and the message is refused because it holds a bare CR or LF.
TEST(ServerSessionTest, SmugglingSequencesNeverEndData) {
  for (const std::string seq :
       {"\n.\n", "\r.\r", "\r\n.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\r", "\r\n.\r\r\n"}) {
    const std::string smuggled =
        "MAIL FROM:<evil@attacker.example>\r\n"
        "RCPT TO:<victim@example.com>\r\n"
        "DATA\r\n"
        "From: ceo@example.com\r\n"
        "\r\n"
        "smuggled\r\n";
    const std::string input = std::string(kEnvelope) + "DATA\r\nSubject: x\r\n\r\nbody" + seq +
                              smuggled + ".\r\n" + "NOOP\r\n";
    for (size_t chunk : {0, 1}) {
      Harness h;
      const std::string out = h.Run(input, chunk);
      EXPECT_TRUE(h.committed.empty()) << "sequence " << testing::PrintToString(seq);
      EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, 554, 250}))
          << testing::PrintToString(seq) << out;
      EXPECT_NE(out.find("554 5.6.0"), std::string::npos);
    }
  }
}

TEST(ServerSessionTest, SmugglingInsideBdatNeverSplitsAMessage) {
  const std::string payload = "body\n.\nMAIL FROM:<e@x.example>\r\nRCPT TO:<v@example.com>\r\n";
  Harness h;
  const std::string out = h.Run(std::string(kEnvelope) + "BDAT " + std::to_string(payload.size()) +
                                " LAST\r\n" + payload + "NOOP\r\n");
  EXPECT_TRUE(h.committed.empty());
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 554, 250}));
}

TEST(ServerSessionTest, BareLineEndingsInCommandsAreRefused) {
  Harness h;
  EXPECT_EQ(Codes(h.Run("NOOP\nNOOP\r\n")), (std::vector<int>{500}));
  EXPECT_EQ(Codes(h.Run("NOOP\rNOOP\r\n")), (std::vector<int>{500}));
  EXPECT_EQ(Codes(h.Run("NOOP\r\n")), (std::vector<int>{250}));
}

TEST(ServerSessionTest, OverlongCommandLineIsRefusedAndSessionGoesOn) {
  Harness h;
  EXPECT_EQ(Codes(h.Run("NOOP " + std::string(505, 'a') + "\r\n")), (std::vector<int>{250}));
  const std::string out = h.Run("NOOP " + std::string(5000, 'a') + "\r\nNOOP\r\n", 100);
  EXPECT_EQ(Codes(out), (std::vector<int>{500, 250}));
  EXPECT_NE(out.find("500 5.5.2 Line too long"), std::string::npos);
}

TEST(ServerSessionTest, OverlongTextLineRefusesTheMessage) {
  Harness h;
  const std::string out =
      h.Run(std::string(kEnvelope) + "DATA\r\n" + std::string(999, 'x') + "\r\n.\r\n" + "DATA\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, 554, 503}));
  EXPECT_TRUE(h.committed.empty());
  Harness ok;
  ok.Run(std::string(kEnvelope) + "DATA\r\n" + std::string(998, 'x') + "\r\n.\r\n");
  EXPECT_EQ(ok.committed.size(), 1u);
}

TEST(ServerSessionTest, MessageSizeLimits) {
  SessionOptions o;
  o.message_bytes_max = 1024;
  Harness h(o);
  EXPECT_EQ(Codes(h.Run("EHLO c\r\nMAIL FROM:<a@b.example> SIZE=2000\r\n")),
            (std::vector<int>{250, 552}));
  std::string big;
  for (int i = 0; i < 100; ++i) {
    big += std::string(50, 'y') + "\r\n";
  }
  const std::string out = h.Run(
      "MAIL FROM:<a@b.example> SIZE=1000\r\nRCPT TO:<c@example.com>\r\nDATA\r\n" + big + ".\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 354, 552}));
  EXPECT_NE(out.find("552 5.3.4"), std::string::npos);
  EXPECT_TRUE(h.committed.empty());
  // BDAT past the limit fails the transaction; later chunks get 503.
  const std::string chunk(800, 'z');
  const std::string out2 =
      h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nBDAT 800\r\n" + chunk +
            "BDAT 800\r\n" + chunk + "BDAT 800 LAST\r\n" + chunk);
  EXPECT_EQ(Codes(out2), (std::vector<int>{250, 250, 250, 552, 503}));
  EXPECT_TRUE(h.committed.empty());
}

TEST(ServerSessionTest, ReceiveBudgetIsSharedAndReleased) {
  ReceiveBudget budget;
  budget.bytes_max = 1000;
  SessionOptions o;
  o.receive_budget = &budget;
  Harness first(o), second(o);
  first.Run(std::string(kEnvelope) + "DATA\r\n" + std::string(700, 'a') + "\r\n");
  EXPECT_EQ(budget.bytes_used, 702u);  // Held while the message is being received.
  const std::string refused =
      second.Run(std::string(kEnvelope) + "DATA\r\n" + std::string(400, 'b') + "\r\n.\r\n");
  EXPECT_NE(refused.find("452 4.3.1"), std::string::npos) << refused;
  EXPECT_TRUE(second.committed.empty());
  EXPECT_EQ(budget.refusals, 1u);
  first.Run(".\r\n");
  ASSERT_EQ(first.committed.size(), 1u);
  EXPECT_EQ(budget.bytes_used, 0u);  // Released when the transaction ended.
  second.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n" +
             std::string(400, 'b') + "\r\n.\r\n");
  EXPECT_EQ(second.committed.size(), 1u);
  {
    Harness dropped(o);
    dropped.Run(std::string(kEnvelope) + "DATA\r\n" + std::string(300, 'c') + "\r\n");
    EXPECT_EQ(budget.bytes_used, 302u);
  }
  EXPECT_EQ(budget.bytes_used, 0u);  // A session that dies mid-DATA gives its share back.
}

TEST(ServerSessionTest, ReceiveBudgetChargesCapacityNotLength) {
  ReceiveBudget budget;
  budget.bytes_max = 1 << 20;
  SessionOptions o;
  o.receive_budget = &budget;
  Harness h(o);
  h.Run(std::string(kEnvelope) + "DATA\r\n");
  const std::string line = std::string(998, 'x') + "\r\n";
  uint64_t held = 0;
  for (int i = 1; i <= 300; ++i) {
    h.session().Feed(line);
    held = static_cast<uint64_t>(i) * line.size();
    // What the allocator holds is charged: at least the length, at most one chunk (256 KiB)
    // and the first part (64 KiB) more, and never past the budget.
    ASSERT_GE(budget.bytes_used, held);
    ASSERT_LE(budget.bytes_used, held + (320u << 10));
    ASSERT_LE(budget.bytes_used, budget.bytes_max);
  }
  // The next lines do not fit: the message is read to its end, holding nothing, and refused.
  for (int i = 0; i < 1000; ++i) {
    h.session().Feed(line);
    ASSERT_LE(budget.bytes_used, budget.bytes_max);
  }
  EXPECT_EQ(budget.bytes_used, 0u);
  const std::string out = h.Run(".\r\n");
  EXPECT_NE(out.find("452 4.3.1"), std::string::npos) << out;
  EXPECT_EQ(budget.refusals, 1u);
  // Within the budget a long message is stored whole, in one piece, and its share released.
  budget.bytes_max = 4 << 20;
  std::string body;
  for (int i = 0; i < 2000; ++i) {
    body += std::to_string(i) + line.substr(8);
  }
  h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n" + body + ".\r\n", 777);
  ASSERT_EQ(h.committed.size(), 1u);
  EXPECT_EQ(h.committed[0].body, body);
  EXPECT_EQ(budget.bytes_used, 0u);
}

TEST(ServerSessionTest, RecipientLimit) {
  SessionOptions o;
  o.recipients_max = 2;
  Harness h(o);
  const std::string out = h.Run(
      "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<1@example.com>\r\nRCPT TO:<2@example.com>\r\n"
      "RCPT TO:<3@example.com>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 250, 452}));
  EXPECT_NE(out.find("452 4.5.3"), std::string::npos);
}

TEST(ServerSessionTest, NoOpenRelay) {
  SessionOptions o;
  o.local_domains = {"example.com"};
  o.relay_domains = {"*.relay.example"};
  {
    Harness h(o);
    const std::string out = h.Run(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n"
        "RCPT TO:<x@EXAMPLE.com>\r\nRCPT TO:<x@a.relay.example>\r\nRCPT TO:<postmaster>\r\n"
        "RCPT TO:<x@[192.0.2.1]>\r\n");
    EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 554, 250, 250, 250, 554}));
    EXPECT_NE(out.find("554 5.7.1 Relay access denied"), std::string::npos);
  }
  o.relay_networks = {*mail::IpNetwork::Parse("192.0.2.0/24")};
  {
    Harness h(o, "192.0.2.77");
    EXPECT_EQ(Codes(h.Run("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n")),
              (std::vector<int>{250, 250, 250}));
  }
  {
    Harness h(o, "198.51.100.1");
    EXPECT_EQ(Codes(h.Run("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n")),
              (std::vector<int>{250, 250, 554}));
  }
}

// user%evil@example.net, "u@evil"@example.net and evil!u@example.net were accepted from
// anyone and passed on: sender-specified routing is for trusted clients only (Postfix
// allow_untrusted_routing = no), unless configured otherwise.
TEST(ServerSessionTest, SenderSpecifiedRoutingOnlyFromTrustedClients) {
  SessionOptions o;
  o.local_domains = {"example.net"};
  o.relay_networks = {*mail::IpNetwork::Parse("192.0.2.0/24")};
  const std::string rcpts =
      "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<user%evil@example.net>\r\n"
      "RCPT TO:<\"u@evil\"@example.net>\r\nRCPT TO:<evil!u@example.net>\r\n"
      "RCPT TO:<\"u\\%evil\"@example.net>\r\nRCPT TO:<@hop.example:u%evil@example.net>\r\n"
      "RCPT TO:<plain@example.net>\r\n";
  {
    Harness h(o, "198.51.100.1");
    const std::string out = h.Run(rcpts);
    EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 550, 550, 550, 550, 550, 250}));
    EXPECT_NE(out.find("550 5.7.1 Sender-specified routing"), std::string::npos);
  }
  {
    Harness h(o, "192.0.2.7");  // relay.networks: allowed.
    EXPECT_EQ(Codes(h.Run(rcpts)), (std::vector<int>{250, 250, 250, 250, 250, 250, 250, 250}));
  }
  o.allow_untrusted_routing = true;
  {
    Harness h(o, "198.51.100.1");
    EXPECT_EQ(Codes(h.Run(rcpts)), (std::vector<int>{250, 250, 250, 250, 250, 250, 250, 250}));
  }
}

TEST(ServerSessionTest, RecipientPolicyRefusesAtRcpt) {
  struct Policy final : RecipientPolicy {
    Reply Check(std::string_view local, std::string_view domain) const override {
      if (domain == "nowhere.example") {
        return Reply::kNoRoute;
      }
      // The local part arrives as written, quotes included.
      return local == "\"a/b\"" ? Reply::kUnsafeMailbox : Reply::kRecipientOk;
    }
  } policy;
  SessionOptions o;
  o.recipient_policy = &policy;
  Harness h(o);
  const std::string out = h.Run(
      "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@nowhere.example>\r\n"
      "RCPT TO:<\"a/b\"@example.com>\r\nRCPT TO:<x@example.com>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 550, 550, 250}));
  EXPECT_NE(out.find("550 5.1.2"), std::string::npos);
  EXPECT_NE(out.find("550 5.1.3"), std::string::npos);
}

TEST(ServerSessionTest, CommandSequenceErrors) {
  Harness h;
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example>\r\n")), (std::vector<int>{503}));
  EXPECT_EQ(Codes(h.Run("EHLO c\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")),
            (std::vector<int>{250, 503, 503}));
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n")),
            (std::vector<int>{250, 503, 554}));
  EXPECT_EQ(Codes(h.Run("RSET\r\nDATA\r\n")), (std::vector<int>{250, 503}));
}

TEST(ServerSessionTest, EveryReplyAfterEhloCarriesAnEnhancedCode) {
  Harness h;
  const std::string out = h.Run(
      "EHLO c\r\nNOOP\r\nVRFY bob\r\nHELP\r\nFOO\r\nSTARTTLS\r\nMAIL FROM:<bad\r\n"
      "MAIL FROM:<a@b.example> X=1\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bad>\r\n"
      "RCPT TO:<a@example.com> NOTIFY=NEVER\r\nRCPT TO:<a@example.com>\r\nDATA x\r\nRSET\r\n"
      "QUIT\r\n");
  size_t checked = 0;
  for (const std::string& line : Lines(out)) {
    if (line.starts_with("250-") || line == "250 CHUNKING") {
      continue;  // EHLO keyword lines.
    }
    EXPECT_TRUE(HasEnhancedCode(line)) << line;
    ++checked;
  }
  EXPECT_EQ(checked, 14u);  // One reply per command after EHLO.
}

TEST(ServerSessionTest, EnhancedCodeCheckerRejectsWrongShapes) {
  EXPECT_TRUE(HasEnhancedCode("250 2.1.0 Sender OK"));
  EXPECT_FALSE(HasEnhancedCode("250 OK"));
  EXPECT_FALSE(HasEnhancedCode("421 5.0.0 class differs"));
  EXPECT_FALSE(HasEnhancedCode("250 2.1 missing part"));
  EXPECT_FALSE(HasEnhancedCode("250 2.1.0"));
}

TEST(ServerSessionTest, TooManyErrorsCloseTheSession) {
  SessionOptions o;
  o.errors_max = 3;
  Harness h(o);
  const std::string out = h.Run("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{500, 500, 500, 421}));
  EXPECT_TRUE(h.session().WantsClose());
}

TEST(ServerSessionTest, BdatChunksAssembleOneMessage) {
  Harness h;
  const std::string out =
      h.Run(std::string(kEnvelope) + "BDAT 5\r\nHelloBDAT 9 LAST\r\n, world\r\nQUIT\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 250, 250, 221}));
  EXPECT_NE(out.find("250 2.0.0 5 octets received"), std::string::npos);
  ASSERT_EQ(h.committed.size(), 1u);
  EXPECT_EQ(h.committed[0].body, "Hello, world\r\n");
}

TEST(ServerSessionTest, BdatWithoutTransactionConsumesTheChunk) {
  Harness h;
  // The chunk's bytes are data even though they look like a command.
  EXPECT_EQ(Codes(h.Run("EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")),
            (std::vector<int>{250, 503, 250}));
  EXPECT_FALSE(h.session().WantsClose());
  EXPECT_EQ(Codes(h.Run("BDAT x\r\n")), (std::vector<int>{501}));
  EXPECT_EQ(Codes(h.Run(std::string("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\n") +
                        "BDAT 3\r\nabcDATA\r\n")),
            (std::vector<int>{250, 250, 250, 503}));
}

TEST(ServerSessionTest, MessageWithoutFinalCrlfInBdatGetsOne) {
  Harness h;
  h.Run(std::string(kEnvelope) + "BDAT 4 LAST\r\nabcd");
  ASSERT_EQ(h.committed.size(), 1u);
  EXPECT_EQ(h.committed[0].body, "abcd\r\n");
}

TEST(ServerSessionTest, CommitFailuresAreNeverAcknowledged) {
  for (auto [outcome, code] :
       {std::pair{CommitOutcome::kFailed, 451}, std::pair{CommitOutcome::kNoSpace, 452},
        std::pair{CommitOutcome::kShutdown, 421}}) {
    Harness h;
    h.outcome = outcome;
    const std::string out = h.Run(std::string(kEnvelope) + "DATA\r\nx\r\n.\r\n");
    EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, code}));
    EXPECT_EQ(out.find("queued"), std::string::npos);
  }
}

TEST(ServerSessionTest, InputDuringCommitWaitsForIt) {
  Harness h;
  h.session().Feed(std::string(kEnvelope) + "DATA\r\nx\r\n.\r\nNOOP\r\n");
  ASSERT_TRUE(h.session().TakeCommitRequest());
  EXPECT_TRUE(h.session().awaiting_commit());
  // NOOP is held until the 250 for the message has been queued.
  EXPECT_EQ(Codes(std::string(h.session().PendingOutput())),
            (std::vector<int>{250, 250, 250, 354}));
  h.session().CompleteCommit(CommitOutcome::kDurable, mail::MessageId::Make(1, 0, 1));
  EXPECT_EQ(Codes(std::string(h.session().PendingOutput())),
            (std::vector<int>{250, 250, 250, 354, 250, 250}));
}

// With a sender check required, MAIL waits for the owner's verdict; pipelined commands wait
// behind it, and a refusal ends the transaction (its RCPTs then get 503).
TEST(ServerSessionTest, SenderCheckHoldsMailUntilAnswered) {
  for (bool accept : {true, false}) {
    SessionOptions o;
    ServerSession s(o, *mail::IpAddress::Parse("192.0.2.10"));
    s.RequireSenderCheck();
    s.Start();
    s.Feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    ASSERT_TRUE(s.TakeSenderCheck());
    EXPECT_FALSE(s.TakeSenderCheck());  // Once.
    EXPECT_TRUE(s.awaiting_sender_check());
    EXPECT_EQ(s.transaction().envelope.sender, "a@b.example");
    EXPECT_EQ(Codes(std::string(s.PendingOutput())), (std::vector<int>{220, 250}));
    s.OnTimeout();  // The owner's check is not the client's delay.
    s.Feed("x\r\n.\r\n");
    if (accept) {
      s.CompleteSenderCheck(Reply::kSenderOk);
      EXPECT_EQ(Codes(std::string(s.PendingOutput())), (std::vector<int>{220, 250, 250, 250, 354}));
      EXPECT_TRUE(s.TakeCommitRequest());
    } else {
      s.CompleteSenderCheck(Reply::kSpfFail, "not allowed");
      const std::string out(s.PendingOutput());
      EXPECT_EQ(Codes(out), (std::vector<int>{220, 250, 550, 503, 503, 500, 500}));
      EXPECT_NE(out.find("550 5.7.23 SPF validation failed: not allowed\r\n"), std::string::npos);
      EXPECT_FALSE(s.in_transaction());
    }
  }
}

// A policy refusal at the end of data answers the message instead of the commit.
TEST(ServerSessionTest, RefuseMessageInsteadOfCommit) {
  Harness h;
  h.session().Feed(std::string(kEnvelope) + "DATA\r\nx\r\n.\r\nNOOP\r\n");
  ASSERT_TRUE(h.session().TakeCommitRequest());
  h.session().RefuseMessage(Reply::kPolicyRejected, "Rejected by DMARC");
  const std::string out(h.session().PendingOutput());
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, 550, 250}));
  EXPECT_NE(out.find("550 5.7.1 Rejected by DMARC\r\n"), std::string::npos);
  EXPECT_FALSE(h.session().in_transaction());
}

// The observer sees exactly the stored message bytes, for DATA and BDAT alike.
TEST(ServerSessionTest, BodyObserverSeesTheMessageAsStored) {
  struct Recorder final : BodyObserver {
    void OnBodyStart() override {
      ++starts;
      bytes.clear();
    }
    void OnBodyBytes(std::string_view b) override { bytes.append(b); }
    int starts = 0;
    std::string bytes;
  } recorder;
  for (size_t chunk : {size_t{0}, size_t{1}, size_t{5}}) {
    Harness h;
    h.session().SetBodyObserver(&recorder);
    recorder.starts = 0;
    h.Run(std::string(kEnvelope) + "DATA\r\nSubject: a\r\n\r\n..dot\r\nx\r\n.\r\n", chunk);
    ASSERT_EQ(h.committed.size(), 1u);
    EXPECT_EQ(recorder.bytes, h.committed[0].body);
    EXPECT_EQ(recorder.bytes, "Subject: a\r\n\r\n.dot\r\nx\r\n");
    h.Run(
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nBDAT 5\r\nab\r\nyBDAT 3 "
        "LAST\r\nz\r\n",
        chunk);
    ASSERT_EQ(h.committed.size(), 2u);
    EXPECT_EQ(recorder.bytes, h.committed[1].body);
    EXPECT_EQ(recorder.starts, 2);
  }
}

TEST(ServerSessionTest, Smtputf8) {
  Harness h;
  EXPECT_EQ(Codes(h.Run("EHLO c\r\nMAIL FROM:<j\xC3\xB6rg@b.example>\r\n")),
            (std::vector<int>{250, 553}));
  const std::string out = h.Run(
      "MAIL FROM:<j\xC3\xB6rg@b.example> SMTPUTF8 BODY=8BITMIME\r\n"
      "RCPT TO:<\xC3\xBC@example.com>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250}));
}

TEST(ServerSessionTest, DsnParametersAreCheckedAndKept) {
  Harness h;
  EXPECT_EQ(Codes(h.Run("EHLO c\r\n")), (std::vector<int>{250}));
  const std::string out = h.Run(
      "MAIL FROM:<a@b.example> RET=FULL ENVID=QQ+2B1\r\n"
      "RCPT TO:<x@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;X+2B1@example.com\r\n"
      "RCPT TO:<y@example.com> NOTIFY=NEVER\r\n"
      "RCPT TO:<z@example.com>\r\n"
      "DATA\r\n.\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 250, 354, 250}));
  ASSERT_EQ(h.committed.size(), 1u);
  const mail::Envelope& env = h.committed[0].envelope;
  EXPECT_EQ(env.dsn_return, mail::DsnReturn::kFull);
  EXPECT_EQ(env.envid, "QQ+2B1");
  EXPECT_EQ(env.recipients[0].notify, mail::kNotifySuccess | mail::kNotifyDelay);
  EXPECT_EQ(env.recipients[0].orcpt, "rfc822;X+2B1@example.com");
  EXPECT_EQ(env.recipients[1].notify, mail::kNotifyNever);
  EXPECT_EQ(env.recipients[2].notify, 0);
  EXPECT_EQ(env.recipients[2].orcpt, "");

  // Each bad value gets 501 5.5.4 naming the parameter (555 when it is not even a valid
  // esmtp-value, as '=' or a control byte); the transaction goes on.
  Harness bad;
  const std::string refused = bad.Run(
      "EHLO c\r\n"
      "MAIL FROM:<a@b.example> RET=BODY\r\n"
      "MAIL FROM:<a@b.example> ENVID=has=equals\r\n"
      "MAIL FROM:<a@b.example>\r\n"
      "RCPT TO:<x@example.com> NOTIFY=NEVER,SUCCESS\r\n"
      "RCPT TO:<x@example.com> NOTIFY=SOMETIMES\r\n"
      "RCPT TO:<x@example.com> NOTIFY=SUCCESS,\r\n"
      "RCPT TO:<x@example.com> NOTIFY=SUCCESS,SUCCESS\r\n"
      "RCPT TO:<x@example.com> ORCPT=no-semicolon\r\n"
      "RCPT TO:<x@example.com> ORCPT=rfc822;bad\x01\r\n"
      "RCPT TO:<x@example.com> NOTIFY=FAILURE NOTIFY=FAILURE\r\n"
      "RCPT TO:<x@example.com> NOTIFY=failure\r\n");
  EXPECT_EQ(Codes(refused),
            (std::vector<int>{250, 501, 555, 250, 501, 501, 501, 501, 501, 555, 555, 250}));
  EXPECT_NE(refused.find("501 5.5.4 Invalid DSN parameter: RET must be FULL or HDRS\r\n"),
            std::string::npos);
}

TEST(ServerSessionTest, CountsCompleteCommandLinesForTheTimeout) {
  Harness h;
  EXPECT_EQ(h.session().command_lines(), 0u);
  h.Run("EHL");
  EXPECT_EQ(h.session().command_lines(), 0u);  // A partial line is no progress.
  h.Run("O c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
  EXPECT_EQ(h.session().command_lines(), 4u);
  EXPECT_TRUE(h.session().ReceivingData());
  h.Run("x\r\n.\r\n");
  EXPECT_FALSE(h.session().ReceivingData());
  h.Run(std::string(600, 'A'));  // Over the line limit: skipped...
  h.Run("\r\n");                 // ...and counted once it ends.
  EXPECT_EQ(h.session().command_lines(), 5u);
}

TEST(ServerSessionTest, HeloNameMustBePrintable) {
  using namespace std::string_literals;
  Harness h;
  EXPECT_EQ(Codes(h.Run("EHLO bad\x1b[31mname\r\nHELO nul\0x\r\nEHLO \xC3\r\n"s)),
            (std::vector<int>{501, 501, 501}));
  EXPECT_EQ(
      Codes(h.Run("EHLO [192.0.2.1]\r\nHELO under_score.example\r\nEHLO b\xC3\xBC.example\r\n")),
      (std::vector<int>{250, 250, 250}));
}

TEST(ServerSessionTest, HeloClientsCannotUseParameters) {
  Harness h;
  EXPECT_EQ(Codes(h.Run("HELO c\r\nMAIL FROM:<a@b.example> SIZE=10\r\n")),
            (std::vector<int>{250, 555}));
}

TEST(ServerSessionTest, TimeoutClosesWith421) {
  Harness h;
  h.session().OnTimeout();
  h.Settle();
  EXPECT_EQ(h.TakeOutput(), "421 4.4.2 Timeout exceeded, closing connection\r\n");
  EXPECT_TRUE(h.session().WantsClose());
}

TEST(ServerSessionTest, ShutdownLetsATransactionFinish) {
  Harness h;
  h.Run(std::string(kEnvelope));
  h.session().BeginShutdown();
  EXPECT_FALSE(h.session().WantsClose());
  const std::string out = h.Run("DATA\r\nx\r\n.\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{354, 250, 421}));
  EXPECT_EQ(h.committed.size(), 1u);
  EXPECT_TRUE(h.session().WantsClose());

  Harness idle;
  idle.session().BeginShutdown();
  idle.Settle();
  EXPECT_EQ(Codes(idle.TakeOutput()), (std::vector<int>{421}));
}

TEST(ServerSessionTest, TraceHeader) {
  Harness h;
  h.session().Feed(std::string(kEnvelope) + "DATA\r\nx\r\n.\r\n");
  ASSERT_TRUE(h.session().TakeCommitRequest());
  const std::string header =
      h.session().TraceHeader(mail::MessageId::Make(1, 2, 3), "Thu, 26 Nov 2026 21:00:00 +0000");
  EXPECT_EQ(header,
            "Received: from client.example ([192.0.2.10])\r\n\tby localhost (Relais) with ESMTP"
            "\r\n\tid " +
                mail::MessageId::Make(1, 2, 3).ToString() +
                "\r\n\tfor <bob@example.com>; Thu, 26 Nov 2026 21:00:00 +0000\r\n");
}

// A strict reading of a Received: field (RFC 5322 3.6.7, 3.2.2): comments balance, quoted-pairs
// are honoured, exactly one ";" lies outside comments and angle brackets and only the date
// follows it, no line passes 998 octets, and 8-bit bytes appear only when allowed.
void ExpectWellFormedTrace(const std::string& field, bool utf8, const std::string& date) {
  SCOPED_TRACE(field);
  ASSERT_TRUE(field.starts_with("Received: from "));
  ASSERT_TRUE(field.ends_with("; " + date + "\r\n"));
  size_t line = 0;
  int depth = 0;
  bool angle = false;
  int semicolons = 0;
  for (size_t i = 0; i < field.size(); ++i) {
    const auto u = static_cast<unsigned char>(field[i]);
    ASSERT_TRUE(utf8 || u < 0x80) << "8-bit byte at " << i;
    if (field[i] == '\r') {
      ASSERT_EQ(field[i + 1], '\n');
      ASSERT_LE(line, 998u);
      ASSERT_TRUE(i + 2 == field.size() || field[i + 2] == '\t') << "unfolded line at " << i;
      line = 0;
      ++i;
      continue;
    }
    ++line;
    ASSERT_TRUE(u >= 0x20 || field[i] == '\t') << "control byte at " << i;
    if (depth > 0) {
      if (field[i] == '\\') {
        ++i;
        ++line;
      } else if (field[i] == '(') {
        ++depth;
      } else if (field[i] == ')') {
        --depth;
      }
      continue;
    }
    if (field[i] == '(') {
      depth = 1;
    } else if (field[i] == ')' || field[i] == '\\' || field[i] == '"') {
      FAIL() << "stray " << field[i] << " at " << i;
    } else if (field[i] == '<') {
      ASSERT_FALSE(angle);
      angle = true;
    } else if (field[i] == '>') {
      ASSERT_TRUE(angle);
      angle = false;
    } else if (field[i] == ';' && !angle) {
      ++semicolons;
      ASSERT_EQ(field.substr(i), "; " + date + "\r\n");
    }
  }
  EXPECT_EQ(depth, 0);
  EXPECT_FALSE(angle);
  EXPECT_EQ(semicolons, 1);
}

TEST(ServerSessionTest, TraceHeaderKeepsHostileHeloNamesInsideAComment) {
  const std::string date = "Thu, 26 Nov 2026 21:00:00 +0000";
  const std::string long_name(480, 'a');
  struct Case {
    std::string helo;
    bool smtputf8;
    std::string from;  // Expected start of the field.
  };
  const std::vector<Case> cases = {
      {"client.example", false, "Received: from client.example ([192.0.2.10])\r\n"},
      {"[192.0.2.99]", false, "Received: from [192.0.2.99] ([192.0.2.10])\r\n"},
      {"a(b", false, "Received: from [192.0.2.10] (helo=a\\(b)\r\n"},
      {"x)\tby", false, ""},  // Refused at EHLO (a control byte); the previous name stays.
      {"evil);by=trusted.example", false,
       "Received: from [192.0.2.10] (helo=evil\\);by=trusted.example)\r\n"},
      {"a\\)b", false, "Received: from [192.0.2.10] (helo=a\\\\\\)b)\r\n"},
      {"x;y", false, "Received: from [192.0.2.10] (helo=x;y)\r\n"},
      {"((((", false, "Received: from [192.0.2.10] (helo=\\(\\(\\(\\()\r\n"},
      {"h\xC3\xA9llo.example", false, "Received: from [192.0.2.10] (helo=h??llo.example)\r\n"},
      {"h\xC3\xA9llo.example", true, "Received: from [192.0.2.10] (helo=h\xC3\xA9llo.example)\r\n"},
      {"[x:/../../etc]", false, "Received: from [192.0.2.10] (helo=[x:/../../etc])\r\n"},
      {long_name, false, "Received: from [192.0.2.10] (helo=" + std::string(255, 'a') + ")\r\n"},
      {std::string(300, ')'), false, ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.helo);
    Harness h;
    const std::string mail =
        c.smtputf8 ? "MAIL FROM:<a@b.example> SMTPUTF8\r\n" : "MAIL FROM:<a@b.example>\r\n";
    h.session().Feed("EHLO client.example\r\nEHLO " + c.helo + "\r\n" + mail +
                     "RCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n");
    ASSERT_TRUE(h.session().TakeCommitRequest());
    const std::string header = h.session().TraceHeader(mail::MessageId::Make(1, 2, 3), date);
    ExpectWellFormedTrace(header, c.smtputf8, date);
    if (!c.from.empty()) {
      EXPECT_TRUE(header.starts_with(c.from)) << header;
    }
  }
}

TEST(ServerSessionTest, TraceHeaderLeavesOutAForClauseThatCouldBreakIt) {
  const std::string date = "Thu, 26 Nov 2026 21:00:00 +0000";
  for (const std::string rcpt : {"\"a;b\"@example.com", "\"x>(\"@example.com",
                                 "\"a\\\\\\\"b\"@example.com", "plain@example.com"}) {
    SCOPED_TRACE(rcpt);
    Harness h;
    h.session().Feed("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<" + rcpt +
                     ">\r\nDATA\r\nx\r\n.\r\n");
    ASSERT_TRUE(h.session().TakeCommitRequest());
    const std::string header = h.session().TraceHeader(mail::MessageId::Make(1, 2, 3), date);
    ExpectWellFormedTrace(header, false, date);
    EXPECT_EQ(header.find("\tfor <") != std::string::npos, rcpt == "plain@example.com");
  }
}

TEST(ServerSessionTest, MessageStartingWithWhiteSpaceIsRefused) {
  // RFC 5322 2.2: it would continue the Received: field written above it.
  for (const std::string& transfer :
       {std::string("DATA\r\n\tby trusted.example with ESMTP id 1\r\nSubject: x\r\n\r\nb\r\n.\r\n"),
        std::string("DATA\r\n x\r\n\r\nb\r\n.\r\n"),
        std::string("DATA\r\n. \tby trusted.example\r\n\r\nb\r\n.\r\n"),  // Dot-unstuffed.
        std::string("BDAT 0\r\nBDAT 6 LAST\r\n\tx\r\n\r\n"),
        std::string("BDAT 3\r\n\t\t\tBDAT 2 LAST\r\n\r\n")}) {
    SCOPED_TRACE(transfer);
    Harness h;
    const std::string out = h.Run(std::string(kEnvelope) + transfer);
    EXPECT_NE(out.find("550 5.6.0"), std::string::npos) << out;
    EXPECT_TRUE(h.committed.empty());
  }
  // An empty header section (the first line is empty) and ordinary first lines are fine.
  for (const std::string& transfer :
       {std::string("DATA\r\n\r\nbody only\r\n.\r\n"), std::string("DATA\r\nx: y\r\n\r\n.\r\n"),
        std::string("BDAT 2 LAST\r\n\r\n")}) {
    Harness h;
    h.Run(std::string(kEnvelope) + transfer);
    EXPECT_EQ(h.committed.size(), 1u) << transfer;
  }
}

TEST(ServerSessionTest, MessageTransferSpansEveryBdatChunkOfOneMessage) {
  Harness h;
  h.Run(kEnvelope);
  EXPECT_FALSE(h.session().InMessageTransfer());
  h.session().Feed("BDAT 3\r\nab");
  EXPECT_TRUE(h.session().InMessageTransfer());
  h.session().Feed("c");
  EXPECT_TRUE(h.session().InMessageTransfer()) << "between chunks of one message";
  EXPECT_EQ(h.session().data_bytes_read(), 3u);
  h.session().Feed("BDAT 3 LAST\r\nd\r");
  EXPECT_TRUE(h.session().InMessageTransfer());
  h.session().Feed("\n");
  EXPECT_FALSE(h.session().InMessageTransfer()) << "the owner answers now";
  EXPECT_EQ(h.session().data_bytes_read(), 6u);
  h.Settle();
  EXPECT_FALSE(h.session().InMessageTransfer());
  h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\nxy");
  EXPECT_TRUE(h.session().InMessageTransfer());
  h.session().OnTooSlow();
  h.Settle();
  const std::string out = h.TakeOutput();
  EXPECT_NE(out.find("421 4.4.2"), std::string::npos) << out;
  EXPECT_TRUE(h.session().WantsClose());
}

// What Exim does: the whole transaction and QUIT in one write, then shutdown(SHUT_WR). Every
// reply, the 250 that waits for the spool included, must still go out before the close
// (RFC 2920 3.1, RFC 5321 4.1.1.10); losing them made Exim send the message again.
void ExpectEveryReplyAfterEndOfInput(const std::string& transaction,
                                     const std::vector<int>& expected) {
  SessionOptions o;
  ServerSession s(o, *mail::IpAddress::Parse("192.0.2.10"));
  s.Start();
  s.Feed(transaction);
  s.EndOfInput();
  EXPECT_FALSE(s.WantsInput());
  EXPECT_FALSE(s.WantsClose()) << "the message waits for the spool; its reply must be sent";
  ASSERT_TRUE(s.TakeCommitRequest());
  EXPECT_EQ(s.transaction().body, "Subject: x\r\n\r\nbody\r\n");
  s.CompleteCommit(CommitOutcome::kDurable, mail::MessageId::Make(1, 0, 1));
  EXPECT_TRUE(s.WantsClose());
  const std::string out(s.PendingOutput());
  EXPECT_EQ(Codes(out), expected) << out;
  EXPECT_NE(out.find("250 2.0.0 OK: queued as "), std::string::npos) << out;
}

TEST(ServerSessionTest, HalfClosedBdatClientGetsEveryReply) {
  const std::string body = "Subject: x\r\n\r\nbody\r\n";
  ExpectEveryReplyAfterEndOfInput(std::string(kEnvelope) + "BDAT " + std::to_string(body.size()) +
                                      " LAST\r\n" + body + "QUIT\r\n",
                                  {220, 250, 250, 250, 250, 221});
}

TEST(ServerSessionTest, HalfClosedDataClientGetsEveryReply) {
  ExpectEveryReplyAfterEndOfInput(
      std::string(kEnvelope) + "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
      {220, 250, 250, 250, 354, 250, 221});
  // Without QUIT the replies still go out; then the session closes.
  ExpectEveryReplyAfterEndOfInput(
      std::string(kEnvelope) + "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
      {220, 250, 250, 250, 354, 250});
}

TEST(ServerSessionTest, EndOfInputWaitsForTheSenderCheck) {
  SessionOptions o;
  ServerSession s(o, *mail::IpAddress::Parse("192.0.2.10"));
  s.RequireSenderCheck();
  s.Start();
  s.Feed(std::string(kEnvelope) + "QUIT\r\n");
  s.EndOfInput();
  ASSERT_TRUE(s.TakeSenderCheck());
  EXPECT_FALSE(s.WantsClose());
  s.CompleteSenderCheck(Reply::kSenderOk);
  EXPECT_TRUE(s.WantsClose());
  EXPECT_EQ(Codes(std::string(s.PendingOutput())), (std::vector<int>{220, 250, 250, 250, 221}));
}

TEST(ServerSessionTest, EndOfInputInsideAMessageStoresNothing) {
  for (const std::string tail : {"DATA\r\nSubject: x\r\n\r\nbody\r\n", "BDAT 100 LAST\r\nabc",
                                 "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r", "RCPT TO:<c@ex"}) {
    SessionOptions o;
    ServerSession s(o, *mail::IpAddress::Parse("192.0.2.10"));
    s.Start();
    s.Feed(std::string(kEnvelope) + tail);
    s.EndOfInput();
    EXPECT_TRUE(s.WantsClose()) << tail;
    EXPECT_FALSE(s.TakeCommitRequest()) << tail;
  }
}

// ---- STARTTLS (RFC 3207) ----

SessionOptions StartTlsOptions() {
  SessionOptions o;
  o.starttls_offered = true;
  return o;
}

std::string Plain(std::string_view authzid, std::string_view user, std::string_view password) {
  std::string message(authzid);
  message.push_back('\0');
  message.append(user);
  message.push_back('\0');
  message.append(password);
  return Base64Encode(message);
}

// Existing configurations offer neither: STARTTLS and AUTH are refused as before.
TEST(ServerSessionTest, DefaultsOfferNeitherStartTlsNorAuth) {
  Harness h;
  const std::string out = h.Run("EHLO c\r\nSTARTTLS\r\nAUTH PLAIN " + Plain("", "a", "b") +
                                "\r\nMAIL FROM:<a@b.example> AUTH=<>\r\n");
  EXPECT_EQ(out.find("STARTTLS\r\n"), std::string::npos);
  EXPECT_EQ(out.find("250-AUTH"), std::string::npos);
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 502, 503, 555}));
  EXPECT_NE(out.find("503 5.5.1 Authentication not enabled"), std::string::npos);
  EXPECT_EQ(h.starttls_taken, 0);
  EXPECT_TRUE(h.auth_requests.empty());
  EXPECT_FALSE(h.session().tls_active());
}

TEST(ServerSessionTest, StartTlsResetsTheSessionAndNeedsAFreshEhlo) {
  Harness h(StartTlsOptions());
  std::string out = h.Run("EHLO client.example\r\n");
  EXPECT_NE(out.find("250-STARTTLS\r\n"), std::string::npos);
  out = h.Run("STARTTLS\r\n");
  EXPECT_EQ(out, "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.starttls_taken, 1);
  EXPECT_FALSE(h.session().TakeStartTls());  // Once.
  EXPECT_TRUE(h.session().tls_active());
  EXPECT_EQ(h.session().tls_version(), "TLSv1.3");
  EXPECT_EQ(h.session().tls_cipher(), "TLS_AES_128_GCM_SHA256");
  EXPECT_TRUE(h.session().helo().empty());  // Forgotten (RFC 3207 4.2).
  EXPECT_TRUE(h.session().WantsInput());
  // No greeting is repeated; the old EHLO no longer counts.
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example>\r\n")), (std::vector<int>{503}));
  out = h.Run("EHLO again.example\r\n");
  EXPECT_EQ(out.find("STARTTLS"), std::string::npos);  // Not offered over TLS.
  EXPECT_EQ(h.session().helo(), "again.example");
  out = h.Run("STARTTLS\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{503, 250, 250}));
  EXPECT_NE(out.find("503 5.5.1 TLS already active"), std::string::npos);
  EXPECT_EQ(h.starttls_taken, 1);
}

// CVE-2011-0411: a command pipelined after STARTTLS, in the same packet, is injected plaintext
// and never executed.
TEST(ServerSessionTest, StartTlsInjectionIsDiscarded) {
  Harness h(StartTlsOptions());
  h.start_tls = false;  // Look at the session between the 220 and the handshake.
  EXPECT_EQ(Codes(h.Run("EHLO c\r\n")), (std::vector<int>{250}));
  const std::string injected = "MAIL FROM:<a@b>\r\n";
  const std::string out = h.Run("STARTTLS\r\n" + injected);
  EXPECT_EQ(out, "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.starttls_taken, 1);
  EXPECT_EQ(h.session().discarded_after_starttls(), injected.size());
  EXPECT_FALSE(h.session().WantsInput());  // Nothing until the handshake.
  EXPECT_TRUE(h.session().awaiting_tls());
  EXPECT_FALSE(h.session().in_transaction());
  // Whatever still comes in the clear is dropped too.
  EXPECT_EQ(h.Run("RCPT TO:<c@example.com>\r\n"), "");
  EXPECT_EQ(h.session().discarded_after_starttls(), injected.size() + 25);
  h.session().TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");
  EXPECT_TRUE(h.session().WantsInput());
  const std::string after = h.Run("MAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(after, "503 5.5.1 Send EHLO or HELO first\r\n");
  EXPECT_TRUE(h.committed.empty());
}

// The same in every split of the client's bytes: nothing after STARTTLS runs.
TEST(ServerSessionTest, StartTlsInjectionIsDiscardedAtEverySplit) {
  const std::string input =
      "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
      "x\r\n.\r\n";
  for (size_t split = 1; split < input.size(); ++split) {
    SCOPED_TRACE(split);
    Harness h(StartTlsOptions());
    h.start_tls = false;
    h.session().Feed(input.substr(0, split));
    h.Settle();
    h.session().Feed(input.substr(split));
    h.Settle();
    EXPECT_EQ(Codes(h.TakeOutput()), (std::vector<int>{250, 220}));
    EXPECT_EQ(h.session().discarded_after_starttls(), input.size() - 18);
    EXPECT_TRUE(h.committed.empty());
    EXPECT_FALSE(h.session().in_transaction());
  }
}

// RFC 3207 4: STARTTLS must end a pipelined group; after MAIL it is refused (the transaction
// was begun in the clear) and the session goes on in the clear.
TEST(ServerSessionTest, PipelinedStartTlsAfterMailIsRefused) {
  Harness h(StartTlsOptions());
  const std::string out =
      h.Run("EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\nRCPT TO:<c@example.com>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 503, 250}));
  EXPECT_NE(out.find("503 5.5.1 STARTTLS not allowed inside a mail transaction"),
            std::string::npos);
  EXPECT_EQ(h.starttls_taken, 0);
  EXPECT_FALSE(h.session().tls_active());
  EXPECT_EQ(h.session().discarded_after_starttls(), 0u);
}

TEST(ServerSessionTest, StartTlsSyntaxAndOrder) {
  Harness h(StartTlsOptions());
  EXPECT_EQ(Codes(h.Run("STARTTLS\r\n")), (std::vector<int>{503}));  // EHLO first.
  const std::string out = h.Run("EHLO c\r\nSTARTTLS now\r\n");
  EXPECT_NE(out.find("501 5.5.4 Syntax: STARTTLS"), std::string::npos);
  EXPECT_EQ(h.starttls_taken, 0);
  EXPECT_EQ(Codes(h.Run("STARTTLS\r\n")), (std::vector<int>{220}));
}

TEST(ServerSessionTest, TlsRequiredRefusesEverythingButTheBasicsBeforeStartTls) {
  SessionOptions o;
  o.tls_required = true;  // Implies STARTTLS offered.
  o.auth_offered = true;
  Harness h(o);
  h.start_tls = false;
  std::string out = h.Run(
      "EHLO c\r\nNOOP\r\nRSET\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
      "VRFY a\r\nHELP\r\nAUTH PLAIN\r\nBDAT 3 LAST\r\nFOO\r\nHELO c\r\n");
  EXPECT_NE(out.find("250-STARTTLS\r\n"), std::string::npos);
  EXPECT_EQ(out.find("250-AUTH"), std::string::npos);
  EXPECT_EQ(Codes(out),
            (std::vector<int>{250, 250, 250, 530, 530, 530, 530, 530, 530, 530, 530, 250}));
  EXPECT_NE(out.find("530 5.7.0 Must issue a STARTTLS command first"), std::string::npos);
  out = h.Run("STARTTLS\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{220}));
  h.session().TlsStarted("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256");
  out = h.Run("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nQUIT\r\n");
  EXPECT_NE(out.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 221}));
}

TEST(ServerSessionTest, ImplicitTlsStartsEncrypted) {
  SessionOptions o = StartTlsOptions();
  o.auth_offered = true;
  Harness h(o, "192.0.2.10", /*implicit_tls=*/true);
  EXPECT_EQ(h.greeting, "220 localhost ESMTP Relais\r\n");
  EXPECT_TRUE(h.session().tls_active());
  const std::string out = h.Run("EHLO c\r\nSTARTTLS\r\n");
  EXPECT_EQ(out.find("STARTTLS\r\n"), std::string::npos);
  EXPECT_NE(out.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
  EXPECT_NE(out.find("503 5.5.1 TLS already active"), std::string::npos);
  h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\nx\r\n.\r\n");
  h.session().Feed("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_TRUE(h.session().TakeCommitRequest());
  const std::string header = h.session().TraceHeader(mail::MessageId::Make(1, 2, 3), "D");
  EXPECT_NE(header.find(" with ESMTPS (version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384)\r\n"),
            std::string::npos)
      << header;
}

// ---- AUTH (RFC 4954) ----

SessionOptions AuthOptions() {
  SessionOptions o;
  o.starttls_offered = true;
  o.auth_offered = true;
  o.local_domains = {"example.com"};
  return o;
}

// A harness already past STARTTLS and a fresh EHLO.
Harness& OverTls(Harness& h) {
  h.Run("EHLO c\r\nSTARTTLS\r\n");
  EXPECT_TRUE(h.session().tls_active());
  const std::string out = h.Run("EHLO c\r\n");
  EXPECT_NE(out.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
  return h;
}

TEST(ServerSessionTest, AuthIsOfferedOnlyOverTlsOrOnATrustedListener) {
  {
    Harness h(AuthOptions());
    const std::string out = h.Run("EHLO c\r\nAUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
    EXPECT_EQ(out.find("250-AUTH"), std::string::npos);
    EXPECT_NE(out.find("538 5.7.11 Encryption required for requested authentication mechanism"),
              std::string::npos);
    EXPECT_TRUE(h.auth_requests.empty());
  }
  {
    SessionOptions o = AuthOptions();
    o.starttls_offered = false;  // No TLS on this listener, not trusted: never offered.
    Harness h(o);
    const std::string out = h.Run("EHLO c\r\nAUTH LOGIN\r\n");
    EXPECT_EQ(out.find("250-AUTH"), std::string::npos);
    EXPECT_NE(out.find("503 5.5.1 Authentication not enabled"), std::string::npos);
  }
  {
    SessionOptions o = AuthOptions();
    o.starttls_offered = false;
    o.auth_in_clear = true;  // listener trusted = true.
    Harness h(o);
    const std::string out = h.Run("EHLO c\r\nAUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
    EXPECT_NE(out.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
    EXPECT_NE(out.find("235 2.7.0 Authentication successful"), std::string::npos);
    EXPECT_EQ(h.session().authenticated_user(), "alice");
  }
}

TEST(ServerSessionTest, AuthPlainWithInitialResponse) {
  Harness h(AuthOptions());
  OverTls(h);
  const std::string out = h.Run("AUTH PLAIN " + Plain("", "alice", "s3cret") + "\r\n");
  EXPECT_EQ(out, "235 2.7.0 Authentication successful\r\n");
  ASSERT_EQ(h.auth_requests.size(), 1u);
  EXPECT_EQ(h.auth_requests[0].mechanism, "PLAIN");
  EXPECT_EQ(h.auth_requests[0].user, "alice");
  EXPECT_EQ(h.auth_requests[0].password, "s3cret");
  EXPECT_TRUE(h.session().auth_request().password.empty());  // Wiped once answered.
  EXPECT_EQ(h.session().authenticated_user(), "alice");
  // One AUTH per session (RFC 4954 4).
  EXPECT_NE(
      h.Run("AUTH PLAIN " + Plain("", "bob", "x") + "\r\n").find("503 5.5.1 Already authenticated"),
      std::string::npos);
  EXPECT_EQ(h.auth_requests.size(), 1u);
}

TEST(ServerSessionTest, AuthPlainWithContinuationAndAuthzid) {
  Harness h(AuthOptions());
  OverTls(h);
  EXPECT_EQ(h.Run("auth plain\r\n"), "334 \r\n");
  EXPECT_TRUE(h.auth_requests.empty());
  // An authzid equal to the user is the same identity.
  EXPECT_EQ(h.Run(Plain("alice", "alice", "pw") + "\r\n"),
            "235 2.7.0 Authentication successful\r\n");
  ASSERT_EQ(h.auth_requests.size(), 1u);
  EXPECT_EQ(h.auth_requests[0].user, "alice");
}

TEST(ServerSessionTest, AuthLogin) {
  Harness h(AuthOptions());
  OverTls(h);
  EXPECT_EQ(h.Run("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
  EXPECT_EQ(h.Run(Base64Encode("bob") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
  EXPECT_EQ(h.Run(Base64Encode("pass word") + "\r\n"), "235 2.7.0 Authentication successful\r\n");
  ASSERT_EQ(h.auth_requests.size(), 1u);
  EXPECT_EQ(h.auth_requests[0].mechanism, "LOGIN");
  EXPECT_EQ(h.auth_requests[0].user, "bob");
  EXPECT_EQ(h.auth_requests[0].password, "pass word");
  EXPECT_EQ(h.session().authenticated_user(), "bob");
}

TEST(ServerSessionTest, AuthLoginWithInitialResponseAndPipelinedReplies) {
  Harness h(AuthOptions());
  OverTls(h);
  const std::string out = h.Run("AUTH LOGIN " + Base64Encode("bob") + "\r\n" + Base64Encode("pw") +
                                "\r\nMAIL FROM:<bob@b.example>\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{334, 235, 250}));
  EXPECT_EQ(h.session().authenticated_user(), "bob");
}

TEST(ServerSessionTest, AuthOutcomesFromTheOwner) {
  struct Case {
    AuthOutcome outcome;
    std::string reply;
  };
  for (const Case& c : {Case{AuthOutcome::kFailed, "535 5.7.8 Authentication credentials invalid"},
                        Case{AuthOutcome::kTemporary, "454 4.7.0 Temporary authentication failure"},
                        Case{AuthOutcome::kLockedOut,
                             "454 4.7.0 Too many authentication failures, try again later"}}) {
    Harness h(AuthOptions());
    OverTls(h);
    h.auth_outcome = c.outcome;
    EXPECT_EQ(h.Run("AUTH PLAIN " + Plain("", "alice", "bad") + "\r\n"), c.reply + "\r\n");
    EXPECT_TRUE(h.session().authenticated_user().empty());
    EXPECT_TRUE(h.session().auth_request().password.empty());
    // Not authenticated: no relaying; another try is allowed.
    EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\nRSET\r\n")),
              (std::vector<int>{250, 554, 250}));
    h.auth_outcome = AuthOutcome::kOk;
    EXPECT_EQ(Codes(h.Run("AUTH PLAIN " + Plain("", "alice", "good") + "\r\n")),
              (std::vector<int>{235}));
  }
}

TEST(ServerSessionTest, AuthErrors) {
  SessionOptions o = AuthOptions();
  o.errors_max = 100;
  Harness h(o);
  h.Run("EHLO c\r\nSTARTTLS\r\n");
  // Before EHLO (TLS reset the greeting).
  EXPECT_EQ(Codes(h.Run("AUTH PLAIN " + Plain("", "a", "b") + "\r\n")), (std::vector<int>{503}));
  h.Run("EHLO c\r\n");
  const auto reply = [&](const std::string& input) { return h.Run(input); };
  EXPECT_EQ(reply("AUTH CRAM-MD5\r\n"), "504 5.5.4 Unrecognized authentication mechanism\r\n");
  EXPECT_EQ(reply("AUTH\r\n"), "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
  EXPECT_EQ(reply("AUTH PLAIN a b\r\n"), "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
  // "*" cancels, at any step.
  EXPECT_EQ(reply("AUTH PLAIN\r\n*\r\n"), "334 \r\n501 5.0.0 Authentication cancelled\r\n");
  EXPECT_EQ(reply("AUTH LOGIN\r\n" + Base64Encode("u") + "\r\n*\r\n"),
            "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n501 5.0.0 Authentication cancelled\r\n");
  // Not base64, or not a PLAIN message.
  EXPECT_EQ(reply("AUTH PLAIN !!!!\r\n"), "501 5.5.2 Malformed authentication response\r\n");
  EXPECT_EQ(reply("AUTH PLAIN\r\nAGFsaWNl\r\n"),  // "\0alice": no password.
            "334 \r\n501 5.5.2 Malformed authentication response\r\n");
  EXPECT_EQ(reply("AUTH PLAIN " + Base64Encode("alice") + "\r\n"),
            "501 5.5.2 Malformed authentication response\r\n");
  EXPECT_EQ(reply("AUTH LOGIN\r\nnot base64\r\n"),
            "334 VXNlcm5hbWU6\r\n501 5.5.2 Malformed authentication response\r\n");
  EXPECT_EQ(reply("AUTH LOGIN " + Base64Encode("a\r\nb") + "\r\n"),  // Controls in the user.
            "501 5.5.2 Malformed authentication response\r\n");
  // Acting for someone else is refused without asking the owner.
  EXPECT_EQ(reply("AUTH PLAIN " + Plain("root", "alice", "pw") + "\r\n"),
            "535 5.7.8 Authentication credentials invalid\r\n");
  EXPECT_TRUE(h.auth_requests.empty());
  // Inside a transaction.
  EXPECT_EQ(Codes(reply("MAIL FROM:<a@b.example>\r\nAUTH PLAIN " + Plain("", "a", "b") + "\r\n")),
            (std::vector<int>{250, 503}));
  EXPECT_TRUE(h.auth_requests.empty());
  // After all that, the session still takes commands in order.
  EXPECT_EQ(Codes(reply("RSET\r\nNOOP\r\n")), (std::vector<int>{250, 250}));
}

// RFC 4954 4: AUTH lines (command and responses) may be up to 12288 octets; other commands
// keep their limit.
TEST(ServerSessionTest, AuthLinesMayBeLong) {
  SessionOptions o = AuthOptions();
  o.errors_max = 100;
  Harness h(o);
  OverTls(h);
  const std::string long_password(8000, 'p');
  const std::string line = "AUTH PLAIN " + Plain("", "alice", long_password) + "\r\n";
  ASSERT_GT(line.size(), 10000u);
  EXPECT_EQ(Codes(h.Run(line, 700)), (std::vector<int>{235}));
  ASSERT_EQ(h.auth_requests.size(), 1u);
  EXPECT_EQ(h.auth_requests[0].password, long_password);
  Harness g(o);
  OverTls(g);
  EXPECT_EQ(g.Run("AUTH PLAIN\r\n" + Plain("", "alice", long_password) + "\r\n", 333),
            "334 \r\n235 2.7.0 Authentication successful\r\n");
  Harness k(o);
  OverTls(k);
  const std::string too_long = "AUTH PLAIN " + std::string(13000, 'A') + "\r\n";
  EXPECT_EQ(Codes(k.Run(too_long + "AUTH PLAIN\r\n" + std::string(13000, 'A') + "\r\nNOOP\r\n")),
            (std::vector<int>{500, 334, 500, 250}));
  EXPECT_TRUE(k.auth_requests.empty());
  EXPECT_EQ(Codes(k.Run("NOOP " + std::string(600, 'x') + "\r\n")), (std::vector<int>{500}));
  // Without AUTH configured, an AUTH line has the ordinary limit.
  Harness plain;
  EXPECT_EQ(Codes(plain.Run("EHLO c\r\nAUTH PLAIN " + std::string(600, 'A') + "\r\n")),
            (std::vector<int>{250, 500}));
}

TEST(ServerSessionTest, InputDuringAuthWaitsForTheOwner) {
  SessionOptions o = AuthOptions();
  ServerSession s(o, *mail::IpAddress::Parse("198.51.100.1"));
  s.TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");
  s.Start();
  s.Feed("EHLO c\r\nAUTH PLAIN " + Plain("", "alice", "pw") +
         "\r\nMAIL FROM:<alice@b.example>\r\nRCPT TO:<x@other.example>\r\n");
  ASSERT_TRUE(s.TakeAuthRequest());
  EXPECT_FALSE(s.TakeAuthRequest());  // Once.
  EXPECT_TRUE(s.awaiting_auth());
  EXPECT_EQ(s.auth_request().user, "alice");
  s.EndOfInput();
  EXPECT_FALSE(s.WantsClose());  // The client waits for an answer.
  s.OnTimeout();                 // Not the client's fault: nothing happens.
  EXPECT_FALSE(s.WantsClose());
  const size_t before = s.PendingOutput().size();
  s.CompleteAuth(AuthOutcome::kOk);
  const std::string out(s.PendingOutput().substr(before));
  // The held MAIL and RCPT run after the answer, as an authenticated client: it may relay.
  EXPECT_EQ(Codes(out), (std::vector<int>{235, 250, 250}));
  EXPECT_TRUE(s.WantsClose());
}

TEST(ServerSessionTest, ForcedShutdownWaitsForTheAuthAnswer) {
  SessionOptions o = AuthOptions();
  ServerSession s(o, *mail::IpAddress::Parse("198.51.100.1"));
  s.TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");
  s.Start();
  s.Feed("EHLO c\r\nAUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
  ASSERT_TRUE(s.TakeAuthRequest());
  s.ForceShutdown();
  EXPECT_FALSE(s.WantsClose());
  s.CompleteAuth(AuthOutcome::kFailed);
  EXPECT_TRUE(s.WantsClose());
  const std::string out(s.PendingOutput());
  EXPECT_TRUE(
      out.ends_with("535 5.7.8 Authentication credentials invalid\r\n"
                    "421 4.3.2 Service shutting down, closing connection\r\n"))
      << out;
}

TEST(ServerSessionTest, AuthenticatedClientsMayRelay) {
  Harness h(AuthOptions(), "198.51.100.1");
  OverTls(h);
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n"
                        "RCPT TO:<user%host@other.example>\r\nRSET\r\n")),
            (std::vector<int>{250, 554, 554, 250}));
  h.Run("AUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n"
                        "RCPT TO:<user%host@other.example>\r\n")),
            (std::vector<int>{250, 250, 250}));
}

TEST(ServerSessionTest, MailAuthParameterIsCheckedNotKept) {
  Harness h(AuthOptions());
  OverTls(h);
  // Offered (over TLS), so understood even before AUTH.
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example> AUTH=<>\r\nRSET\r\n")),
            (std::vector<int>{250, 250}));
  h.Run("AUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example> AUTH=alice+40b.example SIZE=10\r\nRSET\r\n")),
            (std::vector<int>{250, 250}));
  const std::string bad = h.Run("MAIL FROM:<a@b.example> AUTH=a+zz\r\n");
  EXPECT_EQ(bad, "501 5.5.4 Syntax: AUTH=<> or AUTH=xtext\r\n");
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example> AUTH=<> AUTH=<>\r\n")), (std::vector<int>{555}));
  EXPECT_EQ(Codes(h.Run("MAIL FROM:<a@b.example> AUTH\r\n")), (std::vector<int>{501}));
}

TEST(ServerSessionTest, RequireSenderOwned) {
  SessionOptions o = AuthOptions();
  o.require_sender_owned = true;
  o.relay_networks = {*mail::IpNetwork::Parse("192.0.2.0/24")};
  {
    Harness h(o, "198.51.100.1");
    OverTls(h);
    h.owned_domains = {"own.example", "*.corp.example"};
    h.Run("AUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
    const std::string out = h.Run(
        "MAIL FROM:<a@other.example>\r\nMAIL FROM:<a@OWN.example>\r\nRSET\r\n"
        "MAIL FROM:<>\r\nRSET\r\nMAIL FROM:<a@x.corp.example>\r\nRSET\r\n"
        "MAIL FROM:<a@corp.example>\r\n");
    EXPECT_EQ(Codes(out), (std::vector<int>{553, 250, 250, 250, 250, 250, 250, 553}));
    EXPECT_NE(out.find("553 5.7.1 Sender address not owned by the authenticated user"),
              std::string::npos);
  }
  {
    Harness h(o, "192.0.2.5");  // Not authenticated: the option does not apply.
    EXPECT_EQ(Codes(h.Run("EHLO c\r\nMAIL FROM:<a@other.example>\r\n")),
              (std::vector<int>{250, 250}));
  }
}

TEST(ServerSessionTest, TlsDropsAnAuthenticationMadeInTheClear) {
  SessionOptions o = AuthOptions();
  o.auth_in_clear = true;
  Harness h(o, "198.51.100.1");
  h.Run("EHLO c\r\nAUTH PLAIN " + Plain("", "alice", "pw") + "\r\n");
  EXPECT_EQ(h.session().authenticated_user(), "alice");
  EXPECT_EQ(Codes(h.Run("STARTTLS\r\n")), (std::vector<int>{220}));
  EXPECT_TRUE(h.session().authenticated_user().empty());
  EXPECT_EQ(Codes(h.Run("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n")),
            (std::vector<int>{250, 250, 554}));
}

TEST(ServerSessionTest, TraceHeaderNamesTlsAndAuthentication) {
  const std::string date = "Thu, 26 Nov 2026 21:00:00 +0000";
  const auto header_of = [&](Harness& h) {
    h.session().Feed("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\nx\r\n.\r\n");
    EXPECT_TRUE(h.session().TakeCommitRequest());
    std::string header = h.session().TraceHeader(mail::MessageId::Make(1, 2, 3), date);
    ExpectWellFormedTrace(header, false, date);
    return header;
  };
  {
    Harness h(AuthOptions());
    OverTls(h);
    EXPECT_NE(header_of(h).find("by localhost (Relais) with ESMTPS (version=TLSv1.3 "
                                "cipher=TLS_AES_128_GCM_SHA256)\r\n\tid "),
              std::string::npos);
  }
  {
    Harness h(AuthOptions());
    OverTls(h);
    h.Run("AUTH PLAIN " + Plain("", "alice@example.com", "pw") + "\r\n");
    EXPECT_NE(header_of(h).find(" with ESMTPSA (version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256) "
                                "(authenticated as alice@example.com)\r\n\tid "),
              std::string::npos);
  }
  {
    SessionOptions o = AuthOptions();
    o.auth_in_clear = true;
    Harness h(o);
    h.Run("EHLO c\r\nAUTH PLAIN " + Plain("", "bob", "pw") + "\r\n");
    EXPECT_NE(header_of(h).find(" with ESMTPA (authenticated as bob)\r\n"), std::string::npos);
  }
  {
    // Hostile text in the user name and TLS strings stays inside its comment.
    SessionOptions o = AuthOptions();
    Harness h(o);
    h.start_tls = false;
    h.Run("EHLO c\r\nSTARTTLS\r\n");
    h.session().TlsStarted("TLSv1.3)\r\nX: y", "c(i;p)h\\er");
    h.Run("EHLO c\r\nAUTH PLAIN " + Plain("", "ev)il; (x", "pw") + "\r\n");
    ASSERT_EQ(h.session().authenticated_user(), "ev)il; (x");
    const std::string header = header_of(h);
    EXPECT_NE(header.find("(version=TLSv1.3\\)??X:?y cipher=c\\(i;p\\)h\\\\er) "
                          "(authenticated as ev\\)il;?\\(x)"),
              std::string::npos)
        << header;
  }
}

// The owner's timer or a shutdown may close the session while the handshake runs; the
// handshake's completion is then harmless.
TEST(ServerSessionTest, SessionClosedDuringTheHandshake) {
  for (int how = 0; how < 3; ++how) {
    Harness h(StartTlsOptions());
    h.start_tls = false;
    h.Run("EHLO c\r\nSTARTTLS\r\n");
    ASSERT_EQ(h.starttls_taken, 1);
    if (how == 0) {
      h.session().OnTimeout();
    } else if (how == 1) {
      h.session().BeginShutdown();
    } else {
      h.session().ForceShutdown();
    }
    EXPECT_TRUE(h.session().WantsClose());
    h.session().TlsStarted("TLSv1.3", "TLS_AES_128_GCM_SHA256");
    EXPECT_TRUE(h.session().WantsClose());
    EXPECT_EQ(Codes(h.Run("EHLO c\r\n")), (std::vector<int>{421}));
  }
}

}  // namespace
}  // namespace relais::smtp
