// tools/relaisd/shard_core.cc — see shard_core.h.
#include "tools/relaisd/shard_core.h"

#include <algorithm>

#include "core/base/check.h"
#include "core/log/log.h"

namespace relais::relaisd {
namespace {

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
  o.checks.user_signing_keys = options.user_signing_keys;
  o.require_sender_owned = options.require_sender_owned;
  o.checks.hostname = options.session.hostname;
  o.listeners = options.listeners;
  o.tls_handshake_timeout_ms = options.tls_handshake_timeout_ms;
  return o;
}

constexpr uint64_t kSecondMs = 1000;
constexpr uint32_t kCensusSeconds = 10;  // All destinations' views: every 10 s (linear).

}  // namespace

// The pools' sources (delivery::SourcesLinks' job), counting each source's connections for
// relais_source_connections_total.
class ShardCore::SourceLinks final : public delivery::LinkSources {
 public:
  SourceLinks(delivery::Sources& sources, ShardMetrics& metrics)
      : sources_(sources), metrics_(metrics) {}
  [[nodiscard]] std::optional<delivery::Sources::Choice> Pick(
      int32_t pool, uint32_t destination, int family, delivery::Sources::Refusal* why) override {
    return sources_.Pick(pool, destination, family, why);
  }
  void Opened(uint32_t source, uint32_t destination) override {
    sources_.Opened(source, destination);
    if (source < metrics_.source_connections.size()) {
      metrics_.source_connections[source].Add();
    }
  }
  void Closed(uint32_t source, uint32_t destination) override {
    sources_.Closed(source, destination);
  }
  void Sent(uint32_t source, uint32_t destination) override { sources_.Sent(source, destination); }

 private:
  delivery::Sources& sources_;
  ShardMetrics& metrics_;
};

ShardCore::ShardCore(const ShardOptions& options, const ShardEnv& env)
    : options_(options), env_(env), metrics_(*options.metrics) {}

ShardCore::~ShardCore() = default;

absl::StatusOr<std::unique_ptr<ShardCore>> ShardCore::Create(const ShardOptions& options,
                                                             const ShardEnv& env) {
  RELAIS_CHECK(options.router != nullptr && options.destinations != nullptr &&
               options.metrics != nullptr);
  RELAIS_CHECK(env.net != nullptr && env.io != nullptr && env.clock != nullptr &&
               env.timers != nullptr && env.random != nullptr && env.limiter != nullptr &&
               env.worker != nullptr);
  std::unique_ptr<ShardCore> core(new ShardCore(options, env));
  ShardCore& c = *core;
  const base::Clock& clock = *env.clock;
  c.log_ = std::make_unique<log::ShardLog>(clock, static_cast<int>(options.index));
  spool::SpoolOptions spool_options = options.spool;
  spool_options.batch_seconds = &options.metrics->spool_batch_seconds;
  auto spool = spool::Spool::Open(spool_options, *env.io, clock);
  if (!spool.ok()) {
    return spool.status();
  }
  c.spool_ = std::move(*spool);
  auto report = c.spool_->Recover();
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
  c.scheduler_ =
      std::make_unique<scheduler::Scheduler>(options.scheduler, *c.spool_, clock, *env.random);
  c.scheduler_->LoadFromSpool();
  // MX delivery. Each shard resolves, shapes and picks sources on its own.
  delivery::Dns* dns = env.dns;
  if (dns == nullptr && env.resolver != nullptr) {
    c.resolver_dns_ = std::make_unique<delivery::ResolverDns>(*env.resolver);
    dns = c.resolver_dns_.get();
  }
  if (dns != nullptr) {
    c.next_hops_ =
        std::make_unique<delivery::NextHopResolver>(c.options_.mx, *dns, clock, *env.random);
  }
  c.destinations_ = std::make_unique<delivery::Destinations>(c.options_.shaping, clock);
  c.scheduler_->SetGate(c.destinations_.get());
  c.sources_ = std::make_unique<delivery::Sources>(c.options_.sources, clock, *env.random);
  c.source_links_ = std::make_unique<SourceLinks>(*c.sources_, *options.metrics);
  EgressOptions egress = options.egress;
  egress.shard = options.index;
  egress.helo_name = options.session.hostname;
  c.pools_ = std::make_unique<delivery::Pools>(*env.net, *env.timers, clock, std::move(egress),
                                               static_cast<delivery::PoolListener&>(c));
  // This shard's TLS client contexts (session caches are per shard; CA files read here).
  auto contexts = delivery::MakeClientContexts(*options.destinations);
  if (!contexts.ok()) {
    return contexts.status();
  }
  c.pools_->UseTls(std::move(*contexts));
  c.pools_->UseControl(c.destinations_.get());
  if (!c.options_.sources.pools.empty()) {
    c.pools_->UseSources(c.source_links_.get(), &c.options_.sources);
  }
  c.outbound_ = std::make_unique<delivery::PoolsOutbound>(*c.pools_);
  delivery::DeliveryOptions delivery_options;
  // Route templates (egress); names and MX hosts resolved here on the shard's resolver. With
  // no DNS (no route needs it), the templates' endpoints are used as they are.
  delivery_options.next_hops.routes = options.destinations;
  delivery_options.next_hops.resolver = c.next_hops_.get();
  delivery_options.next_hops.destinations =
      c.next_hops_ != nullptr ? c.destinations_.get() : nullptr;
  delivery_options.next_hops.mx_port = options.mx.port;
  delivery_options.next_hops.hosts_per_attempt_max = options.hosts_per_attempt_max;
  delivery_options.plan.shard = options.index;
  delivery_options.plan.pid = env.pid;
  delivery_options.plan.hostname = options.session.hostname;
  delivery_options.plan.delay_warning_ms = options.delay_warning_ms;
  delivery_options.recipients_per_transaction_max = options.recipients_per_transaction_max;
  delivery_options.report_boundary = env.report_boundary;
  delivery_options.classifier = options.bounce_classifier;
  ShardMetrics& m = *options.metrics;
  c.delivery_ = std::make_unique<delivery::Delivery>(
      std::move(delivery_options), *c.scheduler_, *c.spool_, *options.router, clock, *env.worker,
      *c.outbound_,
      delivery::DeliveryMetrics{&m.attempts, &m.bounces, &m.maildir_mailboxes_recreated,
                                &m.maildir_directories_forgotten, &m.time_to_delivered,
                                &m.bounce_classes});
  IngressOptions ingress_options = IngressOptionsOf(options);
  ingress_options.auth = env.auth;
  if (!options.tls.certificates.empty()) {
    // This shard's own context (no lock per connection); its ticket keys are the other
    // shards' too, derived from the one secret.
    auto tls = tls::ServerContext::Create(options.tls);
    if (!tls.ok()) {
      return tls.status();  // Names the file ("tls: cannot read ...").
    }
    c.tls_ = std::move(*tls);
    ingress_options.tls = c.tls_.get();
  }
  c.ingress_ =
      std::make_unique<Ingress>(std::move(ingress_options), *env.net, *env.timers, clock, *c.spool_,
                                *c.scheduler_, env.resolver, *env.random, *env.limiter, *c.log_, m);
  c.admin_service_ = std::make_unique<AdminService>(
      options.index, *c.spool_, *c.scheduler_, clock,
      [&c] {
        return ShardCounts{c.ingress_->connections(), c.metrics_.messages_accepted.value(),
                           c.delivery_->attempts_started()};
      },
      c.destinations_.get());
  return core;
}

int64_t ShardCore::MsUntilWork(int64_t bound_ms) const {
  int64_t timeout_ms = bound_ms;
  const int64_t next_tick = env_.timers->MsUntilNextTick(env_.clock->MonotonicMs());
  if (next_tick >= 0 && next_tick < timeout_ms) {
    timeout_ms = next_tick;
  }
  const int64_t next_retry = scheduler_->MsUntilNextDue();
  if (next_retry >= 0 && next_retry < timeout_ms) {
    timeout_ms = next_retry;
  }
  const int64_t next_wake = destinations_->MsUntilWake();  // A parked destination reopens.
  if (next_wake >= 0 && next_wake < timeout_ms) {
    timeout_ms = next_wake;
  }
  if (ingress_->busy() || pools_->busy()) {
    return 0;
  }
  return stopping_ ? std::min<int64_t>(timeout_ms, 50) : timeout_ms;
}

void ShardCore::Turn() {
  const uint64_t now = env_.clock->MonotonicMs();
  env_.timers->Advance(now);
  ingress_->RetryAccepts(now);
  ingress_->PumpDirty();
  // Destinations whose gate opened take attempts again, those a reply rule bounced return
  // their queues; once a second queued counts, then idle destinations are forgotten.
  std::vector<delivery::DestinationId> forgotten;
  delivery_->Upkeep(&forgotten);
  for (const delivery::DestinationId id : forgotten) {
    sources_->Forget(id);
    census_.erase(id);
  }
  if (now >= next_second_ms_) {
    next_second_ms_ = now + kSecondMs;
    EverySecond(now);
  }
  delivery_->Tick();
  // Destination objects of forgotten (or re-resolved) destinations, once no task holds them:
  // the pools drop their record first.
  delivery_->ForgetDestinations([this](const delivery::Destination& d) { pools_->Forget(d); });
  pools_->Pump();
  PublishMetrics();
  // Everything appended this turn (messages and delivery outcomes) shares one write and one
  // fdatasync.
  spool_->Flush();
  log_->Flush();
  delivery_->FlushLog();
}

void ShardCore::BeginStop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  stop_deadline_ms_ = env_.clock->MonotonicMs() + options_.shutdown_grace_ms;
  ingress_->BeginStop();  // No more accepts; every session is told 421 when it may be.
  delivery_->Stop();
  pools_->Stop();
  log::Emit(log::Level::kInfo, static_cast<int>(options_.index), "stopping",
            {{"connections", ingress_->connections()}, {"grace_ms", options_.shutdown_grace_ms}});
}

bool ShardCore::StopComplete(bool others_done) {
  const uint64_t now = env_.clock->MonotonicMs();
  if (!forced_ && now >= stop_deadline_ms_) {
    forced_ = true;
    ingress_->ForceStop();
  }
  if (ingress_->connections() == 0 && delivery_->idle() && pools_->idle() && spool_->idle() &&
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

void ShardCore::OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                           std::string_view next_hop) {
  delivery_->OnOutboundDone(id, std::move(results), next_hop);
}

void ShardCore::EverySecond(uint64_t now_ms) {
  (void)now_ms;
  // The bounded destination families: the top by queued, then "other".
  delivery::DestinationView rest;
  std::vector<DestinationSample> samples;
  for (const delivery::DestinationView& v : destinations_->Top(kTopDestinations, &rest)) {
    samples.push_back({v.name.empty() ? v.key : v.name, static_cast<int64_t>(v.queued),
                       static_cast<int64_t>(v.connections)});
  }
  if (destinations_->size() > samples.size()) {
    samples.push_back(
        {"other", static_cast<int64_t>(rest.queued), static_cast<int64_t>(rest.connections)});
  }
  metrics_.SetTopDestinations(std::move(samples));
  // Every destination's state and backoffs (linear: not every second). A suspension that
  // starts and ends between two censuses is not counted.
  if (seconds_++ % kCensusSeconds != 0) {
    return;
  }
  std::array<int64_t, delivery::kDestinationStateNames.size()> by_state{};
  for (const delivery::DestinationView& v : destinations_->All()) {
    ++by_state[static_cast<size_t>(v.state)];
    auto [it, added] = census_.try_emplace(v.id, 0, delivery::DestinationState::kActive);
    if (v.backoffs > it->second.first) {
      metrics_.destination_backoffs.Add(v.backoffs - it->second.first);
    }
    if (v.state == delivery::DestinationState::kSuspended &&
        it->second.second != delivery::DestinationState::kSuspended) {
      metrics_.destination_suspensions.Add();
    }
    it->second = {v.backoffs, v.state};
  }
  for (size_t i = 0; i < by_state.size(); ++i) {
    metrics_.destinations[i].Set(by_state[i]);
  }
}

void ShardCore::PublishMetrics() {
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
  const delivery::PoolCounters& e = pools_->counters();
  metrics_.egress_connections_opened.Mirror(e.connections_opened);
  metrics_.egress_connect_failures.Mirror(e.connect_failures);
  metrics_.egress_tasks_retried.Mirror(e.tasks_retried);
  metrics_.egress_connections.Set(pools_->connections());
  metrics_.egress_connections_unused.Mirror(e.connections_unused);
  metrics_.egress_converted_7bit.Mirror(e.converted_7bit);
  metrics_.egress_not_convertible.Mirror(e.not_convertible);
  metrics_.egress_smtputf8_not_needed.Mirror(e.smtputf8_not_needed);
  metrics_.egress_tls_handshakes_ok.Mirror(e.tls_handshakes_ok);
  metrics_.egress_tls_resumed.Mirror(e.tls_resumed);
  metrics_.egress_tls_handshakes_failed.Mirror(e.tls_handshakes_failed);
  metrics_.egress_tls_handshakes_timed_out.Mirror(e.tls_handshakes_timed_out);
  metrics_.egress_tls_not_offered.Mirror(e.tls_not_offered);
  metrics_.egress_tls_plaintext_fallbacks.Mirror(e.tls_plaintext_fallbacks);
  metrics_.log_lines_dropped.Mirror(log_->dropped());
  if (next_hops_ != nullptr) {
    const delivery::NextHopResolverStats& r = next_hops_->stats();
    const uint64_t failed = r.null_mx + r.nxdomain + r.temporary + r.loops;
    metrics_.mx_lookups[0].Mirror(r.evaluations > failed ? r.evaluations - failed : 0);
    metrics_.mx_lookups[1].Mirror(r.null_mx);
    metrics_.mx_lookups[2].Mirror(r.nxdomain);
    metrics_.mx_lookups[3].Mirror(r.temporary);
    metrics_.mx_lookups[4].Mirror(r.loops);
  }
}

}  // namespace relais::relaisd
