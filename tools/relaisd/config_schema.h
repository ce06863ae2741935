// tools/relaisd/config_schema.h — relaisd's configuration: which [tables] and keys its TOML file
// has, read into one aggregate of the modules' own option structs.
//
// Each key binds to a member of a module's options (smtp::SessionOptions, spool::SpoolOptions,
// scheduler::SchedulerOptions, EgressOptions, dns::ResolverOptions, authcheck::HeaderLimits and
// Policy, ShardOptions) or, for what only the daemon uses, of DaemonOptions; its default is that
// member's default initializer, written once. The key list itself, its bounds and docs, the
// [[routes]], [[dkim_sign]] and [[auth.listener]] tables and the cross-key checks (the open
// relay refusal among them) are in config_schema.cc; core/config does the reading. Loaded on the
// startup thread; the shards receive copies of `shard`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/config/route.h"
#include "core/mail/ip_network.h"
#include "protocols/authcheck/authcheck.h"
#include "protocols/dkim/dkim.h"
#include "tools/relaisd/shard.h"

namespace relais::relaisd {

// Keys no module of its own reads: the process, its sockets and the cross-shard limits.
struct DaemonOptions {
  // [server]
  std::string hostname;  // Empty in the file: the machine's host name (filled in at load).
  uint32_t threads = 0;  // 0: one shard per online CPU.
  std::vector<std::string> listen = {"127.0.0.1:2525"};
  // relaisctl's way in; mode 0600, in a directory only our user can write (created 0700).
  std::string admin_socket = "./var/run/relaisd.sock";
  // [limits] All shards together (ConnectionLimiter).
  uint32_t connections_max = 10'000;
  uint32_t connections_per_ip_max = 100;
  bool connections_per_ip_exempt_relay_networks = true;  // As Postfix exempts mynetworks.
  uint64_t receive_bytes_max = 0;  // Per shard; 0: a quarter of the memory, shared by shards.
  // [relay]
  bool open_relay_acknowledged = false;  // Else loading refuses an open relay.
  // [log]
  uint64_t log_queue_bytes_max = 4 << 20;  // Backlog per log producer before lines drop.
  // [metrics]
  std::string metrics_listen = "127.0.0.1:9025";  // Prometheus endpoint; empty: none.
  uint32_t metrics_request_timeout_ms = 2000;     // Idle scrapers cannot hold a slot longer.
  // [delivery] All shards together; each shard gets its share (at least one).
  uint32_t connections_per_destination_max = 20;
  // [auth]
  std::string authserv_id;  // Empty in the file: server.hostname (filled in at load).
};

// [[dkim_sign]]: a key that signs outgoing mail (DKIM, RFC 6376): mail from trusted clients
// (relay networks, auth.skip_networks) whose From domain is `domain` or below it gets a signature
// with d=domain. Several entries for one domain sign twice (e.g. Ed25519 and RSA, RFC 8463).
struct DkimSigning {
  dkim::SignOptions options;  // domain, selector, canonicalizations, headers (default: the usual).
  std::string key_file;       // PKCS #8 PEM, RSA or Ed25519; the algorithm follows the key.
};

// [[auth.listener]]: the policy for the connections of one server.listen address, where it
// differs from [auth] (e.g. checks off on a submission port whose clients authenticate
// otherwise). Unset fields keep [auth]'s value.
struct AuthListener {
  std::string listen;  // One of server.listen, as written there.
  std::optional<authcheck::Mode> spf, dkim, dmarc;
  std::optional<bool> defer_temperror;  // temperror = "defer" | "accept".
};

// The whole file. `shard` holds every module's options; main fills in what only exists at run
// time (the shard's index, pointers to shared objects, values derived from the thread count).
struct Config {
  Config();  // The modules' defaults, and the daemon's where they differ (relay.local_domains).

  DaemonOptions daemon;
  ShardOptions shard;
  authcheck::Policy auth;  // [auth]: every listener's policy unless an [[auth.listener]] says.
  std::vector<AuthListener> auth_listeners;
  std::vector<DkimSigning> dkim_sign;
  std::vector<config::Route> routes = {
      config::Route{"*", config::RouteType::kMaildir, "./var/mail", {}, {}}};

  // The [auth] policy for the connections of `listen` (one of daemon.listen).
  [[nodiscard]] authcheck::Policy AuthFor(const std::string& listen) const;
};

// Parses TOML text; `source` names the file in error messages. Refuses, naming the keys, relay
// rules that let any client relay to any domain unless relay.open_relay_acknowledged is set.
[[nodiscard]] absl::StatusOr<Config> ParseConfig(std::string_view toml_text,
                                                 std::string_view source);
// Reads and parses a file.
[[nodiscard]] absl::StatusOr<Config> LoadConfigFile(const std::string& path);
// The built-in quick-start configuration (what relaisd runs without --config), as TOML with
// a comment per key: the key defaults, but relay.local_domains = ["*"].
[[nodiscard]] std::string DefaultToml();
// DefaultToml(), parsed.
[[nodiscard]] absl::StatusOr<Config> QuickStart();

// Empty when the relay rules are closed; otherwise what opens them, naming the keys
// (config_open_relay.cc).
[[nodiscard]] std::string OpenRelayProblem(const Config& config);

}  // namespace relais::relaisd
