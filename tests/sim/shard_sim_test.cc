// tests/sim/shard_sim_test.cc — one whole shard, seeded: the daemon's own ShardCore
// (tools/relaisd/shard_core.h: the same units, wiring and loop turn Shard::Run drives) over
// io::FakeNet for the sockets, the simulated disk (sim_io.h) for the spool, a fake clock, and
// the delivery worker run in line (sim_worker.h: the real blocking code). Only the engine's
// part of the loop is the simulation's: which completions are ready this turn, and how long
// the loop sleeps when nothing is (MsUntilWork, as Shard::Run asks).
//
// For each seed: clients (sim_clients.h) arrive and send mail in lock step, pipelined or as
// Exim does, in random pieces, some resetting or stalling mid-transfer; Relais accepts into the
// spool while the disk fails some writes and fdatasyncs and shortens others; delivery plans and
// sends to a local Maildir (through the worker) and to two scripted next hops (fake_next_hops.h)
// that accept, refuse for now (421, 450) or for good (550), refuse or never answer the connect,
// never greet, reset or stall at the end of the data, stop taking data, take a few bytes per
// send; the scripts change as the run goes.
// Some seeds cut the power or kill the program once, and the next run starts from what the
// disk kept. Then the faults stop, the clients finish, the queue drains, and the shard stops
// gracefully.
//
// Properties (recipients choose their fate by name: "temp…" is refused for now, "perm…" for
// good; each message's sender is its own address, so its reports are counted):
//   - every message acknowledged with 250 is, per recipient, delivered (to a next hop, or a
//     file in its Maildir's new/), or
//     failed with a report delivered to its sender, or (refused for now) still queued;
//   - no recipient is delivered twice, except once more per crash that fell between the next
//     hop's 250 and the durable record of it (the recipient was delivered and the recovered
//     spool still had it pending);
//   - no message the client never finished sending is delivered; a message whose end of data
//     was refused (4xx/5xx) is delivered only if a crash came after that reply (a batch whose
//     fdatasync failed may still be on disk at recovery: at-least-once); one whose end of data
//     was sent but never answered (the client reset or stalled, or the server died) may be
//     delivered or not; nothing is delivered that no client sent;
//   - at the stop: no connection, accept slot, limiter entry, outbound link or socket operation
//     is left, nothing is in flight, and no file was written after its fdatasync failed.
// RELAIS_SIM_SEEDS sets the number of seeds (CI: 150); RELAIS_SIM_SEED replays one seed;
// RELAIS_SIM_VERBOSE=1 says what each seed did.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/strings.h"
#include "core/io/fake_net.h"
#include "core/log/log.h"
#include "core/timer/timer_wheel.h"
#include "queue/delivery/fake_next_hops.h"
#include "queue/routing/router.h"
#include "tests/sim/seeds.h"
#include "tests/sim/sim_clients.h"
#include "tests/sim/sim_io.h"
#include "tests/sim/sim_worker.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/shard_core.h"
#include "tools/relaisd/shard_metrics.h"

namespace relais::sim {
namespace {

using delivery::testing::FakeNextHops;
using delivery::testing::HopScript;
using delivery::testing::RandomHopScript;

constexpr uint16_t kPorts[] = {25, 26};
constexpr uint64_t kChaosTurns = 1'500;
constexpr uint64_t kTurnsMax = 200'000;
constexpr uint64_t kDrainMs = 90ull * 60 * 1000;  // Retries back off to 10 minutes at most.

delivery::Endpoint Hop(uint16_t port) {
  delivery::Endpoint e;
  auto* a = reinterpret_cast<sockaddr_in*>(&e.address);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  e.length = sizeof(sockaddr_in);
  e.name = base::StrCat("127.0.0.1:", port);
  return e;
}

// The shard's next hops' DNS: the route hosts are address literals, which the resolver
// answers without asking; anything else is answered "temporary failure" on the next turn.
class LiteralsOnlyDns final : public delivery::Dns {
 public:
  std::optional<dns::Answer> FromCache(const dns::Question&) override { return std::nullopt; }
  void Resolve(const dns::Question&, std::function<void(const dns::Answer&)> done) override {
    pending_.push_back(std::move(done));
  }
  bool Run() {
    const bool any = !pending_.empty();
    while (!pending_.empty()) {
      auto done = std::move(pending_.front());
      pending_.erase(pending_.begin());
      done(dns::Answer{});
    }
    return any;
  }

 private:
  std::vector<std::function<void(const dns::Answer&)>> pending_;
};

struct Result {
  uint64_t clients = 0;
  uint64_t acked = 0;
  uint64_t delivered = 0;  // Recipients delivered (first deliveries).
  uint64_t again = 0;      // Deliveries a crash allowed again.
  uint64_t bounces = 0;
  uint64_t crashes = 0;
  uint64_t sends = 0;  // Socket sends, over all runs (the replay fingerprint).
  uint64_t turns = 0;
};

class ShardSim {
 public:
  explicit ShardSim(uint64_t seed)
      : seed_(seed),
        rng_(seed * 0x9E3779B97F4A7C15ull + 17),
        disk_(seed),
        random_(seed + 5),
        router_({{"dest.example", config::RouteType::kSmarthost, "", {"h:25", "h:26"}, ""},
                 {"sim.example", config::RouteType::kSmarthost, "", {"h:25", "h:26"}, ""},
                 {"local.example", config::RouteType::kMaildir, "/mail", {}, ""}},
                "sim.example"),
        worker_(disk_, clock_) {
    for (int i = 0; i < 2; ++i) {
      // Resolved on the shard (its resolver, destinations and shaping, as in the daemon).
      delivery::Destination route{delivery::Route::kSmarthost, false, {}};
      route.names = {{"127.0.0.1", 25, ""}, {"127.0.0.1", 26, ""}};
      destinations_.push_back(std::move(route));
    }
    destinations_.emplace_back(std::nullopt);  // The Maildir route.
  }

  Result Run();

 private:
  void Configure();
  void Start();
  void Crash(bool power_cut);
  void NewClient();
  void Rescript();
  // The engine's part of one loop turn (the completions that are ready), then the core's
  // Turn. True when anything happened.
  bool Turn();
  // Time passes as the loop would sleep: a little when busy, else until the next timer tick or
  // due retry (what Shard::Run waits in the engine).
  void Sleep(bool progress);
  void Check();
  // Times `address` was delivered: by a next hop, or into its Maildir (files in new/).
  [[nodiscard]] uint32_t Delivered(const std::string& address);

  const uint64_t seed_;
  base::Random rng_;  // The scenario: clients, faults, scripts.
  SimIo disk_;
  base::FakeClock clock_;
  base::Random random_;  // The shard's own (scheduler jitter, session ids).
  std::unique_ptr<timer::TimerWheel> timers_;
  std::unique_ptr<io::FakeNet> net_ = std::make_unique<io::FakeNet>();
  FakeNextHops hops_{*net_};
  SimClients players_{*net_, rng_};
  routing::Router router_;
  std::vector<std::optional<delivery::Destination>> destinations_;
  LiteralsOnlyDns dns_;
  SimWorker worker_;
  relaisd::ShardMetrics metrics_;
  std::unique_ptr<relaisd::ConnectionLimiter> limiter_;
  relaisd::ShardOptions options_;
  std::unique_ptr<relaisd::ShardCore> core_;
  io::Socket listener_;
  SimFaults faults_;
  bool tight_limits_ = false;
  uint64_t disk_turns_ = 1;  // Disk completions run one turn in this many (on average).
  uint32_t crashes_ = 0;
  std::map<std::string, uint32_t> allowed_again_;  // Extra deliveries a crash allows.
  uint64_t turns_ = 0;
};

void ShardSim::Configure() {
  faults_.write_error = rng_.Below(3) == 0 ? 0.02 : 0.0;
  faults_.short_write = rng_.Below(3) == 0 ? 0.1 : 0.0;
  faults_.sync_error = rng_.Below(2) == 0 ? 0.03 : 0.0;
  disk_turns_ = 1 + rng_.Below(4);
  ASSERT_TRUE(disk_.MakeDir(io::kWorkingDirectory, "/spool").ok());
  ASSERT_TRUE(disk_.MakeDir(io::kWorkingDirectory, "/mail").ok());
  ASSERT_TRUE(disk_.SyncDir("/").ok());
  tight_limits_ = rng_.Below(5) == 0;  // 421 refusals at the greeting.
  relaisd::ShardOptions& o = options_;
  o.session.hostname = "mx.sim.example";
  o.session.command_timeout_ms = 20'000;
  o.session.data_timeout_ms = 20'000;
  if (rng_.Below(3) == 0) {
    o.session.pipeline_bytes_max = 40;  // Input paused while replies are being sent.
  }
  o.spool.path = "/spool";
  o.spool.segment_bytes_max = 8192u << rng_.Below(5);
  o.spool.no_space_backoff_ms = 10;
  if (rng_.Below(2) == 0) {
    o.spool.body_memory_bytes_max = 0;  // Every body read back from disk by the worker.
  }
  o.scheduler.retry_first_ms = 60'000;
  o.scheduler.retry_max_ms = 10 * 60'000;
  o.router = &router_;
  o.destinations = &destinations_;
  o.shaping.idle_forget_ms = 30'000;  // Destinations come and go within a run.
  o.egress.tcp_no_delay = false;
  o.egress.connect_timeout_ms = 10'000;
  o.egress.reply_timeout_ms = 30'000;
  o.egress.data_init_timeout_ms = 30'000;
  o.egress.data_block_timeout_ms = 30'000;
  o.egress.data_end_timeout_ms = 60'000;
  o.egress.idle_timeout_ms = 2'000;
  o.egress.connections_max = 1 + static_cast<uint32_t>(rng_.Below(3));
  o.egress.messages_per_connection_max = 1 + static_cast<uint32_t>(rng_.Below(5));
  o.metrics = &metrics_;
  o.recipients_per_transaction_max = 2;
  o.delay_warning_ms = 0;  // Reports are failures only: each is counted against one.
  o.shutdown_grace_ms = 10'000;
  authcheck::Policy unchecked;  // Checks off (no resolver).
  unchecked.spf = unchecked.dkim = unchecked.dmarc = authcheck::Mode::kOff;
  o.auth_by_listener = {unchecked};
}

void ShardSim::Start() {
  disk_.set_faults(faults_);
  // A new process: its limiter (the process's count of connections) starts empty.
  limiter_ = std::make_unique<relaisd::ConnectionLimiter>(tight_limits_ ? 3 : 1000,
                                                          tight_limits_ ? 2 : 1000);
  timers_ = std::make_unique<timer::TimerWheel>(clock_.MonotonicMs(), 100);
  relaisd::ShardEnv env;
  env.dns = &dns_;
  env.net = &hops_;
  env.io = &disk_;
  env.clock = &clock_;
  env.timers = timers_.get();
  env.random = &random_;
  env.limiter = limiter_.get();
  env.worker = &worker_;
  env.pid = 4242;
  env.report_boundary = [] { return std::string("0123456789abcdef0123456789abcdef"); };
  auto core = relaisd::ShardCore::Create(options_, env);
  ASSERT_TRUE(core.ok()) << core.status();
  core_ = std::move(*core);
  listener_ = net_->Listener();
  core_->Start({listener_.value()});
}

// The program dies with whatever it had in flight: a power cut (unsynced bytes may be lost)
// or a kill (the kernel keeps them). Its connections die with it; the next hops keep what they
// accepted. The next run recovers the spool and goes on.
void ShardSim::Crash(bool power_cut) {
  ++crashes_;
  if (power_cut) {
    disk_.PowerCut();
  } else {
    disk_.Kill();
  }
  while (disk_.RunCompletions() > 0) {  // The dead program hears only failures.
  }
  hops_.Crashed();
  worker_.Crashed();
  core_.reset();
  timers_.reset();
  limiter_.reset();
  disk_.Reboot();
  net_ = std::make_unique<io::FakeNet>();
  hops_.Rebind(*net_);
  players_.Crashed(*net_);
  Start();
  if (core_ == nullptr) {
    return;
  }
  // A recipient the next hop accepted that the recovered spool still has pending goes again.
  core_->spool().ForEach([&](const spool::StoredMessage& m) {
    for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
      const std::string& address = m.envelope.recipients[i].address;
      if (m.states[i] == spool::RecipientState::kPending && Delivered(address) > 0) {
        ++allowed_again_[address];
      }
    }
  });
}

void ShardSim::NewClient() {
  auto c = std::make_unique<Client>();
  const uint64_t n = players_.clients.size();
  sockaddr_storage from{};
  auto* in = reinterpret_cast<sockaddr_in*>(&from);
  in->sin_family = AF_INET;
  in->sin_port = htons(static_cast<uint16_t>(40000 + n % 20000));
  in->sin_addr.s_addr = htonl(0xC0000201u + static_cast<uint32_t>(rng_.Below(3)));
  c->style = static_cast<Style>(rng_.Below(3));
  const uint64_t messages = 1 + rng_.Below(3);
  uint64_t total = 0;
  for (uint64_t m = 0; m < messages; ++m) {
    Message msg;
    msg.token = base::StrCat("c", n, "m", m);
    msg.sender = base::StrCat("snd.", msg.token, "@sim.example");
    msg.body = MakeBody(rng_, msg.token, c->style != Style::kExim);
    const uint64_t recipients = 1 + rng_.Below(3);
    for (uint64_t r = 0; r < recipients; ++r) {
      const uint64_t fate = rng_.Below(12);
      const char* prefix = fate == 0 ? "temp" : fate == 1 ? "perm" : "";
      // Some go to a local Maildir (the worker's blocking delivery), the rest to next hops.
      const char* domain = fate == 2 || fate == 3 ? "@local.example" : "@dest.example";
      msg.recipients.push_back(base::StrCat(prefix, "r", r, ".", msg.token, domain));
    }
    total += msg.body.size() + 60;
    c->messages.push_back(std::move(msg));
  }
  if (turns_ < kChaosTurns) {
    const uint64_t fault = rng_.Below(10);
    c->resets = fault == 0;
    c->stalls = fault == 1;
    if (c->resets || c->stalls) {
      c->cut_at = rng_.Below(total + 40);
    }
  }
  const bool short_sends = turns_ < kChaosTurns && rng_.Below(5) == 0;
  Client& added = players_.Connect(listener_, from, std::move(c));
  if (short_sends) {
    net_->SetSendBytesMax(added.socket, 1 + rng_.Below(16));  // Reads a few bytes a time.
  }
}

void ShardSim::Rescript() {
  for (uint16_t port : kPorts) {
    hops_.Script(port, RandomHopScript(rng_));
  }
}

bool ShardSim::Turn() {
  ++turns_;
  bool progress = false;
  if (turns_ < kChaosTurns && rng_.Below(200) == 0) {
    net_->FailRecvs(1 + static_cast<uint32_t>(rng_.Below(3)), -ENOBUFS);
  }
  // The completions ready this turn: sockets (the next hops answer what reached them), the
  // disk (a slow one: its completions may take a few turns), the worker's results.
  for (int i = 0; i < 4; ++i) {
    const bool moved = net_->RunUntilIdle() > 0;
    const bool answered = hops_.Serve();
    progress |= moved || answered;
    if (!answered) {
      break;
    }
  }
  if (rng_.Below(disk_turns_) == 0) {
    progress |= disk_.RunCompletions() > 0;
  }
  progress |= dns_.Run();
  progress |= worker_.Run([&](std::unique_ptr<delivery::JobDone> done) {
    core_->OnWorkerDone(std::move(done));
  }) > 0;
  core_->Turn();
  return progress;
}

void ShardSim::Sleep(bool progress) {
  const int64_t wait = core_->MsUntilWork(1000);
  if (progress || wait == 0) {
    clock_.AdvanceMs(1 + rng_.Below(20));
    return;
  }
  clock_.AdvanceMs(static_cast<uint64_t>(std::max<int64_t>(wait, 1)));
}

Result ShardSim::Run() {
  Result result;
  Configure();
  if (testing::Test::HasFatalFailure()) {
    return result;
  }
  Start();
  if (testing::Test::HasFatalFailure()) {
    return result;
  }
  const uint64_t clients = 4 + rng_.Below(16);
  const uint64_t crash_turn = rng_.Below(2) == 0 ? 50 + rng_.Below(kChaosTurns - 100) : 0;
  const bool power_cut = rng_.Below(2) == 0;
  Rescript();
  // Chaos, then the faults stop; the clients finish and the queue drains.
  uint64_t drain_until_ms = 0;
  for (; turns_ < kTurnsMax;) {
    if (turns_ == crash_turn && crash_turn != 0) {
      Crash(power_cut);
      if (testing::Test::HasFatalFailure()) {
        return result;
      }
    }
    if (turns_ < kChaosTurns && turns_ % 60 == 0) {
      Rescript();
    }
    if (turns_ == kChaosTurns) {
      disk_.set_faults(SimFaults{});
      for (uint16_t port : kPorts) {
        hops_.Script(port, HopScript{});
      }
    }
    bool progress = false;
    if (players_.clients.size() < clients && rng_.Below(turns_ < kChaosTurns ? 40 : 4) == 0) {
      NewClient();
      progress = true;
    }
    for (auto& c : players_.clients) {
      progress |= players_.Act(*c);
    }
    progress |= Turn();
    bool clients_done = players_.clients.size() == clients;
    for (const auto& c : players_.clients) {
      clients_done = clients_done && players_.Finished(*c);
    }
    if (turns_ >= kChaosTurns && clients_done) {
      if (drain_until_ms == 0) {
        drain_until_ms = clock_.MonotonicMs() + kDrainMs;
      }
      if (clock_.MonotonicMs() >= drain_until_ms && !core_->ingress().busy() &&
          core_->scheduler().in_flight() == 0 && core_->pools().idle()) {
        break;
      }
    }
    Sleep(progress);
  }
  EXPECT_LT(turns_, kTurnsMax) << "the run never settled";
  // The graceful stop, as on SIGTERM.
  core_->BeginStop();
  for (int i = 0; i < 100'000; ++i) {
    Turn();
    if (core_->StopComplete(true)) {
      break;
    }
    Sleep(false);
  }
  EXPECT_EQ(core_->ingress().connections(), 0u) << "connections left";
  EXPECT_EQ(limiter_->active(), 0u) << "limiter entries left";
  EXPECT_EQ(core_->pools().connections(), 0u) << "outbound links left";
  EXPECT_EQ(net_->in_flight(), 0u) << "socket operations left in flight";
  EXPECT_EQ(core_->scheduler().in_flight(), 0u) << "attempts left in flight";
  EXPECT_TRUE(core_->delivery().idle());
  EXPECT_TRUE(core_->spool().idle());
  EXPECT_EQ(worker_.waiting(), 0u);
  EXPECT_TRUE(disk_.violations().empty()) << disk_.violations().front();
  // The program exits and starts again on what the disk holds: the properties are checked
  // against the recovered spool, the truth (an outcome whose batch failed is pending again).
  core_.reset();
  timers_.reset();
  disk_.Kill();
  disk_.Reboot();
  Start();
  if (testing::Test::HasFatalFailure()) {
    return result;
  }
  Check();
  result.clients = players_.clients.size();
  for (const auto& c : players_.clients) {
    for (const Message& m : c->messages) {
      result.acked += m.reply == 250 ? 1 : 0;
    }
  }
  for (const auto& c : players_.clients) {
    for (const Message& m : c->messages) {
      for (const std::string& r : m.recipients) {
        const uint32_t times = Delivered(r);
        result.delivered += times > 0 ? 1 : 0;
        result.again += times > 1 ? times - 1 : 0;
      }
    }
  }
  result.bounces = metrics_.bounces.value();
  result.crashes = crashes_;
  result.sends = net_->sends();
  result.turns = turns_;
  return result;
}

void ShardSim::Check() {
  // What the spool still holds: by token, the message's recipients' states.
  std::map<std::string, const spool::StoredMessage*> queued;
  std::map<std::string, std::string> tokens;  // Sender address of a queued report -> "".
  core_->spool().ForEach([&](const spool::StoredMessage& m) {
    if (m.envelope.sender.empty()) {
      for (const auto& r : m.envelope.recipients) {
        tokens[r.address] = "";  // A report still queued.
      }
      return;
    }
    const size_t at = m.envelope.sender.find('.');
    const size_t end = m.envelope.sender.find('@');
    ASSERT_NE(at, std::string::npos) << "a stored message no client sent: " << m.envelope.sender;
    queued[m.envelope.sender.substr(at + 1, end - at - 1)] = &m;
  });
  std::map<std::string, bool> known;  // Every address a delivery may name.
  for (const auto& c : players_.clients) {
    for (const Message& m : c->messages) {
      known[m.sender] = true;
      for (const std::string& r : m.recipients) {
        known[r] = true;
      }
      auto it = queued.find(m.token);
      const spool::StoredMessage* stored = it == queued.end() ? nullptr : it->second;
      uint32_t failed = 0;
      bool failed_on_disk = false;
      bool any_delivered = false;
      for (size_t i = 0; i < m.recipients.size(); ++i) {
        const std::string& r = m.recipients[i];
        const uint32_t times = Delivered(r);
        any_delivered |= times > 0;
        auto again = allowed_again_.find(r);
        EXPECT_LE(times, 1 + (again == allowed_again_.end() ? 0 : again->second))
            << r << " delivered " << times << " times";
        if (r.starts_with("perm")) {
          EXPECT_EQ(times, 0u) << r;
          ++failed;
        } else if (r.starts_with("temp")) {
          EXPECT_EQ(times, 0u) << r;
        }
        if (m.reply != 250) {
          continue;
        }
        // Acknowledged: delivered, failed (reported) or still queued, on disk.
        if (r.starts_with("temp")) {
          ASSERT_NE(stored, nullptr) << r << " acknowledged, refused for now, and not queued";
          EXPECT_EQ(stored->states[i], spool::RecipientState::kPending) << r;
        } else if (r.starts_with("perm")) {
          if (stored != nullptr && stored->states[i] == spool::RecipientState::kFailed) {
            failed_on_disk = true;
          }
        } else {
          EXPECT_GE(times, 1u) << r << " acknowledged and never delivered";
          if (stored != nullptr) {
            // Pending: its outcome's batch failed, so it goes again after this restart (a
            // crash between the next hop's 250 and the durable record).
            EXPECT_NE(stored->states[i], spool::RecipientState::kFailed) << r;
          }
        }
      }
      if (failed_on_disk) {
        EXPECT_TRUE(hops_.delivered(m.sender) > 0 || tokens.count(m.sender) != 0)
            << m.token << ": a recipient failed for good and no report went to " << m.sender;
      }
      // Reports: at most one per failed recipient (one per attempt), plus one per crash.
      EXPECT_LE(hops_.delivered(m.sender), failed + crashes_) << m.sender;
      const bool sent_whole = c->bytes_sent >= m.end_at;
      if (!sent_whole) {
        EXPECT_FALSE(any_delivered) << m.token << " delivered but never sent whole";
        EXPECT_EQ(stored, nullptr) << m.token << " stored but never sent whole";
      } else if (m.reply != 250 && m.reply != 0 && !c->crashed) {
        EXPECT_FALSE(any_delivered) << m.token << " refused with " << m.reply << " but delivered";
        // A 4xx may follow a failed fdatasync whose bytes are still on disk: the restart may
        // find the message (at-least-once; the client sends it again). A 5xx is never stored.
        if (m.reply >= 500) {
          EXPECT_EQ(stored, nullptr) << m.token << " refused with " << m.reply << " but queued";
        }
      }
    }
  }
  for (const auto& [address, times] : hops_.deliveries()) {
    EXPECT_TRUE(known.count(address) != 0) << address << " delivered: no client sent it";
  }
}

uint32_t ShardSim::Delivered(const std::string& address) {
  const size_t at = address.find('@');
  if (address.substr(at + 1) != "local.example") {
    return hops_.delivered(address);
  }
  auto names = disk_.ListDir(base::StrCat("/mail/local.example/", address.substr(0, at), "/new"));
  return names.ok() ? static_cast<uint32_t>(names->size()) : 0;
}

// Thousands of log lines per seed (sessions, next hops failing): to /dev/null while it lasts.
class QuietLog {
 public:
  QuietLog()
      : fd_(::open(
            std::getenv("RELAIS_SIM_LOG") != nullptr ? std::getenv("RELAIS_SIM_LOG") : "/dev/null",
            O_WRONLY | O_CLOEXEC | O_CREAT | O_TRUNC, 0644)) {
    log::SetFd(fd_);
  }
  ~QuietLog() {
    log::SetFd(STDERR_FILENO);
    ::close(fd_);
  }

 private:
  int fd_;
};

Result RunSeed(uint64_t seed) {
  ShardSim sim(seed);
  const Result r = sim.Run();
  if (std::getenv("RELAIS_SIM_VERBOSE") != nullptr) {
    std::fprintf(
        stderr,
        "seed %llu: %llu clients, %llu acknowledged, %llu recipients delivered (%llu "
        "again after a crash), %llu reports, %llu crashes, %llu turns\n",
        static_cast<unsigned long long>(seed), static_cast<unsigned long long>(r.clients),
        static_cast<unsigned long long>(r.acked), static_cast<unsigned long long>(r.delivered),
        static_cast<unsigned long long>(r.again), static_cast<unsigned long long>(r.bounces),
        static_cast<unsigned long long>(r.crashes), static_cast<unsigned long long>(r.turns));
  }
  return r;
}

TEST(ShardSimulation, EveryAcknowledgedMessageDeliveredFailedOrQueuedNoLeaks) {
  QuietLog quiet;
  const sim::Seeds seeds = sim::SeedsFromEnv(1, 150);
  const uint64_t count = seeds.count;
  Result total;
  sim::ForEachSeed(seeds, [&](uint64_t seed) {
    const Result r = RunSeed(seed);
    total.acked += r.acked;
    total.delivered += r.delivered;
    total.again += r.again;
    total.bounces += r.bounces;
    total.crashes += r.crashes;
    total.clients += r.clients;
  });
  std::printf(
      "shard simulation: %llu seeds, %llu clients, %llu messages acknowledged, %llu recipients "
      "delivered (%llu again after a crash), %llu reports, %llu crashes\n",
      static_cast<unsigned long long>(count), static_cast<unsigned long long>(total.clients),
      static_cast<unsigned long long>(total.acked),
      static_cast<unsigned long long>(total.delivered),
      static_cast<unsigned long long>(total.again), static_cast<unsigned long long>(total.bounces),
      static_cast<unsigned long long>(total.crashes));
  EXPECT_GT(total.acked, count);  // The seeds did real work.
}

// The same seed gives the same run: what a replay relies on.
TEST(ShardSimulation, ASeedReplaysTheSameRun) {
  QuietLog quiet;
  Result runs[2];
  for (Result& r : runs) {
    r = RunSeed(7);
  }
  EXPECT_EQ(runs[0].turns, runs[1].turns);
  EXPECT_EQ(runs[0].sends, runs[1].sends);
  EXPECT_EQ(runs[0].acked, runs[1].acked);
  EXPECT_EQ(runs[0].delivered, runs[1].delivered);
  EXPECT_EQ(runs[0].bounces, runs[1].bounces);
  EXPECT_GT(runs[0].acked, 0u);
}

// The core alone, one message, no faults: what each turn and the stop promise.
TEST(ShardCoreTest, OneMessageInAndOutThenAGracefulStop) {
  QuietLog quiet;
  SimIo disk(1);
  ASSERT_TRUE(disk.MakeDir(io::kWorkingDirectory, "/spool").ok());
  base::FakeClock clock;
  timer::TimerWheel timers(clock.MonotonicMs(), 100);
  io::FakeNet net;
  FakeNextHops hops(net);
  routing::Router router({{"dest.example", config::RouteType::kSmarthost, "", {"h:25"}, ""}},
                         "dest.example");
  std::vector<std::optional<delivery::Destination>> destinations;
  destinations.push_back(delivery::Destination{delivery::Route::kSmarthost, false, {Hop(25)}});
  SimWorker worker(disk, clock);
  relaisd::ShardMetrics metrics;
  relaisd::ConnectionLimiter limiter(100, 100);
  base::Random random(1);
  relaisd::ShardOptions o;
  o.session.hostname = "mx.sim.example";
  o.spool.path = "/spool";
  o.spool.body_memory_bytes_max = 0;  // The body is read back by the worker.
  o.router = &router;
  o.destinations = &destinations;
  o.egress.tcp_no_delay = false;
  o.metrics = &metrics;
  authcheck::Policy unchecked;
  unchecked.spf = unchecked.dkim = unchecked.dmarc = authcheck::Mode::kOff;
  o.auth_by_listener = {unchecked};
  relaisd::ShardEnv env;
  env.net = &hops;
  env.io = &disk;
  env.clock = &clock;
  env.timers = &timers;
  env.random = &random;
  env.limiter = &limiter;
  env.worker = &worker;
  env.report_boundary = [] { return std::string("0123456789abcdef0123456789abcdef"); };
  auto created = relaisd::ShardCore::Create(o, env);
  ASSERT_TRUE(created.ok()) << created.status();
  relaisd::ShardCore& core = **created;
  const io::Socket listener = net.Listener();
  core.Start({listener.value()});
  EXPECT_EQ(core.MsUntilWork(1000), 1000);  // Nothing to do: the loop may sleep the bound.

  base::Random rng(2);
  SimClients players(net, rng);
  auto c = std::make_unique<Client>();
  Message m;
  m.token = "one";
  m.body = MakeBody(rng, m.token, true);
  m.recipients = {"r0.one@dest.example"};
  c->messages.push_back(std::move(m));
  sockaddr_storage from{};
  auto* in = reinterpret_cast<sockaddr_in*>(&from);
  in->sin_family = AF_INET;
  in->sin_port = htons(40000);
  in->sin_addr.s_addr = htonl(0xC0000201u);
  Client& client = players.Connect(listener, from, std::move(c));
  auto turn = [&] {
    players.Act(client);
    net.RunUntilIdle();
    hops.Serve();
    net.RunUntilIdle();
    disk.RunCompletions();
    worker.Run(
        [&](std::unique_ptr<delivery::JobDone> done) { core.OnWorkerDone(std::move(done)); });
    core.Turn();
    clock.AdvanceMs(10);
  };
  for (int i = 0; i < 1000 && !(client.closed && hops.delivered("r0.one@dest.example") > 0); ++i) {
    turn();
  }
  EXPECT_EQ(client.messages[0].reply, 250);
  EXPECT_TRUE(client.closed);
  EXPECT_EQ(hops.delivered("r0.one@dest.example"), 1u);
  EXPECT_EQ(metrics.messages_accepted.value(), 1u);

  core.BeginStop();
  EXPECT_LE(core.MsUntilWork(1000), 50);  // While stopping the loop looks again soon.
  bool stopped = false;
  for (int i = 0; i < 2000 && !stopped; ++i) {
    turn();
    stopped = core.StopComplete(true);
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(core.pools().connections(), 0u);
  EXPECT_EQ(net.in_flight(), 0u);
  EXPECT_EQ(hops.delivered("r0.one@dest.example"), 1u);
}

}  // namespace
}  // namespace relais::sim
