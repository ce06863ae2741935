// tools/relaisd/egress_test.cc — the outbound connection pool on a real io_uring, against a
// scripted SMTP server on loopback (a thread of this test).
#include "tools/relaisd/egress.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/clock.h"

namespace relais::relaisd {
namespace {

bool WriteAll(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// One line without its CRLF; false at EOF.
bool ReadLine(int fd, std::string& line) {
  line.clear();
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
    if (c == '\n') {
      if (!line.empty() && line.back() == '\r') {
        line.pop_back();
      }
      return true;
    }
    line.push_back(c);
  }
  return false;
}

struct Script {
  bool greet = true;
  bool hangup_at_end_of_data = false;  // Reads the message, then closes without a reply.
  int close_after_messages = 0;        // Closes silently after this many messages (0: never).
};

// A small SMTP server that handles one connection at a time on its own thread and records
// what it received.
class FakeServer {
 public:
  explicit FakeServer(Script script) : script_(script) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::vector<std::string> commands() {
    std::lock_guard lock(mu_);
    return commands_;
  }
  [[nodiscard]] int messages() const { return messages_; }
  [[nodiscard]] int connections() const { return connections_; }

 private:
  void Loop() {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == EINTR) {
          usleep(1000);  // A test that uses up descriptors: wait for them to come back.
          continue;
        }
        return;  // The listener was shut down.
      }
      ++connections_;
      Serve(fd);
      ::close(fd);
    }
  }
  void Serve(int fd) {
    if (!script_.greet) {
      std::string line;
      ReadLine(fd, line);  // Says nothing; waits for the client to give up.
      return;
    }
    WriteAll(fd, "220 fake ESMTP\r\n");
    std::string line;
    int on_this_connection = 0;
    while (ReadLine(fd, line)) {
      {
        std::lock_guard lock(mu_);
        commands_.push_back(line);
      }
      const std::string verb = line.substr(0, 4);
      if (verb == "EHLO") {
        WriteAll(fd, "250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
      } else if (verb == "DATA") {
        WriteAll(fd, "354 go\r\n");
        while (ReadLine(fd, line) && line != ".") {
        }
        if (script_.hangup_at_end_of_data) {
          return;
        }
        ++messages_;
        WriteAll(fd, "250 2.0.0 queued\r\n");
        if (++on_this_connection == script_.close_after_messages) {
          return;
        }
      } else if (verb == "QUIT") {
        WriteAll(fd, "221 bye\r\n");
        return;
      } else if (line.find("bad@") != std::string::npos) {
        WriteAll(fd, "550 5.1.1 no such user\r\n");
      } else {
        WriteAll(fd, "250 ok\r\n");
      }
    }
  }

  const Script script_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> commands_;
  std::atomic<int> messages_{0};
  std::atomic<int> connections_{0};
};

Endpoint Loopback(uint16_t port) {
  Endpoint e;
  auto* a = reinterpret_cast<sockaddr_in*>(&e.address);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  e.length = sizeof(sockaddr_in);
  e.name = "127.0.0.1:" + std::to_string(port);
  return e;
}

// A port nobody listens on.
uint16_t DeadPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class Harness final : public EgressListener {
 public:
  explicit Harness(EgressOptions options = {}) {
    engine_ = *uring::Engine::Create(uring::EngineOptions{256, 16, 4096});
    options.helo_name = "relay.test";
    egress_ = std::make_unique<Egress>(*engine_, timers_, clock_, options, *this);
  }
  ~Harness() { egress_.reset(); }

  void OnEgressDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                    std::string_view next_hop) override {
    results_[id] = std::move(results);
    next_hops_[id] = next_hop;
  }
  void Send(const Destination& d, uint64_t id, std::vector<std::string_view> rcpts) {
    EgressTask t;
    t.id = id;
    t.message.sender = "a@x.test";
    for (std::string_view r : rcpts) {
      t.message.recipients.push_back({r, "", ""});
    }
    t.message.content = content_;
    egress_->Submit(d, std::move(t));
  }
  // Runs the loop until `done` or 10 s.
  bool RunUntil(const std::function<bool()>& done) {
    const uint64_t deadline = clock_.MonotonicMs() + 10'000;
    while (!done()) {
      if (clock_.MonotonicMs() > deadline) {
        return false;
      }
      egress_->Pump();
      engine_->Run(egress_->busy() ? 0 : 5);
      timers_.Advance(clock_.MonotonicMs());
    }
    return true;
  }
  bool RunUntilResults(size_t n) {
    return RunUntil([&] { return results_.size() >= n; });
  }

  Egress& egress() { return *egress_; }
  std::map<uint64_t, std::vector<smtp::RecipientReply>> results_;
  std::map<uint64_t, std::string> next_hops_;

 private:
  base::SystemClock clock_;
  timer::TimerWheel timers_{clock_.MonotonicMs(), 5};
  std::unique_ptr<uring::Engine> engine_;
  std::unique_ptr<Egress> egress_;
  const std::string content_ = "Subject: test\r\n\r\n.dot line\r\nbody\r\n";
};

TEST(Egress, DeliversAndReusesTheConnectionWithRset) {
  FakeServer server({});
  Destination d{"smarthost", false, {Loopback(server.port())}};
  EgressOptions o;
  o.connections_max = 1;
  Harness h(o);
  h.Send(d, 1, {"b@y.test", "bad@y.test"});
  h.Send(d, 2, {"c@y.test"});
  ASSERT_TRUE(h.RunUntilResults(2));
  ASSERT_EQ(h.results_[1].size(), 2u);
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDelivered);
  EXPECT_EQ(h.results_[1][1].status, smtp::RecipientStatus::kFailed);
  EXPECT_TRUE(h.results_[1][1].reply.starts_with("550 5.1.1 no such user"))
      << h.results_[1][1].reply;
  EXPECT_EQ(h.results_[2][0].status, smtp::RecipientStatus::kDelivered);
  EXPECT_EQ(h.next_hops_[2], "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(server.messages(), 2);
  const auto commands = server.commands();
  EXPECT_NE(std::find(commands.begin(), commands.end(), "RSET"), commands.end());
  EXPECT_EQ(h.egress().counters().transactions, 2u);
}

TEST(Egress, ClosesIdleConnectionsWithQuit) {
  FakeServer server({});
  Destination d{"smarthost", false, {Loopback(server.port())}};
  EgressOptions o;
  o.idle_timeout_ms = 50;
  Harness h(o);
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  ASSERT_TRUE(h.RunUntil([&] { return h.egress().idle(); }));
  ASSERT_TRUE(h.RunUntil([&] { return server.commands().back() == "QUIT"; }));
}

TEST(Egress, FailsOverToTheNextHop) {
  FakeServer server({});
  Destination d{"smarthost", false, {Loopback(DeadPort()), Loopback(server.port())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDelivered);
  EXPECT_EQ(h.egress().counters().connect_failures, 1u);
}

TEST(Egress, EveryNextHopDownDefersTheQueue) {
  Destination d{"smarthost", false, {Loopback(DeadPort()), Loopback(DeadPort())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  h.Send(d, 2, {"c@y.test"});
  ASSERT_TRUE(h.RunUntilResults(2));
  for (uint64_t id : {1, 2}) {
    EXPECT_EQ(h.results_[id][0].status, smtp::RecipientStatus::kDeferred);
    EXPECT_TRUE(h.results_[id][0].reply.starts_with("451 4.4.1 no next hop"))
        << h.results_[id][0].reply;
  }
  ASSERT_TRUE(h.RunUntil([&] { return h.egress().idle(); }));
}

TEST(Egress, HangupMidDataIsDeferredNotDelivered) {
  FakeServer server({.hangup_at_end_of_data = true});
  Destination d{"smarthost", false, {Loopback(server.port())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDeferred);
  EXPECT_TRUE(h.results_[1][0].reply.starts_with("451 4.4.2 ")) << h.results_[1][0].reply;
  EXPECT_EQ(server.messages(), 0);
}

TEST(Egress, StaleCachedConnectionIsReplacedWithoutLosingTheMessage) {
  FakeServer server({.close_after_messages = 1});
  Destination d{"smarthost", false, {Loopback(server.port())}};
  EgressOptions o;
  o.connections_max = 1;
  Harness h(o);
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  h.Send(d, 2, {"c@y.test"});  // The cached connection is dead by now.
  ASSERT_TRUE(h.RunUntilResults(2));
  EXPECT_EQ(h.results_[2][0].status, smtp::RecipientStatus::kDelivered) << h.results_[2][0].reply;
  EXPECT_EQ(server.messages(), 2);
  EXPECT_EQ(server.connections(), 2);
}

TEST(Egress, SilentServerTimesOut) {
  FakeServer server({.greet = false});
  Destination d{"smarthost", false, {Loopback(server.port())}};
  EgressOptions o;
  o.reply_timeout_ms = 200;
  Harness h(o);
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDeferred);
  EXPECT_NE(h.results_[1][0].reply.find("no reply within 200 ms"), std::string::npos)
      << h.results_[1][0].reply;
}

TEST(Egress, NoSocketToBeHadDefersInsteadOfLosing) {
  FakeServer server({});
  Destination d{"smarthost", false, {Loopback(server.port())}};
  Harness h;
  // Use up every descriptor this process may open: socket() then fails with EMFILE.
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> hogs;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) {
    hogs.push_back(fd);
  }
  h.Send(d, 1, {"b@y.test"});
  const bool done = h.RunUntilResults(1);
  for (int fd : hogs) {
    ::close(fd);
  }
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  ASSERT_TRUE(done);
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDeferred);
  EXPECT_NE(h.results_[1][0].reply.find("Too many open files"), std::string::npos)
      << h.results_[1][0].reply;
  ASSERT_TRUE(h.RunUntil([&] { return h.egress().idle(); }));
  // With descriptors back, the same destination works.
  h.Send(d, 2, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(2));
  EXPECT_EQ(h.results_[2][0].status, smtp::RecipientStatus::kDelivered);
}

TEST(Egress, StopDefersWhatIsQueued) {
  Destination d{"smarthost", false, {Loopback(DeadPort())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  h.egress().Stop();
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_TRUE(h.results_[1][0].reply.starts_with("451 4.3.2 ")) << h.results_[1][0].reply;
  ASSERT_TRUE(h.RunUntil([&] { return h.egress().idle(); }));
}

TEST(ResolveDestinations, ResolvesSmarthostsAndLmtpSockets) {
  std::vector<config::Route> routes = {
      {"a.test", config::RouteType::kSmarthost, "", {"127.0.0.1:2526", "[::1]:25"}, ""},
      {"b.test", config::RouteType::kLmtp, "", {}, "/run/dovecot/lmtp"},
      {"*", config::RouteType::kMaildir, "./var/mail", {}, ""}};
  auto d = ResolveDestinations(routes);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE((*d)[0].has_value());
  ASSERT_EQ((*d)[0]->endpoints.size(), 2u);
  EXPECT_EQ((*d)[0]->endpoints[0].name, "127.0.0.1:2526");
  EXPECT_EQ((*d)[0]->endpoints[1].name, "[::1]:25");
  EXPECT_TRUE((*d)[1]->lmtp);
  EXPECT_EQ((*d)[1]->endpoints[0].name, "/run/dovecot/lmtp");
  EXPECT_FALSE((*d)[2].has_value());

  routes[0].hosts = {"no-port.test"};
  auto bad = ResolveDestinations(routes);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("route for a.test: next hop no-port.test"),
            std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace relais::relaisd
