// tests/sim/ingress_sim_test.cc — the real Ingress, seeded: clients over io::FakeNet, the spool
// on the simulated disk (sim_io.h), a fake clock and the shard's loop turn written out.
//
// For each seed: clients arrive at random turns from a few addresses and send one to three
// messages each, in lock step (one command per reply), pipelined (MAIL, RCPT and DATA in one
// write) or as Exim does (MAIL, RCPT, `BDAT n LAST` with the body and QUIT in one write, then
// shut their sending side). Every write reaches the server in random pieces; some clients read
// their replies a few bytes per send (short sends), some reset the connection at a random byte,
// some stall there (stop reading and writing, so the server must time them out and cut them);
// some receives find no provided buffer (ENOBUFS); the disk fails some writes and fdatasyncs;
// some seeds have small connection limits (421 refusals) or a small pipeline limit (input
// paused while replies are being sent). Some seeds cut the power at a random turn instead of
// letting the clients finish.
//
// Properties:
//   - every message whose end of data got a 250 is in the spool exactly once, live and after a
//     power cut and recovery; a message refused with a reply is not stored; none is stored
//     twice;
//   - a client that neither resets nor stalls gets a reply to every message it sent (nothing
//     refused or lost silently) and sees its connection closed by the server;
//   - every connection closes (resets and stalls included), with one session_end line each, and
//     the limiter, the slots and the socket operations all go back to zero;
//   - no file is written after its fdatasync failed.
// RELAIS_SIM_SEEDS sets the number of seeds (CI: 200); RELAIS_SIM_SEED replays one seed.
//
// IngressTlsSimulation drives the same Ingress with TLS on (a STARTTLS listener and an implicit
// TLS one) against a client over tls::TlsTransport, every write in seeded random pieces: the
// STARTTLS session (with a command pipelined after STARTTLS, which must never run), the implicit
// TLS session, a handshake that stalls until tls.handshake_timeout and one that sends garbage.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/io/fake_net.h"
#include "core/log/log.h"
#include "core/log/shard_log.h"
#include "core/net/buffer_session.h"
#include "core/timer/timer_wheel.h"
#include "protocols/tls/tls.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"
#include "tests/sim/seeds.h"
#include "tests/sim/sim_clients.h"
#include "tests/sim/sim_io.h"
#include "tools/relaisd/auth_verifier.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/ingress.h"
#include "tools/relaisd/shard_metrics.h"

namespace relais::sim {
namespace {

constexpr uint64_t kTurnsMax = 200'000;

struct Result {
  uint64_t acked = 0;
  uint64_t refused = 0;
  uint64_t clients = 0;
  uint64_t cuts = 0;
  uint64_t power_cuts = 0;
  uint64_t no_buffer = 0;
};

class Simulation {
 public:
  explicit Simulation(uint64_t seed)
      : seed_(seed),
        rng_(seed * 0x9E3779B97F4A7C15ull + 11),
        disk_(seed),
        timers_(clock_.MonotonicMs(), 10),
        router_({}, "example.org"),
        random_(seed + 3),
        log_fd_(memfd_create("ingress-sim-log", 0)) {
    log::SetFd(log_fd_);
  }
  ~Simulation() {
    log::SetFd(2);
    close(log_fd_);
  }

  Result Run();

 private:
  void Open();
  void NewClient();
  // The server's loop turn (shard.cc's Run, written out). True when anything happened.
  bool Turn();
  void CheckSpool(spool::Spool& s, bool after_power_cut);
  uint64_t SessionEnds();

  const uint64_t seed_;
  base::Random rng_;
  SimIo disk_;
  base::FakeClock clock_;
  io::FakeNet net_;
  timer::TimerWheel timers_;
  routing::Router router_;
  base::Random random_;
  int log_fd_;
  relaisd::ShardMetrics metrics_;
  std::unique_ptr<relaisd::ConnectionLimiter> limiter_;
  std::unique_ptr<log::ShardLog> log_;
  std::unique_ptr<spool::Spool> spool_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<relaisd::Ingress> ingress_;
  spool::SpoolOptions spool_options_;
  io::Socket listener_;
  SimClients players_{net_, rng_};
  std::vector<std::unique_ptr<Client>>& clients_ = players_.clients;
  uint64_t client_addresses_ = 1;
  uint64_t disk_turns_ = 1;  // Disk completions run one turn in this many (on average).
};

void Simulation::Open() {
  SimFaults faults;
  faults.write_error = rng_.Below(3) == 0 ? 0.02 : 0.0;
  faults.sync_error = rng_.Below(2) == 0 ? 0.05 : 0.0;
  disk_.set_faults(faults);
  disk_turns_ = 1 + rng_.Below(4);
  spool_options_.path = "/spool";
  spool_options_.segment_bytes_max = 8192u << rng_.Below(5);
  spool_options_.no_space_backoff_ms = 10;
  auto spool = spool::Spool::Open(spool_options_, disk_, clock_);
  ASSERT_TRUE(spool.ok()) << spool.status();
  spool_ = std::move(*spool);
  ASSERT_TRUE(spool_->Recover().ok());
  scheduler_ = std::make_unique<scheduler::Scheduler>(scheduler::SchedulerOptions{}, *spool_,
                                                      clock_, random_);
  // Small limits in some seeds: 421 refusals at the greeting.
  const bool tight = rng_.Below(4) == 0;
  limiter_ = std::make_unique<relaisd::ConnectionLimiter>(tight ? 3 : 1000, tight ? 2 : 1000);
  client_addresses_ = 1 + rng_.Below(4);
  log_ = std::make_unique<log::ShardLog>(clock_, 0);
  relaisd::IngressOptions options;
  options.session.hostname = "mx.sim.example";
  options.session.command_timeout_ms = 20'000;
  options.session.data_timeout_ms = 20'000;
  if (rng_.Below(3) == 0) {
    options.session.pipeline_bytes_max = 40;  // Input paused while replies are being sent.
  }
  options.router = &router_;
  authcheck::Policy unchecked;  // Checks off (no resolver): every message is committed as is.
  unchecked.spf = unchecked.dkim = unchecked.dmarc = authcheck::Mode::kOff;
  options.checks.auth_by_listener = {unchecked};
  ingress_ =
      std::make_unique<relaisd::Ingress>(options, net_, timers_, clock_, *spool_, *scheduler_,
                                         nullptr, random_, *limiter_, *log_, metrics_);
  listener_ = net_.Listener();
  ingress_->Start({listener_.value()});
}

void Simulation::NewClient() {
  auto c = std::make_unique<Client>();
  const uint64_t n = clients_.size();
  sockaddr_storage from{};
  auto* in = reinterpret_cast<sockaddr_in*>(&from);
  in->sin_family = AF_INET;
  in->sin_port = htons(static_cast<uint16_t>(40000 + n));
  in->sin_addr.s_addr = htonl(0xC0000201u + static_cast<uint32_t>(rng_.Below(client_addresses_)));
  c->style = static_cast<Style>(rng_.Below(3));
  const uint64_t messages = 1 + rng_.Below(3);
  uint64_t total = 0;
  for (uint64_t m = 0; m < messages; ++m) {
    Message msg;
    msg.token = "s" + std::to_string(seed_) + "c" + std::to_string(n) + "m" + std::to_string(m);
    msg.body = MakeBody(rng_, msg.token, c->style != Style::kExim);
    const uint64_t recipients = 1 + rng_.Below(3);
    for (uint64_t r = 0; r < recipients; ++r) {
      msg.recipients.push_back("r" + std::to_string(r) + "@dest.example");
    }
    total += msg.body.size() + 60;
    c->messages.push_back(std::move(msg));
  }
  const uint64_t fault = rng_.Below(10);
  if (fault == 0) {
    c->resets = true;
  } else if (fault == 1) {
    c->stalls = true;
  }
  if (c->resets || c->stalls) {
    c->cut_at = rng_.Below(total + 40);
  }
  const bool short_sends = rng_.Below(5) == 0;
  Client& added = players_.Connect(listener_, from, std::move(c));
  if (short_sends) {
    net_.SetSendBytesMax(added.socket, 1 + rng_.Below(16));  // The client reads a few bytes a time.
  }
}

bool Simulation::Turn() {
  bool progress = false;
  if (rng_.Below(200) == 0) {
    net_.FailRecvs(1 + static_cast<uint32_t>(rng_.Below(3)), -ENOBUFS);
  }
  progress |= net_.RunUntilIdle() > 0;
  // A slow disk: the group commit's completions may take a few turns (a reset, a timeout or
  // a stop can meet a commit in flight).
  if (rng_.Below(disk_turns_) == 0) {
    progress |= disk_.RunCompletions() > 0;
  }
  const uint64_t now = clock_.MonotonicMs();
  timers_.Advance(now);
  ingress_->RetryAccepts(now);
  progress |= ingress_->busy();
  ingress_->PumpDirty();
  spool_->Flush();
  log_->Flush();
  return progress;
}

void Simulation::CheckSpool(spool::Spool& s, bool after_power_cut) {
  std::map<std::string, int> stored;  // Token -> times stored.
  s.ForEach([&](const spool::StoredMessage& m) {
    absl::StatusOr<std::string> body = s.ReadBody(m);
    ASSERT_TRUE(body.ok()) << body.status();
    const size_t at = body->find("X-Sim-Token: ");
    ASSERT_NE(at, std::string::npos) << "a stored message no client sent";
    const size_t end = body->find("\r\n", at);
    ++stored[body->substr(at + 13, end - at - 13)];
  });
  for (const auto& c : clients_) {
    for (const Message& m : c->messages) {
      const int times = stored.count(m.token) != 0 ? stored[m.token] : 0;
      EXPECT_LE(times, 1) << m.token << " stored " << times << " times";
      if (m.reply == 250) {
        EXPECT_EQ(times, 1) << m.token << " got its 250 but is "
                            << (after_power_cut ? "gone after the power cut" : "not in the spool");
      } else if (m.reply != 0 && !after_power_cut) {
        // (After a failed fdatasync a refused message may still come back at recovery: the
        // client sends it again, the known cost of at-least-once.)
        EXPECT_EQ(times, 0) << m.token << " refused with " << m.reply << " but stored";
      }
    }
  }
}

uint64_t Simulation::SessionEnds() {
  std::string text;
  char buffer[65536];
  for (off_t offset = 0;;) {
    const ssize_t n = pread(log_fd_, buffer, sizeof(buffer), offset);
    if (n <= 0) {
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
    offset += n;
  }
  uint64_t count = 0;
  for (size_t at = text.find("session_end"); at != std::string::npos;
       at = text.find("session_end", at + 1)) {
    ++count;
  }
  return count;
}

Result Simulation::Run() {
  Result result;
  Open();
  if (testing::Test::HasFatalFailure()) {
    return result;
  }
  const uint64_t clients = 2 + rng_.Below(12);
  const uint64_t power_cut_turn = rng_.Below(4) == 0 ? 1 + rng_.Below(400) : UINT64_MAX;
  uint64_t turn = 0;
  bool power_cut = false;
  for (; turn < kTurnsMax; ++turn) {
    if (turn == power_cut_turn) {
      power_cut = true;
      break;
    }
    bool progress = false;
    if (clients_.size() < clients && rng_.Below(8) == 0) {
      NewClient();
      progress = true;
    }
    for (auto& c : clients_) {
      progress |= players_.Act(*c);
    }
    progress |= Turn();
    bool done = clients_.size() == clients;
    for (auto& c : clients_) {
      done = done && (c->closed || (c->cut && net_.closed(c->socket)));
    }
    if (done && !ingress_->busy()) {
      break;
    }
    // Idle: let time pass (timeouts of stalled clients, the grace after a 421).
    clock_.AdvanceMs(progress ? 1 + rng_.Below(20) : 1000);
  }
  EXPECT_LT(turn, kTurnsMax) << "the clients never finished";
  if (!power_cut) {
    // Everyone is done: every connection closed, nothing held, nothing leaked.
    EXPECT_EQ(ingress_->connections(), 0u);
    EXPECT_EQ(limiter_->active(), 0u);
    for (const auto& c : clients_) {
      EXPECT_TRUE(net_.closed(c->socket)) << "a client's connection was never closed";
      if (c->resets || c->stalls) {
        continue;
      }
      EXPECT_TRUE(c->closed);
      for (const Message& m : c->messages) {
        EXPECT_NE(m.reply, 0) << m.token << ": no reply to a message of a client that behaved";
      }
    }
    ingress_->BeginStop();
    for (int i = 0; i < 100 && net_.in_flight() > 0; ++i) {
      Turn();
      clock_.AdvanceMs(10);
    }
    EXPECT_EQ(net_.in_flight(), 0u) << "socket operations left in flight";
    while (!spool_->idle()) {
      Turn();
    }
    log_->Flush();
    EXPECT_EQ(SessionEnds(), metrics_.connections_accepted.value())
        << "one session_end line per connection";
    CheckSpool(*spool_, false);
  }
  for (const auto& c : clients_) {
    result.cuts += (c->resets || c->stalls) ? 1 : 0;
    for (const Message& m : c->messages) {
      result.acked += m.reply == 250 ? 1 : 0;
      result.refused += m.reply != 250 && m.reply != 0 ? 1 : 0;
    }
  }
  result.clients = clients_.size();
  result.no_buffer = metrics_.recv_no_buffer.value();
  // The power cut (now, or after the run): the program dies with whatever it had in flight.
  ++result.power_cuts;
  disk_.PowerCut();
  while (disk_.RunCompletions() > 0) {  // The dead spool hears only failures.
  }
  ingress_.reset();
  scheduler_.reset();
  spool_.reset();
  disk_.Reboot();
  auto reopened = spool::Spool::Open(spool_options_, disk_, clock_);
  EXPECT_TRUE(reopened.ok()) << reopened.status();
  if (reopened.ok()) {
    EXPECT_TRUE((*reopened)->Recover().ok());
    CheckSpool(**reopened, true);
  }
  EXPECT_TRUE(disk_.violations().empty()) << disk_.violations().front();
  return result;
}

TEST(IngressSimulation, EveryAcknowledgedMessageStoredOnceNoConnectionLeaks) {
  const sim::Seeds seeds = sim::SeedsFromEnv(0, 200);
  const uint64_t count = seeds.count;
  Result total;
  sim::ForEachSeed(seeds, [&](uint64_t seed) {
    Result r;
    {
      Simulation sim(seed);
      r = sim.Run();
    }
    total.acked += r.acked;
    total.refused += r.refused;
    total.clients += r.clients;
    total.cuts += r.cuts;
    total.power_cuts += r.power_cuts;
    total.no_buffer += r.no_buffer;
  });
  std::printf(
      "ingress simulation: %llu seeds, %llu clients (%llu reset or stalled), %llu messages "
      "acknowledged (each stored once, found after the power cut), %llu refused with a reply, "
      "%llu receives without a buffer\n",
      static_cast<unsigned long long>(count), static_cast<unsigned long long>(total.clients),
      static_cast<unsigned long long>(total.cuts), static_cast<unsigned long long>(total.acked),
      static_cast<unsigned long long>(total.refused),
      static_cast<unsigned long long>(total.no_buffer));
  EXPECT_GT(total.acked, count);  // The seeds did real work.
}

// The client side of a TLS session test: plaintext the server sent, and what to send.
using PlainSession = net::BufferSession;

struct TlsPeer {
  io::Socket socket;
  std::unique_ptr<tls::TlsTransport> tls;  // Null while plaintext.
  PlainSession session;
};

class TlsSimulation {
 public:
  // `configure` (optional) adjusts the ingress options last (AUTH, signing keys...).
  explicit TlsSimulation(
      uint64_t seed,
      const std::function<void(TlsSimulation&, relaisd::IngressOptions&)>& configure = {})
      : rng_(seed * 0x9E3779B97F4A7C15ull + 5),
        disk_(seed),
        timers_(clock_.MonotonicMs(), 10),
        router_({}, "example.org"),
        random_(seed + 7),
        log_fd_(memfd_create("ingress-tls-sim-log", 0)) {
    log::SetFd(log_fd_);
    char dir[] = "/tmp/relais_ingress_tls.XXXXXX";
    EXPECT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    tls::ServerOptions server;
    server.certificates = {{dir_ + "/chain.pem", dir_ + "/key.pem"}};
    EXPECT_TRUE(tls::MakeSelfSignedCertificate("ecdsa", {"mx.sim.example"}, 2,
                                               server.certificates[0].chain_path,
                                               server.certificates[0].key_path)
                    .ok());
    server.tickets.secret = std::string(32, 's');
    auto context = tls::ServerContext::Create(server);
    EXPECT_TRUE(context.ok()) << context.status();
    server_context_ = std::move(*context);
    auto client = tls::ClientContext::Create({});
    EXPECT_TRUE(client.ok()) << client.status();
    client_context_ = std::move(*client);

    auto spool = spool::Spool::Open(spool_options_, disk_, clock_);
    EXPECT_TRUE(spool.ok()) << spool.status();
    spool_ = std::move(*spool);
    EXPECT_TRUE(spool_->Recover().ok());
    scheduler_ = std::make_unique<scheduler::Scheduler>(scheduler::SchedulerOptions{}, *spool_,
                                                        clock_, random_);
    limiter_ = std::make_unique<relaisd::ConnectionLimiter>(1000, 1000);
    log_ = std::make_unique<log::ShardLog>(clock_, 0);
    relaisd::IngressOptions options;
    options.session.hostname = "mx.sim.example";
    options.session.command_timeout_ms = 20'000;
    options.router = &router_;
    authcheck::Policy unchecked;
    unchecked.spf = unchecked.dkim = unchecked.dmarc = authcheck::Mode::kOff;
    options.checks.auth_by_listener = {unchecked, unchecked};
    options.listeners = {{relaisd::ListenerTls::kStartTls, false},
                         {relaisd::ListenerTls::kImplicit, false}};
    options.tls = server_context_.get();
    options.tls_handshake_timeout_ms = 5'000;
    if (configure) {
      configure(*this, options);
    }
    ingress_ =
        std::make_unique<relaisd::Ingress>(options, net_, timers_, clock_, *spool_, *scheduler_,
                                           nullptr, random_, *limiter_, *log_, metrics_);
    starttls_listener_ = net_.Listener();
    implicit_listener_ = net_.Listener();
    ingress_->Start({starttls_listener_.value(), implicit_listener_.value()});
  }
  ~TlsSimulation() {
    ingress_.reset();
    log::SetFd(2);
    close(log_fd_);
    std::filesystem::remove_all(dir_);
  }

  TlsPeer Connect(io::Socket listener) {
    sockaddr_storage from{};
    auto* in = reinterpret_cast<sockaddr_in*>(&from);
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    in->sin_addr.s_addr = htonl(0xC0000201u);
    TlsPeer p;
    p.socket = net_.PeerConnects(listener, from);
    return p;
  }
  void StartTls(TlsPeer& p) {
    p.tls =
        tls::TlsTransport::Client(*client_context_, "mx.sim.example", tls::VerifyMode::kNone, "");
  }
  // Runs client and server until `done` holds (false if it never does).
  template <typename Done>
  bool RunUntil(TlsPeer& p, Done done, int turns = 2000) {
    for (int i = 0; i < turns; ++i) {
      Exchange(p);
      Turn();
      if (done()) {
        return true;
      }
    }
    return false;
  }
  // Plaintext the server sent up to its reply line starting with `code` + ' ' (taken).
  bool Reply(TlsPeer& p, std::string_view code, std::string* text = nullptr) {
    const std::string final_line = std::string("\r\n") + std::string(code) + " ";
    const bool ok = RunUntil(p, [&] {
      const std::string with_start = "\r\n" + p.session.received;
      const size_t at = with_start.find(final_line);
      return at != std::string::npos && with_start.find("\r\n", at + 2) != std::string::npos;
    });
    if (text != nullptr) {
      *text = p.session.received;
    }
    p.session.received.clear();
    return ok;
  }
  void Send(TlsPeer& p, std::string_view bytes) { p.session.output.append(bytes); }
  void Turn() {
    if (auth_ != nullptr && auth_->pending() != 0) {
      // The verifier's helper answers through done_fd, as the shard reads it.
      pollfd p{auth_->done_fd(), POLLIN, 0};
      if (::poll(&p, 1, 1) == 1) {
        uint64_t count;
        EXPECT_EQ(::read(auth_->done_fd(), &count, sizeof(count)), 8);
        auth_->OnDoneReadable();
      }
    }
    net_.RunUntilIdle();
    disk_.RunCompletions();
    clock_.AdvanceMs(1);
    timers_.Advance(clock_.MonotonicMs());
    ingress_->PumpDirty();
    spool_->Flush();
    log_->Flush();
  }
  std::string Log() {
    std::string text(1 << 20, '\0');
    const ssize_t n = pread(log_fd_, text.data(), text.size(), 0);
    text.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return text;
  }
  // The stored messages' header blocks (the Received: field among them).
  std::vector<std::string> Stored() {
    std::vector<std::string> out;
    spool_->ForEach([&](const spool::StoredMessage& m) {
      absl::StatusOr<std::string> body = spool_->ReadBody(m);
      EXPECT_TRUE(body.ok());
      out.push_back(body.ok() ? *body : "");
    });
    return out;
  }

  base::Random rng_;
  SimIo disk_;
  base::FakeClock clock_;
  io::FakeNet net_;
  timer::TimerWheel timers_;
  routing::Router router_;
  base::Random random_;
  int log_fd_;
  std::string dir_;
  std::unique_ptr<tls::ServerContext> server_context_;
  std::unique_ptr<tls::ClientContext> client_context_;
  relaisd::ShardMetrics metrics_;
  std::unique_ptr<relaisd::ConnectionLimiter> limiter_;
  std::unique_ptr<log::ShardLog> log_;
  spool::SpoolOptions spool_options_{.path = "/spool"};
  std::unique_ptr<spool::Spool> spool_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  // SMTP AUTH (review tests): the verifier and the keys, set by `configure`; they outlive the
  // ingress.
  std::vector<authcheck::SigningKey> signing_keys_;
  std::unique_ptr<relaisd::AuthVerifier> auth_;
  std::unique_ptr<relaisd::Ingress> ingress_;
  io::Socket starttls_listener_;
  io::Socket implicit_listener_;

 private:
  // The client's bytes go to the server in random pieces; the server's to the client.
  void Exchange(TlsPeer& p) {
    std::string out;
    if (p.tls != nullptr) {
      p.tls->TakeOutput(p.session, out);
    } else {
      out.swap(p.session.output);
    }
    for (size_t at = 0; at < out.size();) {
      const size_t n = std::min<size_t>(out.size() - at, 1 + rng_.Below(200));
      net_.PeerSends(p.socket, std::string_view(out).substr(at, n));
      at += n;
    }
    const std::string in = net_.TakeSent(p.socket);
    if (in.empty()) {
      return;
    }
    if (p.tls != nullptr) {
      p.tls->OnReceived(in, p.session);
    } else {
      p.session.received += in;
    }
  }
};

constexpr std::string_view kMessage =
    "MAIL FROM:<a@sim.example>\r\nRCPT TO:<r@dest.example>\r\nDATA\r\n";

TEST(IngressTlsSimulation, StartTlsDiscardsPipelinedCommandsAndStoresOverTls) {
  sim::ForEachSeed(sim::SeedsFromEnv(0, 20), [](uint64_t seed) {
    TlsSimulation sim(seed);
    TlsPeer p = sim.Connect(sim.starttls_listener_);
    std::string text;
    ASSERT_TRUE(sim.Reply(p, "220"));
    sim.Send(p, "EHLO client.example\r\n");
    ASSERT_TRUE(sim.Reply(p, "250", &text));
    EXPECT_NE(text.find("STARTTLS"), std::string::npos) << text;
    // CVE-2011-0411: the MAIL pipelined behind STARTTLS must never be executed.
    sim.Send(p, "STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n");
    ASSERT_TRUE(sim.Reply(p, "220", &text));
    EXPECT_EQ(text.find("250"), std::string::npos) << text;
    sim.StartTls(p);
    ASSERT_TRUE(sim.RunUntil(p, [&] { return p.tls->state() == tls::TlsState::kOpen; }));
    sim.Send(p, "RCPT TO:<r@dest.example>\r\n");
    ASSERT_TRUE(sim.Reply(p, "503", &text)) << text;  // No MAIL was taken.
    sim.Send(p, "EHLO client.example\r\n");
    ASSERT_TRUE(sim.Reply(p, "250", &text));
    EXPECT_EQ(text.find("STARTTLS"), std::string::npos) << text;  // Not offered twice.
    sim.Send(p, kMessage);
    ASSERT_TRUE(sim.Reply(p, "354"));
    sim.Send(p, "Subject: over tls\r\n\r\nhello\r\n.\r\n");
    ASSERT_TRUE(sim.Reply(p, "250", &text)) << text;
    sim.Send(p, "QUIT\r\n");
    ASSERT_TRUE(sim.Reply(p, "221"));
    ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.ingress_->connections() == 0; }));
    const std::vector<std::string> stored = sim.Stored();
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_NE(stored[0].find("with ESMTPS (version=TLSv1.3"), std::string::npos) << stored[0];
    EXPECT_EQ(stored[0].find("injected"), std::string::npos);
    EXPECT_EQ(sim.metrics_.tls_handshakes_full.value(), 1u);
    EXPECT_EQ(sim.metrics_.tls_handshake_seconds.count(), 1u);
    EXPECT_NE(sim.Log().find("\"tls_handshake\":\"ok\",\"tls_version\":\"TLSv1.3\""),
              std::string::npos);
  });
}

TEST(IngressTlsSimulation, ImplicitTlsGreetsOnlyOverTls) {
  sim::ForEachSeed(sim::SeedsFromEnv(0, 20), [](uint64_t seed) {
    TlsSimulation sim(seed);
    TlsPeer p = sim.Connect(sim.implicit_listener_);
    // Nothing in the clear: the greeting waits for the handshake.
    sim.Turn();
    EXPECT_TRUE(sim.net_.sent(p.socket).empty());
    sim.StartTls(p);
    std::string text;
    ASSERT_TRUE(sim.Reply(p, "220", &text));
    EXPECT_EQ(p.tls->state(), tls::TlsState::kOpen);
    sim.Send(p, "EHLO client.example\r\n");
    ASSERT_TRUE(sim.Reply(p, "250", &text));
    EXPECT_EQ(text.find("STARTTLS"), std::string::npos) << text;
    sim.Send(p, kMessage);
    ASSERT_TRUE(sim.Reply(p, "354"));
    sim.Send(p, "Subject: implicit\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    ASSERT_TRUE(sim.Reply(p, "250", &text)) << text;
    ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.ingress_->connections() == 0; }));
    ASSERT_EQ(sim.Stored().size(), 1u);
    EXPECT_NE(sim.Stored()[0].find("with ESMTPS"), std::string::npos);
    EXPECT_EQ(sim.metrics_.tls_handshakes_full.value(), 1u);
  });
}

// Once TLS is up the session's own timeouts apply again (the handshake deadline is gone): an
// idle client gets its 421 over TLS after command_timeout_ms, not before.
TEST(IngressTlsSimulation, SessionTimeoutsApplyOverTls) {
  TlsSimulation sim(3);
  TlsPeer p = sim.Connect(sim.implicit_listener_);
  sim.StartTls(p);
  ASSERT_TRUE(sim.Reply(p, "220"));
  sim.Send(p, "EHLO client.example\r\n");
  ASSERT_TRUE(sim.Reply(p, "250"));
  sim.clock_.AdvanceMs(10'000);  // Past the 5 s handshake deadline, within the 20 s timeout.
  sim.Turn();
  EXPECT_FALSE(sim.net_.closed(p.socket));
  sim.clock_.AdvanceMs(10'100);
  std::string text;
  ASSERT_TRUE(sim.Reply(p, "421", &text)) << text;
  EXPECT_NE(text.find("4.4.2"), std::string::npos) << text;
  ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.ingress_->connections() == 0; }));
  EXPECT_EQ(sim.metrics_.tls_handshakes_timeout.value(), 0u);
}

TEST(IngressTlsSimulation, StalledAndGarbageHandshakesAreCountedAndClosed) {
  TlsSimulation sim(1);
  TlsPeer stalled = sim.Connect(sim.implicit_listener_);
  TlsPeer garbage = sim.Connect(sim.implicit_listener_);
  sim.Send(garbage, "EHLO not-tls.example\r\n");
  ASSERT_TRUE(sim.RunUntil(garbage, [&] { return sim.net_.closed(garbage.socket); }));
  EXPECT_EQ(sim.metrics_.tls_handshakes_failed.value(), 1u);
  // The stalled one lives until tls.handshake_timeout (5 s here), then it is cut.
  sim.clock_.AdvanceMs(4'000);
  sim.Turn();
  EXPECT_FALSE(sim.net_.closed(stalled.socket));
  sim.clock_.AdvanceMs(1'100);
  ASSERT_TRUE(sim.RunUntil(stalled, [&] { return sim.net_.closed(stalled.socket); }));
  EXPECT_EQ(sim.metrics_.tls_handshakes_timeout.value(), 1u);
  ASSERT_TRUE(sim.RunUntil(stalled, [&] { return sim.ingress_->connections() == 0; }));
  const std::string log = sim.Log();
  EXPECT_NE(log.find("\"tls_handshake\":\"timeout\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"tls_handshake\":\"failed:"), std::string::npos) << log;
  EXPECT_TRUE(sim.Stored().empty());
}

// ---- Review of the TLS/AUTH wiring (issue 15) ----
//
// An ingress with SMTP AUTH: "mallory" (password "right") owns other.example only; the shard
// holds a DKIM key for bank.example (a customer domain the relay signs for). The password
// check runs on the verifier's helper thread through its test seam (no crypt), optionally
// held behind a gate so that a test can close the connection while it is pending.
struct AuthGate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = true;
  int started = 0;
  void Close() {
    std::lock_guard lock(mu);
    open = false;
  }
  void Open() {
    std::lock_guard lock(mu);
    open = true;
    cv.notify_all();
  }
  void WaitStarted(int n) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return started >= n; });
  }
};

constexpr std::string_view kReviewEd25519Pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIKWxAEbTXJnb0NwXdMuxOs7j1bxeV/a1BTH3fFrHgbM+\n"
    "-----END PRIVATE KEY-----\n";

std::function<void(TlsSimulation&, relaisd::IngressOptions&)> WithAuth(
    AuthGate& gate, bool require_sender_owned = false) {
  return [&gate, require_sender_owned](TlsSimulation& sim, relaisd::IngressOptions& options) {
    relaisd::AuthVerifierOptions o;
    o.limiter.failures_before_delay = 100;
    o.limiter.lockout_failures = 1000;
    o.check = [&gate](const sasl::Credentials&, std::string_view user, std::string_view pass) {
      std::unique_lock lock(gate.mu);
      ++gate.started;
      gate.cv.notify_all();
      gate.cv.wait(lock, [&] { return gate.open; });
      return user == "mallory" && pass == "right" ? sasl::VerifyResult::kOk
                                                  : sasl::VerifyResult::kBadPassword;
    };
    sim.auth_ = std::make_unique<relaisd::AuthVerifier>(o, sim.timers_, sim.clock_);
    auto credentials = sasl::Credentials::Parse(
        "mallory:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2:"
        "other.example\n",
        "test");
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    sim.auth_->SetCredentials(std::make_shared<const sasl::Credentials>(std::move(*credentials)));
    options.auth = sim.auth_.get();
    options.require_sender_owned = require_sender_owned;
    dkim::SignOptions sign;
    sign.domain = "bank.example";
    sign.selector = "s1";
    sim.signing_keys_.push_back(
        authcheck::SigningKey{sign, *crypto::PrivateKey::FromPem(kReviewEd25519Pem)});
    options.checks.signing_keys = &sim.signing_keys_;
  };
}

// "AUTH PLAIN" with mallory's credentials, base64 of "\0mallory\0right".
constexpr std::string_view kMalloryAuth = "AUTH PLAIN AG1hbGxvcnkAcmlnaHQ=\r\n";

// FINDING (medium): an authenticated user's mail is DKIM-signed with the key of whatever
// domain its From: names, when the shard holds a key for it (IngressChecks::Signatures falls
// back to SignaturesFor by From domain), even when the user owns none of it. With
// smtp_auth.require_sender_owned = false (the default) any submission user can send mail that
// passes DMARC for every customer domain the relay signs. Expected: keys by From domain sign
// an authenticated user's mail only for domains the user owns (Credentials::OwnsDomain).
TEST(IngressAuthReview, AnAuthenticatedUserIsNotSignedForAFromDomainItDoesNotOwn) {
  AuthGate gate;
  TlsSimulation sim(11, WithAuth(gate));
  TlsPeer p = sim.Connect(sim.implicit_listener_);
  sim.StartTls(p);
  std::string text;
  ASSERT_TRUE(sim.Reply(p, "220"));
  sim.Send(p, "EHLO client.example\r\n");
  ASSERT_TRUE(sim.Reply(p, "250", &text));
  ASSERT_NE(text.find("AUTH PLAIN"), std::string::npos) << text;
  sim.Send(p, kMalloryAuth);
  ASSERT_TRUE(sim.Reply(p, "235", &text)) << text;
  sim.Send(p, "MAIL FROM:<mallory@other.example>\r\nRCPT TO:<r@dest.example>\r\nDATA\r\n");
  ASSERT_TRUE(sim.Reply(p, "354", &text)) << text;
  sim.Send(p, "From: ceo@bank.example\r\nSubject: wire the money\r\n\r\nnow\r\n.\r\nQUIT\r\n");
  ASSERT_TRUE(sim.Reply(p, "250", &text)) << text;
  ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.ingress_->connections() == 0; }));
  const std::vector<std::string> stored = sim.Stored();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].find("d=bank.example"), std::string::npos)
      << "mallory (owns other.example) got bank.example's signature:\n"
      << stored[0];
}

// Sound: with require_sender_owned the same message is refused (553) and nothing is stored.
TEST(IngressAuthReview, RequireSenderOwnedRefusesAFromDomainTheUserDoesNotOwn) {
  AuthGate gate;
  TlsSimulation sim(12, WithAuth(gate, /*require_sender_owned=*/true));
  TlsPeer p = sim.Connect(sim.implicit_listener_);
  sim.StartTls(p);
  std::string text;
  ASSERT_TRUE(sim.Reply(p, "220"));
  sim.Send(p, "EHLO client.example\r\n");
  ASSERT_TRUE(sim.Reply(p, "250"));
  sim.Send(p, kMalloryAuth);
  ASSERT_TRUE(sim.Reply(p, "235", &text)) << text;
  sim.Send(p, "MAIL FROM:<mallory@other.example>\r\nRCPT TO:<r@dest.example>\r\nDATA\r\n");
  ASSERT_TRUE(sim.Reply(p, "354", &text)) << text;
  sim.Send(p, "From: ceo@bank.example\r\n\r\nnow\r\n.\r\n");
  ASSERT_TRUE(sim.Reply(p, "553", &text)) << text;
  EXPECT_TRUE(sim.Stored().empty());
}

// Sound: AUTH is refused in the clear on a STARTTLS listener, and the AUTH pipelined behind
// STARTTLS is never executed (nothing reaches the verifier).
TEST(IngressAuthReview, AuthInTheClearAndAuthPipelinedBehindStartTlsNeverReachTheVerifier) {
  AuthGate gate;
  TlsSimulation sim(13, WithAuth(gate));
  TlsPeer p = sim.Connect(sim.starttls_listener_);
  std::string text;
  ASSERT_TRUE(sim.Reply(p, "220"));
  sim.Send(p, "EHLO client.example\r\n");
  ASSERT_TRUE(sim.Reply(p, "250", &text));
  EXPECT_EQ(text.find("AUTH"), std::string::npos) << text;
  sim.Send(p, kMalloryAuth);
  ASSERT_TRUE(sim.Reply(p, "538", &text)) << text;
  sim.Send(p, std::string("STARTTLS\r\n") + std::string(kMalloryAuth));
  ASSERT_TRUE(sim.Reply(p, "220", &text)) << text;
  sim.StartTls(p);
  ASSERT_TRUE(sim.RunUntil(p, [&] { return p.tls->state() == tls::TlsState::kOpen; }));
  for (int i = 0; i < 50; ++i) {
    sim.Turn();
  }
  EXPECT_EQ(gate.started, 0);
  EXPECT_EQ(sim.metrics_.smtp_auth_success.value(), 0u);
  sim.Send(p, "MAIL FROM:<mallory@other.example>\r\n");
  ASSERT_TRUE(sim.Reply(p, "503", &text)) << text;  // No EHLO since TLS, not authenticated.
}

// Sound (run under Asan): the client resets while its password check runs on the helper; the
// connection is freed, the verifier's answer comes later and names nothing (Cancel), and the
// failure still counts in the limiter.
TEST(IngressAuthReview, AResetWhileTheCheckRunsFreesTheConnectionAndTheLateAnswerIsDropped) {
  AuthGate gate;
  TlsSimulation sim(14, WithAuth(gate));
  TlsPeer p = sim.Connect(sim.implicit_listener_);
  sim.StartTls(p);
  ASSERT_TRUE(sim.Reply(p, "220"));
  sim.Send(p, "EHLO client.example\r\n");
  ASSERT_TRUE(sim.Reply(p, "250"));
  gate.Close();
  sim.Send(p, "AUTH PLAIN AG1hbGxvcnkAd3Jvbmc=\r\n");  // mallory / wrong
  for (int i = 0; i < 20 && gate.started == 0; ++i) {
    sim.RunUntil(
        p, [&] { return gate.started > 0; }, 1);
  }
  gate.WaitStarted(1);
  sim.net_.PeerResets(p.socket);
  ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.ingress_->connections() == 0; }));
  EXPECT_EQ(sim.auth_->pending(), 1u);  // The hash still runs, its slot still taken.
  gate.Open();
  ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.auth_->pending() == 0; }));
  EXPECT_EQ(sim.auth_->stats().failures, 1u);
  EXPECT_EQ(sim.metrics_.smtp_auth_failure.value(), 0u);  // Nobody was answered.
}

// An implicit-TLS connection that is refused (here: over the per-client cap) is closed at once,
// before any handshake: its 421 could only go out encrypted, and a refused connection must not
// cost a handshake (a flood of the port would buy them). Counted as refused.
TEST(IngressAuthReview, AnImplicitTlsRefusalClosesAtOnceWithoutAHandshake) {
  TlsSimulation sim(15, [](TlsSimulation& s, relaisd::IngressOptions&) {
    s.limiter_ = std::make_unique<relaisd::ConnectionLimiter>(1000, 1);  // One per client.
  });
  TlsPeer first = sim.Connect(sim.implicit_listener_);
  sim.StartTls(first);
  ASSERT_TRUE(sim.Reply(first, "220"));
  TlsPeer second = sim.Connect(sim.implicit_listener_);
  for (int i = 0; i < 5; ++i) {
    sim.Turn();
  }
  EXPECT_TRUE(sim.net_.closed(second.socket));
  EXPECT_EQ(sim.net_.TakeSent(second.socket), "");  // Not a byte: no 421 in clear, no hello.
  EXPECT_EQ(sim.metrics_.refused_per_ip.value(), 1u);
  EXPECT_EQ(sim.metrics_.tls_handshakes_failed.value(), 0u);
}

// Sound (run under Asan): a client that resets at each step of STARTTLS (before reading the
// 220, after it, mid-handshake, right after it) leaves no connection, slot or limiter count
// behind, and a handshake cut short is logged as failed.
TEST(IngressAuthReview, AResetAtEachStepOfStartTlsFreesEverything) {
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE(step);
    TlsSimulation sim(20 + static_cast<uint64_t>(step));
    TlsPeer p = sim.Connect(sim.starttls_listener_);
    ASSERT_TRUE(sim.Reply(p, "220"));
    sim.Send(p, "EHLO client.example\r\n");
    ASSERT_TRUE(sim.Reply(p, "250"));
    sim.Send(p, "STARTTLS\r\n");
    if (step == 0) {
      sim.net_.StallSends(p.socket, true);  // The 220 never leaves.
      for (int i = 0; i < 5; ++i) {
        sim.Turn();
      }
    } else {
      ASSERT_TRUE(sim.Reply(p, "220"));
      if (step >= 2) {
        sim.StartTls(p);
        if (step == 2) {
          std::string hello;
          p.tls->TakeOutput(p.session, hello);
          sim.net_.PeerSends(p.socket, hello.substr(0, hello.size() / 2));
          sim.Turn();
        } else {
          ASSERT_TRUE(sim.RunUntil(p, [&] { return p.tls->state() == tls::TlsState::kOpen; }));
        }
      }
    }
    sim.net_.PeerResets(p.socket);
    ASSERT_TRUE(sim.RunUntil(p, [&] { return sim.ingress_->connections() == 0; }));
    EXPECT_EQ(sim.limiter_->active(), 0u);
    if (step == 2) {
      EXPECT_NE(sim.Log().find("\"tls_handshake\":\"failed:"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace relais::sim
