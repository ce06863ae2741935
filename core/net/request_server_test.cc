// core/net/request_server_test.cc — the one-request server on a real io_uring: answers,
// limits on size, clients and time.
#include "core/net/request_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/io/fake_net.h"
#include "core/uring/engine.h"

namespace relais::net {
namespace {

class LineHandler final : public RequestHandler {
 public:
  size_t RequestEnd(std::string_view input) override {
    const size_t n = input.find('\n');
    return n == std::string_view::npos ? kNeedMore : n + 1;
  }
  void OnRequest(RequestServer& server, uint64_t client, std::string_view request) override {
    server.Respond(client, "echo " + std::string(request));
  }
  std::string TooLarge() override { return "too large\n"; }
};

class Fixture : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = *uring::Engine::Create(uring::EngineOptions{256, 16, 4096});
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_EQ(::listen(listen_fd_, 16), 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    address_ = a;
    server_ = std::make_unique<RequestServer>(engine_->net(), timers_, clock_, listen_fd_,
                                              RequestServerOptions{2, 64, 200}, handler_);
    server_->Arm();
  }
  void TearDown() override {
    server_.reset();
    ::close(listen_fd_);
  }
  int Connect() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address_), sizeof(address_)), 0);
    timeval tv{0, 10'000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
  }
  // Runs the loop until the peer of `fd` closes; returns what it sent.
  std::string ReadAll(int fd) {
    std::string out;
    const uint64_t deadline = clock_.MonotonicMs() + 5000;
    while (clock_.MonotonicMs() < deadline) {
      engine_->Run(5);
      timers_.Advance(clock_.MonotonicMs());
      char buf[256];
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0) {
        return out;
      }
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
      }
    }
    ADD_FAILURE() << "the server did not close";
    return out;
  }

  base::SystemClock clock_;
  timer::TimerWheel timers_{clock_.MonotonicMs(), 5};
  std::unique_ptr<uring::Engine> engine_;
  LineHandler handler_;
  int listen_fd_ = -1;
  sockaddr_in address_{};
  std::unique_ptr<RequestServer> server_;
};

TEST_F(Fixture, AnswersOneRequestAndCloses) {
  const int fd = Connect();
  ASSERT_EQ(::send(fd, "hel", 3, 0), 3);
  engine_->Run(5);
  ASSERT_EQ(::send(fd, "lo\nignored\n", 11, 0), 11);
  EXPECT_EQ(ReadAll(fd), "echo hello\n");
  ::close(fd);
}

TEST_F(Fixture, OversizedRequestGetsTooLarge) {
  const int fd = Connect();
  const std::string big(100, 'x');
  ASSERT_EQ(::send(fd, big.data(), big.size(), 0), 100);
  EXPECT_EQ(ReadAll(fd), "too large\n");
  ::close(fd);
}

TEST_F(Fixture, SilentClientIsClosedAfterTheTimeout) {
  const int fd = Connect();
  const uint64_t start = clock_.MonotonicMs();
  EXPECT_EQ(ReadAll(fd), "");
  EXPECT_GE(clock_.MonotonicMs() - start, 150u);  // Not before its time (200 ms, 5 ms ticks).
  ::close(fd);
}

// Idle clients cannot starve the endpoint: with every slot held by clients that say nothing,
// a newcomer takes the oldest one's slot and is served; the others keep theirs.
TEST_F(Fixture, IdleClientsCannotStarveANewOne) {
  const int a = Connect();
  const int b = Connect();
  for (int i = 0; i < 10; ++i) {
    engine_->Run(5);  // Both accepted and waiting.
  }
  const int c = Connect();
  ASSERT_EQ(::send(c, "x\n", 2, 0), 2);
  EXPECT_EQ(ReadAll(c), "echo x\n");
  EXPECT_EQ(ReadAll(a), "");  // Evicted: the oldest waiting.
  ASSERT_EQ(::send(b, "y\n", 2, 0), 2);
  EXPECT_EQ(ReadAll(b), "echo y\n");
  EXPECT_EQ(server_->evicted(), 1u);
  ::close(a);
  ::close(b);
  ::close(c);
}

// Many more idle clients than slots, then one that asks: it is answered at once.
TEST_F(Fixture, AFloodOfIdleClientsStillLetsARequestThrough) {
  std::vector<int> idle;
  for (int i = 0; i < 40; ++i) {
    idle.push_back(Connect());
    engine_->Run(0);
  }
  const int c = Connect();
  ASSERT_EQ(::send(c, "scrape\n", 7, 0), 7);
  const uint64_t start = clock_.MonotonicMs();
  EXPECT_EQ(ReadAll(c), "echo scrape\n");
  EXPECT_LT(clock_.MonotonicMs() - start, 150u);  // Before any timeout (200 ms) could help.
  for (int fd : idle) {
    ::close(fd);
  }
  ::close(c);
}

// Over the fake socket seam: answers that come later (an admin query waits for other shards)
// and clients that go away meanwhile.
class DeferringHandler final : public RequestHandler {
 public:
  size_t RequestEnd(std::string_view input) override {
    const size_t n = input.find('\n');
    return n == std::string_view::npos ? kNeedMore : n + 1;
  }
  void OnRequest(RequestServer&, uint64_t client, std::string_view) override {
    clients.push_back(client);
  }
  std::string TooLarge() override { return "too large\n"; }
  std::vector<uint64_t> clients;
};

class FakeFixture : public ::testing::Test {
 protected:
  io::FakeNet net_;
  base::FakeClock clock_;
  timer::TimerWheel timers_{clock_.MonotonicMs(), 5};
  io::Socket listener_ = net_.Listener();
  DeferringHandler handler_;
  RequestServer server_{
      net_, timers_, clock_, listener_.value(), RequestServerOptions{2, 64, 200}, handler_};
};

TEST_F(FakeFixture, ALaterAnswerGoesOutAndAnAnswerForAGoneClientIsDropped) {
  server_.Arm();
  const io::Socket a = net_.PeerConnects(listener_);
  const io::Socket b = net_.PeerConnects(listener_);
  net_.RunUntilIdle();
  net_.PeerSends(a, "stats\n");
  net_.PeerSends(b, "stats\n");
  net_.RunUntilIdle();
  ASSERT_EQ(handler_.clients.size(), 2u);
  EXPECT_EQ(net_.in_flight(a), 0u);  // Answered: nothing more is read.
  net_.PeerResets(b);                // Gone while its answer is computed.
  server_.Respond(handler_.clients[0], "a: 1\n");
  server_.Respond(handler_.clients[1], "b: 2\n");
  net_.RunUntilIdle();
  EXPECT_EQ(net_.sent(a), "a: 1\n");
  EXPECT_TRUE(net_.closed(a));
  EXPECT_EQ(net_.sent(b), "");
  EXPECT_TRUE(net_.closed(b));
  server_.Respond(handler_.clients[1], "late\n");  // The client is freed: nothing happens.
  net_.RunUntilIdle();
  server_.Stop();
  net_.RunUntilIdle();
}

TEST_F(FakeFixture, AnEvictedClientIsClosedWithItsReceiveInFlight) {
  server_.Arm();
  const io::Socket a = net_.PeerConnects(listener_);
  const io::Socket b = net_.PeerConnects(listener_);
  net_.RunUntilIdle();
  EXPECT_EQ(net_.in_flight(a), 1u);  // Its receive waits for a request.
  const io::Socket c = net_.PeerConnects(listener_);
  net_.RunUntilIdle();
  EXPECT_EQ(server_.evicted(), 1u);
  EXPECT_TRUE(net_.closed(a));  // The fake refuses a close with the receive still in flight.
  EXPECT_FALSE(net_.closed(b));
  net_.PeerSends(c, "x\n");
  net_.RunUntilIdle();
  ASSERT_EQ(handler_.clients.size(), 1u);
  clock_.AdvanceMs(250);
  timers_.Advance(clock_.MonotonicMs());
  net_.RunUntilIdle();
  EXPECT_TRUE(net_.closed(b));  // Timed out; c, answered, has no deadline.
  EXPECT_EQ(server_.timed_out(), 1u);
  EXPECT_FALSE(net_.closed(c));
  server_.Respond(handler_.clients[0], "y\n");
  net_.RunUntilIdle();
  EXPECT_EQ(net_.sent(c), "y\n");
  EXPECT_TRUE(net_.closed(c));
  server_.Stop();
  net_.RunUntilIdle();
}

TEST(PeerCredentials, OurOwnUserIsTrusted) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  uint32_t uid = 12345;
  EXPECT_TRUE(PeerIsUserOrRoot(pair[0], &uid));
  EXPECT_EQ(uid, ::geteuid());
  ::close(pair[0]);
  ::close(pair[1]);
  EXPECT_FALSE(PeerIsUserOrRoot(-1));
}

}  // namespace
}  // namespace relais::net
