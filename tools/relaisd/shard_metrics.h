// tools/relaisd/shard_metrics.h — what one shard counts, for Prometheus (and for its own log
// lines and relaisctl status).
//
// One block per shard, on cache lines of its own; the shard is the only writer. The metrics
// endpoint (tools/relaisd/metrics_endpoint) reads every block, sums where a core label would
// not help, and writes the text exposition format. Label values come from fixed sets (reply
// class, refusal reason, route type, outcome, queue state, bounce class, MX lookup result,
// destination state, configured source): no per-recipient or per-client series. The one
// labelled by destination is bounded: the shard's kTopDestinations destinations with the most
// queued, and "other" for the rest, published once a second under a mutex of its own (names
// are strings; the scrape copies them).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/metrics/metrics.h"
#include "queue/delivery/bounce_class.h"
#include "queue/delivery/destinations.h"
#include "queue/delivery/status.h"

namespace relais::relaisd {

// Route types and delivery outcomes, the label values of relais_delivery_attempts_total,
// indexed by delivery::Route and delivery::Outcome.
inline constexpr const auto& kRouteNames = delivery::kRouteNames;
inline constexpr const auto& kOutcomeNames = delivery::kOutcomeNames;

// relais_mx_lookups_total's results (NextHopResolverStats, queue/delivery/mx.h).
inline constexpr std::array<std::string_view, 6> kMxResultNames = {
    "ok", "null_mx", "nxdomain", "temporary", "loop", "no_address"};
// Destinations labelled by name in relais_destination_queued and _connections, per shard.
inline constexpr size_t kTopDestinations = 10;
// [[source]] tables counted by relais_source_connections_total (the schema's bound).
inline constexpr size_t kSourcesMax = 256;

// One destination's sample in the bounded destination families.
struct DestinationSample {
  std::string name;  // A destination's name, or "other".
  int64_t queued = 0;
  int64_t connections = 0;
};

struct alignas(64) ShardMetrics {
  // Connections.
  metrics::Counter connections_accepted;
  metrics::Counter refused_global;    // connections_max: 421 4.7.0
  metrics::Counter refused_per_ip;    // connections_per_ip_max: 421 4.7.0
  metrics::Counter refused_stopping;  // 421 4.3.2 while shutting down
  metrics::Counter refused_unserved;  // Closed without a reply (shard hard cap, no peer address)
  metrics::Gauge connections_active;
  metrics::Counter recv_no_buffer;  // A receive found every provided buffer in use.
  // SMTP.
  std::array<metrics::Counter, 6> replies_by_class;  // Index: code / 100.
  metrics::Counter messages_accepted;
  metrics::Counter recipients_duplicate;  // Named again in one transaction: delivered once.
  metrics::Counter message_bytes_accepted;
  metrics::Counter commit_failures;          // Batches answered 451/452 instead of 250.
  metrics::Counter transfers_too_slow;       // Past the message's deadline or rate: 421 4.4.2.
  metrics::Counter receive_budget_refusals;  // receive_bytes_max: 452 4.3.1 (mirrored).
  metrics::Gauge receive_bytes;              // Message bytes held while receiving (capacity).
  metrics::Histogram time_to_durable{metrics::kLatencyBoundsUs};  // End of data to 250.
  // Inbound TLS (STARTTLS or implicit), by result: a full handshake, a resumed one (ticket),
  // failed (library error, alert, garbage), timed out (tls.handshake_timeout).
  metrics::Counter tls_handshakes_full;
  metrics::Counter tls_handshakes_resumed;
  metrics::Counter tls_handshakes_failed;
  metrics::Counter tls_handshakes_timeout;
  metrics::Histogram tls_handshake_seconds{metrics::kLatencyBoundsUs};  // Start to done.
  // SMTP AUTH (RFC 4954) verdicts: success (235), failure (535 5.7.8), locked out (454 4.7.0,
  // too many failures from the client or for the user), error (454 4.7.0: credentials could
  // not be checked now).
  metrics::Counter smtp_auth_success;
  metrics::Counter smtp_auth_failure;
  metrics::Counter smtp_auth_locked_out;
  metrics::Counter smtp_auth_error;
  // Spool.
  metrics::Counter spool_appends;
  metrics::Counter spool_batches;  // One write and one fdatasync each.
  metrics::Counter spool_batch_failures;
  metrics::Counter spool_bytes_written;
  metrics::Histogram spool_batch_seconds{metrics::kLatencyBoundsUs};
  metrics::Gauge spool_bytes;
  metrics::Gauge spool_segments;
  // Queue.
  metrics::Gauge queue_messages;
  metrics::Gauge queue_ready;
  metrics::Gauge queue_deferred;
  metrics::Gauge queue_in_flight;
  // Delivery.
  std::array<std::array<metrics::Counter, kOutcomeNames.size()>, kRouteNames.size()> attempts;
  metrics::Counter bounces;
  metrics::Counter maildir_mailboxes_recreated;    // Known, found gone, made again.
  metrics::Counter maildir_directories_forgotten;  // maildir_directories_known_max reached.
  metrics::Histogram time_to_delivered{metrics::kDelayBoundsUs};  // Reception to delivery.
  metrics::Counter egress_connections_opened;
  metrics::Counter egress_connect_failures;
  metrics::Counter egress_tasks_retried;  // Sent again on a fresh connection (stale cache).
  metrics::Gauge egress_connections;
  metrics::Counter egress_connections_unused;   // Closed without carrying a message.
  metrics::Counter egress_converted_7bit;       // 8-bit messages converted for a 7-bit hop.
  metrics::Counter egress_not_convertible;      // 8-bit messages failed: not convertible.
  metrics::Counter egress_smtputf8_not_needed;  // Sent without the SMTPUTF8 the client said.
  // Outbound STARTTLS handshakes by result (queue/delivery/pools.h PoolCounters).
  metrics::Counter egress_tls_handshakes_ok;
  metrics::Counter egress_tls_resumed;  // ...of which resumed a session.
  metrics::Counter egress_tls_handshakes_failed;
  metrics::Counter egress_tls_handshakes_timed_out;
  metrics::Counter egress_tls_not_offered;
  metrics::Counter egress_tls_plaintext_fallbacks;  // "may" hops sent plaintext after a failure.
  metrics::Counter log_lines_dropped;  // The log reader fell behind (or stdout failed).
  // Sender authentication: results as written in Authentication-Results.
  std::array<metrics::Counter, 7> auth_spf;    // By spf::Result.
  std::array<metrics::Counter, 7> auth_dkim;   // By dkim::Result; the last: none (unsigned).
  std::array<metrics::Counter, 5> auth_dmarc;  // By dmarc::Result.
  metrics::Counter auth_rejected_spf;          // 550 5.7.23 at MAIL FROM.
  metrics::Counter auth_deferred_spf;          // 451 4.7.24
  metrics::Counter auth_rejected_dmarc;        // 550 5.7.1 at the end of data.
  metrics::Counter auth_deferred_dmarc;        // 451 4.7.1
  // A DMARC temperror under a reject/quarantine policy (auth.dmarc_temperror), by action:
  // defer (451 4.7.5), accept, reject (550 5.7.1).
  std::array<metrics::Counter, 3> auth_temperror_actions;
  metrics::Counter auth_checks_over_budget;  // Given up at kCheckQuestionsMax: temperror.
  metrics::Counter auth_dkim_skipped;        // Signatures over auth.dkim_signatures_max.
  // Messages refused at the end of data for their header section: header_bytes_max,
  // header_fields_max (552 5.3.4), received_max (554 5.4.6, a mail loop).
  metrics::Counter header_too_big;
  metrics::Counter header_too_many_fields;
  metrics::Counter header_too_many_hops;
  metrics::Histogram auth_check_seconds{metrics::kLatencyBoundsUs};  // End of data to verdict.
  metrics::Counter dkim_signed;         // Messages signed (with one or more signatures).
  metrics::Counter dkim_sign_failures;  // A key failed to sign: stored unsigned.
  // An authenticated user's message not signed for a From domain the user does not own.
  metrics::Counter dkim_sign_not_owned;
  // MX delivery (docs/mx-delivery.md, "Metrics").
  // Failed and deferred recipients by bounce class (delivery::DeliveryMetrics::bounce_classes).
  std::array<metrics::Counter, delivery::kBounceClassNames.size()> bounce_classes;
  std::array<metrics::Counter, kMxResultNames.size()> mx_lookups;  // By kMxResultNames.
  // Destinations by state (kDestinationStateNames) and the adaptive shaping's totals.
  std::array<metrics::Gauge, delivery::kDestinationStateNames.size()> destinations;
  metrics::Counter destination_backoffs;
  metrics::Counter destination_suspensions;
  // Connections opened from each [[source]] (by index; names below, fixed at start).
  std::array<metrics::Counter, kSourcesMax> source_connections;
  std::vector<std::string> source_names;  // Set before the shard starts; then read-only.
  // The top destinations by queued, then "other" (when there are more); SetTopDestinations
  // by the shard, TopDestinations by the scrape.
  void SetTopDestinations(std::vector<DestinationSample> samples) {
    std::lock_guard lock(top_mutex_);
    top_destinations_.swap(samples);
  }
  [[nodiscard]] std::vector<DestinationSample> TopDestinations() const {
    std::lock_guard lock(top_mutex_);
    return top_destinations_;
  }
  // DNS, mirrored from the shard's resolver.
  metrics::Counter dns_lookups;
  metrics::Counter dns_cache_hits;
  metrics::Counter dns_queries;
  metrics::Counter dns_temporary_failures;
  metrics::Gauge dns_cache_entries;

 private:
  mutable std::mutex top_mutex_;
  std::vector<DestinationSample> top_destinations_;
};

}  // namespace relais::relaisd
