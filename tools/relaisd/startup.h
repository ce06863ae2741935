// tools/relaisd/startup.h — the steps of relaisd's life between reading the config and exiting,
// each one function that main.cc calls in order: check the environment, open the admin socket,
// bind the listeners, create the shards, run them, stop.
//
// Everything here runs on the startup thread; once Run() starts the shard threads, the only
// thing the startup thread does is wait for them. Failures are absl::Status naming the thing
// (path, address, errno text); main prints them and exits 1.
#pragma once

#include <sys/resource.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/net/listener.h"
#include "core/uring/mesh.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dns/hosts_file.h"
#include "queue/routing/router.h"
#include "tools/relaisd/config_schema.h"
#include "tools/relaisd/connection_limiter.h"
#include "tools/relaisd/recipient_policy.h"
#include "tools/relaisd/shard.h"

namespace relais::relaisd {

// What this machine and process give the run, decided once before any shard exists.
struct Environment {
  std::vector<int> cpus;  // CPUs we may run on; shard i is pinned to cpus[i % cpus.size()].
  uint32_t shards = 1;
  uint64_t descriptor_limit = 0;  // RLIMIT_NOFILE after raising the soft limit to the hard one.
  uint64_t memory_bytes = 0;      // The machine's, or the cgroup's memory.max when lower.
  int signal_fd = -1;             // SIGTERM, SIGINT, SIGUSR1; every thread blocks them.
};

// Probes io_uring, counts CPUs and shards (`threads_flag` > 0 overrides server.threads), opens
// the log file and starts the log writer, blocks the signals for a signalfd, keys the queue IDs,
// and takes the spool's lock (one daemon per spool).
[[nodiscard]] absl::StatusOr<Environment> CheckEnvironment(const Config& config,
                                                           uint32_t threads_flag);

// The sockets bound before the shards start: SMTP (one SO_REUSEPORT socket per shard and
// address), the admin socket and the metrics endpoint (shard 0 serves both).
struct Sockets {
  int admin_fd = -1;
  net::Listeners smtp;
  std::optional<net::Listeners> metrics;  // None when metrics.listen is empty.
};
// Binds the admin socket first: a live daemon on it means the spool is in use.
[[nodiscard]] absl::StatusOr<int> OpenAdminSocket(const Config& config);
[[nodiscard]] absl::StatusOr<Sockets> BindListeners(const Config& config, const Environment& env,
                                                    int admin_fd);

// limits.receive_bytes_max = 0: a quarter of `memory_bytes` for messages being received, split
// over the shards, between 16 MiB and 1 GiB per shard, and never less than one largest message.
[[nodiscard]] uint64_t DefaultReceiveBytesMax(uint64_t memory_bytes, uint32_t shards,
                                              uint64_t message_bytes_max);
// Session slots per shard: connections_max could all land on one shard, and refused clients
// hold a slot for their 421 until they leave; the kernel caps a registered-file table at the
// descriptor limit (and 2^20 entries).
[[nodiscard]] uint32_t SessionSlots(const Config& config, uint64_t descriptor_limit);

// The secret every shard derives the same session-ticket keys from: the bytes of
// tls.ticket_secret_file (at least 32; the file must not be open to group or others), or, when
// that is empty, 32 random bytes for this run. Empty without a certificate (no TLS).
[[nodiscard]] absl::StatusOr<std::string> TicketSecret(const Config& config);

// What every shard shares: built once, read by all, outliving the shard threads.
struct Shared {
  explicit Shared(const Config& config);
  routing::Router router;
  RouterPolicy policy;
  // The destination template of every route, by route index (egress.h).
  std::vector<std::optional<Destination>> destinations;
  // [bounce]: the shipped rules after class_rules_file's; made by CreateShards.
  std::unique_ptr<const delivery::BounceClassifier> bounce_classifier;
  // /etc/hosts, read once here: route host names are looked up in it before DNS (mx.h).
  std::shared_ptr<const dns::HostsTable> hosts;
};

// The bounce classifier: bounce.class_rules_file read (when set) before the shipped rules. An
// error names the file (and the line, from the classifier).
[[nodiscard]] absl::StatusOr<std::unique_ptr<const delivery::BounceClassifier>>
LoadBounceClassifier(const Config& config);

// The options every shard starts from: config.shard plus what only exists at run time (the
// thread count's shares, the shared objects, one auth policy and one TLS mode per listen
// address, the certificates; not the ticket secret; [mx] self_names and self_addresses with
// server.hostname and the listen addresses that are not wildcards added). Pure.
[[nodiscard]] ShardOptions BaseShardOptions(const Config& config, const Environment& env,
                                            const Shared& shared);

// The shards and everything they point into. Not movable: the shards hold its addresses.
struct Shards {
  explicit Shards(const Config& config);
  Shards(const Shards&) = delete;
  Shards& operator=(const Shards&) = delete;

  Shared shared;
  ConnectionLimiter limiter;
  std::unique_ptr<uring::Mesh> mesh;
  // One metrics block per shard, each on cache lines of its own; read by the endpoint.
  std::vector<std::unique_ptr<ShardMetrics>> metrics_blocks;
  std::vector<const ShardMetrics*> all_metrics;
  // DKIM signing keys, loaded once per shard so that no key is shared between threads: by From
  // domain, and those of [[dkim_sign]] tables with users.
  std::vector<std::vector<authcheck::SigningKey>> signing_keys;
  std::vector<std::vector<UserSigningKey>> user_signing_keys;
  std::atomic<uint32_t> running{0};
  ShardOptions base;
  std::vector<std::unique_ptr<Shard>> shards;
};

// Loads the signing keys, the ticket secret and the SMTP AUTH credentials, creates and recovers
// each shard, and gives shard 0 the signals, the
// admin socket and the metrics endpoint. Logs "listening" and "ready".
[[nodiscard]] absl::StatusOr<std::unique_ptr<Shards>> CreateShards(const Config& config,
                                                                   const Environment& env,
                                                                   const Sockets& sockets);

// Runs each shard on a thread of its own, pinned, until a graceful stop ends them all.
void Run(Shards& shards, const Environment& env);

// After the shards have ended: removes the admin socket, logs "stopped".
void Stop(const Config& config);

}  // namespace relais::relaisd
