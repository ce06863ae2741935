#include "core/config/config.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <tuple>

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#define TOML_ENABLE_FORMATTERS 0
#include <libpsl.h>
#include <toml++/toml.h>

#include "absl/status/status.h"
#include "core/base/strings.h"

namespace relais::config {
namespace {

using base::StrAppend;
using base::StrCat;

enum class Type : uint8_t { kU32, kU64, kString, kStringList, kNetworkList, kChoice, kBool };

// One row per key: the single declaration of its name, type, bounds and meaning. The default
// is whatever `Config{}` holds.
struct Key {
  std::string_view table;
  std::string_view name;
  Type type;
  uint64_t min;
  uint64_t max;
  void* (*field)(Config&);
  std::string_view doc;
  std::string_view choices = {};  // kChoice: the words allowed, separated by '|'.
};

#define RELAIS_FIELD(member) [](Config& c) -> void* { return &c.member; }
constexpr uint64_t kU64Max = ~uint64_t{0};

const Key kKeys[] = {
    {"server", "hostname", Type::kString, 0, 253, RELAIS_FIELD(hostname),
     "Name used in the greeting and Received headers; empty: the machine's host name."},
    {"server", "threads", Type::kU32, 0, 256, RELAIS_FIELD(threads),
     "Shards (pinned threads); 0: one per online CPU."},
    {"server", "listen", Type::kStringList, 1, 64, RELAIS_FIELD(listen),
     "Addresses to accept SMTP on, host:port ([v6]:port for IPv6)."},
    {"server", "admin_socket", Type::kString, 1, 107, RELAIS_FIELD(admin_socket),
     "Unix socket for relaisctl (mode 0600: the daemon's user and root only), in a directory "
     "only the daemon's user can write (created 0700)."},
    {"limits", "command_line_bytes_max", Type::kU32, 512, 65536,
     RELAIS_FIELD(command_line_bytes_max), "Longest command line, CRLF included (RFC 5321: 512)."},
    {"limits", "text_line_bytes_max", Type::kU32, 1000, 1 << 20, RELAIS_FIELD(text_line_bytes_max),
     "Longest message line, CRLF included (RFC 5321: 1000)."},
    {"limits", "message_bytes_max", Type::kU64, 1024, 1ull << 30, RELAIS_FIELD(message_bytes_max),
     "Largest message accepted; advertised as SIZE."},
    {"limits", "recipients_max", Type::kU32, 1, 100000, RELAIS_FIELD(recipients_max),
     "Recipients per message (RFC 5321 requires at least 100)."},
    {"limits", "errors_max", Type::kU32, 1, 1000, RELAIS_FIELD(errors_max),
     "Client errors before the session is closed with 421."},
    {"limits", "connections_max", Type::kU32, 1, 10'000'000, RELAIS_FIELD(connections_max),
     "Concurrent SMTP connections, all shards together (and per shard at most RLIMIT_NOFILE)."},
    {"limits", "connections_per_ip_max", Type::kU32, 1, 10'000'000,
     RELAIS_FIELD(connections_per_ip_max), "Concurrent SMTP connections from one client address."},
    {"limits", "connections_per_ip_exempt_relay_networks", Type::kBool, 0, 0,
     RELAIS_FIELD(connections_per_ip_exempt_relay_networks),
     "Clients in relay.networks (a load balancer, local submitters) are not held to "
     "connections_per_ip_max (connections_max still counts them)."},
    {"limits", "pipeline_bytes_max", Type::kU32, 4096, 1 << 26, RELAIS_FIELD(pipeline_bytes_max),
     "Unprocessed input plus unsent replies held per session before reading pauses."},
    {"limits", "receive_bytes_max", Type::kU64, 0, kU64Max, RELAIS_FIELD(receive_bytes_max),
     "Memory for messages being received, per shard (beyond it: 452 4.3.1); 0: a quarter of "
     "RAM (or of the cgroup's memory.max) split over the shards, 16 MiB to 1 GiB each (at "
     "least message_bytes_max + 1 MiB)."},
    {"limits", "header_bytes_max", Type::kU64, 1024, 1ull << 30, RELAIS_FIELD(header_bytes_max),
     "Largest header section of a message (Postfix: 100 KiB); beyond it 552 5.3.4."},
    {"limits", "header_fields_max", Type::kU32, 16, 1'000'000, RELAIS_FIELD(header_fields_max),
     "Most header fields in a message; beyond it 552 5.3.4."},
    {"limits", "received_max", Type::kU32, 1, 100'000, RELAIS_FIELD(received_max),
     "Most Received fields in a message (RFC 5321 6.3 loop detection); beyond it 554 5.4.6."},
    {"timeouts", "command_timeout_ms", Type::kU32, 1000, 3'600'000,
     RELAIS_FIELD(command_timeout_ms), "Wait for the next command (RFC 5321 4.5.3.2.7: 5 min)."},
    {"timeouts", "data_timeout_ms", Type::kU32, 1000, 3'600'000, RELAIS_FIELD(data_timeout_ms),
     "Wait for the next block of message data (RFC 5321 4.5.3.2.5: 3 min)."},
    {"timeouts", "data_deadline_ms", Type::kU32, 1000, 86'400'000, RELAIS_FIELD(data_deadline_ms),
     "One message's whole DATA or BDAT transfer, plus 1 s per data_rate_min bytes (at most "
     "this much past the last read); then 421."},
    {"timeouts", "data_deadline_stress_ms", Type::kU32, 1000, 86'400'000,
     RELAIS_FIELD(data_deadline_stress_ms),
     "data_deadline_ms for transfers that see over half of connections_max open or of "
     "receive_bytes_max held."},
    {"timeouts", "data_rate_min", Type::kU32, 1, 1'000'000'000, RELAIS_FIELD(data_rate_min),
     "Slowest message data rate (bytes/s), kept up over every data_deadline_ms (Postfix: 500)."},
    {"timeouts", "shutdown_grace_ms", Type::kU32, 0, 600'000, RELAIS_FIELD(shutdown_grace_ms),
     "On SIGTERM, how long open transactions may finish before 421."},
    {"relay", "local_domains", Type::kStringList, 0, 100000, RELAIS_FIELD(local_domains),
     "Domains whose mail is ours to keep: exact, *.suffix or *. Default: none; the built-in "
     "quick-start config (no --config) has [\"*\"], every domain into ./var/mail."},
    {"relay", "relay_domains", Type::kStringList, 0, 100000, RELAIS_FIELD(relay_domains),
     "Domains we relay for, from any client: exact, *.suffix or *."},
    {"relay", "networks", Type::kNetworkList, 0, 100000, RELAIS_FIELD(relay_networks),
     "Client networks (CIDR) that may relay to any domain."},
    {"relay", "allow_untrusted_routing", Type::kBool, 0, 0, RELAIS_FIELD(allow_untrusted_routing),
     "Take recipients with sender-specified routing (user%host@, \"user@host\"@, host!user@) "
     "from clients outside relay.networks; false: 550 5.7.1."},
    {"relay", "open_relay_acknowledged", Type::kBool, 0, 0, RELAIS_FIELD(open_relay_acknowledged),
     "Start even though the relay rules let any client relay to any domain (relay_domains or "
     "local_domains with *, *.tld or *.public-suffix and a smarthost/lmtp route taking such "
     "domains, networks over a /8 of public IPv4 or a /32 of 2000::/3)."},
    {"queue", "retry_first_ms", Type::kU64, 100, 7ull * 24 * 3600 * 1000,
     RELAIS_FIELD(retry_first_ms), "Delay before the first retry of a deferred message."},
    {"queue", "retry_max_ms", Type::kU64, 100, 7ull * 24 * 3600 * 1000, RELAIS_FIELD(retry_max_ms),
     "The retry delay doubles up to this."},
    {"queue", "lifetime_ms", Type::kU64, 1000, 60ull * 24 * 3600 * 1000, RELAIS_FIELD(lifetime_ms),
     "How long a message is retried before what is pending fails."},
    {"queue", "attempts_in_flight_max", Type::kU32, 1, 512, RELAIS_FIELD(attempts_in_flight_max),
     "Delivery attempts running at once, per shard."},
    {"queue", "delay_warning_ms", Type::kU64, 0, 60ull * 24 * 3600 * 1000,
     RELAIS_FIELD(delay_warning_ms),
     "After this long in the queue, senders who asked (NOTIFY=DELAY) get one delay report; 0: "
     "never."},
    {"log", "file", Type::kString, 0, 4096, RELAIS_FIELD(log_file),
     "File for the JSON log lines (appended; reopened on SIGUSR1 for logrotate); empty: "
     "stdout."},
    {"log", "queue_bytes_max", Type::kU64, 64 << 10, 1ull << 30, RELAIS_FIELD(log_queue_bytes_max),
     "Log lines each core (and each delivery thread) may have waiting for a slow log reader; "
     "beyond it lines are dropped and counted (relais_log_lines_dropped_total), mail goes on."},
    {"metrics", "listen", Type::kString, 0, 300, RELAIS_FIELD(metrics_listen),
     "host:port of the HTTP endpoint for Prometheus (/metrics, /healthz, /readyz); empty: "
     "none."},
    {"metrics", "request_timeout_ms", Type::kU32, 100, 600'000,
     RELAIS_FIELD(metrics_request_timeout_ms),
     "A metrics client that has not sent its whole request by then is closed (and when all 64 "
     "slots are taken, the oldest waiting one makes room for a new client)."},
    {"delivery", "connect_timeout_ms", Type::kU32, 100, 3'600'000, RELAIS_FIELD(connect_timeout_ms),
     "Wait for a TCP or unix-socket connection to a next hop."},
    {"delivery", "reply_timeout_ms", Type::kU32, 100, 3'600'000, RELAIS_FIELD(reply_timeout_ms),
     "Wait for the greeting and the replies to EHLO, MAIL, RCPT, RSET (RFC 5321: 5 min)."},
    {"delivery", "data_init_timeout_ms", Type::kU32, 100, 3'600'000,
     RELAIS_FIELD(data_init_timeout_ms), "Wait for the 354 reply to DATA (RFC 5321: 2 min)."},
    {"delivery", "data_block_timeout_ms", Type::kU32, 100, 3'600'000,
     RELAIS_FIELD(data_block_timeout_ms),
     "Wait for the next hop to take each block of message data (RFC 5321: 3 min)."},
    {"delivery", "data_end_timeout_ms", Type::kU32, 100, 3'600'000,
     RELAIS_FIELD(data_end_timeout_ms),
     "Wait for the reply to the end of the message data (RFC 5321: 10 min)."},
    {"delivery", "idle_timeout_ms", Type::kU32, 0, 3'600'000, RELAIS_FIELD(idle_timeout_ms),
     "How long a connection is kept open for the next message; 0: close after each."},
    {"delivery", "connections_per_destination_max", Type::kU32, 1, 100000,
     RELAIS_FIELD(connections_per_destination_max),
     "Concurrent connections to one route's next hop, all shards together (at least one per "
     "shard)."},
    {"delivery", "messages_per_connection_max", Type::kU32, 1, 1'000'000,
     RELAIS_FIELD(messages_per_connection_max),
     "Messages sent over one connection before it is closed and a new one opened."},
    {"delivery", "recipients_per_transaction_max", Type::kU32, 1, 100000,
     RELAIS_FIELD(recipients_per_transaction_max),
     "Recipients per outbound transaction; more are sent in further transactions."},
    {"delivery", "maildir_directories_known_max", Type::kU32, 16, 16'777'216,
     RELAIS_FIELD(maildir_directories_known_max),
     "Maildir directories each shard remembers as made durable; when full it forgets them all "
     "and syncs each again once (relais_maildir_directories_forgotten_total)."},
    {"delivery", "mime_nesting_max", Type::kU32, 1, 1000, RELAIS_FIELD(mime_nesting_max),
     "MIME nesting levels entered when 8-bit mail is converted to 7 bits for a next hop "
     "without 8BITMIME; 8-bit content deeper down is bounced (5.6.3)."},
    {"auth", "spf", Type::kChoice, 0, 0, RELAIS_FIELD(auth_spf),
     "SPF of MAIL FROM (or HELO for the null sender): off, tag (recorded in "
     "Authentication-Results) or reject (a fail gets 550 5.7.23).",
     "off|tag|reject"},
    {"auth", "dkim", Type::kChoice, 0, 0, RELAIS_FIELD(auth_dkim),
     "DKIM signatures verified at the end of data: off or tag. DMARC verifies them either way.",
     "off|tag"},
    {"auth", "dmarc", Type::kChoice, 0, 0, RELAIS_FIELD(auth_dmarc),
     "DMARC at the end of data: off, tag, or reject (550 5.7.1 when the author domain's policy, "
     "after pct=, is reject, or the message has no single author domain; quarantine is tagged).",
     "off|tag|reject"},
    {"auth", "temperror", Type::kChoice, 0, 0, RELAIS_FIELD(auth_temperror),
     "A DNS failure while a reject policy decides: accept (recorded as temperror) or defer "
     "(451 4.7.24 for SPF, 451 4.7.1 for DMARC).",
     "accept|defer"},
    {"auth", "dkim_signatures_max", Type::kU32, 1, 64, RELAIS_FIELD(auth_dkim_signatures_max),
     "DKIM signatures evaluated per message (RFC 6376 6.1), those aligned with the From domain "
     "first; the others are reported as dkim=policy."},
    {"auth", "dmarc_temperror", Type::kChoice, 0, 0, RELAIS_FIELD(auth_dmarc_temperror),
     "dmarc = reject, a DMARC temperror (an aligned signature or SPF not decided: DNS failure, "
     "budget) and a reject or quarantine policy: defer (451 4.7.5), accept, or reject (550 "
     "5.7.1).",
     "defer|accept|reject"},
    {"auth", "authserv_id", Type::kString, 0, 253, RELAIS_FIELD(authserv_id),
     "Our Authentication-Results identity; fields claiming it are removed from incoming mail. "
     "Empty: server.hostname."},
    {"auth", "skip_networks", Type::kNetworkList, 0, 100000, RELAIS_FIELD(auth_skip_networks),
     "Clients (CIDR) whose mail is not checked (local submitters); relay.networks are skipped "
     "too."},
    {"dns", "servers", Type::kStringList, 0, 16, RELAIS_FIELD(dns_servers),
     "DNS servers, host:port; empty: those of /etc/resolv.conf."},
    {"dns", "timeout_ms", Type::kU32, 10, 60'000, RELAIS_FIELD(dns_timeout_ms),
     "Wait for a DNS server's answer, per try."},
    {"dns", "tries", Type::kU32, 1, 10, RELAIS_FIELD(dns_tries),
     "Tries per server before a lookup fails temporarily."},
    {"dns", "cache_entries_max", Type::kU32, 0, 10'000'000, RELAIS_FIELD(dns_cache_entries_max),
     "DNS answers cached per shard (TTLs honoured, negative answers per RFC 2308)."},
    {"spool", "path", Type::kString, 1, 4096, RELAIS_FIELD(spool_path),
     "Directory of the spool segments."},
    {"spool", "bytes_max", Type::kU64, 0, kU64Max, RELAIS_FIELD(spool_bytes_max),
     "Cap on spool size per shard; 0: only the disk limits it."},
    {"spool", "segment_bytes_max", Type::kU64, 1 << 16, 1ull << 34, RELAIS_FIELD(segment_bytes_max),
     "Size at which a segment is closed and a new one started."},
    {"spool", "body_memory_bytes_max", Type::kU64, 0, kU64Max, RELAIS_FIELD(body_memory_bytes_max),
     "Message bodies kept in memory per shard; beyond it they are read back from disk."},
};
#undef RELAIS_FIELD

std::string Where(std::string_view source, const toml::node& node) {
  return StrCat(source, ":", static_cast<uint32_t>(node.source().begin.line));
}

absl::Status KeyError(std::string_view source, const toml::node& node, std::string_view key,
                      std::string_view what) {
  return absl::InvalidArgumentError(StrCat(Where(source, node), ": ", key, ": ", what));
}

// Every key of `table` (written as [[<prefix>]]) is one of `allowed`.
absl::Status OnlyKeys(const toml::table& table, std::string_view source, std::string_view prefix,
                      std::initializer_list<std::string_view> allowed) {
  for (const auto& [k, v] : table) {
    if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end()) {
      return KeyError(source, v, StrCat(prefix, ".", k.str()), "unknown key");
    }
  }
  return absl::OkStatus();
}

// The non-empty string `key` of `table` into `out`; absent is an error when `required`.
absl::Status TableString(const toml::table& table, std::string_view source, std::string_view prefix,
                         std::string_view key, std::string& out, bool required) {
  const toml::node* n = table.get(key);
  if (n == nullptr) {
    return required ? KeyError(source, table, StrCat(prefix, ".", key), "is required")
                    : absl::OkStatus();
  }
  auto v = n->value<std::string>();
  if (!n->is_string() || !v || v->empty()) {
    return KeyError(source, *n, StrCat(prefix, ".", key), "expected a non-empty string");
  }
  out = *v;
  return absl::OkStatus();
}

bool ValidDomainPattern(std::string_view p) {
  if (p == "*") {
    return true;
  }
  if (p.starts_with("*.")) {
    p.remove_prefix(2);
  }
  if (p.empty() || p.size() > 253 || p.front() == '.' || p.back() == '.') {
    return false;
  }
  for (char c : p) {
    const auto u = static_cast<unsigned char>(c);
    if (!(((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9')) ||
          c == '-' || c == '.' || u >= 0x80)) {
      return false;
    }
  }
  return p.find("..") == std::string_view::npos;
}

absl::Status ApplyKey(const Key& key, const toml::node& node, std::string_view source,
                      Config& config) {
  const std::string name = StrCat(key.table, ".", key.name);
  void* field = key.field(config);
  switch (key.type) {
    case Type::kU32:
    case Type::kU64: {
      auto v = node.value<int64_t>();
      if (!node.is_integer() || !v) {
        return KeyError(source, node, name, "expected an integer");
      }
      if (*v < 0 || static_cast<uint64_t>(*v) < key.min || static_cast<uint64_t>(*v) > key.max) {
        return KeyError(source, node, name,
                        StrCat(*v, " is out of range [", key.min, ", ", key.max, "]"));
      }
      if (key.type == Type::kU32) {
        *static_cast<uint32_t*>(field) = static_cast<uint32_t>(*v);
      } else {
        *static_cast<uint64_t*>(field) = static_cast<uint64_t>(*v);
      }
      return absl::OkStatus();
    }
    case Type::kString: {
      auto v = node.value<std::string>();
      if (!node.is_string() || !v) {
        return KeyError(source, node, name, "expected a string");
      }
      if (v->size() < key.min || v->size() > key.max) {
        return KeyError(source, node, name,
                        StrCat("length must be in [", key.min, ", ", key.max, "]"));
      }
      *static_cast<std::string*>(field) = *v;
      return absl::OkStatus();
    }
    case Type::kBool: {
      auto v = node.value<bool>();
      if (!node.is_boolean() || !v) {
        return KeyError(source, node, name, "expected true or false");
      }
      *static_cast<bool*>(field) = *v;
      return absl::OkStatus();
    }
    case Type::kChoice: {
      auto v = node.value<std::string>();
      if (!node.is_string() || !v) {
        return KeyError(source, node, name, "expected a string");
      }
      std::string_view rest = key.choices;
      while (!rest.empty()) {
        const size_t bar = rest.find('|');
        if (rest.substr(0, bar) == *v) {
          *static_cast<std::string*>(field) = *v;
          return absl::OkStatus();
        }
        rest = bar == std::string_view::npos ? "" : rest.substr(bar + 1);
      }
      std::string allowed(key.choices);
      std::replace(allowed.begin(), allowed.end(), '|', ',');
      return KeyError(source, node, name, StrCat("'", *v, "' is not one of ", allowed));
    }
    case Type::kStringList:
    case Type::kNetworkList: {
      const toml::array* array = node.as_array();
      if (array == nullptr) {
        return KeyError(source, node, name, "expected an array of strings");
      }
      if (array->size() < key.min || array->size() > key.max) {
        return KeyError(source, node, name,
                        StrCat("must have between ", key.min, " and ", key.max, " entries"));
      }
      std::vector<std::string> strings;
      std::vector<mail::IpNetwork> networks;
      for (const toml::node& element : *array) {
        auto v = element.value<std::string>();
        if (!element.is_string() || !v) {
          return KeyError(source, element, name, "expected an array of strings");
        }
        if (key.type == Type::kNetworkList) {
          auto net = mail::IpNetwork::Parse(*v);
          if (!net) {
            return KeyError(source, element, name, StrCat("'", *v, "' is not a CIDR network"));
          }
          networks.push_back(*net);
        } else {
          if (name.ends_with("_domains") && !ValidDomainPattern(*v)) {
            return KeyError(source, element, name,
                            StrCat("'", *v, "' is not a domain, *.domain or *"));
          }
          strings.push_back(base::AsciiStrToLower(*v));
        }
      }
      if (key.type == Type::kNetworkList) {
        *static_cast<std::vector<mail::IpNetwork>*>(field) = std::move(networks);
      } else {
        *static_cast<std::vector<std::string>*>(field) = std::move(strings);
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unreachable");
}

absl::Status ParseRoute(const toml::table& table, std::string_view source, Route& route) {
  if (auto st = OnlyKeys(table, source, "routes", {"domain", "type", "path", "hosts", "address"});
      !st.ok()) {
    return st;
  }
  auto str = [&](std::string_view k, std::string& out, bool required) {
    return TableString(table, source, "routes", k, out, required);
  };
  if (auto s = str("domain", route.domain, true); !s.ok()) {
    return s;
  }
  route.domain = base::AsciiStrToLower(route.domain);
  if (!ValidDomainPattern(route.domain)) {
    return KeyError(source, *table.get("domain"), "routes.domain",
                    StrCat("'", route.domain, "' is not a domain, *.domain or *"));
  }
  std::string type;
  if (auto s = str("type", type, true); !s.ok()) {
    return s;
  }
  const toml::node& type_node = *table.get("type");
  if (type == "maildir") {
    route.type = RouteType::kMaildir;
    return str("path", route.path, true);
  }
  if (type == "lmtp") {
    route.type = RouteType::kLmtp;
    return str("address", route.address, true);
  }
  if (type == "reject") {
    route.type = RouteType::kReject;
    return absl::OkStatus();
  }
  if (type == "smarthost") {
    route.type = RouteType::kSmarthost;
    const toml::node* hosts = table.get("hosts");
    const toml::array* array = hosts ? hosts->as_array() : nullptr;
    if (array == nullptr || array->empty()) {
      return KeyError(source, hosts ? *hosts : static_cast<const toml::node&>(table),
                      "routes.hosts",
                      "a smarthost route needs a non-empty array of host:port strings");
    }
    for (const toml::node& h : *array) {
      auto v = h.value<std::string>();
      if (!h.is_string() || !v || v->find(':') == std::string::npos) {
        return KeyError(source, h, "routes.hosts", "expected host:port strings");
      }
      route.hosts.push_back(*v);
    }
    return absl::OkStatus();
  }
  return KeyError(source, type_node, "routes.type",
                  StrCat("'", type, "' is not one of maildir, smarthost, lmtp, reject"));
}

absl::Status ParseDkimSigning(const toml::table& table, std::string_view source, DkimSigning& out) {
  if (auto st = OnlyKeys(table, source, "dkim_sign",
                         {"domain", "selector", "key", "canonicalization", "headers"});
      !st.ok()) {
    return st;
  }
  auto str = [&](std::string_view k, std::string& value, bool required) {
    return TableString(table, source, "dkim_sign", k, value, required);
  };
  for (auto [k, value, required] :
       {std::tuple{"domain", &out.domain, true}, std::tuple{"selector", &out.selector, true},
        std::tuple{"key", &out.key_file, true},
        std::tuple{"canonicalization", &out.canonicalization, false}}) {
    if (auto st = str(k, *value, required); !st.ok()) {
      return st;
    }
  }
  out.domain = base::AsciiStrToLower(out.domain);
  if (out.domain == "*" || out.domain.starts_with("*.") || !ValidDomainPattern(out.domain)) {
    return KeyError(source, *table.get("domain"), "dkim_sign.domain",
                    StrCat("'", out.domain, "' is not a domain"));
  }
  for (char c : out.selector) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return KeyError(source, *table.get("selector"), "dkim_sign.selector",
                      StrCat("'", out.selector, "' is not a selector (letters, digits, - . _)"));
    }
  }
  static constexpr std::string_view kCanonicalizations[] = {"relaxed/relaxed", "relaxed/simple",
                                                            "simple/relaxed", "simple/simple"};
  if (std::find(std::begin(kCanonicalizations), std::end(kCanonicalizations),
                out.canonicalization) == std::end(kCanonicalizations)) {
    return KeyError(source, *table.get("canonicalization"), "dkim_sign.canonicalization",
                    StrCat("'", out.canonicalization,
                           "' is not relaxed/relaxed, relaxed/simple, simple/relaxed or "
                           "simple/simple"));
  }
  if (const toml::node* h = table.get("headers")) {
    const toml::array* array = h->as_array();
    if (array == nullptr) {
      return KeyError(source, *h, "dkim_sign.headers", "expected an array of field names");
    }
    for (const toml::node& name : *array) {
      auto v = name.value<std::string>();
      if (!name.is_string() || !v || v->empty() ||
          v->find_first_of(": \t\r\n") != std::string::npos) {
        return KeyError(source, name, "dkim_sign.headers", "expected header field names");
      }
      out.headers.push_back(base::AsciiStrToLower(*v));
    }
  }
  return absl::OkStatus();
}

// Checks a value of `key` (a kChoice row of [auth]) and returns it.
absl::StatusOr<std::string> AuthWord(std::string_view source, const toml::node& node,
                                     std::string_view key) {
  for (const Key& k : kKeys) {
    if (k.table == "auth" && k.name == key) {
      Key named = k;  // Errors name the key where it was written.
      named.table = "auth.listener";
      Config scratch;
      if (auto st = ApplyKey(named, node, source, scratch); !st.ok()) {
        return st;
      }
      return *static_cast<std::string*>(k.field(scratch));
    }
  }
  return absl::InternalError("no such auth key");
}

absl::Status ParseAuthListener(const toml::table& table, std::string_view source,
                               AuthListener& out) {
  for (const auto& [k, v] : table) {
    const std::string name(k.str());
    if (name == "listen") {
      auto text = v.value<std::string>();
      if (!v.is_string() || !text || text->empty()) {
        return KeyError(source, v, "auth.listener.listen", "expected a listen address");
      }
      out.listen = *text;
      continue;
    }
    std::optional<std::string>* field = name == "spf"         ? &out.spf
                                        : name == "dkim"      ? &out.dkim
                                        : name == "dmarc"     ? &out.dmarc
                                        : name == "temperror" ? &out.temperror
                                                              : nullptr;
    if (field == nullptr) {
      return KeyError(source, v, StrCat("auth.listener.", name), "unknown key");
    }
    absl::StatusOr<std::string> word = AuthWord(source, v, name);
    if (!word.ok()) {
      return word.status();
    }
    *field = *word;
  }
  if (out.listen.empty()) {
    return KeyError(source, table, "auth.listener.listen", "is required");
  }
  return absl::OkStatus();
}

// Interval [first, first + size) of a CIDR block; two blocks are nested or disjoint.
struct Block {
  uint64_t first;
  uint64_t size;
};

// How much of the space the blocks cover together, in the blocks' unit.
uint64_t Covered(std::vector<Block> blocks) {
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) {
    return a.first != b.first ? a.first < b.first : a.size > b.size;
  });
  uint64_t covered = 0;
  uint64_t end = 0;  // Exclusive end of the covered run so far; 0: none.
  bool any = false;
  for (const Block& b : blocks) {
    if (any && b.first < end) {
      continue;  // Nested in the previous block.
    }
    covered += b.size;
    end = b.first + b.size;
    any = true;
  }
  return covered;
}

// Address space that no client on the Internet connects from: "this network", loopback,
// private (RFC 1918), shared (RFC 6598), link-local, multicast and reserved. Trusting a site's
// own 10.0.0.0/8 plus 127.0.0.0/8 (Postfix's mynetworks style) is common and opens nothing to
// outsiders, so these do not count towards the bound below.
constexpr struct {
  uint32_t first;
  int prefix_bits;
} kNonPublicV4[] = {{0x00000000, 8},  {0x0A000000, 8},  {0x64400000, 10}, {0x7F000000, 8},
                    {0xA9FE0000, 16}, {0xAC100000, 12}, {0xC0A80000, 16}, {0xE0000000, 3}};

// Addresses of `blocks` (merged first) that also lie in `other`'s blocks.
uint64_t Overlap(std::vector<Block> blocks, const std::vector<Block>& other) {
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) {
    return a.first != b.first ? a.first < b.first : a.size > b.size;
  });
  uint64_t overlap = 0;
  uint64_t end = 0;
  bool any = false;
  for (const Block& b : blocks) {
    if (any && b.first < end) {
      continue;  // Nested in the previous block (CIDR blocks are nested or disjoint).
    }
    end = b.first + b.size;
    any = true;
    for (const Block& o : other) {
      const uint64_t lo = std::max(b.first, o.first);
      const uint64_t hi = std::min(end, o.first + o.size);
      overlap += hi > lo ? hi - lo : 0;
    }
  }
  return overlap;
}

// Networks that put "anyone" in relay.networks: together they cover more public IPv4 addresses
// than one /8 (2^24; the largest single allocations are /8s, and no site trusts more than that),
// or more of the IPv6 global unicast space 2000::/3 than one /32 (2^32 /64s; a /32 is a whole
// ISP's allocation). 0.0.0.0/0, 0.0.0.0/2 + 64.0.0.0/3, ::/0 and 2000::/3 all are.
std::vector<std::string> InternetWideNetworks(const std::vector<mail::IpNetwork>& networks) {
  std::vector<Block> v4, v6;
  std::vector<std::string> named;
  for (const mail::IpNetwork& n : networks) {
    if (n.base.family == AF_INET) {
      const uint64_t first = (uint64_t{n.base.bytes[0]} << 24) | (uint64_t{n.base.bytes[1]} << 16) |
                             (uint64_t{n.base.bytes[2]} << 8) | n.base.bytes[3];
      v4.push_back({first, uint64_t{1} << (32 - n.prefix_bits)});
    } else if (n.prefix_bits <= 64) {
      uint64_t high = 0;  // The network's first /64.
      for (int i = 0; i < 8; ++i) {
        high = (high << 8) | n.base.bytes[i];
      }
      if (n.prefix_bits < 3) {
        // Holds 2000::/3 whole if it holds 2000::.
        if (n.Contains(*mail::IpAddress::Parse("2000::"))) {
          v6.push_back({0, uint64_t{1} << 61});
        }
      } else if ((high >> 61) == 1) {
        v6.push_back({high - (uint64_t{1} << 61), uint64_t{1} << (64 - n.prefix_bits)});
      }
    }
  }
  std::vector<Block> non_public;
  for (const auto& b : kNonPublicV4) {
    non_public.push_back({b.first, uint64_t{1} << (32 - b.prefix_bits)});
  }
  const bool v4_open = Covered(v4) - Overlap(v4, non_public) > (uint64_t{1} << 24);
  const bool v6_open = Covered(v6) > (uint64_t{1} << 32);
  for (const mail::IpNetwork& n : networks) {
    if ((n.base.family == AF_INET && v4_open) || (n.base.family != AF_INET && v6_open)) {
      named.push_back(n.ToString());
    }
  }
  return named;
}

// A domain pattern that takes a whole top-level domain or public suffix, or more: "*",
// "*.<one label>" (any TLD, known or not) and "*.<public suffix>" ("*.co.uk", "*.github.io").
// Domains under it belong to anyone, so making them local or relayed is relaying for anyone.
bool Anywhere(std::string_view pattern) {
  if (pattern == "*") {
    return true;
  }
  if (!pattern.starts_with("*.")) {
    return false;  // One domain.
  }
  const std::string suffix(pattern.substr(2));
  if (suffix.find('.') == std::string::npos) {
    return true;
  }
  static const psl_ctx_t* const list = [] {
    const psl_ctx_t* latest = psl_latest(nullptr);
    return latest != nullptr ? latest : psl_builtin();
  }();
  return list != nullptr && psl_is_public_suffix(list, suffix.c_str()) != 0;
}

// For two "anywhere" patterns: does `outer` match every domain `inner` matches?
bool Covers(std::string_view outer, std::string_view inner) {
  if (outer == "*") {
    return true;
  }
  if (inner == "*") {
    return false;
  }
  // "*.uk" covers "*.co.uk": inner's suffix is outer's suffix or ends with ".<outer suffix>".
  return inner == outer || inner.ends_with(outer.substr(1));
}

// Empty when the relay rules are closed; otherwise what opens them, naming the keys. Open:
// a client anywhere may have mail for any domain taken and sent on to another host.
std::string OpenRelayProblem(const Config& c) {
  std::vector<std::string> reasons;
  for (const std::string& pattern : c.relay_domains) {
    if (Anywhere(pattern)) {
      reasons.push_back(StrCat("relay.relay_domains holds \"", pattern,
                               "\" (domains anyone may register, from any client)"));
    }
  }
  if (const std::vector<std::string> wide = InternetWideNetworks(c.relay_networks); !wide.empty()) {
    reasons.push_back(StrCat("relay.networks (", base::StrJoin(wide, ", "),
                             ") lets clients from anywhere relay to any domain"));
  }
  // A local pattern that takes anyone's domains, and a route that sends some of them on. The
  // router takes the first route whose pattern matches; routes for one domain ("example.com",
  // "*.example.com") never catch an arbitrary domain, so only "anywhere" routes matter, and of
  // those the ones overlapping the local pattern and not shadowed by an earlier one that keeps
  // (maildir) or refuses (reject) the mail.
  for (const std::string& local : c.local_domains) {
    if (!Anywhere(local)) {
      continue;
    }
    std::vector<std::string_view> kept;  // Earlier "anywhere" routes that keep or refuse.
    for (size_t i = 0; i < c.routes.size(); ++i) {
      const Route& r = c.routes[i];
      if (!Anywhere(r.domain) || !(Covers(r.domain, local) || Covers(local, r.domain))) {
        continue;
      }
      // The domains of `local` that this route sees: the narrower of the two patterns.
      const std::string_view seen = Covers(r.domain, local) ? std::string_view(local) : r.domain;
      if (std::any_of(kept.begin(), kept.end(),
                      [&](std::string_view k) { return Covers(k, seen); })) {
        continue;  // An earlier route takes all of them.
      }
      if (r.type == RouteType::kSmarthost || r.type == RouteType::kLmtp) {
        reasons.push_back(StrCat("relay.local_domains holds \"", local, "\" and routes[", i,
                                 "] (domain \"", r.domain, "\") sends domains under \"", seen,
                                 "\" to ",
                                 r.type == RouteType::kSmarthost ? "a smarthost" : "LMTP"));
        break;
      }
      kept.push_back(seen);
      if (seen == local) {
        break;  // Every domain of `local` is taken by now.
      }
    }
  }
  if (reasons.empty()) {
    return {};
  }
  return StrCat("open relay: ", base::StrJoin(reasons, "; "),
                ". Narrow these keys, or set relay.open_relay_acknowledged = true");
}

std::string DefaultHostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') {
    return "localhost";
  }
  return buf;
}

// Parses an [[array-of-tables]] named `name`: each table with `parse`, appended to `out`.
template <typename T>
absl::Status ParseTables(const toml::node& node, std::string_view source, std::string_view name,
                         absl::Status (*parse)(const toml::table&, std::string_view, T&),
                         std::vector<T>& out) {
  const toml::array* entries = node.as_array();
  if (entries == nullptr || !entries->is_array_of_tables()) {
    return KeyError(source, node, name, StrCat("expected [[", name, "]] tables"));
  }
  for (const toml::node& e : *entries) {
    T item;
    if (absl::Status st = parse(*e.as_table(), source, item); !st.ok()) {
      return st;
    }
    out.push_back(std::move(item));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Config> Parse(std::string_view toml_text, std::string_view source) {
  toml::parse_result parsed = toml::parse(toml_text, source);
  if (!parsed) {
    const toml::parse_error& e = parsed.error();
    return absl::InvalidArgumentError(
        StrCat(source, ":", static_cast<uint32_t>(e.source().begin.line), ":",
               static_cast<uint32_t>(e.source().begin.column), ": ", e.description()));
  }
  const toml::table& root = parsed.table();
  Config config;
  for (const auto& [table_name, table_node] : root) {
    if (table_name.str() == "routes") {
      config.routes.clear();  // The configured routes replace the default one.
      if (auto s = ParseTables(table_node, source, "routes", ParseRoute, config.routes); !s.ok()) {
        return s;
      }
      continue;
    }
    if (table_name.str() == "dkim_sign") {
      if (auto s = ParseTables(table_node, source, "dkim_sign", ParseDkimSigning, config.dkim_sign);
          !s.ok()) {
        return s;
      }
      continue;
    }
    const toml::table* table = table_node.as_table();
    bool known_table = false;
    for (const Key& k : kKeys) {
      known_table |= (k.table == table_name.str());
    }
    if (table == nullptr || !known_table) {
      return KeyError(source, table_node, table_name.str(),
                      table == nullptr ? "expected a table" : "unknown table");
    }
    for (const auto& [key_name, value] : *table) {
      if (table_name.str() == "auth" && key_name.str() == "listener") {
        if (auto s = ParseTables(value, source, "auth.listener", ParseAuthListener,
                                 config.auth_listeners);
            !s.ok()) {
          return s;
        }
        continue;
      }
      const Key* key = nullptr;
      for (const Key& k : kKeys) {
        if (k.table == table_name.str() && k.name == key_name.str()) {
          key = &k;
        }
      }
      if (key == nullptr) {
        return KeyError(source, value, StrCat(table_name.str(), ".", key_name.str()),
                        "unknown key");
      }
      if (auto s = ApplyKey(*key, value, source, config); !s.ok()) {
        return s;
      }
    }
  }
  if (config.hostname.empty()) {
    config.hostname = DefaultHostname();
  }
  if (config.authserv_id.empty()) {
    config.authserv_id = config.hostname;
  }
  for (const AuthListener& l : config.auth_listeners) {
    if (std::find(config.listen.begin(), config.listen.end(), l.listen) == config.listen.end()) {
      return absl::InvalidArgumentError(
          StrCat(source, ": auth.listener: '", l.listen, "' is not one of server.listen"));
    }
    if (std::count_if(config.auth_listeners.begin(), config.auth_listeners.end(),
                      [&](const AuthListener& o) { return o.listen == l.listen; }) > 1) {
      return absl::InvalidArgumentError(
          StrCat(source, ": auth.listener: '", l.listen, "' is given twice"));
    }
  }
  for (const std::string& server : config.dns_servers) {
    if (server.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          StrCat(source, ": dns.servers: '", server, "' is not host:port"));
    }
  }
  for (const std::string& l : config.listen) {
    if (l.rfind(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          StrCat(source, ": server.listen: '", l, "' is not host:port"));
    }
  }
  if (!config.open_relay_acknowledged) {
    if (std::string problem = OpenRelayProblem(config); !problem.empty()) {
      return absl::InvalidArgumentError(StrCat(source, ": ", problem));
    }
  }
  return config;
}

absl::StatusOr<Config> QuickStart() { return Parse(DefaultToml(), "built-in quick-start config"); }

absl::StatusOr<Config> LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(StrCat(path, ": cannot open config file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

std::string DefaultToml() {
  Config defaults;
  // The quick start takes mail for every domain into ./var/mail (the only route): useful at
  // once, relays nothing. The key's own default is empty, so that a file which routes mail
  // on elsewhere does not turn every domain into ours (an open relay).
  defaults.local_domains = {"*"};
  std::string out =
      "# Relais built-in quick-start configuration: what relaisd runs without --config.\n"
      "# Every key is optional; a key left out of a file takes the value shown here, except\n"
      "# relay.local_domains, whose default in a file is [] (no domain is local).\n";
  std::string_view current;
  for (const Key& k : kKeys) {
    if (k.table != current) {
      StrAppend(&out, "\n[", k.table, "]\n");
      current = k.table;
    }
    StrAppend(&out, "# ", k.doc, "\n", k.name, " = ");
    void* f = k.field(defaults);
    switch (k.type) {
      case Type::kU32:
        StrAppend(&out, *static_cast<uint32_t*>(f));
        break;
      case Type::kU64:
        StrAppend(&out, *static_cast<uint64_t*>(f));
        break;
      case Type::kBool:
        out += *static_cast<bool*>(f) ? "true" : "false";
        break;
      case Type::kString:
      case Type::kChoice:
        StrAppend(&out, "\"", *static_cast<std::string*>(f), "\"");
        break;
      case Type::kStringList: {
        const auto& v = *static_cast<std::vector<std::string>*>(f);
        StrAppend(&out, "[", v.empty() ? "" : "\"", base::StrJoin(v, "\", \""),
                  v.empty() ? "" : "\"", "]");
        break;
      }
      case Type::kNetworkList: {
        const auto& v = *static_cast<std::vector<mail::IpNetwork>*>(f);
        std::vector<std::string> s;
        for (const auto& n : v) {
          s.push_back(StrCat("\"", n.ToString(), "\""));
        }
        StrAppend(&out, "[", base::StrJoin(s, ", "), "]");
        break;
      }
    }
    out += "\n";
  }
  StrAppend(&out,
            "\n# Recipient domain -> destination; the first matching route wins.\n"
            "# type: maildir (path), smarthost (hosts), lmtp (address), reject.\n"
            "[[routes]]\ndomain = \"*\"\ntype = \"maildir\"\npath = \"./var/mail\"\n"
            "\n# [[auth.listener]] tables override [auth]'s spf, dkim, dmarc and temperror for\n"
            "# the connections of one server.listen address, e.g.:\n"
            "# [[auth.listener]]\n# listen = \"0.0.0.0:587\"\n# dmarc = \"off\"\n"
            "\n# DKIM signing of mail from trusted clients (relay.networks, auth.skip_networks)\n"
            "# whose From domain is `domain` or below it; none by default. One table per key:\n"
            "# [[dkim_sign]]\n# domain = \"example.com\"\n# selector = \"s2026\"\n"
            "# key = \"/etc/relais/dkim/example.com.pem\"  # PKCS #8 PEM, RSA or Ed25519\n"
            "# canonicalization = \"relaxed/relaxed\"\n"
            "# headers = [\"from\", \"to\", \"subject\", \"date\", \"message-id\"]\n");
  return out;
}

}  // namespace relais::config
