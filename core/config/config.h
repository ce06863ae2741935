// core/config/config.h — the daemon's configuration: one TOML file, validated whole.
//
// Every key is declared once in config.cc (name, type, default, bounds, doc); the same table
// parses, validates, rejects unknown keys and prints the defaults. Errors name the key and the
// line. The result is a plain immutable value: modules receive the parts they need as option
// structs and never read global config. Loaded on the startup thread, off the shards.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/mail/ip_network.h"

namespace relais::config {

enum class RouteType : uint8_t { kMaildir, kSmarthost, kLmtp, kReject };

// Recipient domain → where its mail goes. Delivery itself is the scheduler's (issue #3);
// here routes are parsed and validated so a bad file fails at start, not at first delivery.
struct Route {
  std::string domain;  // "example.com", "*.example.com" or "*".
  RouteType type = RouteType::kMaildir;
  std::string path;                // maildir: root directory.
  std::vector<std::string> hosts;  // smarthost: host:port list, tried in order.
  std::string address;             // lmtp: host:port or unix socket path.
};

// A key that signs outgoing mail (DKIM, RFC 6376): mail from trusted clients (relay networks,
// auth.skip_networks) whose From domain is `domain` or below it gets a signature with d=domain.
// Several entries for one domain sign twice (e.g. Ed25519 and RSA, RFC 8463).
struct DkimSigning {
  std::string domain;
  std::string selector;
  std::string key_file;  // PKCS #8 PEM, RSA or Ed25519; the algorithm follows the key.
  std::string canonicalization = "relaxed/relaxed";
  std::vector<std::string> headers;  // Empty: the usual set (From, To, Subject, Date, ...).
};

// [[auth.listener]]: the policy for the connections of one server.listen address, where it
// differs from [auth] (e.g. checks off on a submission port whose clients authenticate
// otherwise). Unset fields keep [auth]'s value.
struct AuthListener {
  std::string listen;  // One of server.listen, as written there.
  std::optional<std::string> spf, dkim, dmarc, temperror;
};

struct Config {
  // [server]
  std::string hostname;  // Default: the machine's host name.
  uint32_t threads = 0;  // 0: one shard per online CPU.
  std::vector<std::string> listen = {"127.0.0.1:2525"};
  // relaisctl's way in; mode 0600, in a directory only our user can write (created 0700).
  std::string admin_socket = "./var/run/relaisd.sock";
  // [limits]
  uint32_t command_line_bytes_max = 512;    // RFC 5321 4.5.3.1.4, including CRLF.
  uint32_t text_line_bytes_max = 1000;      // RFC 5321 4.5.3.1.6, including CRLF.
  uint64_t message_bytes_max = 26'214'400;  // 25 MiB, advertised as SIZE.
  uint32_t recipients_max = 1000;
  uint32_t errors_max = 10;
  uint32_t connections_max = 10'000;
  uint32_t connections_per_ip_max = 100;
  bool connections_per_ip_exempt_relay_networks = true;  // As Postfix exempts mynetworks.
  uint32_t pipeline_bytes_max = 262'144;  // Unanswered input plus unsent replies per session.
  uint64_t receive_bytes_max = 0;  // Per shard; 0: a quarter of the memory, shared by shards.
  // The header section of a message, checked at the end of data (552 5.3.4 / 554 5.4.6).
  uint64_t header_bytes_max = 100 * 1024;  // Postfix's header_size_limit.
  uint32_t header_fields_max = 1000;
  uint32_t received_max = 50;  // RFC 5321 6.3 loop detection; Postfix's hopcount_limit.
  // [timeouts] RFC 5321 4.5.3.2.
  uint32_t command_timeout_ms = 300'000;      // 4.5.3.2.7: server waits 5 min for a command.
  uint32_t data_timeout_ms = 180'000;         // 4.5.3.2.5: 3 min per data block.
  uint32_t data_deadline_ms = 300'000;        // One message's whole transfer, plus rate credit.
  uint32_t data_deadline_stress_ms = 10'000;  // The same under load (Postfix: stress).
  uint32_t data_rate_min = 500;               // Bytes/s (Postfix smtpd_min_data_rate).
  uint32_t shutdown_grace_ms = 10'000;        // SIGTERM: how long transactions may finish.
  // [relay]
  std::vector<std::string> local_domains;  // The quick-start config (QuickStart) has {"*"}.
  std::vector<std::string> relay_domains;
  std::vector<mail::IpNetwork> relay_networks;
  bool allow_untrusted_routing = false;  // Postfix allow_untrusted_routing.
  bool open_relay_acknowledged = false;  // Else Parse refuses an open relay.
  // [spool]
  std::string spool_path = "./var/spool";
  uint64_t spool_bytes_max = 0;  // 0: no cap beyond the disk itself.
  uint64_t segment_bytes_max = 64ull << 20;
  uint64_t body_memory_bytes_max = 256ull << 20;  // Per shard.
  // [queue]
  uint64_t retry_first_ms = 5 * 60 * 1000;
  uint64_t retry_max_ms = 60 * 60 * 1000;
  uint64_t lifetime_ms = 5ull * 24 * 3600 * 1000;
  uint32_t attempts_in_flight_max = 64;            // Per shard.
  uint64_t delay_warning_ms = 4ull * 3600 * 1000;  // RFC 3461 NOTIFY=DELAY reports; 0: never.
  // [log]
  std::string log_file;                    // Empty: JSON lines on stdout. Reopened on SIGUSR1.
  uint64_t log_queue_bytes_max = 4 << 20;  // Backlog per log producer before lines drop.
  // [metrics]
  std::string metrics_listen = "127.0.0.1:9025";  // Prometheus endpoint; empty: none.
  uint32_t metrics_request_timeout_ms = 2000;     // Idle scrapers cannot hold a slot longer.
  // [delivery] Outbound SMTP and LMTP (RFC 5321 4.5.3.2 timeouts).
  uint32_t connect_timeout_ms = 30'000;
  uint32_t reply_timeout_ms = 300'000;       // Greeting, EHLO, MAIL, RCPT, RSET: 5 min.
  uint32_t data_init_timeout_ms = 120'000;   // DATA: 2 min.
  uint32_t data_block_timeout_ms = 180'000;  // Each send of message data: 3 min.
  uint32_t data_end_timeout_ms = 600'000;    // The reply to the end of data: 10 min.
  uint32_t idle_timeout_ms = 5'000;          // A cached connection waiting for the next message.
  uint32_t connections_per_destination_max = 20;  // All shards together.
  uint32_t messages_per_connection_max = 100;
  uint32_t recipients_per_transaction_max = 100;
  // Maildir directories each delivery worker remembers as durable (no mkdir, no sync again).
  uint32_t maildir_directories_known_max = 16384;
  uint32_t mime_nesting_max = 100;  // MIME levels entered converting 8-bit mail to 7 bits.
  // [auth] Inline sender authentication: SPF at MAIL FROM, DKIM and DMARC at the end of data.
  std::string auth_spf = "tag";           // off | tag | reject
  std::string auth_dkim = "tag";          // off | tag
  std::string auth_dmarc = "tag";         // off | tag | reject
  std::string auth_temperror = "accept";  // accept | defer
  std::string authserv_id;                // Default: hostname.
  std::vector<mail::IpNetwork> auth_skip_networks = {*mail::IpNetwork::Parse("127.0.0.0/8"),
                                                     *mail::IpNetwork::Parse("::1/128")};
  std::vector<AuthListener> auth_listeners;
  // RFC 6376 6.1: signatures evaluated per message, the author domain's first.
  uint32_t auth_dkim_signatures_max = 8;
  // A DMARC temperror with a reject/quarantine policy at stake: defer | accept | reject.
  std::string auth_dmarc_temperror = "defer";
  // [dns]
  std::vector<std::string> dns_servers;  // host:port; empty: /etc/resolv.conf.
  uint32_t dns_timeout_ms = 2000;
  uint32_t dns_tries = 2;
  uint32_t dns_cache_entries_max = 10'000;  // Per shard.
  // [[dkim_sign]]
  std::vector<DkimSigning> dkim_sign;
  // [[routes]]
  std::vector<Route> routes = {Route{"*", RouteType::kMaildir, "./var/mail", {}, {}}};
};

// Parses TOML text; `source` names the file in error messages. Refuses, naming the keys, relay
// rules that let any client relay to any domain unless relay.open_relay_acknowledged is set.
[[nodiscard]] absl::StatusOr<Config> Parse(std::string_view toml_text, std::string_view source);
// Reads and parses a file.
[[nodiscard]] absl::StatusOr<Config> LoadFile(const std::string& path);
// The built-in quick-start configuration (what relaisd runs without --config), as TOML with
// a comment per key: the key defaults, but relay.local_domains = ["*"].
[[nodiscard]] std::string DefaultToml();
// DefaultToml(), parsed.
[[nodiscard]] absl::StatusOr<Config> QuickStart();
}  // namespace relais::config
