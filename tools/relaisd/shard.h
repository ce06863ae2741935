// tools/relaisd/shard.h — one pinned thread and everything it owns: its io_uring engine, its
// timers, its DNS resolver, its delivery worker thread, and its ShardCore (shard_core.h: the
// spool and scheduler, Ingress, the delivery driving and the outbound pools, the admin service,
// the shard's log, and what one loop turn does with them). On shard 0 it also serves the admin
// socket (admin_service.h) and the metrics endpoint, and watches the process's signals. The
// shard is the loop over its engine: it creates the core over the engine's net and io, routes
// mesh handoffs, wakes the worker and hands its results to the core, and stops in order.
//
// One loop turn: wait in the engine for completions (network, spool, mesh wake-ups, the
// worker's results) no longer than the core and the resolver allow, drain the mesh, then the
// core's Turn (timers, connections, deliveries, pools, metrics, one group commit), then wake
// the worker for the jobs that turn submitted. Replies produced in a turn leave in one send per
// connection; the SQEs of a turn are submitted together with the wait.
//
// Created on the startup thread (so errors reach main), then run on its own thread. Not
// thread-safe: other shards reach it only through the mesh.
#pragma once

#include <sys/signalfd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/net/request_server.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"
#include "core/uring/mesh.h"
#include "tools/relaisd/admin.h"
#include "tools/relaisd/admin_service.h"
#include "tools/relaisd/auth_verifier.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/delivery_worker.h"
#include "tools/relaisd/metrics_endpoint.h"
#include "tools/relaisd/shard_core.h"
#include "tools/relaisd/shard_resolver.h"

namespace relais::relaisd {

// Handoff kinds on the mesh: a stop (from shard 0's signal reader), an admin query (from shard
// 0's AdminServer to a shard's AdminService) and its answer (back to shard 0).
enum class HandoffKind : uint16_t { kStop = 1, kAdminQuery = 2, kAdminAnswer = 3 };

class Shard final {
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
  class AuthReader;

  Shard(const ShardOptions& options, std::vector<int> listen_fds, ConnectionLimiter& limiter,
        uring::Mesh& mesh, std::unique_ptr<uring::Engine> engine);

  // The resolver's series, once per loop turn (the core publishes the rest).
  void PublishResolverMetrics();
  void OnHandoff(uint32_t from, uring::Handoff&& handoff);
  // In order; a handoff a full ring refuses waits in the outbox and is retried every turn.
  void SendToShard(uint32_t to, uring::Handoff&& handoff);
  // Hands every result the delivery worker has ready to the core.
  void OnDeliveriesDone();
  void BeginStop();

  const ShardOptions options_;
  std::vector<int> listen_fds_;
  ConnectionLimiter& limiter_;
  std::unique_ptr<uring::Engine> engine_;
  base::SystemClock clock_;
  std::unique_ptr<ShardResolver> resolver_;  // Null when no check and no next hop needs DNS.
  timer::TimerWheel timers_;
  uring::MeshPort port_;

  std::unique_ptr<SignalReader> signal_reader_;
  base::Random random_;
  // SMTP AUTH password checks on a helper thread (null without credentials); after the
  // timers it holds answers on, destroyed after the core's sessions.
  std::unique_ptr<AuthVerifier> auth_;
  // The units and the loop turn. Destroyed after the worker has finished and joined, before
  // the engine, timers and resolver it runs on.
  std::unique_ptr<ShardCore> core_;
  std::unique_ptr<DeliveryWorker> worker_;
  std::unique_ptr<DeliveryReader> delivery_reader_;
  std::unique_ptr<AuthReader> auth_reader_;
  int signal_fd_ = -1;
  int admin_fd_ = -1;
  std::deque<std::pair<uint32_t, uring::Handoff>> outbox_;  // Handoffs a full ring refused.
  std::unique_ptr<AdminServer> admin_;  // Shard 0 only: the admin socket (over the core's service).
  ShardMetrics& metrics_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<net::RequestServer> metrics_server_;  // Before metrics_endpoint_ dies.
  int metrics_fd_ = -1;
  uint32_t metrics_request_timeout_ms_ = 2000;
};

}  // namespace relais::relaisd
