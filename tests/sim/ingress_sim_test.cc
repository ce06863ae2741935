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
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/io/fake_net.h"
#include "core/log/log.h"
#include "core/log/shard_log.h"
#include "core/timer/timer_wheel.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"
#include "tests/sim/seeds.h"
#include "tests/sim/sim_clients.h"
#include "tests/sim/sim_io.h"
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

}  // namespace
}  // namespace relais::sim
