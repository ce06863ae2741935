#include "tools/relaisd/shard.h"

#include <time.h>
#include <unistd.h>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "tools/relaisd/secure_random.h"

namespace relais::relaisd {
namespace {

constexpr uint32_t kTimerTickMs = 100;

}  // namespace

// Reads the delivery worker's eventfd through io_uring: each completion means results wait.
class Shard::DeliveryReader final : public uring::Completion {
 public:
  explicit DeliveryReader(Shard* shard) : shard_(shard) {}
  void Arm() { shard_->engine_->Read(shard_->worker_->done_fd(), &count_, sizeof(count_), *this); }
  void OnCqe(int32_t /*result*/, uint32_t /*flags*/) override {
    shard_->OnDeliveriesDone();
    Arm();
  }

 private:
  Shard* shard_;
  uint64_t count_ = 0;
};

// The AUTH verifier's results: its done_fd counts them (an eventfd) and is read on the ring.
class Shard::AuthReader final : public uring::Completion {
 public:
  explicit AuthReader(Shard* shard) : shard_(shard) {}
  void Arm() { shard_->engine_->Read(shard_->auth_->done_fd(), &count_, sizeof(count_), *this); }
  void OnCqe(int32_t /*result*/, uint32_t /*flags*/) override {
    shard_->auth_->OnDoneReadable();  // The answers go to their sessions (marked dirty).
    Arm();
  }

 private:
  Shard* shard_;
  uint64_t count_ = 0;
};

// Shard 0's signals, read from the signalfd through io_uring: SIGTERM and SIGINT stop every
// shard (a stop handoff to each of the others), SIGUSR1 reopens the log file.
class Shard::SignalReader final : public uring::Completion {
 public:
  SignalReader(Shard* shard, int fd) : shard_(shard), fd_(fd) {}
  void Arm() { shard_->engine_->Read(fd_, &info_, sizeof(info_), *this); }
  void OnCqe(int32_t result, uint32_t /*flags*/) override {
    if (result == static_cast<int32_t>(sizeof(info_)) && info_.ssi_signo == SIGUSR1) {
      // logrotate moved the file: open the path again. One open(2) on this core, on an
      // operator's signal, is cheaper than a hop to a helper thread and back.
      const std::string& path = shard_->options_.log_file;
      const std::string error = path.empty() ? "" : log::OpenFile(path);
      log::Emit(error.empty() ? log::Level::kInfo : log::Level::kError,
                static_cast<int>(shard_->options_.index), "log_reopened",
                {{"file", path}, {"error", error}});
      Arm();
      return;
    }
    if (result == static_cast<int32_t>(sizeof(info_)) &&
        (info_.ssi_signo == SIGTERM || info_.ssi_signo == SIGINT)) {
      log::Emit(log::Level::kInfo, static_cast<int>(shard_->options_.index), "stop_requested",
                {{"signal", info_.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
      for (uint32_t s = 0; s < shard_->options_.count; ++s) {
        if (s == shard_->options_.index) {
          continue;
        }
        uring::Handoff stop;
        stop.kind = static_cast<uint16_t>(HandoffKind::kStop);
        // A stop is sent once per shard at most; a full ring here means a shard is wedged,
        // and its hard deadline is the remedy.
        if (!shard_->port_.Send(s, std::move(stop))) {
          log::Emit(log::Level::kError, static_cast<int>(shard_->options_.index),
                    "stop_not_delivered", {{"to_shard", s}});
        }
      }
      shard_->BeginStop();
      return;
    }
    if (!shard_->core_->stopping()) {
      Arm();
    }
  }

 private:
  Shard* shard_;
  int fd_;
  signalfd_siginfo info_{};
};

Shard::Shard(const ShardOptions& options, std::vector<int> listen_fds, ConnectionLimiter& limiter,
             uring::Mesh& mesh, std::unique_ptr<uring::Engine> engine)
    : options_(options),
      listen_fds_(std::move(listen_fds)),
      limiter_(limiter),
      engine_(std::move(engine)),
      timers_(clock_.MonotonicMs(), kTimerTickMs),
      port_(mesh, options.index, *engine_,
            [this](uint32_t from, uring::Handoff&& h) { OnHandoff(from, std::move(h)); }),
      random_(clock_.UnixMicros() ^ (uint64_t{options.index} << 56)),
      metrics_(*options.metrics) {}

Shard::~Shard() = default;

absl::StatusOr<std::unique_ptr<Shard>> Shard::Create(const ShardOptions& options,
                                                     std::vector<int> listen_fds,
                                                     ConnectionLimiter& limiter,
                                                     uring::Mesh& mesh) {
  RELAIS_CHECK(options.router != nullptr && options.destinations != nullptr &&
               options.shards_running != nullptr && options.metrics != nullptr);
  uring::EngineOptions engine_options = options.engine;
  engine_options.fixed_files = options.connections_per_shard_hard_max;
  auto engine = uring::Engine::Create(engine_options);
  if (!engine.ok()) {
    return engine.status();
  }
  std::unique_ptr<Shard> shard(
      new Shard(options, std::move(listen_fds), limiter, mesh, std::move(*engine)));
  // The sender checks need DNS, and so do next hops: MX routes, and host names of smarthost
  // and lmtp routes (resolved here, on the shard, not at start).
  if (AnyChecks(options.auth_by_listener) || NeedsDns(*options.destinations)) {
    auto resolver = ShardResolver::Create(*shard->engine_, options.dns, shard->clock_);
    if (!resolver.ok()) {
      return absl::InvalidArgumentError(base::StrCat("dns: ", resolver.status().message()));
    }
    shard->resolver_ = std::move(*resolver);
  }
  // 1024 slots each way: more than attempts_in_flight_max allows (at most 512).
  shard->worker_ =
      std::make_unique<DeliveryWorker>(options.index, 10, options.maildir_directories_known_max);
  ShardEnv env;
  env.net = &shard->engine_->net();
  env.io = &shard->engine_->io();
  env.clock = &shard->clock_;
  env.timers = &shard->timers_;
  env.random = &shard->random_;
  env.resolver = shard->resolver_ != nullptr ? &shard->resolver_->resolver() : nullptr;
  env.limiter = &shard->limiter_;
  env.worker = shard->worker_.get();
  if (options.credentials != nullptr) {
    AuthVerifierOptions auth;
    auth.limiter = options.login_limits;
    auth.shard = options.index;
    shard->auth_ = options.login_limiter != nullptr
                       ? std::make_unique<AuthVerifier>(auth, options.login_limiter, shard->timers_,
                                                        shard->clock_)
                       : std::make_unique<AuthVerifier>(auth, shard->timers_, shard->clock_);
    shard->auth_->SetCredentials(options.credentials);
    env.auth = shard->auth_.get();
  }
  env.pid = static_cast<uint32_t>(getpid());
  // 128 bits: a sender cannot predict a report's MIME boundary.
  env.report_boundary = [] { return SecureRandomHex(16); };
  auto core = ShardCore::Create(options, env);
  if (!core.ok()) {
    return core.status();
  }
  shard->core_ = std::move(*core);
  return shard;
}

void Shard::Run() {
  core_->Start(listen_fds_);
  if (signal_fd_ >= 0) {
    signal_reader_ = std::make_unique<SignalReader>(this, signal_fd_);
    signal_reader_->Arm();
  }
  delivery_reader_ = std::make_unique<DeliveryReader>(this);
  delivery_reader_->Arm();
  if (auth_ != nullptr) {
    auth_reader_ = std::make_unique<AuthReader>(this);
    auth_reader_->Arm();
  }
  if (admin_fd_ >= 0) {
    admin_ = std::make_unique<AdminServer>(
        *engine_, timers_, clock_, admin_fd_, options_.index, options_.count,
        core_->admin_service(), [this](uint32_t to, std::unique_ptr<AdminQuery> query) {
          uring::Handoff h;
          h.kind = static_cast<uint16_t>(HandoffKind::kAdminQuery);
          h.payload = std::move(query);
          SendToShard(to, std::move(h));
        });
    admin_->Arm();
  }
  if (metrics_fd_ >= 0) {
    RELAIS_CHECK(options_.all_metrics != nullptr);
    metrics_endpoint_ = std::make_unique<MetricsEndpoint>(*options_.all_metrics, core_->stopping());
    metrics_server_ = std::make_unique<net::RequestServer>(
        engine_->net(), timers_, clock_, metrics_fd_,
        net::RequestServerOptions{64, 8192, metrics_request_timeout_ms_}, *metrics_endpoint_);
    metrics_server_->Arm();
  }
  while (true) {
    int64_t bound_ms = 1000;
    if (resolver_ != nullptr) {
      const int64_t dns = resolver_->Tick();  // c-ares timeouts that are due run here.
      if (dns >= 0 && dns < bound_ms) {
        bound_ms = dns;
      }
    }
    engine_->Run(core_->MsUntilWork(bound_ms));
    port_.Drain();  // Handoffs that raced with a wake-up already consumed.
    while (!outbox_.empty() &&
           port_.Send(outbox_.front().first, std::move(outbox_.front().second))) {
      outbox_.pop_front();
    }
    core_->Turn();
    worker_->Kick();  // The jobs this turn submitted.
    PublishResolverMetrics();
    // Shard 0 answers relaisctl and Prometheus while the others drain, so it goes last.
    if (core_->stopping() &&
        core_->StopComplete(options_.index != 0 ||
                            options_.shards_running->load(std::memory_order_acquire) == 1)) {
      break;
    }
  }
  // Submit what the last turn queued (the stop handoffs' MSG_RING wake-ups among them).
  engine_->Run(0);
  options_.shards_running->fetch_sub(1, std::memory_order_release);
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "shard_stopped",
            {{"messages_accepted", metrics_.messages_accepted.value()},
             {"connections_accepted", metrics_.connections_accepted.value()},
             {"spool_batches", core_->spool().stats().batches}});
}

void Shard::OnHandoff(uint32_t /*from*/, uring::Handoff&& handoff) {
  switch (static_cast<HandoffKind>(handoff.kind)) {
    case HandoffKind::kStop:
      BeginStop();
      return;
    case HandoffKind::kAdminQuery: {
      RELAIS_CHECK(handoff.payload != nullptr);
      uring::Handoff reply;
      reply.kind = static_cast<uint16_t>(HandoffKind::kAdminAnswer);
      reply.payload =
          core_->admin_service().Answer(static_cast<const AdminQuery&>(*handoff.payload));
      SendToShard(0, std::move(reply));
      return;
    }
    case HandoffKind::kAdminAnswer:
      RELAIS_CHECK(handoff.payload != nullptr && admin_ != nullptr);
      admin_->OnAnswer(
          std::unique_ptr<AdminAnswer>(static_cast<AdminAnswer*>(handoff.payload.release())));
      return;
  }
  RELAIS_CHECK(false) << "unknown handoff kind " << handoff.kind;
}

void Shard::SendToShard(uint32_t to, uring::Handoff&& handoff) {
  if (!outbox_.empty() || !port_.Send(to, std::move(handoff))) {
    outbox_.emplace_back(to, std::move(handoff));  // Keeps order; retried every turn.
  }
}

void Shard::BeginStop() {
  if (core_->stopping()) {
    return;
  }
  if (admin_ != nullptr) {
    admin_->Stop();
  }
  core_->BeginStop();
}

void Shard::OnDeliveriesDone() {
  while (auto done = worker_->TakeDone()) {
    core_->OnWorkerDone(std::move(done));
  }
}

void Shard::PublishResolverMetrics() {
  if (resolver_ == nullptr) {
    return;
  }
  const dns::ResolverStats& d = resolver_->resolver().stats();
  metrics_.dns_lookups.Mirror(d.lookups);
  metrics_.dns_cache_hits.Mirror(d.cache_hits);
  metrics_.dns_queries.Mirror(d.queries_sent);
  metrics_.dns_temporary_failures.Mirror(d.temporary_failures);
  metrics_.dns_cache_entries.Set(static_cast<int64_t>(resolver_->resolver().cache_entries()));
}

}  // namespace relais::relaisd
