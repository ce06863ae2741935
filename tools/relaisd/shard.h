// tools/relaisd/shard.h — one pinned thread and everything it owns: its io_uring engine, its
// timers, its spool and scheduler, its DNS resolver, its log and metrics, and the units that do
// the work on them: Ingress (ingress.h: listeners' accepts, SMTP sessions, the checks, the
// commit to the spool), the delivery driving (delivery worker and egress pools), and on shard 0
// the admin service (admin_service.h) and the metrics endpoint. The shard is the loop and the
// wiring: it creates those units over its engine, timers, clock and spool, routes mesh
// handoffs, and stops them in order.
//
// One loop turn: run completions (network, spool, mesh wake-ups), fire due timers, pump every
// connection that changed (Ingress::PumpDirty: store finished messages, send replies, re-arm
// receives), start due deliveries, publish metrics, then start one group commit of everything
// appended this turn. Replies produced in a turn leave in one send per connection; the SQEs of
// a turn are submitted together with the wait.
//
// Created on the startup thread (so errors reach main), then run on its own thread. Not
// thread-safe: other shards reach it only through the mesh.
#pragma once

#include <sys/signalfd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/log/shard_log.h"
#include "core/net/request_server.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "core/uring/mesh.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dns/resolver.h"
#include "protocols/smtp/server_session.h"
#include "queue/delivery/delivery.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"
#include "tools/relaisd/admin.h"
#include "tools/relaisd/admin_service.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/delivery_worker.h"
#include "tools/relaisd/egress.h"
#include "tools/relaisd/ingress.h"
#include "tools/relaisd/metrics_endpoint.h"
#include "tools/relaisd/shard_metrics.h"
#include "tools/relaisd/shard_resolver.h"

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
};

// Handoff kinds on the mesh: a stop (from shard 0's signal reader), an admin query (from shard
// 0's AdminServer to a shard's AdminService) and its answer (back to shard 0).
enum class HandoffKind : uint16_t { kStop = 1, kAdminQuery = 2, kAdminAnswer = 3 };

class Shard final : delivery::PoolListener {
 public:
  // Opens the engine and the spool, and recovers the spool.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Shard>> Create(const ShardOptions& options,
                                                                     std::vector<int> listen_fds,
                                                                     ConnectionLimiter& limiter,
                                                                     uring::Mesh& mesh);
  ~Shard();

  // Shard 0 watches the process's signals; SIGTERM/SIGINT stop every shard gracefully.
  void WatchSignals(int signal_fd) { signal_fd_ = signal_fd; }
  // Shard 0 serves the admin socket (already bound and listening).
  void ServeAdmin(int listen_fd) { admin_fd_ = listen_fd; }
  // Shard 0 serves the metrics endpoint (already bound and listening).
  void ServeMetrics(int listen_fd, uint32_t request_timeout_ms) {
    metrics_fd_ = listen_fd;
    metrics_request_timeout_ms_ = request_timeout_ms;
  }
  // Runs the loop on the calling thread until a graceful stop completes.
  void Run();

 private:
  class SignalReader;
  class DeliveryReader;

  Shard(const ShardOptions& options, std::vector<int> listen_fds, ConnectionLimiter& limiter,
        uring::Mesh& mesh, std::unique_ptr<uring::Engine> engine);

  // Gauges and mirrored totals, once per loop turn.
  void PublishMetrics();
  void OnHandoff(uint32_t from, uring::Handoff&& handoff);
  // In order; a handoff a full ring refuses waits in the outbox and is retried every turn.
  void SendToShard(uint32_t to, uring::Handoff&& handoff);
  // Hands every result the delivery worker has ready to delivery_.
  void OnDeliveriesDone();
  void OnPoolDone(uint64_t id, std::vector<smtp::RecipientReply>&& results,
                  std::string_view next_hop) override;
  void BeginStop();
  [[nodiscard]] bool StopComplete();

  const ShardOptions options_;
  std::vector<int> listen_fds_;
  ConnectionLimiter& limiter_;
  std::unique_ptr<uring::Engine> engine_;
  base::SystemClock clock_;
  std::unique_ptr<ShardResolver> resolver_;  // Null when every check is off.
  timer::TimerWheel timers_;
  std::unique_ptr<spool::Spool> spool_;
  uring::MeshPort port_;

  std::unique_ptr<SignalReader> signal_reader_;
  base::Random random_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<DeliveryWorker> worker_;  // Destroyed (joined) before the engine.
  std::unique_ptr<DeliveryReader> delivery_reader_;
  std::unique_ptr<delivery::Pools> egress_;  // Before the worker's results.
  std::unique_ptr<delivery::PoolsOutbound> outbound_;
  // Delivery driving (queue/delivery): destroyed before what it references.
  std::unique_ptr<delivery::Delivery> delivery_;
  int signal_fd_ = -1;
  int admin_fd_ = -1;
  std::deque<std::pair<uint32_t, uring::Handoff>> outbox_;  // Handoffs a full ring refused.
  // They use the engine, timers, spool and scheduler above, so they die before those (and
  // touch no later member while they die).
  std::unique_ptr<AdminService> admin_service_;  // Answers admin queries about this shard.
  std::unique_ptr<AdminServer> admin_;           // Shard 0 only: the admin socket.
  std::unique_ptr<Ingress> ingress_;             // Inbound SMTP: sessions, checks, commits.

  bool stopping_ = false;
  bool forced_ = false;
  uint64_t stop_deadline_ms_ = 0;
  ShardMetrics& metrics_;
  std::unique_ptr<log::ShardLog> log_;  // Reception and session lines, written by the engine.
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<net::RequestServer> metrics_server_;  // Before metrics_endpoint_ dies.
  int metrics_fd_ = -1;
  uint32_t metrics_request_timeout_ms_ = 2000;
};

}  // namespace relais::relaisd
