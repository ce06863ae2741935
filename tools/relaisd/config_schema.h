// tools/relaisd/config_schema.h — relaisd's configuration: which [tables] and keys its TOML file
// has, read into one aggregate of the modules' own option structs.
//
// Each key binds to a member of a module's options (smtp::SessionOptions, spool::SpoolOptions,
// scheduler::SchedulerOptions, EgressOptions, dns::ResolverOptions, authcheck::HeaderLimits and
// Policy, ShardOptions) or, for what only the daemon uses, of DaemonOptions; its default is that
// member's default initializer, written once. The key list itself, its bounds and docs, the
// [[routes]], [[dkim_sign]], [[auth.listener]], [[tls.certificate]] and [[listener]] tables and
// the cross-key checks (the open relay refusal, listeners that need a certificate) are in
// config_schema.cc; core/config does the reading. MX delivery's tables ([mx], [shaping],
// [[shaping.rule]], [[shaping.reply]], [[source]], [[source_pool]], [bounce]) fill
// shard.mx, shard.shaping and shard.sources (docs/mx-delivery.md, "Configuration"); a file
// whose routes have no catch-all ("*") route gets the implicit {domain = "*", type = "mx"}
// last. Loaded on the
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
// With `users`, the key signs the mail of those authenticated (SMTP AUTH) users instead,
// whatever its From domain is below `domain` or not.
struct DkimSigning {
  dkim::SignOptions options;  // domain, selector, canonicalizations, headers (default: the usual).
  std::string key_file;       // PKCS #8 PEM, RSA or Ed25519; the algorithm follows the key.
  std::vector<std::string> users;  // SMTP AUTH user names; empty: chosen by From domain.
};

// [[tls.certificate]]: one chain (PEM, leaf first) and its key; several are chosen by SNI,
// then by what the client supports (ECDSA or RSA).
struct TlsCertificate {
  std::string chain;
  std::string key;
};

// [tls] and its certificates. Durations are written as "10s", "15m", "1h"; the text is kept as
// written (for --print-default-config) and read into the numeric fields at load.
struct TlsConfig {
  std::vector<TlsCertificate> certificates;  // None: no TLS listener, no STARTTLS.
  std::string handshake_timeout = "10s";
  std::string ticket_rotation = "1h";
  // >= 32 random bytes (mode 0600 or stricter) shared by several daemons; empty: one random
  // secret per daemon start, shared by its shards.
  std::string ticket_secret_file;
  std::string fallback_ttl = "1h";  // Outbound tls = "may": plaintext for a failed hop this long.
  uint32_t handshake_timeout_ms = 10'000;
  uint32_t ticket_rotation_s = 3600;
  uint32_t fallback_ttl_s = 3600;
};

// [[listener]]: per-address settings of one server.listen address.
// ListenerTls and ListenerSecurity (what the address ends up with) are Ingress's (ingress.h).
struct Listener {
  std::string listen;              // One of server.listen, as written there.
  std::optional<ListenerTls> tls;  // Unset: kStartTls when a certificate exists, else kOff.
  bool trusted = false;            // Local submission: AUTH offered without TLS.
};

// [smtp_auth]: SMTP AUTH (RFC 4954) for clients, offered over TLS or on trusted listeners.
struct SmtpAuthConfig {
  std::string credentials;             // user:hash[:domain,...] lines; empty: AUTH not offered.
  bool require_sender_owned = false;   // MAIL FROM / From: domains the user owns, else 553 5.7.1.
  uint32_t failures_before_delay = 3;  // Per client address and per user.
  uint32_t lockout_failures = 10;
  std::string lockout_time = "15m";
  uint32_t lockout_time_ms = 900'000;
};

// [[auth.listener]]: the policy for the connections of one server.listen address, where it
// differs from [auth] (e.g. checks off on a submission port whose clients authenticate
// otherwise). Unset fields keep [auth]'s value.
struct AuthListener {
  std::string listen;  // One of server.listen, as written there.
  std::optional<authcheck::Mode> spf, dkim, dmarc;
  std::optional<bool> defer_temperror;  // temperror = "defer" | "accept".
};

// [mx], [shaping] and [bounce] values the file writes in another form than the module's member
// holds (a port, addresses, a rate, a file, pool members by name): read as written, then
// converted into shard.mx, shard.shaping and shard.sources at load (and the rules file read
// at start, startup.cc).
struct MxConfig {
  uint32_t port = 25;                       // Into shard.mx.port.
  uint32_t hosts_per_attempt_max = 5;       // Into every mx route's template (egress).
  std::vector<std::string> self_addresses;  // Into shard.mx.self_addresses.
  std::string rate = "0";                   // [shaping] rate, into shard.shaping.defaults.rate.
  std::string class_rules_file;             // [bounce]: read at start.
  std::vector<std::vector<std::string>> pool_sources;  // Per [[source_pool]], its sources' names.
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
  TlsConfig tls;
  std::vector<Listener> listeners;
  SmtpAuthConfig smtp_auth;
  MxConfig mx;

  // The [auth] policy for the connections of `listen` (one of daemon.listen).
  [[nodiscard]] authcheck::Policy AuthFor(const std::string& listen) const;
  // The TLS mode and trust of `listen` (one of daemon.listen).
  [[nodiscard]] ListenerSecurity ListenerFor(const std::string& listen) const;
};

// "10s", "1500ms", "15m", "1h", "2d" in milliseconds; nullopt for anything else.
[[nodiscard]] std::optional<uint64_t> ParseDurationMs(std::string_view text);

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
// True for a domain pattern that takes a whole top-level domain or public suffix, or more ("*",
// "*.com", "*.co.uk"): domains anyone may register (config_open_relay.cc).
[[nodiscard]] bool AnywherePattern(std::string_view pattern);

}  // namespace relais::relaisd
