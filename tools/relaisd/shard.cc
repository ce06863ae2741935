#include "tools/relaisd/shard.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "tools/relaisd/secure_random.h"

namespace relais::relaisd {
namespace {

constexpr uint32_t kTimerTickMs = 100;
constexpr uint64_t kHardStopExtraMs = 10'000;  // Past the grace period, stop regardless.

// The ingress's options: ShardOptions' fields that concern inbound SMTP.
IngressOptions IngressOptionsOf(const ShardOptions& options) {
  IngressOptions o;
  o.shard = options.index;
  o.session = options.session;
  o.receive_bytes_max = options.receive_bytes_max;
  o.transfer = {options.data_deadline_ms, options.data_deadline_stress_ms, options.data_rate_min};
  o.stress_connections = options.stress_connections;
  o.connections_per_shard_hard_max = options.connections_per_shard_hard_max;
  o.router = options.router;
  o.checks.auth_by_listener = options.auth_by_listener;
  o.checks.auth_skip_networks = options.auth_skip_networks;
  o.checks.relay_networks = options.session.relay_networks;
  o.checks.header_limits = options.header_limits;
  o.checks.signing_keys = options.signing_keys;
  o.checks.hostname = options.session.hostname;
  return o;
}

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
    if (!shard_->stopping_) {
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
  shard->log_ = std::make_unique<log::ShardLog>(shard->clock_, static_cast<int>(options.index));
  spool::SpoolOptions spool_options = options.spool;
  spool_options.batch_seconds = &options.metrics->spool_batch_seconds;
  auto spool = spool::Spool::Open(spool_options, shard->engine_->io(), shard->clock_);
  if (!spool.ok()) {
    return spool.status();
  }
  shard->spool_ = std::move(*spool);
  auto report = shard->spool_->Recover();
  if (!report.ok()) {
    return report.status();
  }
  const int index = static_cast<int>(options.index);
  log::Emit(log::Level::kInfo, index, "spool_recovered",
            {{"path", options.spool.path},
             {"segments", report->segments},
             {"messages", report->messages_live},
             {"torn_tails", report->torn_tails},
             {"corrupt_records", report->corrupt_records},
             {"unreadable_segments", report->unreadable_segments}});
  for (const std::string& problem : report->problems) {
    log::Emit(log::Level::kWarning, index, "spool_problem", {{"detail", problem}});
  }
  shard->scheduler_ = std::make_unique<scheduler::Scheduler>(options.scheduler, *shard->spool_,
                                                             shard->clock_, shard->random_);
  shard->scheduler_->LoadFromSpool();
  // 1024 slots each way: more than attempts_in_flight_max allows (at most 512).
  shard->worker_ =
      std::make_unique<DeliveryWorker>(options.index, 10, options.maildir_directories_known_max);
  EgressOptions egress = options.egress;
  egress.shard = options.index;
  egress.helo_name = options.session.hostname;
  shard->egress_ = std::make_unique<delivery::Pools>(shard->engine_->net(), shard->timers_,
                                                     shard->clock_, std::move(egress),
                                                     static_cast<delivery::PoolListener&>(*shard));
  shard->outbound_ =
      std::make_unique<delivery::PoolsOutbound>(*shard->egress_, *options.destinations);
  delivery::DeliveryOptions delivery_options;
  delivery_options.plan.shard = options.index;
  delivery_options.plan.pid = static_cast<uint32_t>(getpid());
  delivery_options.plan.hostname = options.session.hostname;
  delivery_options.plan.delay_warning_ms = options.delay_warning_ms;
  delivery_options.recipients_per_transaction_max = options.recipients_per_transaction_max;
  // 128 bits: a sender cannot predict a report's MIME boundary.
  delivery_options.report_boundary = [] { return SecureRandomHex(16); };
  ShardMetrics& m = *options.metrics;
  shard->delivery_ = std::make_unique<delivery::Delivery>(
      std::move(delivery_options), *shard->scheduler_, *shard->spool_, *options.router,
      shard->clock_, *shard->worker_, *shard->outbound_,
      delivery::DeliveryMetrics{&m.attempts, &m.bounces, &m.maildir_mailboxes_recreated,
                                &m.maildir_directories_forgotten, &m.time_to_delivered});
  if (AnyChecks(options.auth_by_listener)) {
    auto resolver = ShardResolver::Create(*shard->engine_, options.dns, shard->clock_);
    if (!resolver.ok()) {
      return absl::InvalidArgumentError(base::StrCat("dns: ", resolver.status().message()));
    }
    shard->resolver_ = std::move(*resolver);
  }
  shard->ingress_ = std::make_unique<Ingress>(
      IngressOptionsOf(options), shard->engine_->net(), shard->timers_, shard->clock_, *shard->spool_,
      *shard->scheduler_, shard->resolver_ != nullptr ? &shard->resolver_->resolver() : nullptr,
      shard->random_, shard->limiter_, *shard->log_, shard->metrics_);
  shard->admin_service_ = std::make_unique<AdminService>(
      options.index, *shard->spool_, *shard->scheduler_, shard->clock_, [s = shard.get()] {
        return ShardCounts{s->ingress_->connections(), s->metrics_.messages_accepted.value(),
                           s->delivery_->attempts_started()};
      });
  return shard;
}

void Shard::Run() {
  ingress_->Start(listen_fds_);
  if (signal_fd_ >= 0) {
    signal_reader_ = std::make_unique<SignalReader>(this, signal_fd_);
    signal_reader_->Arm();
  }
  delivery_reader_ = std::make_unique<DeliveryReader>(this);
  delivery_reader_->Arm();
  if (admin_fd_ >= 0) {
    admin_ = std::make_unique<AdminServer>(
        *engine_, timers_, clock_, admin_fd_, options_.index, options_.count, *admin_service_,
        [this](uint32_t to, std::unique_ptr<AdminQuery> query) {
          uring::Handoff h;
          h.kind = static_cast<uint16_t>(HandoffKind::kAdminQuery);
          h.payload = std::move(query);
          SendToShard(to, std::move(h));
        });
    admin_->Arm();
  }
  if (metrics_fd_ >= 0) {
    RELAIS_CHECK(options_.all_metrics != nullptr);
    metrics_endpoint_ = std::make_unique<MetricsEndpoint>(*options_.all_metrics, stopping_);
    metrics_server_ = std::make_unique<net::RequestServer>(
        engine_->net(), timers_, clock_, metrics_fd_,
        net::RequestServerOptions{64, 8192, metrics_request_timeout_ms_}, *metrics_endpoint_);
    metrics_server_->Arm();
  }
  while (true) {
    int64_t timeout_ms = 1000;
    const int64_t next_tick = timers_.MsUntilNextTick(clock_.MonotonicMs());
    if (next_tick >= 0 && next_tick < timeout_ms) {
      timeout_ms = next_tick;
    }
    if (resolver_ != nullptr) {
      const int64_t dns = resolver_->Tick();  // c-ares timeouts that are due run here.
      if (dns >= 0 && dns < timeout_ms) {
        timeout_ms = dns;
      }
    }
    const int64_t next_retry = scheduler_->MsUntilNextDue();
    if (next_retry >= 0 && next_retry < timeout_ms) {
      timeout_ms = next_retry;
    }
    if (ingress_->busy() || stopping_ || egress_->busy()) {
      timeout_ms = !ingress_->busy() && !egress_->busy() ? std::min<int64_t>(timeout_ms, 50) : 0;
    }
    engine_->Run(timeout_ms);
    port_.Drain();  // Handoffs that raced with a wake-up already consumed.
    while (!outbox_.empty() &&
           port_.Send(outbox_.front().first, std::move(outbox_.front().second))) {
      outbox_.pop_front();
    }
    const uint64_t now = clock_.MonotonicMs();
    timers_.Advance(now);
    ingress_->RetryAccepts(now);
    ingress_->PumpDirty();
    delivery_->Tick();
    egress_->Pump();
    worker_->Kick();
    PublishMetrics();
    // Everything appended this turn (messages and delivery outcomes) shares one write and one
    // fdatasync.
    spool_->Flush();
    log_->Flush();
    delivery_->FlushLog();
    if (stopping_ && StopComplete()) {
      break;
    }
  }
  // Submit what the last turn queued (the stop handoffs' MSG_RING wake-ups among them).
  engine_->Run(0);
  options_.shards_running->fetch_sub(1, std::memory_order_release);
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "shard_stopped",
            {{"messages_accepted", metrics_.messages_accepted.value()},
             {"connections_accepted", metrics_.connections_accepted.value()},
             {"spool_batches", spool_->stats().batches}});
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
      reply.payload = admin_service_->Answer(static_cast<const AdminQuery&>(*handoff.payload));
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
  if (stopping_) {
    return;
  }
  stopping_ = true;
  stop_deadline_ms_ = clock_.MonotonicMs() + options_.shutdown_grace_ms;
  ingress_->BeginStop();  // No more accepts; every session is told 421 when it may be.
  if (admin_ != nullptr) {
    admin_->Stop();
  }
  delivery_->Stop();
  egress_->Stop();
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "stopping",
            {{"connections", ingress_->connections()}, {"grace_ms", options_.shutdown_grace_ms}});
}

bool Shard::StopComplete() {
  const uint64_t now = clock_.MonotonicMs();
  if (!forced_ && now >= stop_deadline_ms_) {
    forced_ = true;
    ingress_->ForceStop();
  }
  // Shard 0 answers relaisctl and Prometheus while the others drain, so it goes last.
  const bool others_done =
      options_.index != 0 || options_.shards_running->load(std::memory_order_acquire) == 1;
  if (ingress_->connections() == 0 && delivery_->idle() && egress_->idle() && spool_->idle() &&
      log_->idle() && others_done) {
    return true;
  }
  if (now >= stop_deadline_ms_ + kHardStopExtraMs) {
    // Peers that will not read their 421 must not hold the process. Nothing unacknowledged is
    // lost by leaving: a message is only ever acknowledged after its batch is durable.
    log::Emit(log::Level::kWarning, static_cast<int>(options_.index), "stop_forced",
              {{"connections", ingress_->connections()}, {"spool_idle", spool_->idle()}});
    return spool_->idle();
  }
  return false;
}

void Shard::OnDeliveriesDone() {
  while (auto done = worker_->TakeDone()) {
    delivery_->OnWorkerDone(std::move(done));
  }
}

void Shard::OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                       std::string_view next_hop) {
  delivery_->OnOutboundDone(id, std::move(results), next_hop);
}

void Shard::PublishMetrics() {
  ingress_->PublishMetrics();
  const spool::SpoolStats& st = spool_->stats();
  metrics_.spool_appends.Mirror(st.appends);
  metrics_.spool_batches.Mirror(st.batches);
  metrics_.spool_batch_failures.Mirror(st.batch_failures);
  metrics_.spool_bytes_written.Mirror(st.bytes_written);
  metrics_.spool_bytes.Set(static_cast<int64_t>(spool_->live_bytes()));
  metrics_.spool_segments.Set(static_cast<int64_t>(spool_->segment_count()));
  metrics_.queue_messages.Set(static_cast<int64_t>(spool_->message_count()));
  metrics_.queue_ready.Set(static_cast<int64_t>(scheduler_->ready()));
  metrics_.queue_deferred.Set(static_cast<int64_t>(scheduler_->deferred()));
  metrics_.queue_in_flight.Set(scheduler_->in_flight());
  const delivery::PoolCounters& e = egress_->counters();
  metrics_.egress_connections_opened.Mirror(e.connections_opened);
  metrics_.egress_connect_failures.Mirror(e.connect_failures);
  metrics_.egress_tasks_retried.Mirror(e.tasks_retried);
  metrics_.egress_connections.Set(egress_->connections());
  metrics_.egress_connections_unused.Mirror(e.connections_unused);
  metrics_.egress_converted_7bit.Mirror(e.converted_7bit);
  metrics_.egress_not_convertible.Mirror(e.not_convertible);
  metrics_.egress_smtputf8_not_needed.Mirror(e.smtputf8_not_needed);
  metrics_.log_lines_dropped.Mirror(log_->dropped());
  if (resolver_ != nullptr) {
    const dns::ResolverStats& d = resolver_->resolver().stats();
    metrics_.dns_lookups.Mirror(d.lookups);
    metrics_.dns_cache_hits.Mirror(d.cache_hits);
    metrics_.dns_queries.Mirror(d.queries_sent);
    metrics_.dns_temporary_failures.Mirror(d.temporary_failures);
    metrics_.dns_cache_entries.Set(static_cast<int64_t>(resolver_->resolver().cache_entries()));
  }
}

}  // namespace relais::relaisd
