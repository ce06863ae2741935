// core/net/stream_pump_test.cc — the pump's hard paths over the fake socket seam.
#include "core/net/stream_pump.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <string>

#include "core/io/fake_net.h"

namespace relais::net {
namespace {

// A line session: "QUIT" answers "bye" and closes, any other line answers "ok <line>".
// With `hold_lines`, lines wait (as behind a spool commit) until Release().
class LineSession final : public StreamSession {
 public:
  void Feed(std::string_view bytes) override {
    input_.append(bytes);
    Process();
  }
  [[nodiscard]] std::string_view PendingOutput() const override { return output_; }
  void ConsumeOutput(size_t bytes) override { output_.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const override { return !closing_ && !ended_; }
  [[nodiscard]] bool WantsClose() const override { return closing_ && output_.empty(); }
  void EndOfInput() override { ended_ = true; }

  void Hold() { held_ = true; }
  void Release() {
    held_ = false;
    Process();
  }
  std::string fed;

 private:
  void Process() {
    size_t end;
    while (!held_ && !closing_ && (end = input_.find("\r\n")) != std::string::npos) {
      const std::string line = input_.substr(0, end);
      input_.erase(0, end + 2);
      fed += line + ";";
      if (line == "QUIT") {
        output_ += "bye\r\n";
        closing_ = true;
      } else {
        output_ += "ok " + line + "\r\n";
      }
    }
  }
  std::string input_;
  std::string output_;
  bool held_ = false;
  bool closing_ = false;
  bool ended_ = false;
};

class Owner final : public StreamPumpOwner {
 public:
  void OnPumpReady(StreamPump& pump) override {
    ++ready;
    if (drive) {
      pump.Drive();
    }
  }
  void OnPumpClosed(StreamPump& pump) override {
    ++closed;
    end = pump.end();
    error = pump.error();
    if (free_on_close) {
      owned.reset();  // Destroys the pump inside its own callback.
    }
  }
  void OnRecvNoBuffer(StreamPump&) override { ++no_buffer; }

  bool drive = true;
  bool free_on_close = false;
  std::unique_ptr<StreamPump> owned;
  int ready = 0;
  int closed = 0;
  int no_buffer = 0;
  PumpEnd end = PumpEnd::kOpen;
  int32_t error = 0;
};

class StreamPumpTest : public ::testing::Test {
 protected:
  io::FakeNet net{64};
  io::Socket socket = net.Connected(/*registered=*/true);
  LineSession session;
  Owner owner;
};

TEST_F(StreamPumpTest, RepliesAndClosesOnceWhenTheSessionWantsClose) {
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  net.PeerSends(socket, "HELLO\r\nQUIT\r\n");
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "ok HELLO\r\nbye\r\n");
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kSessionClosed);
  EXPECT_TRUE(net.closed(socket));
  EXPECT_EQ(net.in_flight(), 0u);
}

TEST_F(StreamPumpTest, OneSendCarriesEverythingPendingAndBytesInFlightLiveInThePump) {
  owner.drive = false;  // The owner drives once per turn, as ingress does.
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  net.PeerSends(socket, "A\r\n");
  net.StallSends(socket, true);
  net.RunUntilIdle();
  pump.Drive();  // Sends "ok A", re-arms the receive.
  net.PeerSends(socket, "B\r\nC\r\n");
  net.RunUntilIdle();
  // The session's buffer grew while "ok A" was in flight; the bytes in flight did not move.
  EXPECT_EQ(pump.sending_bytes(), 6u);
  net.StallSends(socket, false);
  net.RunUntilIdle();
  const uint64_t sends_before = net.sends();
  pump.Drive();
  net.RunUntilIdle();
  EXPECT_EQ(net.sends() - sends_before, 1u);  // "ok B" and "ok C" in one send.
  EXPECT_EQ(net.sent(socket), "ok A\r\nok B\r\nok C\r\n");
}

TEST_F(StreamPumpTest, CloseWithAReceiveAndASendInFlightWaitsForBothThenClosesOnce) {
  owner.owned = std::make_unique<StreamPump>(net, socket, session, owner, nullptr);
  owner.free_on_close = true;
  StreamPump& pump = *owner.owned;
  pump.Drive();
  net.StallSends(socket, true);  // The peer does not read: the send never finishes.
  net.PeerSends(socket, "A\r\n");
  net.RunUntilIdle();
  ASSERT_TRUE(pump.sending());
  ASSERT_TRUE(pump.receiving());
  pump.Abort();
  // Nothing is closed while either operation is in flight (the fake crashes on a close with
  // an operation in flight); both complete as cancelled, then the close, then one callback.
  EXPECT_FALSE(net.closed(socket));
  EXPECT_EQ(owner.closed, 0);
  net.RunUntilIdle();
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kAborted);
  EXPECT_TRUE(net.closed(socket));
  EXPECT_EQ(owner.owned, nullptr);  // Freed inside OnPumpClosed; nothing touched it after.
  EXPECT_EQ(net.in_flight(), 0u);
}

TEST_F(StreamPumpTest, AnAbortedConnectionStaysOpenWhileTheOwnerHoldsIt) {
  // An append to the spool names the connection: it must not be freed before it completes.
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  pump.Hold();
  net.StallSends(socket, true);
  net.PeerSends(socket, "A\r\n");
  net.RunUntilIdle();
  pump.Abort();
  net.RunUntilIdle();
  EXPECT_EQ(net.in_flight(), 0u);    // The receive and the send were cancelled...
  EXPECT_FALSE(net.closed(socket));  // ...but the socket waits for the hold.
  EXPECT_EQ(owner.closed, 0);
  pump.Release();
  pump.Drive();
  net.RunUntilIdle();
  EXPECT_TRUE(net.closed(socket));
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kAborted);
}

TEST_F(StreamPumpTest, PeerResetMidSendClosesAndReportsTheReset) {
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  net.SetSendBytesMax(socket, 2);
  net.PeerSends(socket, "HELLO\r\n");
  net.Step();  // The receive: "ok HELLO" goes out in pieces of 2.
  net.Step();  // "ok"
  ASSERT_TRUE(pump.sending());
  net.PeerResets(socket);
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "ok");
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kPeerReset);  // The receive saw it first.
  EXPECT_EQ(owner.error, -ECONNRESET);
  EXPECT_TRUE(net.closed(socket));
}

TEST_F(StreamPumpTest, AFailedSendIsReportedAsSuch) {
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  net.PeerSends(socket, "A\r\n");
  net.Step();         // The receive; "ok A" is sent, and the next receive armed.
  pump.PauseInput();  // (No receive after this one.)
  net.PeerResets(socket);
  net.RunUntilIdle();
  EXPECT_EQ(owner.closed, 1);
  EXPECT_TRUE(owner.end == PumpEnd::kSendFailed || owner.end == PumpEnd::kPeerReset);
  EXPECT_EQ(owner.error, -ECONNRESET);
  EXPECT_TRUE(net.closed(socket));
}

TEST_F(StreamPumpTest, AShortSendIsContinuedBeforeAnythingElseIsSent) {
  owner.drive = false;
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  net.SetSendBytesMax(socket, 3);
  net.PeerSends(socket, "FIRST\r\n");
  net.RunUntilIdle();
  pump.Drive();
  net.PeerSends(socket, "SECOND\r\n");
  net.Step();    // 3 bytes of "ok FIRST\r\n"
  net.Step();    // The receive of SECOND (the session now has "ok SECOND" pending).
  pump.Drive();  // Must not send "ok SECOND" while "ok FIRST" is unfinished.
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "ok FIRST\r\n");
  pump.Drive();
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "ok FIRST\r\nok SECOND\r\n");
  EXPECT_EQ(pump.bytes_sent(), net.sent(socket).size());
}

TEST_F(StreamPumpTest, PipelinePausedAtItsByteLimitAndResumed) {
  StreamPump pump(net, socket, session, owner, nullptr, {.sending_bytes_max = 8});
  pump.Drive();
  net.StallSends(socket, true);  // A client that pipelines without reading its replies.
  net.PeerSends(socket, "AAAAAAAA\r\n");
  net.RunUntilIdle();
  ASSERT_TRUE(pump.sending());
  EXPECT_GE(pump.sending_bytes(), 8u);
  net.PeerSends(socket, "B\r\nC\r\n");
  net.RunUntilIdle();
  EXPECT_FALSE(pump.receiving());  // Paused: the client's bytes wait in its socket.
  EXPECT_EQ(session.fed, "AAAAAAAA;");
  net.StallSends(socket, false);
  net.RunUntilIdle();
  EXPECT_EQ(session.fed, "AAAAAAAA;B;C;");
  EXPECT_EQ(net.sent(socket), "ok AAAAAAAA\r\nok B\r\nok C\r\n");
  EXPECT_TRUE(pump.receiving());
}

TEST_F(StreamPumpTest, PauseInputStopsReadingUntilResumed) {
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.PauseInput();  // A commit is pending.
  pump.Drive();
  net.PeerSends(socket, "A\r\n");
  net.RunUntilIdle();
  EXPECT_EQ(session.fed, "");
  EXPECT_EQ(net.recvs(), 0u);
  pump.ResumeInput();
  pump.Drive();
  net.RunUntilIdle();
  EXPECT_EQ(session.fed, "A;");
}

TEST_F(StreamPumpTest, EndOfInputStillSendsTheRepliesOfAHeldCommit) {
  // A client sends its last command and QUIT in one write and shuts its sending side (Exim
  // after `BDAT n LAST`), but still reads: the reply that waits for the commit must go out.
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  session.Hold();
  pump.Hold();
  net.PeerSends(socket, "DATA\r\nQUIT\r\n");
  net.PeerShutsWrite(socket);
  net.RunUntilIdle();
  EXPECT_TRUE(pump.input_ended());
  EXPECT_EQ(owner.closed, 0);  // Held: not closed although input ended and nothing is sent.
  session.Release();           // The commit is durable.
  pump.Release();
  pump.Drive();
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "ok DATA\r\nbye\r\n");
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kSessionClosed);
}

TEST_F(StreamPumpTest, EndOfInputClosesOnceTheLastReplyIsSent) {
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  net.PeerSends(socket, "A\r\n");
  net.PeerShutsWrite(socket);
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "ok A\r\n");
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kPeerClosed);
}

TEST_F(StreamPumpTest, NoBuffersIsRetried) {
  StreamPump pump(net, socket, session, owner, nullptr);
  net.FailRecvs(2, -ENOBUFS);
  pump.Drive();
  net.PeerSends(socket, "A\r\nQUIT\r\n");
  net.RunUntilIdle();
  EXPECT_EQ(owner.no_buffer, 2);
  EXPECT_EQ(net.sent(socket), "ok A\r\nbye\r\n");
  EXPECT_EQ(owner.end, PumpEnd::kSessionClosed);
}

TEST_F(StreamPumpTest, DeadlineClosesAStalledPeer) {
  timer::TimerWheel wheel(0, 10);
  StreamPump pump(net, socket, session, owner, &wheel);
  pump.Drive();
  net.StallSends(socket, true);
  net.PeerSends(socket, "A\r\n");
  net.RunUntilIdle();
  pump.SetDeadline(100);
  wheel.Advance(50);
  net.RunUntilIdle();
  EXPECT_EQ(owner.closed, 0);
  wheel.Advance(120);
  net.RunUntilIdle();
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kTimedOut);
  EXPECT_TRUE(net.closed(socket));
}

TEST_F(StreamPumpTest, ConnectFailureIsReported) {
  io::Socket out = net.NewStreamSocket(AF_INET);
  net.SetConnectResult(out, -ECONNREFUSED);
  StreamPump pump(net, out, session, owner, nullptr);
  sockaddr_storage address{};
  pump.Connect(reinterpret_cast<sockaddr*>(&address), sizeof(address));
  pump.Drive();  // Nothing happens before the connect completes.
  EXPECT_EQ(net.recvs(), 0u);
  net.RunUntilIdle();
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(owner.end, PumpEnd::kConnectFailed);
  EXPECT_EQ(owner.error, -ECONNREFUSED);
}

// Output in pieces that stay put until consumed (as smtp::ClientSession's): sent without a
// copy, consumed as each send completes.
class PieceSession final : public StreamSession {
 public:
  void Feed(std::string_view) override {}
  [[nodiscard]] std::string_view PendingOutput() const override {
    return pieces.empty() ? std::string_view() : std::string_view(pieces.front()).substr(offset);
  }
  void ConsumeOutput(size_t bytes) override {
    offset += bytes;
    if (offset == pieces.front().size()) {
      pieces.pop_front();
      offset = 0;
    }
  }
  [[nodiscard]] bool WantsInput() const override { return true; }
  [[nodiscard]] bool WantsClose() const override { return false; }
  void EndOfInput() override {}
  [[nodiscard]] bool StableOutput() const override { return true; }
  std::deque<std::string> pieces;
  size_t offset = 0;
};

TEST_F(StreamPumpTest, StableOutputIsSentWithoutACopyAndConsumedAsItGoes) {
  PieceSession pieces;
  pieces.pieces = {"MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n"};
  StreamPump pump(net, socket, pieces, owner, nullptr);
  net.SetSendBytesMax(socket, 5);
  net.StallSends(socket, true);
  pump.Drive();
  EXPECT_TRUE(pump.sending());
  EXPECT_EQ(pump.sending_bytes(), 0u);                       // Nothing copied.
  EXPECT_EQ(pieces.PendingOutput(), "MAIL FROM:<a@b>\r\n");  // Not consumed before it is sent.
  net.StallSends(socket, false);
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
  EXPECT_TRUE(pieces.pieces.empty()) << pieces.pieces.size() << " " << pieces.offset;
  EXPECT_EQ(pump.bytes_sent(), net.sent(socket).size());
  pump.Abort();
  net.RunUntilIdle();
  EXPECT_EQ(owner.closed, 1);
}

// A class with the six members, not derived from StreamSession.
struct PlainLines {
  void Feed(std::string_view bytes) { output.append(bytes); }
  [[nodiscard]] std::string_view PendingOutput() const { return output; }
  void ConsumeOutput(size_t bytes) { output.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const { return !ended; }
  [[nodiscard]] bool WantsClose() const { return false; }
  void EndOfInput() { ended = true; }
  std::string output;
  bool ended = false;
};

TEST_F(StreamPumpTest, SessionAdapterDrivesAnyClassWithTheSixMembers) {
  PlainLines echo;
  SessionAdapter<PlainLines> adapter(echo);
  StreamPump pump(net, socket, adapter, owner, nullptr);
  pump.Drive();
  net.PeerSends(socket, "echo me");
  net.PeerShutsWrite(socket);
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "echo me");
  EXPECT_TRUE(echo.ended);
  EXPECT_EQ(owner.end, PumpEnd::kPeerClosed);
}

// A transport with state of its own: it greets before the session says anything (as a TLS
// handshake writes while the session wants nothing) and frames the session's bytes.
class BracketTransport final : public Transport {
 public:
  void OnReceived(std::string_view bytes, StreamSession& session) override {
    std::string plain(bytes);
    std::erase(plain, '#');
    session.Feed(plain);
  }
  void TakeOutput(StreamSession& session, std::string& out) override {
    if (!greeted_) {
      out += "HANDSHAKE\r\n";
      greeted_ = true;
    }
    const std::string_view pending = session.PendingOutput();
    if (!pending.empty()) {
      out += "[";
      out.append(pending);
      out += "]";
      session.ConsumeOutput(pending.size());
    }
  }
  [[nodiscard]] bool WantsInput(const StreamSession& session) const override {
    return session.WantsInput();
  }
  [[nodiscard]] bool WantsClose(const StreamSession& session) const override {
    return session.WantsClose();
  }
  void OnEndOfInput(StreamSession& session) override { session.EndOfInput(); }

 private:
  bool greeted_ = false;
};

TEST_F(StreamPumpTest, TheTransportSitsBetweenSocketAndSession) {
  BracketTransport transport;
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.SetTransport(transport);
  pump.Drive();
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(socket), "HANDSHAKE\r\n");  // Written while the session had nothing.
  net.PeerSends(socket, "#A#\r\nQUIT\r\n");
  net.RunUntilIdle();
  EXPECT_EQ(session.fed, "A;QUIT;");
  EXPECT_EQ(net.sent(socket), "HANDSHAKE\r\n[ok A\r\nbye\r\n]");
  EXPECT_EQ(owner.end, PumpEnd::kSessionClosed);
}

TEST_F(StreamPumpTest, AbortTwiceAndDriveAfterCloseAreHarmless) {
  StreamPump pump(net, socket, session, owner, nullptr);
  pump.Drive();
  pump.Abort();
  pump.Abort();
  pump.Drive();
  net.RunUntilIdle();
  pump.Drive();
  EXPECT_EQ(owner.closed, 1);
  EXPECT_EQ(net.in_flight(), 0u);
}

}  // namespace
}  // namespace relais::net
