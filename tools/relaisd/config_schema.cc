#include "tools/relaisd/config_schema.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <span>
#include <tuple>

#include "core/base/strings.h"
#include "core/config/config.h"
#include "core/net/net_address.h"
#include "re2/re2.h"

namespace relais::relaisd {
namespace {

using base::StrCat;

// Typed binders into the aggregate, one per module struct the keys fill.
template <auto M>
constexpr auto Daemon = &config::Field<&Config::daemon, M>;
template <auto M>
constexpr auto Shard = &config::Field<&Config::shard, M>;
template <auto M>
constexpr auto Session = &config::Field<&Config::shard, &ShardOptions::session, M>;
template <auto M>
constexpr auto Header = &config::Field<&Config::shard, &ShardOptions::header_limits, M>;
template <auto M>
constexpr auto Queue = &config::Field<&Config::shard, &ShardOptions::scheduler, M>;
template <auto M>
constexpr auto Egress = &config::Field<&Config::shard, &ShardOptions::egress, M>;
template <auto M>
constexpr auto Dns = &config::Field<&Config::shard, &ShardOptions::dns, M>;
template <auto M>
constexpr auto Spool = &config::Field<&Config::shard, &ShardOptions::spool, M>;
template <auto M>
constexpr auto Auth = &config::Field<&Config::auth, M>;
template <auto M>
constexpr auto Tls = &config::Field<&Config::tls, M>;
template <auto M>
constexpr auto SmtpAuth = &config::Field<&Config::smtp_auth, M>;
template <auto M>
constexpr auto Mx = &config::Field<&Config::shard, &ShardOptions::mx, M>;
template <auto M>
constexpr auto MxText = &config::Field<&Config::mx, M>;
template <auto M>
constexpr auto Shaping = &config::Field<&Config::shard, &ShardOptions::shaping, M>;
template <auto M>
constexpr auto Limit =
    &config::Field<&Config::shard, &ShardOptions::shaping, &delivery::ShapingOptions::defaults, M>;

// The choices' words are authcheck's (relais-auth's flags take the same ones).
using authcheck::kModeWords;
using authcheck::kTempErrorActionWords;
using ModeWords = std::span<const authcheck::Word<authcheck::Mode>>;
// DKIM alone never refuses (RFC 6376 6.3): off or tag.
constexpr ModeWords kDkimWords = ModeWords(kModeWords).first(2);
constexpr config::Word<bool> kTempErrorWords[] = {{"accept", false}, {"defer", true}};
constexpr config::Word<ListenerTls> kListenerTlsWords[] = {{"off", ListenerTls::kOff},
                                                           {"starttls", ListenerTls::kStartTls},
                                                           {"required", ListenerTls::kRequired},
                                                           {"implicit", ListenerTls::kImplicit}};

// [mx] ip_family: mx.h's words.
using delivery::IpFamily;
constexpr config::Word<IpFamily> kIpFamilyChoices[] = {
    {delivery::kIpFamilyWords[0], IpFamily::kAny},
    {delivery::kIpFamilyWords[1], IpFamily::kIpv4},
    {delivery::kIpFamilyWords[2], IpFamily::kIpv6},
    {delivery::kIpFamilyWords[3], IpFamily::kPreferIpv6}};

constexpr uint64_t kU64Max = ~uint64_t{0};
constexpr config::Bounds Range(uint64_t min, uint64_t max) { return {min, max}; }
constexpr config::Bounds kNoBounds = {};  // Booleans and choices.

// One row per key: its name, the member it fills (whose initializer is its default), bounds and
// meaning. The order is the order of --print-default-config.
const config::Key<Config> kKeys[] = {
    {"server", "hostname", Session<&smtp::SessionOptions::hostname>, Range(0, 253),
     "Name used in the greeting and Received headers; empty: the machine's host name."},
    {"server", "threads", Daemon<&DaemonOptions::threads>, Range(0, 256),
     "Shards (pinned threads); 0: one per online CPU."},
    {"server", "listen", Daemon<&DaemonOptions::listen>, Range(1, 64),
     "Addresses to accept SMTP on, host:port ([v6]:port for IPv6)."},
    {"server", "admin_socket", Daemon<&DaemonOptions::admin_socket>, Range(1, 107),
     "Unix socket for relaisctl (mode 0600: the daemon's user and root only), in a directory "
     "only the daemon's user can write (created 0700)."},
    {"limits", "command_line_bytes_max", Session<&smtp::SessionOptions::command_line_bytes_max>,
     Range(512, 65536), "Longest command line, CRLF included (RFC 5321: 512)."},
    {"limits", "text_line_bytes_max", Session<&smtp::SessionOptions::text_line_bytes_max>,
     Range(1000, 1 << 20), "Longest message line, CRLF included (RFC 5321: 1000)."},
    {"limits", "message_bytes_max", Session<&smtp::SessionOptions::message_bytes_max>,
     Range(1024, 1ull << 30), "Largest message accepted; advertised as SIZE."},
    {"limits", "recipients_max", Session<&smtp::SessionOptions::recipients_max>, Range(1, 100000),
     "Recipients per message (RFC 5321 requires at least 100)."},
    {"limits", "errors_max", Session<&smtp::SessionOptions::errors_max>, Range(1, 1000),
     "Client errors before the session is closed with 421."},
    {"limits", "connections_max", Daemon<&DaemonOptions::connections_max>, Range(1, 10'000'000),
     "Concurrent SMTP connections, all shards together (and per shard at most RLIMIT_NOFILE)."},
    {"limits", "connections_per_ip_max", Daemon<&DaemonOptions::connections_per_ip_max>,
     Range(1, 10'000'000), "Concurrent SMTP connections from one client address."},
    {"limits", "connections_per_ip_exempt_relay_networks",
     Daemon<&DaemonOptions::connections_per_ip_exempt_relay_networks>, kNoBounds,
     "Clients in relay.networks (a load balancer, local submitters) are not held to "
     "connections_per_ip_max (connections_max still counts them)."},
    {"limits", "pipeline_bytes_max", Session<&smtp::SessionOptions::pipeline_bytes_max>,
     Range(4096, 1 << 26),
     "Unprocessed input plus unsent replies held per session before reading pauses."},
    {"limits", "receive_bytes_max", Daemon<&DaemonOptions::receive_bytes_max>, Range(0, kU64Max),
     "Memory for messages being received, per shard (beyond it: 452 4.3.1); 0: a quarter of "
     "RAM (or of the cgroup's memory.max) split over the shards, 16 MiB to 1 GiB each (at "
     "least message_bytes_max + 1 MiB)."},
    {"limits", "header_bytes_max", Header<&authcheck::HeaderLimits::header_bytes_max>,
     Range(1024, 1ull << 30),
     "Largest header section of a message (Postfix: 100 KiB); beyond it 552 5.3.4."},
    {"limits", "header_fields_max", Header<&authcheck::HeaderLimits::header_fields_max>,
     Range(16, 1'000'000), "Most header fields in a message; beyond it 552 5.3.4."},
    {"limits", "received_max", Header<&authcheck::HeaderLimits::received_max>, Range(1, 100'000),
     "Most Received fields in a message (RFC 5321 6.3 loop detection); beyond it 554 5.4.6."},
    {"timeouts", "command_timeout_ms", Session<&smtp::SessionOptions::command_timeout_ms>,
     Range(1000, 3'600'000), "Wait for the next command (RFC 5321 4.5.3.2.7: 5 min)."},
    {"timeouts", "data_timeout_ms", Session<&smtp::SessionOptions::data_timeout_ms>,
     Range(1000, 3'600'000),
     "Wait for the next block of message data (RFC 5321 4.5.3.2.5: 3 min)."},
    {"timeouts", "data_deadline_ms", Shard<&ShardOptions::data_deadline_ms>,
     Range(1000, 86'400'000),
     "One message's whole DATA or BDAT transfer, plus 1 s per data_rate_min bytes (at most "
     "this much past the last read); then 421."},
    {"timeouts", "data_deadline_stress_ms", Shard<&ShardOptions::data_deadline_stress_ms>,
     Range(1000, 86'400'000),
     "data_deadline_ms for transfers that see over half of connections_max open or of "
     "receive_bytes_max held."},
    {"timeouts", "data_rate_min", Shard<&ShardOptions::data_rate_min>, Range(1, 1'000'000'000),
     "Slowest message data rate (bytes/s), kept up over every data_deadline_ms (Postfix: 500)."},
    {"timeouts", "shutdown_grace_ms", Shard<&ShardOptions::shutdown_grace_ms>, Range(0, 600'000),
     "On SIGTERM, how long open transactions may finish before 421."},
    {"relay", "local_domains", Session<&smtp::SessionOptions::local_domains>, Range(0, 100000),
     "Domains whose mail is ours to keep: exact, *.suffix or *. Default: none; the built-in "
     "quick-start config (no --config) has [\"*\"], every domain into ./var/mail.",
     true},
    {"relay", "relay_domains", Session<&smtp::SessionOptions::relay_domains>, Range(0, 100000),
     "Domains we relay for, from any client: exact, *.suffix or *.", true},
    {"relay", "networks", Session<&smtp::SessionOptions::relay_networks>, Range(0, 100000),
     "Client networks (CIDR) that may relay to any domain."},
    {"relay", "allow_untrusted_routing", Session<&smtp::SessionOptions::allow_untrusted_routing>,
     kNoBounds,
     "Take recipients with sender-specified routing (user%host@, \"user@host\"@, host!user@) "
     "from clients outside relay.networks; false: 550 5.7.1."},
    {"relay", "open_relay_acknowledged", Daemon<&DaemonOptions::open_relay_acknowledged>, kNoBounds,
     "Start even though the relay rules let any client relay to any domain (relay_domains or "
     "local_domains with *, *.tld or *.public-suffix and a smarthost/lmtp route taking such "
     "domains, networks over a /8 of public IPv4 or a /32 of 2000::/3)."},
    {"queue", "retry_first_ms", Queue<&scheduler::SchedulerOptions::retry_first_ms>,
     Range(100, 7ull * 24 * 3600 * 1000), "Delay before the first retry of a deferred message."},
    {"queue", "retry_max_ms", Queue<&scheduler::SchedulerOptions::retry_max_ms>,
     Range(100, 7ull * 24 * 3600 * 1000), "The retry delay doubles up to this."},
    {"queue", "lifetime_ms", Queue<&scheduler::SchedulerOptions::lifetime_ms>,
     Range(1000, 60ull * 24 * 3600 * 1000),
     "How long a message is retried before what is pending fails."},
    {"queue", "attempts_in_flight_max", Queue<&scheduler::SchedulerOptions::attempts_in_flight_max>,
     Range(1, 512), "Delivery attempts running at once, per shard."},
    {"queue", "delay_warning_ms", Shard<&ShardOptions::delay_warning_ms>,
     Range(0, 60ull * 24 * 3600 * 1000),
     "After this long in the queue, senders who asked (NOTIFY=DELAY) get one delay report; 0: "
     "never."},
    {"log", "file", Shard<&ShardOptions::log_file>, Range(0, 4096),
     "File for the JSON log lines (appended; reopened on SIGUSR1 for logrotate); empty: "
     "stdout."},
    {"log", "queue_bytes_max", Daemon<&DaemonOptions::log_queue_bytes_max>,
     Range(64 << 10, 1ull << 30),
     "Log lines each core (and each delivery thread) may have waiting for a slow log reader; "
     "beyond it lines are dropped and counted (relais_log_lines_dropped_total), mail goes on."},
    {"metrics", "listen", Daemon<&DaemonOptions::metrics_listen>, Range(0, 300),
     "host:port of the HTTP endpoint for Prometheus (/metrics, /healthz, /readyz); empty: "
     "none."},
    {"metrics", "request_timeout_ms", Daemon<&DaemonOptions::metrics_request_timeout_ms>,
     Range(100, 600'000),
     "A metrics client that has not sent its whole request by then is closed (and when all 64 "
     "slots are taken, the oldest waiting one makes room for a new client)."},
    {"delivery", "connect_timeout_ms", Egress<&EgressOptions::connect_timeout_ms>,
     Range(100, 3'600'000), "Wait for a TCP or unix-socket connection to a next hop."},
    {"delivery", "reply_timeout_ms", Egress<&EgressOptions::reply_timeout_ms>,
     Range(100, 3'600'000),
     "Wait for the greeting and the replies to EHLO, MAIL, RCPT, RSET (RFC 5321: 5 min)."},
    {"delivery", "data_init_timeout_ms", Egress<&EgressOptions::data_init_timeout_ms>,
     Range(100, 3'600'000), "Wait for the 354 reply to DATA (RFC 5321: 2 min)."},
    {"delivery", "data_block_timeout_ms", Egress<&EgressOptions::data_block_timeout_ms>,
     Range(100, 3'600'000),
     "Wait for the next hop to take each block of message data (RFC 5321: 3 min)."},
    {"delivery", "data_end_timeout_ms", Egress<&EgressOptions::data_end_timeout_ms>,
     Range(100, 3'600'000),
     "Wait for the reply to the end of the message data (RFC 5321: 10 min)."},
    {"delivery", "idle_timeout_ms", Egress<&EgressOptions::idle_timeout_ms>, Range(0, 3'600'000),
     "How long a connection is kept open for the next message; 0: close after each."},
    {"delivery", "connections_per_destination_max",
     Daemon<&DaemonOptions::connections_per_destination_max>, Range(1, 100000),
     "Concurrent connections to one route's next hop, all shards together (at least one per "
     "shard)."},
    {"delivery", "messages_per_connection_max", Egress<&EgressOptions::messages_per_connection_max>,
     Range(1, 1'000'000),
     "Messages sent over one connection before it is closed and a new one opened."},
    {"delivery", "recipients_per_transaction_max",
     Shard<&ShardOptions::recipients_per_transaction_max>, Range(1, 100000),
     "Recipients per outbound transaction; more are sent in further transactions."},
    {"delivery", "maildir_directories_known_max",
     Shard<&ShardOptions::maildir_directories_known_max>, Range(16, 16'777'216),
     "Maildir directories each shard remembers as made durable; when full it forgets them all "
     "and syncs each again once (relais_maildir_directories_forgotten_total)."},
    {"delivery", "mime_nesting_max", Egress<&EgressOptions::mime_nesting_max>, Range(1, 1000),
     "MIME nesting levels entered when 8-bit mail is converted to 7 bits for a next hop "
     "without 8BITMIME; 8-bit content deeper down is bounced (5.6.3)."},
    {"mx", "ip_family",
     &config::ChoiceField<kIpFamilyChoices, &Config::shard, &ShardOptions::mx,
                          &delivery::MxOptions::family>,
     kNoBounds,
     "Addresses of MX hosts connected to: any (IPv4 first), ipv4, ipv6, or prefer-ipv6."},
    {"mx", "port", MxText<&MxConfig::port>, Range(1, 65535),
     "Port of every MX host (25; another only for tests)."},
    {"mx", "hosts_per_attempt_max", MxText<&MxConfig::hosts_per_attempt_max>, Range(1, 100),
     "MX hosts tried per delivery attempt (in preference order) before the mail is deferred."},
    {"mx", "mx_records_max", Mx<&delivery::MxOptions::mx_records_max>, Range(1, 100),
     "MX records looked at per domain, the best first (bounds the DNS questions per domain)."},
    {"mx", "addresses_per_host_max", Mx<&delivery::MxOptions::addresses_per_host_max>, Range(1, 64),
     "Addresses kept per MX host and address family."},
    {"mx", "self_names", Mx<&delivery::MxOptions::self_names>, Range(0, 1000),
     "Names of this relay besides server.hostname: an MX host so named ends the MX list "
     "(RFC 5321 5.1; only it or worse: 550 5.4.6)."},
    {"mx", "self_addresses", MxText<&MxConfig::self_addresses>, Range(0, 1000),
     "Addresses of this relay besides the server.listen ones (e.g. behind NAT), for the same "
     "loop check."},
    {"mx", "cache_entries_max", Mx<&delivery::MxOptions::cache_entries_max>, Range(0, 100'000'000),
     "Finished MX resolutions cached per shard (for their TTL)."},
    {"shaping", "connections_max", Limit<&delivery::Limits::connections_max>, Range(1, 100'000),
     "Concurrent connections to one destination (its MX hosts, or a route), per shard."},
    {"shaping", "messages_per_connection_max",
     Limit<&delivery::Limits::messages_per_connection_max>, Range(1, 1'000'000),
     "Messages sent over one connection to a destination before a new one is opened."},
    {"shaping", "recipients_per_transaction_max",
     Limit<&delivery::Limits::recipients_per_transaction_max>, Range(1, 100'000),
     "Recipients per transaction to a destination; more go in further transactions."},
    {"shaping", "rate", MxText<&MxConfig::rate>, Range(1, 32),
     "Messages per destination and shard: \"100/s\", \"600/min\", \"10000/h\"; \"0\": no limit."},
    {"shaping", "adaptive", Shaping<&delivery::ShapingOptions::adaptive>, kNoBounds,
     "Halve a destination's connections and rate on 421s and rate-limit replies, recover "
     "slowly."},
    {"shaping", "backoff_ms", Shaping<&delivery::ShapingOptions::backoff_ms>,
     Range(1000, 86'400'000), "Quiet period after a halving (no further halving)."},
    {"shaping", "recover_after", Shaping<&delivery::ShapingOptions::recover_after>,
     Range(1, 1'000'000),
     "Deliveries in a row, without a rate-limit reply, before one connection (and 10% of the "
     "rate) comes back."},
    {"shaping", "rate_floor_per_minute", Shaping<&delivery::ShapingOptions::rate_floor_per_minute>,
     Range(1, 1'000'000), "The adaptive rate never goes below this many messages a minute."},
    {"shaping", "idle_forget_ms", Shaping<&delivery::ShapingOptions::idle_forget_ms>,
     Range(1000, 86'400'000 * 7ull),
     "A destination with nothing queued, in flight or connected is forgotten after this long."},
    {"shaping", "destinations_max", Shaping<&delivery::ShapingOptions::destinations_max>,
     Range(1, 100'000'000),
     "Destinations per shard; beyond it mail for a new destination is deferred."},
    {"bounce", "class_rules_file", MxText<&MxConfig::class_rules_file>, Range(0, 4096),
     "File of bounce class rules (\"<class> <enhanced-prefix|-> <RE2 pattern>\" per line), "
     "tried before the shipped ones; read at start. Empty: the shipped rules only."},
    {"auth", "spf", &config::ChoiceField<kModeWords, &Config::auth, &authcheck::Policy::spf>,
     kNoBounds,
     "SPF of MAIL FROM (or HELO for the null sender): off, tag (recorded in "
     "Authentication-Results) or reject (a fail gets 550 5.7.23)."},
    {"auth", "dkim", &config::ChoiceField<kDkimWords, &Config::auth, &authcheck::Policy::dkim>,
     kNoBounds,
     "DKIM signatures verified at the end of data: off or tag. DMARC verifies them either way."},
    {"auth", "dmarc", &config::ChoiceField<kModeWords, &Config::auth, &authcheck::Policy::dmarc>,
     kNoBounds,
     "DMARC at the end of data: off, tag, or reject (550 5.7.1 when the author domain's policy, "
     "after pct=, is reject, or the message has no single author domain; quarantine is tagged)."},
    {"auth", "temperror",
     &config::ChoiceField<kTempErrorWords, &Config::auth, &authcheck::Policy::defer_temperror>,
     kNoBounds,
     "A DNS failure while a reject policy decides: accept (recorded as temperror) or defer "
     "(451 4.7.24 for SPF, 451 4.7.1 for DMARC)."},
    {"auth", "dkim_signatures_max", Auth<&authcheck::Policy::dkim_signatures_max>, Range(1, 64),
     "DKIM signatures evaluated per message (RFC 6376 6.1), those aligned with the From domain "
     "first; the others are reported as dkim=policy."},
    {"auth", "dmarc_temperror",
     &config::ChoiceField<kTempErrorActionWords, &Config::auth,
                          &authcheck::Policy::dmarc_temperror>,
     kNoBounds,
     "dmarc = reject, a DMARC temperror (an aligned signature or SPF not decided: DNS failure, "
     "budget) and a reject or quarantine policy: defer (451 4.7.5), accept, or reject (550 "
     "5.7.1)."},
    {"auth", "authserv_id", Auth<&authcheck::Policy::authserv_id>, Range(0, 253),
     "Our Authentication-Results identity; fields claiming it are removed from incoming mail. "
     "Empty: server.hostname."},
    {"auth", "skip_networks", Shard<&ShardOptions::auth_skip_networks>, Range(0, 100000),
     "Clients (CIDR) whose mail is not checked (local submitters); relay.networks are skipped "
     "too."},
    {"tls", "handshake_timeout", Tls<&TlsConfig::handshake_timeout>, Range(1, 32),
     "A client still handshaking after this long is closed (a next hop: deferred); e.g. 10s."},
    {"tls", "ticket_rotation", Tls<&TlsConfig::ticket_rotation>, Range(1, 32),
     "Lifetime of a session-ticket key (tickets resume for two periods); 1m to 7d."},
    {"tls", "ticket_secret_file", Tls<&TlsConfig::ticket_secret_file>, Range(0, 4096),
     "File of at least 32 random bytes (mode 0600 or stricter) from which the ticket keys are "
     "derived, so that several daemons resume each other's sessions; empty: a random secret per "
     "start, shared by the shards."},
    {"tls", "fallback_ttl", Tls<&TlsConfig::fallback_ttl>, Range(1, 32),
     "Routes with tls = \"may\": a next hop whose TLS handshake failed gets plaintext this "
     "long."},
    {"smtp_auth", "credentials", SmtpAuth<&SmtpAuthConfig::credentials>, Range(0, 4096),
     "File of user:hash[:domain,domain] lines (yescrypt or bcrypt; relaisctl passwd writes "
     "them), read at start; empty: AUTH is not offered."},
    {"smtp_auth", "require_sender_owned", SmtpAuth<&SmtpAuthConfig::require_sender_owned>,
     kNoBounds,
     "Refuse (553 5.7.1) an authenticated user's MAIL FROM or From: domain that is not one of "
     "the user's domains."},
    {"smtp_auth", "failures_before_delay", SmtpAuth<&SmtpAuthConfig::failures_before_delay>,
     Range(1, 1000), "Failed logins, per client address and per user, before answers slow down."},
    {"smtp_auth", "lockout_failures", SmtpAuth<&SmtpAuthConfig::lockout_failures>,
     Range(1, 100'000),
     "Failed logins, per client address and per user, before AUTH is refused (454 4.7.0)."},
    {"smtp_auth", "lockout_time", SmtpAuth<&SmtpAuthConfig::lockout_time>, Range(1, 32),
     "How long a lockout lasts; e.g. 15m."},
    {"dns", "servers", Dns<&dns::ResolverOptions::servers>, Range(0, 16),
     "DNS servers, host:port; empty: those of /etc/resolv.conf."},
    {"dns", "timeout_ms", Dns<&dns::ResolverOptions::timeout_ms>, Range(10, 60'000),
     "Wait for a DNS server's answer, per try."},
    {"dns", "tries", Dns<&dns::ResolverOptions::tries>, Range(1, 10),
     "Tries per server before a lookup fails temporarily."},
    {"dns", "cache_entries_max", Dns<&dns::ResolverOptions::cache_entries_max>,
     Range(0, 10'000'000),
     "DNS answers cached per shard (TTLs honoured, negative answers per RFC 2308)."},
    {"spool", "path", Spool<&spool::SpoolOptions::path>, Range(1, 4096),
     "Directory of the spool segments."},
    {"spool", "bytes_max", Spool<&spool::SpoolOptions::spool_bytes_max>, Range(0, kU64Max),
     "Cap on spool size per shard; 0: only the disk limits it."},
    {"spool", "segment_bytes_max", Spool<&spool::SpoolOptions::segment_bytes_max>,
     Range(1 << 16, 1ull << 34), "Size at which a segment is closed and a new one started."},
    {"spool", "body_memory_bytes_max", Spool<&spool::SpoolOptions::body_memory_bytes_max>,
     Range(0, kU64Max),
     "Message bodies kept in memory per shard; beyond it they are read back from disk."},
};

template <typename Words>
std::vector<std::string_view> WordsOf(const Words& words) {
  std::vector<std::string_view> out;
  for (const auto& w : words) {
    out.push_back(w.word);
  }
  return out;
}

// True when `hop` ("host:port", "[v6]:port") names its host by an address literal.
bool AddressLiteral(std::string_view hop) {
  std::string host, port;
  if (!net::SplitHostPort(hop, host, port)) {
    return false;
  }
  in6_addr address;
  return inet_pton(AF_INET, host.c_str(), &address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &address) == 1;
}

// The outbound TLS and AUTH keys of a smarthost or lmtp route (README, "Routes"). Errors say
// which route ("route for x.com") besides the key and line.
absl::Status RouteTlsKeys(const config::Entry& e, config::Route& route) {
  const std::string name = StrCat("route for ", route.domain, ": ");
  const bool network = route.type == config::RouteType::kSmarthost ||
                       route.type == config::RouteType::kLmtp ||
                       route.type == config::RouteType::kMx;
  for (std::string_view key : {"tls", "tls_ca_file", "tls_client_chain", "tls_client_key",
                               "auth_user", "auth_password_file"}) {
    if (!network && e.Has(key)) {
      return e.Error(key, StrCat(name, "only smarthost, lmtp and mx routes take it"));
    }
  }
  if (e.Has("source_pool")) {
    if (route.type != config::RouteType::kSmarthost && route.type != config::RouteType::kMx) {
      return e.Error("source_pool", StrCat(name, "only smarthost and mx routes take it"));
    }
    if (auto st = e.String("source_pool", route.source_pool, false); !st.ok()) {
      return st;
    }
  }
  if (!network) {
    return absl::OkStatus();
  }
  const bool unix_socket = route.type == config::RouteType::kLmtp && route.address.starts_with('/');
  route.tls =
      route.type == config::RouteType::kLmtp ? config::RouteTls::kNone : config::RouteTls::kMay;
  static constexpr std::string_view kTlsWords[] = {"none", "may", "encrypt", "verify"};
  if (e.Has("tls")) {
    auto chosen = e.Choose("tls", kTlsWords);
    if (!chosen.ok()) {
      return e.Error("tls", StrCat(name, "expected one of none, may, encrypt, verify"));
    }
    route.tls = static_cast<config::RouteTls>(*chosen);
  }
  for (auto [key, value] : {std::pair{"tls_ca_file", &route.tls_ca_file},
                            std::pair{"tls_client_chain", &route.tls_client_chain},
                            std::pair{"tls_client_key", &route.tls_client_key},
                            std::pair{"auth_user", &route.auth_user},
                            std::pair{"auth_password_file", &route.auth_password_file}}) {
    if (auto st = e.String(key, *value, false); !st.ok()) {
      return st;
    }
  }
  if (unix_socket && route.tls != config::RouteTls::kNone) {
    return e.Error("tls", StrCat(name, "a unix socket takes no TLS (tls = \"none\")"));
  }
  if (route.tls == config::RouteTls::kVerify) {
    // A certificate names a host: verification checks the name the route writes, so an
    // address literal has nothing to verify against (IP subjectAltNames are rare on MTAs).
    const std::vector<std::string> hops = route.type == config::RouteType::kSmarthost
                                              ? route.hosts
                                              : std::vector<std::string>{route.address};
    for (const std::string& hop : hops) {
      if (AddressLiteral(hop)) {
        return e.Error("tls", StrCat(name, "tls = \"verify\" checks the next hop's name, but '",
                                     hop, "' is an address; name the host or use \"encrypt\""));
      }
    }
  }
  if (route.tls_client_chain.empty() != route.tls_client_key.empty()) {
    return e.Error(route.tls_client_chain.empty() ? "tls_client_key" : "tls_client_chain",
                   StrCat(name, "tls_client_chain and tls_client_key go together"));
  }
  if (!route.tls_client_chain.empty() && route.tls == config::RouteTls::kNone) {
    return e.Error("tls_client_chain", StrCat(name, "a client certificate needs tls"));
  }
  if (route.auth_user.empty() != route.auth_password_file.empty()) {
    return e.Error(route.auth_user.empty() ? "auth_password_file" : "auth_user",
                   StrCat(name, "auth_user and auth_password_file go together"));
  }
  if (!route.auth_user.empty() && route.tls != config::RouteTls::kVerify) {
    // RFC 4954 14: credentials never cross in the clear, and "may" could fall back to it. Nor
    // over "encrypt": it takes any certificate, so a man in the middle would get the password.
    return e.Error("auth_user",
                   StrCat(name,
                          "AUTH sends the password only to a verified next hop: it needs tls = "
                          "\"verify\" (tls_ca_file names a private CA)"));
  }
  return absl::OkStatus();
}

absl::Status AddRoute(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"domain", "type", "path", "hosts", "address", "tls", "tls_ca_file",
                            "tls_client_chain", "tls_client_key", "auth_user", "auth_password_file",
                            "source_pool"});
      !st.ok()) {
    return st;
  }
  config::Route route;
  if (auto s = e.String("domain", route.domain, true); !s.ok()) {
    return s;
  }
  route.domain = base::AsciiStrToLower(route.domain);
  if (!config::ValidDomainPattern(route.domain)) {
    return e.Error("domain", StrCat("'", route.domain, "' is not a domain, *.domain or *"));
  }
  std::string type;
  if (auto s = e.String("type", type, true); !s.ok()) {
    return s;
  }
  absl::Status st;
  if (type == "maildir") {
    route.type = config::RouteType::kMaildir;
    st = e.String("path", route.path, true);
  } else if (type == "lmtp") {
    route.type = config::RouteType::kLmtp;
    st = e.String("address", route.address, true);
  } else if (type == "reject") {
    route.type = config::RouteType::kReject;
  } else if (type == "mx") {
    route.type = config::RouteType::kMx;  // The recipient domain's MX hosts (docs/mx-delivery.md).
  } else if (type == "smarthost") {
    route.type = config::RouteType::kSmarthost;
    constexpr std::string_view kNeedsHosts =
        "a smarthost route needs a non-empty array of host:port strings";
    st = e.Strings(
        "hosts", kNeedsHosts, "expected host:port strings",
        [](std::string_view h) { return h.find(':') != std::string_view::npos; },
        /*lowercase=*/false, route.hosts);
    if (st.ok() && route.hosts.empty()) {
      st = e.Error("hosts", kNeedsHosts);
    }
  } else {
    return e.Error("type",
                   StrCat("'", type, "' is not one of maildir, smarthost, lmtp, reject, mx"));
  }
  if (st.ok()) {
    st = RouteTlsKeys(e, route);
  }
  if (st.ok()) {
    c.routes.push_back(std::move(route));
  }
  return st;
}

absl::Status AddDkimSigning(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"domain", "selector", "key", "canonicalization", "headers", "users"});
      !st.ok()) {
    return st;
  }
  DkimSigning d;
  dkim::SignOptions& o = d.options;
  std::string canonicalization = "relaxed/relaxed";
  for (auto [k, value, required] :
       {std::tuple{"domain", &o.domain, true}, std::tuple{"selector", &o.selector, true},
        std::tuple{"key", &d.key_file, true},
        std::tuple{"canonicalization", &canonicalization, false}}) {
    if (auto st = e.String(k, *value, required); !st.ok()) {
      return st;
    }
  }
  o.domain = base::AsciiStrToLower(o.domain);
  if (o.domain == "*" || o.domain.starts_with("*.") || !config::ValidDomainPattern(o.domain)) {
    return e.Error("domain", StrCat("'", o.domain, "' is not a domain"));
  }
  for (char ch : o.selector) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '.' && ch != '_') {
      return e.Error("selector",
                     StrCat("'", o.selector, "' is not a selector (letters, digits, - . _)"));
    }
  }
  // header/body canonicalization (RFC 6376 3.4), as written in c=.
  using dkim::Canonicalization;
  static constexpr struct {
    std::string_view word;
    Canonicalization header, body;
  } kCanonicalizations[] = {
      {"relaxed/relaxed", Canonicalization::kRelaxed, Canonicalization::kRelaxed},
      {"relaxed/simple", Canonicalization::kRelaxed, Canonicalization::kSimple},
      {"simple/relaxed", Canonicalization::kSimple, Canonicalization::kRelaxed},
      {"simple/simple", Canonicalization::kSimple, Canonicalization::kSimple}};
  const auto* chosen = std::find_if(std::begin(kCanonicalizations), std::end(kCanonicalizations),
                                    [&](const auto& k) { return k.word == canonicalization; });
  if (chosen == std::end(kCanonicalizations)) {
    return e.Error("canonicalization",
                   StrCat("'", canonicalization,
                          "' is not relaxed/relaxed, relaxed/simple, simple/relaxed or "
                          "simple/simple"));
  }
  o.header_canonicalization = chosen->header;
  o.body_canonicalization = chosen->body;
  std::vector<std::string> headers;
  if (auto st = e.Strings(
          "headers", "expected an array of field names", "expected header field names",
          [](std::string_view h) {
            return !h.empty() && h.find_first_of(": \t\r\n") == std::string_view::npos;
          },
          /*lowercase=*/true, headers);
      !st.ok()) {
    return st;
  }
  if (!headers.empty()) {
    o.headers = std::move(headers);  // Else the usual set (SignOptions' default).
  }
  if (auto st = e.Strings(
          "users", "expected an array of user names", "expected user names",
          [](std::string_view u) {
            return !u.empty() && u.find_first_of(": \t\r\n") == std::string_view::npos;
          },
          /*lowercase=*/false, d.users);
      !st.ok()) {
    return st;
  }
  c.dkim_sign.push_back(std::move(d));
  return absl::OkStatus();
}

absl::Status AddAuthListener(const config::Entry& e, Config& c) {
  AuthListener out;
  for (const std::string& key : e.Keys()) {
    if (key == "listen") {
      std::optional<std::string> text = e.StringValue(key);
      if (!text || text->empty()) {
        return e.Error(key, "expected a listen address");
      }
      out.listen = *text;
      continue;
    }
    // The words of the [auth] key of the same name.
    if (key == "spf" || key == "dkim" || key == "dmarc") {
      const ModeWords table = key == "dkim" ? kDkimWords : ModeWords(kModeWords);
      absl::StatusOr<size_t> i = e.Choose(key, WordsOf(table));
      if (!i.ok()) {
        return i.status();
      }
      (key == "spf" ? out.spf : key == "dkim" ? out.dkim : out.dmarc) = table[*i].value;
      continue;
    }
    if (key == "temperror") {
      absl::StatusOr<size_t> i = e.Choose(key, WordsOf(kTempErrorWords));
      if (!i.ok()) {
        return i.status();
      }
      out.defer_temperror = kTempErrorWords[*i].value;
      continue;
    }
    return e.Error(key, "unknown key");
  }
  if (out.listen.empty()) {
    return e.Error("listen", "is required");
  }
  c.auth_listeners.push_back(std::move(out));
  return absl::OkStatus();
}

absl::Status AddTlsCertificate(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"chain", "key"}); !st.ok()) {
    return st;
  }
  TlsCertificate out;
  if (auto st = e.String("chain", out.chain, true); !st.ok()) {
    return st;
  }
  if (auto st = e.String("key", out.key, true); !st.ok()) {
    return st;
  }
  c.tls.certificates.push_back(std::move(out));
  return absl::OkStatus();
}

absl::Status AddListener(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"listen", "tls", "trusted"}); !st.ok()) {
    return st;
  }
  Listener out;
  if (auto st = e.String("listen", out.listen, true); !st.ok()) {
    return st;
  }
  if (e.Has("tls")) {
    absl::StatusOr<size_t> i = e.Choose("tls", WordsOf(kListenerTlsWords));
    if (!i.ok()) {
      return i.status();
    }
    out.tls = kListenerTlsWords[*i].value;  // Finish checks that a certificate exists.
  }
  if (auto st = e.Bool("trusted", out.trusted); !st.ok()) {
    return st;
  }
  c.listeners.push_back(std::move(out));
  return absl::OkStatus();
}

// The scope keys of a [[shaping.rule]] or [[shaping.reply]]: a recipient domain pattern and an
// MX host name suffix (lower case).
absl::Status ShapingScope(const config::Entry& e, std::string& domain, std::string& mx_suffix) {
  if (auto st = e.String("domain", domain, false); !st.ok()) {
    return st;
  }
  domain = base::AsciiStrToLower(domain);
  if (!domain.empty() && !config::ValidDomainPattern(domain)) {
    return e.Error("domain", StrCat("'", domain, "' is not a domain, *.domain or *"));
  }
  if (auto st = e.String("mx_suffix", mx_suffix, false); !st.ok()) {
    return st;
  }
  mx_suffix = base::AsciiStrToLower(mx_suffix);
  for (char ch : mx_suffix) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '.' && ch != '_') {
      return e.Error("mx_suffix",
                     StrCat("'", mx_suffix, "' is not a host name suffix (e.g. \".google.com\")"));
    }
  }
  return absl::OkStatus();
}

// A rate key's text ("100/s", "600/min", "10000/h", "0").
absl::Status ReadRate(const config::Entry& e, std::string_view key,
                      std::optional<delivery::Rate>& out) {
  std::string text;
  if (auto st = e.String(key, text, false); !st.ok() || text.empty()) {
    return st;
  }
  out = delivery::Rate::Parse(text);
  if (!out) {
    return e.Error(key, StrCat("'", text,
                               "' is not a rate (\"100/s\", \"600/min\", \"10000/h\" "
                               "or \"0\")"));
  }
  return absl::OkStatus();
}

absl::Status AddShapingRule(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"domain", "mx_suffix", "connections_max", "messages_per_connection_max",
                            "recipients_per_transaction_max", "rate", "source_pool", "adaptive"});
      !st.ok()) {
    return st;
  }
  delivery::ShapingRule rule;
  if (auto st = ShapingScope(e, rule.domain, rule.mx_suffix); !st.ok()) {
    return st;
  }
  for (auto [key, value, max] :
       {std::tuple{"connections_max", &rule.connections_max, uint64_t{100'000}},
        std::tuple{"messages_per_connection_max", &rule.messages_per_connection_max,
                   uint64_t{1'000'000}},
        std::tuple{"recipients_per_transaction_max", &rule.recipients_per_transaction_max,
                   uint64_t{100'000}}}) {
    if (!e.Has(key)) {
      continue;
    }
    uint64_t v = 0;
    if (auto st = e.Integer(key, 1, max, v); !st.ok()) {
      return st;
    }
    *value = static_cast<uint32_t>(v);
  }
  if (auto st = ReadRate(e, "rate", rule.rate); !st.ok()) {
    return st;
  }
  if (e.Has("source_pool")) {
    std::string pool;
    if (auto st = e.String("source_pool", pool, true); !st.ok()) {
      return st;
    }
    rule.source_pool = std::move(pool);  // Finish checks that the pool exists.
  }
  if (e.Has("adaptive")) {
    bool adaptive = true;
    if (auto st = e.Bool("adaptive", adaptive); !st.ok()) {
      return st;
    }
    rule.adaptive = adaptive;
  }
  c.shard.shaping.rules.push_back(std::move(rule));
  return absl::OkStatus();
}

absl::Status AddShapingReply(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"pattern", "action", "suspend_ms", "domain", "mx_suffix"}); !st.ok()) {
    return st;
  }
  delivery::ReplyRule rule;
  if (auto st = e.String("pattern", rule.pattern, true); !st.ok()) {
    return st;
  }
  // The destinations' matcher compiles the same text the same way (RE2, linear time).
  if (const RE2 re(rule.pattern, RE2::Quiet); !re.ok()) {
    return e.Error("pattern", StrCat("'", rule.pattern, "' is not an RE2 pattern: ", re.error()));
  }
  absl::StatusOr<size_t> action = e.Choose("action", delivery::kReplyActionWords);
  if (!action.ok()) {
    return action.status();
  }
  rule.action = static_cast<delivery::ReplyRule::Action>(*action);
  if (auto st = e.Integer("suspend_ms", 1000, 7 * 86'400'000ull, rule.suspend_ms); !st.ok()) {
    return st;
  }
  if (e.Has("suspend_ms") && rule.action != delivery::ReplyRule::Action::kSuspend) {
    return e.Error("suspend_ms", "only action = \"suspend\" takes it");
  }
  if (auto st = ShapingScope(e, rule.domain, rule.mx_suffix); !st.ok()) {
    return st;
  }
  c.shard.shaping.replies.push_back(std::move(rule));
  return absl::OkStatus();
}

// Names of sources and pools: letters, digits, '-', '_', '.'.
bool ValidName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.';
  });
}

absl::Status AddSource(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"name", "address", "ehlo", "connections_max", "warmup_per_day"});
      !st.ok()) {
    return st;
  }
  delivery::Source source;
  if (auto st = e.String("name", source.name, true); !st.ok()) {
    return st;
  }
  if (!ValidName(source.name)) {
    return e.Error("name", StrCat("'", source.name, "' is not a name (letters, digits, - _ .)"));
  }
  if (c.shard.sources.sources.size() >= kSourcesMax) {
    return e.Error("name", StrCat("more than ", kSourcesMax, " sources"));
  }
  for (const delivery::Source& other : c.shard.sources.sources) {
    if (other.name == source.name) {
      return e.Error("name", StrCat("'", source.name, "' is given twice"));
    }
  }
  std::string address;
  if (auto st = e.String("address", address, true); !st.ok()) {
    return st;
  }
  std::optional<mail::IpAddress> parsed = mail::IpAddress::Parse(address);
  if (!parsed) {
    return e.Error("address", StrCat("'", address, "' is not an IPv4 or IPv6 address"));
  }
  source.address = *parsed;
  if (auto st = e.String("ehlo", source.ehlo, false); !st.ok()) {
    return st;
  }
  source.ehlo = base::AsciiStrToLower(source.ehlo);
  if (!source.ehlo.empty() &&
      (source.ehlo.find('*') != std::string::npos || !config::ValidDomainPattern(source.ehlo))) {
    return e.Error("ehlo", StrCat("'", source.ehlo, "' is not a host name"));
  }
  for (auto [key, value] : {std::pair{"connections_max", &source.connections_max},
                            std::pair{"warmup_per_day", &source.warmup_per_day}}) {
    uint64_t v = *value;
    if (auto st = e.Integer(key, 0, 100'000'000, v); !st.ok()) {
      return st;
    }
    *value = static_cast<uint32_t>(v);
  }
  c.shard.sources.sources.push_back(std::move(source));
  return absl::OkStatus();
}

// Sources are named by their names here; Finish turns them into indices (a [[source]] may come
// after the pool in the file).
absl::Status AddSourcePool(const config::Entry& e, Config& c) {
  if (auto st = e.OnlyKeys({"name", "sources", "weights"}); !st.ok()) {
    return st;
  }
  delivery::SourcePool pool;
  if (auto st = e.String("name", pool.name, true); !st.ok()) {
    return st;
  }
  if (!ValidName(pool.name)) {
    return e.Error("name", StrCat("'", pool.name, "' is not a name (letters, digits, - _ .)"));
  }
  for (const delivery::SourcePool& other : c.shard.sources.pools) {
    if (other.name == pool.name) {
      return e.Error("name", StrCat("'", pool.name, "' is given twice"));
    }
  }
  constexpr std::string_view kNeedsSources =
      "a source pool needs a non-empty array of source names";
  std::vector<std::string> names;
  if (auto st = e.Strings("sources", kNeedsSources, "expected source names", ValidName,
                          /*lowercase=*/false, names);
      !st.ok()) {
    return st;
  }
  if (names.empty()) {
    return e.Error("sources", kNeedsSources);
  }
  std::vector<uint64_t> weights;
  if (auto st = e.Integers("weights", 1, 1'000'000, weights); !st.ok()) {
    return st;
  }
  if (!weights.empty() && weights.size() != names.size()) {
    return e.Error("weights",
                   StrCat("has ", weights.size(), " entries for ", names.size(), " sources"));
  }
  for (size_t i = 0; i < names.size(); ++i) {
    pool.members.push_back({0, weights.empty() ? 1u : static_cast<uint32_t>(weights[i])});
  }
  c.shard.sources.pools.push_back(std::move(pool));
  c.mx.pool_sources.push_back(std::move(names));
  return absl::OkStatus();
}

const config::Array<Config> kArrays[] = {
    {"routes", [](Config& c) { c.routes.clear(); }, AddRoute},
    {"dkim_sign", [](Config& c) { c.dkim_sign.clear(); }, AddDkimSigning},
    {"auth.listener", [](Config& c) { c.auth_listeners.clear(); }, AddAuthListener},
    {"tls.certificate", [](Config& c) { c.tls.certificates.clear(); }, AddTlsCertificate},
    {"listener", [](Config& c) { c.listeners.clear(); }, AddListener},
    {"shaping.rule", [](Config& c) { c.shard.shaping.rules.clear(); }, AddShapingRule},
    {"shaping.reply", [](Config& c) { c.shard.shaping.replies.clear(); }, AddShapingReply},
    {"source", [](Config& c) { c.shard.sources.sources.clear(); }, AddSource},
    {"source_pool",
     [](Config& c) {
       c.shard.sources.pools.clear();
       c.mx.pool_sources.clear();
     },
     AddSourcePool},
};

const config::Schema<Config> kSchema{kKeys, kArrays};

std::string DefaultHostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') {
    return "localhost";
  }
  return buf;
}

// A duration key's text into `out` (in `unit_ms` units), within [min_ms, max_ms].
absl::Status ReadDuration(std::string_view source, std::string_view key, std::string_view text,
                          uint64_t min_ms, uint64_t max_ms, uint64_t unit_ms, uint32_t& out) {
  const std::optional<uint64_t> ms = ParseDurationMs(text);
  if (!ms) {
    return absl::InvalidArgumentError(StrCat(source, ": ", key, ": '", text,
                                             "' is not a duration (a number and ms, s, m, h "
                                             "or d: \"10s\", \"15m\", \"1h\")"));
  }
  if (*ms < min_ms || *ms > max_ms || *ms % unit_ms != 0) {
    return absl::InvalidArgumentError(StrCat(source, ": ", key, ": '", text, "' is out of range (",
                                             min_ms / 1000, "s to ", max_ms / 1000, "s",
                                             unit_ms > 1 ? ", whole seconds" : "", ")"));
  }
  out = static_cast<uint32_t>(*ms / unit_ms);
  return absl::OkStatus();
}

// [tls], [[listener]] and [smtp_auth]: durations read, listeners checked against server.listen
// and against the certificates they need.
absl::Status FinishTls(Config& config, std::string_view source) {
  constexpr uint64_t kS = 1000, kDay = 86'400 * kS;
  TlsConfig& tls = config.tls;
  for (auto [key, text, min, max, unit, out] :
       {std::tuple{"tls.handshake_timeout", &tls.handshake_timeout, kS / 10, 3600 * kS, uint64_t{1},
                   &tls.handshake_timeout_ms},
        std::tuple{"tls.ticket_rotation", &tls.ticket_rotation, 60 * kS, 7 * kDay, kS,
                   &tls.ticket_rotation_s},
        std::tuple{"tls.fallback_ttl", &tls.fallback_ttl, kS, 30 * kDay, kS, &tls.fallback_ttl_s},
        std::tuple{"smtp_auth.lockout_time", &config.smtp_auth.lockout_time, kS, kDay, uint64_t{1},
                   &config.smtp_auth.lockout_time_ms}}) {
    if (absl::Status s = ReadDuration(source, key, *text, min, max, unit, *out); !s.ok()) {
      return s;
    }
  }
  if (config.smtp_auth.lockout_failures < config.smtp_auth.failures_before_delay) {
    return absl::InvalidArgumentError(StrCat(source, ": smtp_auth.lockout_failures (",
                                             config.smtp_auth.lockout_failures,
                                             ") is below smtp_auth.failures_before_delay (",
                                             config.smtp_auth.failures_before_delay, ")"));
  }
  const std::vector<std::string>& listen = config.daemon.listen;
  for (const Listener& l : config.listeners) {
    if (std::find(listen.begin(), listen.end(), l.listen) == listen.end()) {
      return absl::InvalidArgumentError(
          StrCat(source, ": listener: '", l.listen, "' is not one of server.listen"));
    }
    if (std::count_if(config.listeners.begin(), config.listeners.end(),
                      [&](const Listener& o) { return o.listen == l.listen; }) > 1) {
      return absl::InvalidArgumentError(
          StrCat(source, ": listener: '", l.listen, "' is given twice"));
    }
    if (l.tls.value_or(ListenerTls::kOff) != ListenerTls::kOff && tls.certificates.empty()) {
      return absl::InvalidArgumentError(
          StrCat(source, ": listener: '", l.listen, "' has tls = \"",
                 kListenerTlsWords[static_cast<size_t>(*l.tls)].word,
                 "\", which needs a certificate: add a [[tls.certificate]] table with chain and "
                 "key (relaisctl make-cert makes a self-signed one)"));
    }
  }
  return absl::OkStatus();
}

// [mx], [shaping] and the sources: values read as written converted into the modules' options,
// names checked against the tables they name, and the implicit mx route.
absl::Status FinishMx(Config& config, std::string_view source) {
  ShardOptions& shard = config.shard;
  shard.mx.port = static_cast<uint16_t>(config.mx.port);
  for (std::string& name : shard.mx.self_names) {
    name = base::AsciiStrToLower(name);
    if (name.ends_with('.')) {
      name.pop_back();
    }
  }
  shard.mx.self_addresses.clear();
  for (const std::string& text : config.mx.self_addresses) {
    std::optional<mail::IpAddress> address = mail::IpAddress::Parse(text);
    if (!address) {
      return absl::InvalidArgumentError(
          StrCat(source, ": mx.self_addresses: '", text, "' is not an IPv4 or IPv6 address"));
    }
    shard.mx.self_addresses.push_back(*address);
  }
  std::optional<delivery::Rate> rate = delivery::Rate::Parse(config.mx.rate);
  if (!rate) {
    return absl::InvalidArgumentError(StrCat(source, ": shaping.rate: '", config.mx.rate,
                                             "' is not a rate (\"100/s\", \"600/min\", "
                                             "\"10000/h\" or \"0\")"));
  }
  shard.shaping.defaults.rate = *rate;
  // What the destinations will compile, checked as they check it (each pattern was already
  // compiled with its line in the error).
  if (absl::Status s = delivery::Destinations::Validate(shard.shaping); !s.ok()) {
    return absl::InvalidArgumentError(StrCat(source, ": shaping: ", s.message()));
  }
  delivery::SourceOptions& sources = shard.sources;
  for (size_t p = 0; p < sources.pools.size(); ++p) {
    const std::vector<std::string>& names = config.mx.pool_sources[p];
    for (size_t m = 0; m < names.size(); ++m) {
      const auto found =
          std::find_if(sources.sources.begin(), sources.sources.end(),
                       [&](const delivery::Source& s) { return s.name == names[m]; });
      if (found == sources.sources.end()) {
        return absl::InvalidArgumentError(StrCat(source, ": source_pool '", sources.pools[p].name,
                                                 "': no [[source]] is named '", names[m], "'"));
      }
      sources.pools[p].members[m].source = static_cast<uint32_t>(found - sources.sources.begin());
    }
  }
  const auto pool_known = [&](const std::string& name) {
    return std::any_of(sources.pools.begin(), sources.pools.end(),
                       [&](const delivery::SourcePool& p) { return p.name == name; });
  };
  for (const config::Route& r : config.routes) {
    if (!r.source_pool.empty() && !pool_known(r.source_pool)) {
      return absl::InvalidArgumentError(StrCat(source, ": route for ", r.domain, ": source_pool '",
                                               r.source_pool, "' is not a [[source_pool]]"));
    }
  }
  for (const delivery::ShapingRule& rule : shard.shaping.rules) {
    if (rule.source_pool && !pool_known(*rule.source_pool)) {
      return absl::InvalidArgumentError(StrCat(
          source, ": shaping.rule (domain \"", rule.domain, "\", mx_suffix \"", rule.mx_suffix,
          "\"): source_pool '", *rule.source_pool, "' is not a [[source_pool]]"));
    }
  }
  // A relayed domain no route matches goes to its MX hosts. Who may relay is the RCPT rules'
  // decision (relay.domains, relay.networks, AUTH), made before the router is asked. Not when
  // local_domains takes anyone's domains (the quick start's "*"): those are all ours, kept or
  // refused (550 5.1.2 with no route), never sent on by MX, which would relay for anyone.
  const std::vector<std::string>& local = shard.session.local_domains;
  if (std::none_of(config.routes.begin(), config.routes.end(),
                   [](const config::Route& r) { return r.domain == "*"; }) &&
      std::none_of(local.begin(), local.end(), AnywherePattern)) {
    config::Route mx;
    mx.domain = "*";
    mx.type = config::RouteType::kMx;
    mx.tls = config::RouteTls::kMay;
    config.routes.push_back(std::move(mx));
  }
  return absl::OkStatus();
}

// What no single key can check, and the values an empty key stands for.
absl::Status Finish(Config& config, std::string_view source) {
  std::string& hostname = config.shard.session.hostname;
  if (hostname.empty()) {
    hostname = DefaultHostname();
  }
  if (config.auth.authserv_id.empty()) {
    config.auth.authserv_id = hostname;
  }
  const std::vector<std::string>& listen = config.daemon.listen;
  for (const AuthListener& l : config.auth_listeners) {
    if (std::find(listen.begin(), listen.end(), l.listen) == listen.end()) {
      return absl::InvalidArgumentError(
          StrCat(source, ": auth.listener: '", l.listen, "' is not one of server.listen"));
    }
    if (std::count_if(config.auth_listeners.begin(), config.auth_listeners.end(),
                      [&](const AuthListener& o) { return o.listen == l.listen; }) > 1) {
      return absl::InvalidArgumentError(
          StrCat(source, ": auth.listener: '", l.listen, "' is given twice"));
    }
  }
  if (absl::Status s = FinishTls(config, source); !s.ok()) {
    return s;
  }
  for (const std::string& server : config.shard.dns.servers) {
    if (server.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          StrCat(source, ": dns.servers: '", server, "' is not host:port"));
    }
  }
  for (const std::string& l : listen) {
    if (l.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          StrCat(source, ": server.listen: '", l, "' is not host:port"));
    }
  }
  if (absl::Status s = FinishMx(config, source); !s.ok()) {
    return s;
  }
  if (!config.daemon.open_relay_acknowledged) {
    if (std::string problem = OpenRelayProblem(config); !problem.empty()) {
      return absl::InvalidArgumentError(StrCat(source, ": ", problem));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Config::Config() {
  // Where the daemon's default differs from the module's own (a library user's session takes
  // every domain and greets as "localhost"): in a file, no domain is local unless listed, and
  // empty names mean "the machine's host name" (Finish fills them in).
  shard.session.local_domains.clear();
  shard.session.hostname.clear();
  auth.authserv_id.clear();
}

authcheck::Policy Config::AuthFor(const std::string& listen) const {
  authcheck::Policy p = auth;
  for (const AuthListener& l : auth_listeners) {
    if (l.listen == listen) {
      p.spf = l.spf.value_or(p.spf);
      p.dkim = l.dkim.value_or(p.dkim);
      p.dmarc = l.dmarc.value_or(p.dmarc);
      p.defer_temperror = l.defer_temperror.value_or(p.defer_temperror);
    }
  }
  return p;
}

ListenerSecurity Config::ListenerFor(const std::string& listen) const {
  ListenerSecurity out;
  out.tls = tls.certificates.empty() ? ListenerTls::kOff : ListenerTls::kStartTls;
  for (const Listener& l : listeners) {
    if (l.listen == listen) {
      out.tls = l.tls.value_or(out.tls);
      out.trusted = l.trusted;
    }
  }
  return out;
}

std::optional<uint64_t> ParseDurationMs(std::string_view text) {
  size_t digits = 0;
  uint64_t value = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    if (value > (~uint64_t{0}) / 10 / 86'400'000) {
      return std::nullopt;  // Would overflow once scaled.
    }
    value = value * 10 + static_cast<uint64_t>(text[digits] - '0');
    ++digits;
  }
  if (digits == 0) {
    return std::nullopt;
  }
  static constexpr struct {
    std::string_view unit;
    uint64_t ms;
  } kUnits[] = {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}};
  const std::string_view unit = text.substr(digits);
  for (const auto& u : kUnits) {
    if (unit == u.unit) {
      return value * u.ms;
    }
  }
  return std::nullopt;
}

absl::StatusOr<Config> ParseConfig(std::string_view toml_text, std::string_view source) {
  absl::StatusOr<Config> parsed = config::Read(kSchema, toml_text, source);
  if (!parsed.ok()) {
    return parsed;
  }
  if (absl::Status s = Finish(*parsed, source); !s.ok()) {
    return s;
  }
  return parsed;
}

absl::StatusOr<Config> QuickStart() {
  return ParseConfig(DefaultToml(), "built-in quick-start config");
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  absl::StatusOr<std::string> text = config::ReadFile(path);
  if (!text.ok()) {
    return text.status();
  }
  return ParseConfig(*text, path);
}

std::string DefaultToml() {
  Config defaults;
  // The quick start takes mail for every domain into ./var/mail (the only route): useful at
  // once, relays nothing. The key's own default is empty, so that a file which routes mail
  // on elsewhere does not turn every domain into ours (an open relay).
  defaults.shard.session.local_domains = {"*"};
  return StrCat(
      "# Relais built-in quick-start configuration: what relaisd runs without --config.\n"
      "# Every key is optional; a key left out of a file takes the value shown here, except\n"
      "# relay.local_domains, whose default in a file is [] (no domain is local).\n",
      config::Print(kSchema, std::move(defaults)),
      "\n# Recipient domain -> destination; the first matching route wins.\n"
      "# type: maildir (path), smarthost (hosts), lmtp (address), reject, mx (the domain's\n"
      "# MX hosts). A file without a \"*\" route ends with {domain = \"*\", type = \"mx\"}\n"
      "# (unless relay.local_domains takes every domain, as here).\n"
      "[[routes]]\ndomain = \"*\"\ntype = \"maildir\"\npath = \"./var/mail\"\n"
      "\n# MX delivery: limits per destination (its MX hosts) over [shaping]'s, replies that\n"
      "# suspend or bounce a destination, source addresses (docs/mx-delivery.md), e.g.:\n"
      "# [[shaping.rule]]\n# mx_suffix = \".google.com\"  # and/or domain = \"*.example.com\"\n"
      "# connections_max = 5\n# rate = \"300/min\"\n"
      "# [[shaping.reply]]\n# pattern = \"(?i)temporarily suspended\"  # RE2\n"
      "# action = \"suspend\"  # backoff | suspend | bounce\n# suspend_ms = 900000\n"
      "# [[source]]\n# name = \"s1\"\n# address = \"192.0.2.10\"\n# ehlo = \"mta1.example.com\"\n"
      "# [[source_pool]]\n# name = \"out\"\n# sources = [\"s1\"]\n"
      "\n# [[auth.listener]] tables override [auth]'s spf, dkim, dmarc and temperror for\n"
      "# the connections of one server.listen address, e.g.:\n"
      "# [[auth.listener]]\n# listen = \"0.0.0.0:587\"\n# dmarc = \"off\"\n"
      "\n# DKIM signing of mail from trusted clients (relay.networks, auth.skip_networks)\n"
      "# whose From domain is `domain` or below it; none by default. One table per key:\n"
      "# [[dkim_sign]]\n# domain = \"example.com\"\n# selector = \"s2026\"\n"
      "# key = \"/etc/relais/dkim/example.com.pem\"  # PKCS #8 PEM, RSA or Ed25519\n"
      "# canonicalization = \"relaxed/relaxed\"\n"
      "# headers = [\"from\", \"to\", \"subject\", \"date\", \"message-id\"]\n"
      "# users = [\"alice\"]  # sign these SMTP AUTH users' mail (else: by From domain)\n"
      "\n# TLS certificates (PEM chain, leaf first, and its key); several are chosen by SNI,\n"
      "# then ECDSA or RSA by what the client supports. None by default (no STARTTLS):\n"
      "# [[tls.certificate]]\n# chain = \"/etc/relais/tls/ecdsa.pem\"\n"
      "# key = \"/etc/relais/tls/ecdsa.key\"\n"
      "\n# Per listen address (one of server.listen): tls = off | starttls | required |\n"
      "# implicit (default: starttls with a certificate, else off); trusted = true offers\n"
      "# AUTH without TLS (local submission), e.g.:\n"
      "# [[listener]]\n# listen = \"127.0.0.1:465\"\n# tls = \"implicit\"\n");
}

}  // namespace relais::relaisd
