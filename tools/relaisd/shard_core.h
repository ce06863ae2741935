// tools/relaisd/shard_core.h — the part of a shard that does not know its engine: the units and
// their wiring (the spool and scheduler, Ingress, the delivery driving and the outbound pools, the
// admin service, the shard's log) and what one loop turn does with them. The daemon's Shard
// (shard.h) runs it over its io_uring engine, a system clock and its delivery worker thread;
// the seeded shard simulation (tests/sim/shard_sim_test.cc) runs the very same code over
// io::FakeNet, the simulated disk, a fake clock and a worker run in line. What is left in Shard
// is engine-specific: waiting for completions, the mesh, signals, the worker's eventfd, the DNS
// resolver's sockets, the admin socket and the metrics endpoint.
//
// The loop (its owner's): wait at most MsUntilWork() for completions (sockets, disk, the
// worker's results, which go to OnWorkerDone), then Turn(). Turn: fire due timers, re-arm
// accepts, pump every connection that changed (store finished messages, send replies, re-arm
// receives), start due deliveries, pump the outbound pools, publish metrics, then start one
// group commit of everything appended this turn and flush the log lines. Stop: BeginStop, then
// a turn at a time until StopComplete.
//
// Created and used on the shard's thread only; not thread-safe. Everything in ShardEnv must
// outlive the core.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/io/io.h"
#include "core/io/net.h"
#include "core/log/shard_log.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dns/resolver.h"
#include "protocols/smtp/server_session.h"
#include "protocols/tls/tls.h"
#include "queue/delivery/bounce_class.h"
#include "queue/delivery/delivery.h"
#include "queue/delivery/destinations.h"
#include "queue/delivery/mx.h"
#include "queue/delivery/pools.h"
#include "queue/delivery/sources.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"
#include "tools/relaisd/admin_service.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/egress.h"
#include "tools/relaisd/ingress.h"
#include "tools/relaisd/shard_metrics.h"

namespace relais::relaisd {

struct ShardOptions {
  uint32_t index = 0;
  uint32_t count = 1;
  smtp::SessionOptions session;
  spool::SpoolOptions spool;
  uring::EngineOptions engine;
  uint32_t shutdown_grace_ms = 10'000;
  uint64_t receive_bytes_max = UINT64_MAX;
  // The deadline of one message's transfer (DATA, or every BDAT chunk of one message): a base
  // allowance plus 1/data_rate_min seconds per byte read, never more than the base ahead of the
  // last read, so that a client below the rate over any recent window runs out of time
  // (transfer_deadline.h; Postfix: smtpd_per_request_deadline, smtpd_min_data_rate). The
  // stress base applies while more than stress_connections sessions are open on all shards or
  // more than half of receive_bytes_max is held (checked at every read of the transfer; once
  // seen, for the rest of that transfer).
  uint32_t data_deadline_ms = 300'000;
  uint32_t data_deadline_stress_ms = 10'000;
  uint32_t data_rate_min = 500;  // Bytes per second; at least 1.
  uint32_t stress_connections = UINT32_MAX;
  scheduler::SchedulerOptions scheduler;
  const routing::Router* router = nullptr;  // Required; shared read-only by all shards.
  // Next hops of the router's smarthost and lmtp routes, by route index. Required.
  const std::vector<std::optional<Destination>>* destinations = nullptr;
  EgressOptions egress;             // shard and helo_name are filled in by the shard.
  ShardMetrics* metrics = nullptr;  // Required: this shard's block (it is the only writer).
  // Shards whose loop still runs; each decrements it when it ends. Shard 0, which serves the
  // admin socket and the metrics endpoint, stops last. Required; must outlive the shards.
  std::atomic<uint32_t>* shards_running = nullptr;
  // Every shard's block, for the metrics endpoint (shard 0). Must outlive the shards.
  const std::vector<const ShardMetrics*>* all_metrics = nullptr;
  uint32_t recipients_per_transaction_max = 100;
  // MX delivery (docs/mx-delivery.md): [mx] (self_names and self_addresses with [server]
  // hostname and the listen addresses added by the wiring), [shaping] with its rules, the
  // [[source]] and [[source_pool]] tables. Each shard makes its own resolver, destinations and
  // sources from these.
  delivery::MxOptions mx;
  delivery::ShapingOptions shaping;
  delivery::SourceOptions sources;
  uint32_t hosts_per_attempt_max = 5;  // [mx]: MX hosts tried per attempt.
  // [bounce] class rules: one classifier made at start, immutable, shared read-only by every
  // shard and delivery worker. Null: the shipped rules are not applied (tests).
  const delivery::BounceClassifier* bounce_classifier = nullptr;
  uint32_t maildir_directories_known_max = 16384;  // Per delivery worker (DurableDirs bound).
  uint64_t delay_warning_ms = 4ull * 3600 * 1000;  // RFC 3461 NOTIFY=DELAY reports; 0: never.
  std::string log_file;                            // Reopened by shard 0 on SIGUSR1; empty: stdout.
  // Sessions of the shard: each session's socket lives in the engine's registered-file table,
  // which gets this many slots. Beyond it, new connections are closed without a reply.
  uint32_t connections_per_shard_hard_max = 1024;
  // Inline sender authentication, one policy per listen address (in listen_fds order). With
  // every check off everywhere, no resolver is created.
  std::vector<authcheck::Policy> auth_by_listener;
  // Clients not checked (with relay networks); by default local submitters (loopback).
  std::vector<mail::IpNetwork> auth_skip_networks = {*mail::IpNetwork::Parse("127.0.0.0/8"),
                                                     *mail::IpNetwork::Parse("::1/128")};
  // The header section of every message, from any client, at the end of data.
  authcheck::HeaderLimits header_limits;
  dns::ResolverOptions dns;
  // DKIM keys that sign mail from trusted (unchecked) clients; this shard's own copies. Null or
  // empty: nothing is signed. Must outlive the shard.
  const std::vector<authcheck::SigningKey>* signing_keys = nullptr;
  // Inbound TLS: per listen address (listen_fds order) its mode and trust; the certificates
  // and the ticket secret every shard derives the same ticket keys from (no certificate: no
  // TLS anywhere). Each shard builds its own tls::ServerContext from these at start.
  std::vector<ListenerSecurity> listeners;
  tls::ServerOptions tls;
  uint32_t tls_handshake_timeout_ms = 10'000;
  // SMTP AUTH: the credentials (loaded once at start, immutable, shared read-only by every
  // shard's verifier thread); null: AUTH is not offered. The limiter's bounds.
  std::shared_ptr<const sasl::Credentials> credentials;
  sasl::LoginLimiterOptions login_limits;
  // The daemon's ONE login limiter, made by CreateShards from login_limits and given to every
  // shard's verifier: lockouts count per client and per user across the shards (SO_REUSEPORT
  // spreads a client's connections over them). Null: each verifier makes its own (tests).
  std::shared_ptr<sasl::LoginLimiter> login_limiter;
  bool require_sender_owned = false;
  // Keys of [[dkim_sign]] tables with users; this shard's own copies, like signing_keys.
  const std::vector<UserSigningKey>* user_signing_keys = nullptr;
};

// What the core runs on; its owner provides and keeps it (the daemon: its engine's net and io,
// the system clock, the delivery worker thread; the simulation: fakes).
struct ShardEnv {
  io::Net* net = nullptr;  // Client connections in, next hops out.
  io::Io* io = nullptr;    // The spool's files.
  const base::Clock* clock = nullptr;
  timer::TimerWheel* timers = nullptr;
  base::Random* random = nullptr;
  // Null only when no policy checks anything and no route needs DNS (no mx route, no host
  // name in a smarthost or lmtp route).
  dns::Resolver* resolver = nullptr;
  // Next hops' DNS when there is no resolver (the simulation's fake); with a resolver the core
  // makes its own adapter (delivery::ResolverDns). Null with no resolver: no MX delivery.
  delivery::Dns* dns = nullptr;
  ConnectionLimiter* limiter = nullptr;
  delivery::BlockingWork* worker = nullptr;  // Results come back through OnWorkerDone.
  // SMTP AUTH's password checks (its helper thread's results read by the owner's loop); null
  // when no credentials are configured.
  AuthVerifier* auth = nullptr;
  uint32_t pid = 0;  // For the reports' message ids.
  // A random token from a CSPRNG (>= 96 bits) for a report's MIME boundary.
  std::function<std::string()> report_boundary;
};

class ShardCore final : delivery::PoolListener {
 public:
  // Opens the spool and recovers it (logging what recovery found), rebuilds the queue from it,
  // and creates the units. Nothing is accepted before Start.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ShardCore>> Create(
      const ShardOptions& options, const ShardEnv& env);
  ~ShardCore();
  ShardCore(const ShardCore&) = delete;
  ShardCore& operator=(const ShardCore&) = delete;

  // Starts accepting on `listen_fds` (listening descriptors of the net).
  void Start(const std::vector<int>& listen_fds) { ingress_->Start(listen_fds); }
  // How long the loop may wait for completions before the next Turn: no longer than
  // `bound_ms`, the next timer tick or the next due retry; 0 while connections or links have
  // work; at most 50 ms while stopping.
  [[nodiscard]] int64_t MsUntilWork(int64_t bound_ms) const;
  // One loop turn's work, after the completions (see the header comment).
  void Turn();
  // A result the delivery worker handed back.
  void OnWorkerDone(std::unique_ptr<delivery::JobDone> done) {
    delivery_->OnWorkerDone(std::move(done));
  }

  // Graceful stop: no more accepts (every session is told 421 when it may be), no new
  // delivery attempt; those in flight finish. The grace period starts now.
  void BeginStop();
  // Once per turn while stopping. Past the grace period every session is cut; true once
  // everything is closed, idle and durable (and `others_done`: shard 0 goes last), or, past
  // the grace period and a hard extra, as soon as the spool is idle.
  [[nodiscard]] bool StopComplete(bool others_done);
  [[nodiscard]] const bool& stopping() const { return stopping_; }

  [[nodiscard]] spool::Spool& spool() { return *spool_; }
  [[nodiscard]] scheduler::Scheduler& scheduler() { return *scheduler_; }
  [[nodiscard]] Ingress& ingress() { return *ingress_; }
  [[nodiscard]] delivery::Pools& pools() { return *pools_; }
  [[nodiscard]] delivery::Delivery& delivery() { return *delivery_; }
  [[nodiscard]] AdminService& admin_service() { return *admin_service_; }
  [[nodiscard]] delivery::Destinations& destinations() { return *destinations_; }
  // Null when the shard has no DNS (ShardEnv::resolver and dns both null).
  [[nodiscard]] delivery::NextHopResolver* next_hops() { return next_hops_.get(); }
  [[nodiscard]] log::ShardLog& log() { return *log_; }

 private:
  ShardCore(const ShardOptions& options, const ShardEnv& env);
  void OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                  std::string_view next_hop) override;
  class SourceLinks;  // The pools' LinkSources over sources_, counting connections per source.

  // Gauges and mirrored totals, once per loop turn.
  void PublishMetrics();
  // The destinations' bookkeeping once a second: queued counts from the scheduler, idle ones
  // forgotten, the bounded destination metrics.
  void EverySecond(uint64_t now_ms);

  const ShardOptions options_;
  const ShardEnv env_;
  ShardMetrics& metrics_;
  // In order of construction; each references only those above it.
  std::unique_ptr<log::ShardLog> log_;       // Reception and session lines.
  std::unique_ptr<tls::ServerContext> tls_;  // Null without a certificate.
  std::unique_ptr<spool::Spool> spool_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  // MX delivery: the next hops' DNS (an adapter over env.resolver, or env.dns), their
  // resolver, the destinations (the scheduler's gate and the pools' shaping) and the sources.
  std::unique_ptr<delivery::ResolverDns> resolver_dns_;
  std::unique_ptr<delivery::NextHopResolver> next_hops_;
  std::unique_ptr<delivery::Destinations> destinations_;
  std::unique_ptr<delivery::Sources> sources_;
  std::unique_ptr<SourceLinks> source_links_;
  std::unique_ptr<delivery::Pools> pools_;
  std::unique_ptr<delivery::PoolsOutbound> outbound_;
  std::unique_ptr<delivery::Delivery> delivery_;
  std::unique_ptr<Ingress> ingress_;  // Inbound SMTP: sessions, checks, commits.
  std::unique_ptr<AdminService> admin_service_;
  uint64_t next_second_ms_ = 0;
  uint32_t seconds_ = 0;
  // Backoffs and state per destination at the last census, for the monotonic totals.
  std::unordered_map<uint32_t, std::pair<uint64_t, delivery::DestinationState>> census_;
  bool stopping_ = false;
  bool forced_ = false;
  uint64_t stop_deadline_ms_ = 0;
};

}  // namespace relais::relaisd
