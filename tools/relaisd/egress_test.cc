// tools/relaisd/egress_test.cc — the outbound connection pools (queue/delivery/pools.h) as
// the daemon wires them, on a real io_uring (the engine's io::Net), against a scripted SMTP
// server on loopback (a thread of this test). The same pools over io::FakeNet, with faults a
// real socket cannot be made to show on demand, are tested in queue/delivery/pools_test.cc.
#include "tools/relaisd/egress.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"

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
  // The first connection holds its first end-of-data reply until this many connections were
  // accepted, and every later connection holds its greeting until that reply was written: a
  // connection opened while the first was busy comes up only after the first is idle again.
  int hold_first_reply_until_connections = 0;
};

// A small SMTP server, one thread per connection, that records what it received and how
// many messages each connection carried.
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
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) {
        ::shutdown(fd, SHUT_RDWR);
      }
    }
    for (std::thread& t : serving_) {
      t.join();
    }
    ::close(listen_fd_);
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::vector<std::string> commands() {
    std::lock_guard lock(mu_);
    return commands_;
  }
  [[nodiscard]] int messages() const { return messages_; }
  [[nodiscard]] int connections() const { return connections_; }
  // Messages carried by each connection, in the order they were accepted.
  [[nodiscard]] std::vector<int> per_connection() {
    std::lock_guard lock(mu_);
    return per_connection_;
  }

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
      size_t index;
      {
        std::lock_guard lock(mu_);
        index = per_connection_.size();
        per_connection_.push_back(0);
        fds_.push_back(fd);
        ++connections_;
      }
      cv_.notify_all();
      serving_.emplace_back([this, fd, index] {
        Serve(fd, index);
        ::close(fd);
      });
    }
  }
  // Waits (at most 5 s, so a failing test still ends) until `ready` holds.
  void WaitFor(const std::function<bool()>& ready) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(5), ready);
  }
  void Serve(int fd, size_t index) {
    if (!script_.greet) {
      std::string line;
      ReadLine(fd, line);  // Says nothing; waits for the client to give up.
      return;
    }
    const bool hold = script_.hold_first_reply_until_connections > 0;
    if (hold && index > 0) {
      WaitFor([&] { return first_reply_sent_; });
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
        {
          std::lock_guard lock(mu_);
          ++per_connection_[index];
        }
        if (hold && index == 0 && on_this_connection == 0) {
          WaitFor([&] { return connections_ >= script_.hold_first_reply_until_connections; });
        }
        WriteAll(fd, "250 2.0.0 queued\r\n");
        if (hold && index == 0 && on_this_connection == 0) {
          {
            std::lock_guard lock(mu_);
            first_reply_sent_ = true;
          }
          cv_.notify_all();
        }
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
  std::vector<std::thread> serving_;  // Touched by thread_ only, until it is joined.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> commands_;
  std::vector<int> per_connection_;
  std::vector<int> fds_;
  bool first_reply_sent_ = false;
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

class Harness final : public delivery::PoolListener {
 public:
  explicit Harness(EgressOptions options = {}) {
    engine_ = *uring::Engine::Create(uring::EngineOptions{256, 16, 4096});
    options.helo_name = "relay.test";
    egress_ = std::make_unique<delivery::Pools>(engine_->net(), timers_, clock_, options, *this);
  }
  ~Harness() { egress_.reset(); }

  void OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                  std::string_view next_hop) override {
    results_[id] = std::move(results);
    next_hops_[id] = next_hop;
  }
  void Send(const Destination& d, uint64_t id, std::vector<std::string_view> rcpts) {
    delivery::PoolTask t;
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

  delivery::Pools& egress() { return *egress_; }
  std::map<uint64_t, std::vector<smtp::RecipientReply>> results_;
  std::map<uint64_t, std::string> next_hops_;

 private:
  base::SystemClock clock_;
  timer::TimerWheel timers_{clock_.MonotonicMs(), 5};
  std::unique_ptr<uring::Engine> engine_;
  std::unique_ptr<delivery::Pools> egress_;
  const std::string content_ = "Subject: test\r\n\r\n.dot line\r\nbody\r\n";
};

TEST(Egress, DeliversAndReusesTheConnectionWithRset) {
  FakeServer server({});
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
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

// Issue 18.11: a connection opened because every connection was busy used to find its
// message taken by the first connection to finish, and left with EHLO and QUIT only.
TEST(Egress, EveryNewConnectionCarriesTheMessageItWasOpenedFor) {
  FakeServer server({.hold_first_reply_until_connections = 2});
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
  EgressOptions o;
  o.idle_timeout_ms = 100;
  Harness h(o);
  h.Send(d, 1, {"b@y.test"});
  // Connection 1 is busy with message 1 (its reply held) when message 2 arrives.
  ASSERT_TRUE(h.RunUntil([&] { return server.messages() == 1; }));
  h.Send(d, 2, {"c@y.test"});
  ASSERT_TRUE(h.RunUntilResults(2));
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDelivered);
  EXPECT_EQ(h.results_[2][0].status, smtp::RecipientStatus::kDelivered);
  ASSERT_TRUE(h.RunUntil([&] { return h.egress().idle(); }));
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.per_connection(), (std::vector<int>{1, 1}));
}

// Many messages at once to a pool of idle and busy connections: no connection is opened that
// carries nothing, and idle connections are used before new ones are opened.
TEST(Egress, BurstsOpenNoConnectionThatCarriesNothing) {
  FakeServer server({});
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
  EgressOptions o;
  o.connections_max = 4;
  o.idle_timeout_ms = 2'000;
  Harness h(o);
  uint64_t id = 0;
  for (int burst = 0; burst < 5; ++burst) {
    for (int k = 0; k < 1 + burst % 3; ++k) {
      h.Send(d, ++id, {"b@y.test"});
    }
    const size_t sent = id;
    // The next burst comes while some of these are still in flight.
    ASSERT_TRUE(h.RunUntil([&] { return h.results_.size() + 1 >= sent; }));
  }
  ASSERT_TRUE(h.RunUntilResults(id));
  for (const auto& [task, results] : h.results_) {
    EXPECT_EQ(results[0].status, smtp::RecipientStatus::kDelivered) << results[0].reply;
  }
  EXPECT_EQ(server.messages(), static_cast<int>(id));
  for (int carried : server.per_connection()) {
    EXPECT_GE(carried, 1);
  }
  EXPECT_LE(server.connections(), 4);
}

TEST(Egress, ClosesIdleConnectionsWithQuit) {
  FakeServer server({});
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
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
  Destination d{
      delivery::Route::kSmarthost, false, {Loopback(DeadPort()), Loopback(server.port())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDelivered);
  EXPECT_EQ(h.egress().counters().connect_failures, 1u);
}

TEST(Egress, EveryNextHopDownDefersTheQueue) {
  Destination d{delivery::Route::kSmarthost, false, {Loopback(DeadPort()), Loopback(DeadPort())}};
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
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_EQ(h.results_[1][0].status, smtp::RecipientStatus::kDeferred);
  EXPECT_TRUE(h.results_[1][0].reply.starts_with("451 4.4.2 ")) << h.results_[1][0].reply;
  EXPECT_EQ(server.messages(), 0);
}

TEST(Egress, StaleCachedConnectionIsReplacedWithoutLosingTheMessage) {
  FakeServer server({.close_after_messages = 1});
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
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
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
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
  Destination d{delivery::Route::kSmarthost, false, {Loopback(server.port())}};
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
  Destination d{delivery::Route::kSmarthost, false, {Loopback(DeadPort())}};
  Harness h;
  h.Send(d, 1, {"b@y.test"});
  h.egress().Stop();
  ASSERT_TRUE(h.RunUntilResults(1));
  EXPECT_TRUE(h.results_[1][0].reply.starts_with("451 4.3.2 ")) << h.results_[1][0].reply;
  ASSERT_TRUE(h.RunUntil([&] { return h.egress().idle(); }));
}

TEST(MakeRouteTemplates, NamesAreKeptAsWrittenAndLiteralsFilledIn) {
  std::vector<config::Route> routes = {
      {"a.test",
       config::RouteType::kSmarthost,
       "",
       {"127.0.0.1:2526", "[::1]:25", "mx.a.test:587"},
       ""},
      {"b.test", config::RouteType::kLmtp, "", {}, "/run/dovecot/lmtp"},
      {"*.c.test", config::RouteType::kLmtp, "", {}, "localhost:24"},
      {"*", config::RouteType::kMaildir, "./var/mail", {}, ""}};
  auto d = MakeRouteTemplates(routes, 5, {});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE((*d)[0].has_value());
  // Address literals need no lookup: endpoints now. The name waits for the shard's resolver.
  ASSERT_EQ((*d)[0]->endpoints.size(), 2u);
  EXPECT_EQ((*d)[0]->endpoints[0].name, "127.0.0.1:2526");
  EXPECT_EQ((*d)[0]->endpoints[1].name, "[::1]:25");
  EXPECT_EQ((*d)[0]->endpoints[1].host_index, 1u);
  ASSERT_EQ((*d)[0]->names.size(), 3u);
  EXPECT_EQ((*d)[0]->names[0].host, "127.0.0.1");
  EXPECT_EQ((*d)[0]->names[1].host, "::1");
  EXPECT_EQ((*d)[0]->names[2].host, "mx.a.test");
  EXPECT_EQ((*d)[0]->names[2].port, 587);
  EXPECT_EQ((*d)[0]->route, delivery::Route::kSmarthost);
  EXPECT_TRUE((*d)[1]->lmtp);
  EXPECT_EQ((*d)[1]->endpoints[0].name, "/run/dovecot/lmtp");
  ASSERT_EQ((*d)[1]->names.size(), 1u);
  EXPECT_EQ((*d)[1]->names[0].path, "/run/dovecot/lmtp");
  // "localhost" is no longer resolved at start: no endpoint, the name for the shard.
  EXPECT_TRUE((*d)[2]->endpoints.empty());
  ASSERT_EQ((*d)[2]->names.size(), 1u);
  EXPECT_EQ((*d)[2]->names[0].host, "localhost");
  EXPECT_EQ((*d)[2]->names[0].port, 24);
  EXPECT_FALSE((*d)[3].has_value());

  for (const char* bad_hop : {"no-port.test", "host:0", "host:65536", "host:x25", ":25"}) {
    routes[0].hosts = {bad_hop};
    auto bad = MakeRouteTemplates(routes, 5, {});
    ASSERT_FALSE(bad.ok()) << bad_hop;
    EXPECT_NE(bad.status().message().find(std::string("route for a.test: next hop ") + bad_hop),
              std::string::npos)
        << bad.status();
  }
}

TEST(MakeRouteTemplates, MxRoutesGetAnEmptyTemplateWithTheirTlsAndSourcePool) {
  delivery::SourceOptions sources;
  sources.sources.push_back({"s1", *mail::IpAddress::Parse("192.0.2.10"), "", 0, 0});
  sources.pools.push_back({"warm", {{0, 1}}});
  sources.pools.push_back({"out", {{0, 3}}});
  std::vector<config::Route> routes(2);
  routes[0].domain = "*.example";
  routes[0].type = config::RouteType::kMx;
  routes[0].tls = config::RouteTls::kEncrypt;
  routes[0].source_pool = "out";
  routes[1].domain = "*";
  routes[1].type = config::RouteType::kMx;
  routes[1].tls = config::RouteTls::kMay;
  auto d = MakeRouteTemplates(routes, 3, sources);
  ASSERT_TRUE(d.ok()) << d.status();
  const Destination& a = *(*d)[0];
  EXPECT_EQ(a.route, delivery::Route::kMx);
  EXPECT_TRUE(a.endpoints.empty());
  EXPECT_TRUE(a.names.empty());
  EXPECT_EQ(a.tls.policy, config::RouteTls::kEncrypt);
  EXPECT_EQ(a.source_pool, 1);
  EXPECT_EQ(a.hosts_per_attempt_max, 3u);
  EXPECT_EQ((*d)[1]->source_pool, -1);
  EXPECT_EQ((*d)[1]->tls.policy, config::RouteTls::kMay);

  routes[1].source_pool = "cold";
  auto unknown = MakeRouteTemplates(routes, 3, sources);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("route for *: source_pool 'cold'"), std::string::npos)
      << unknown.status();
}

TEST(MakeRouteTemplates, CarriesTheRoutesTlsAndReadsThePasswordFile) {
  char dir[] = "/tmp/relais-egress-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string password = std::string(dir) + "/pass";
  {
    const int fd = open(password.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "s3cret\nignored\n", 15), 15);
    close(fd);
  }
  std::vector<config::Route> routes(3);
  routes[0].domain = "a.test";
  routes[0].type = config::RouteType::kSmarthost;
  routes[0].hosts = {"localhost:2526"};
  routes[0].tls = config::RouteTls::kVerify;
  routes[0].auth_user = "relay";
  routes[0].auth_password_file = password;
  routes[1].domain = "b.test";
  routes[1].type = config::RouteType::kSmarthost;
  routes[1].hosts = {"127.0.0.1:25"};
  routes[1].tls = config::RouteTls::kMay;
  routes[2] = routes[1];
  routes[2].domain = "c.test";
  auto d = MakeRouteTemplates(routes, 5, {});
  ASSERT_TRUE(d.ok()) << d.status();
  const Destination& a = *(*d)[0];
  EXPECT_EQ(a.tls.policy, config::RouteTls::kVerify);
  EXPECT_EQ(a.tls.auth_user, "relay");
  EXPECT_EQ(a.tls.auth_password, "s3cret");                               // The first line only.
  EXPECT_EQ(a.tls.client.ca_file, "/etc/ssl/certs/ca-certificates.crt");  // The system store.
  EXPECT_TRUE(a.endpoints.empty());                                       // Resolved on the shard.
  ASSERT_EQ(a.names.size(), 1u);
  EXPECT_EQ(a.names[0].host, "localhost");  // The name as written: SNI, verification.
  EXPECT_EQ(a.names[0].port, 2526);
  // Nothing to verify: no CA bundle; the two "may" routes share one context, not verify's.
  const Destination& b = *(*d)[1];
  EXPECT_TRUE(b.tls.client.ca_file.empty());
  EXPECT_EQ(b.tls.context, (*d)[2]->tls.context);
  EXPECT_NE(b.tls.context, a.tls.context);

  // A password others may read is refused, naming the route and the file.
  ASSERT_EQ(chmod(password.c_str(), 0644), 0);
  auto open_to_others = MakeRouteTemplates(routes, 5, {});
  ASSERT_FALSE(open_to_others.ok());
  EXPECT_NE(open_to_others.status().message().find("route for a.test: auth_password_file " +
                                                   password + ": others may read it"),
            std::string::npos)
      << open_to_others.status();
  ASSERT_EQ(unlink(password.c_str()), 0);
  auto missing = MakeRouteTemplates(routes, 5, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("route for a.test: auth_password_file"),
            std::string::npos);
  rmdir(dir);
}

}  // namespace
}  // namespace relais::relaisd
