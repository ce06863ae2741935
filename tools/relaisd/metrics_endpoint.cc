// tools/relaisd/metrics_endpoint.cc — see metrics_endpoint.h.
#include "tools/relaisd/metrics_endpoint.h"

#include <span>
#include <variant>

#include "core/base/strings.h"
#include "protocols/dkim/dkim.h"
#include "protocols/dmarc/dmarc.h"
#include "protocols/http/request.h"
#include "protocols/spf/spf.h"

namespace relais::relaisd {
namespace {

using metrics::Counter;
using metrics::Gauge;
using metrics::Histogram;
using metrics::Label;
using metrics::TextWriter;
using Shards = std::vector<const ShardMetrics*>;
using CounterOf = const Counter ShardMetrics::*;
using GaugeOf = const Gauge ShardMetrics::*;
using HistogramOf = const Histogram ShardMetrics::*;

// The sum over the shards of the counter `at` picks in each block.
template <typename At>
uint64_t SumOf(const Shards& shards, At at) {
  uint64_t total = 0;
  for (const ShardMetrics* s : shards) {
    total += at(*s).value();
  }
  return total;
}

uint64_t Sum(const Shards& shards, CounterOf field) {
  return SumOf(shards, [field](const ShardMetrics& s) -> const Counter& { return s.*field; });
}

// One sample of a counter family split by labels (one or two), summed over the shards.
struct Part {
  Label label;
  Label second = {};  // None when its name is empty.
  CounterOf field = nullptr;
};

// A family whose samples come from arrays of counters, written by its own function.
struct Custom {
  std::string_view type;
  void (*samples)(TextWriter& w, const Shards& shards, std::string_view name);
};

// One family of the exposition: a counter summed over the shards, a gauge per core
// (label core="i"), a histogram summed over the shards, a counter split by labels, or custom.
struct Family {
  std::string_view name;
  std::string_view help;
  std::variant<CounterOf, GaugeOf, HistogramOf, std::span<const Part>, Custom> samples;
};

struct Writer {
  TextWriter& w;
  const Shards& shards;
  std::string_view name;
  std::string_view help;

  void operator()(CounterOf field) const {
    w.Family(name, "counter", help);
    w.Sample(name, {}, Sum(shards, field));
  }
  void operator()(GaugeOf field) const {
    w.Family(name, "gauge", help);
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string core = base::StrCat(i);
      w.SampleSigned(name, {{"core", core}}, (shards[i]->*field).value());
    }
  }
  void operator()(HistogramOf field) const {
    w.Family(name, "histogram", help);
    std::vector<const Histogram*> parts;
    for (const ShardMetrics* s : shards) {
      parts.push_back(&(s->*field));
    }
    w.Histograms(name, {}, parts);
  }
  void operator()(std::span<const Part> parts) const {
    w.Family(name, "counter", help);
    for (const Part& p : parts) {
      const uint64_t total = Sum(shards, p.field);
      if (p.second.name.empty()) {
        w.Sample(name, {p.label}, total);
      } else {
        w.Sample(name, {p.label, p.second}, total);
      }
    }
  }
  void operator()(const Custom& custom) const {
    w.Family(name, custom.type, help);
    custom.samples(w, shards, name);
  }
};

void RepliesByClass(TextWriter& w, const Shards& shards, std::string_view name) {
  for (size_t cls = 2; cls <= 5; ++cls) {
    const std::string label = base::StrCat(cls, "xx");
    w.Sample(
        name, {{"class", label}},
        SumOf(
            shards, [cls](const ShardMetrics& s) -> auto& { return s.replies_by_class[cls]; }));
  }
}

void QueueByState(TextWriter& w, const Shards& shards, std::string_view name) {
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string core = base::StrCat(i);
    w.SampleSigned(name, {{"core", core}, {"state", "ready"}}, shards[i]->queue_ready.value());
    w.SampleSigned(name, {{"core", core}, {"state", "deferred"}},
                   shards[i]->queue_deferred.value());
    w.SampleSigned(name, {{"core", core}, {"state", "in_flight"}},
                   shards[i]->queue_in_flight.value());
  }
}

void AttemptsByRouteAndOutcome(TextWriter& w, const Shards& shards, std::string_view name) {
  for (size_t r = 0; r < kRouteNames.size(); ++r) {
    for (size_t o = 0; o < kOutcomeNames.size(); ++o) {
      w.Sample(name, {{"route", kRouteNames[r]}, {"outcome", kOutcomeNames[o]}},
               SumOf(
                   shards, [ r, o ](const ShardMetrics& s) -> auto& { return s.attempts[r][o]; }));
    }
  }
}

void AuthResults(TextWriter& w, const Shards& shards, std::string_view name) {
  auto results = [&](std::string_view method, auto member, size_t count, auto result_name) {
    for (size_t i = 0; i < count; ++i) {
      w.Sample(name, {{"method", method}, {"result", result_name(i)}},
               SumOf(
                   shards, [&](const ShardMetrics& s) -> auto& { return (s.*member)[i]; }));
    }
  };
  results("spf", &ShardMetrics::auth_spf, 7,
          [](size_t i) { return spf::ResultName(static_cast<spf::Result>(i)); });
  results("dkim", &ShardMetrics::auth_dkim, 7, [](size_t i) {
    return i == 6 ? std::string_view("none") : dkim::ResultName(static_cast<dkim::Result>(i));
  });
  results("dmarc", &ShardMetrics::auth_dmarc, 5,
          [](size_t i) { return dmarc::ResultName(static_cast<dmarc::Result>(i)); });
}

void TempErrorActions(TextWriter& w, const Shards& shards, std::string_view name) {
  static constexpr std::string_view kActions[] = {"defer", "accept", "reject"};
  for (size_t i = 0; i < std::size(kActions); ++i) {
    w.Sample(
        name, {{"action", kActions[i]}},
        SumOf(
            shards, [i](const ShardMetrics& s) -> auto& { return s.auth_temperror_actions[i]; }));
  }
}

void BounceClasses(TextWriter& w, const Shards& shards, std::string_view name) {
  // kNone is a delivery, never a bounce.
  for (size_t c = 1; c < delivery::kBounceClassNames.size(); ++c) {
    w.Sample(name, {{"class", delivery::kBounceClassNames[c]}},
             SumOf(
                 shards, [c](const ShardMetrics& s) -> auto& { return s.bounce_classes[c]; }));
  }
}

void MxLookups(TextWriter& w, const Shards& shards, std::string_view name) {
  for (size_t r = 0; r < kMxResultNames.size(); ++r) {
    w.Sample(name, {{"result", kMxResultNames[r]}},
             SumOf(
                 shards, [r](const ShardMetrics& s) -> auto& { return s.mx_lookups[r]; }));
  }
}

void DestinationsByState(TextWriter& w, const Shards& shards, std::string_view name) {
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string core = base::StrCat(i);
    for (size_t st = 0; st < delivery::kDestinationStateNames.size(); ++st) {
      w.SampleSigned(name, {{"core", core}, {"state", delivery::kDestinationStateNames[st]}},
                     shards[i]->destinations[st].value());
    }
  }
}

// The bounded destination families: each shard's top destinations and its "other".
void DestinationSamples(TextWriter& w, const Shards& shards, std::string_view name,
                        int64_t DestinationSample::*field) {
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string core = base::StrCat(i);
    for (const DestinationSample& d : shards[i]->TopDestinations()) {
      w.SampleSigned(name, {{"core", core}, {"destination", d.name}}, d.*field);
    }
  }
}

void DestinationQueued(TextWriter& w, const Shards& shards, std::string_view name) {
  DestinationSamples(w, shards, name, &DestinationSample::queued);
}

void DestinationConnections(TextWriter& w, const Shards& shards, std::string_view name) {
  DestinationSamples(w, shards, name, &DestinationSample::connections);
}

void SourceConnections(TextWriter& w, const Shards& shards, std::string_view name) {
  if (shards.empty()) {
    return;
  }
  const std::vector<std::string>& names = shards[0]->source_names;  // The same on every shard.
  for (size_t i = 0; i < names.size() && i < kSourcesMax; ++i) {
    w.Sample(name, {{"source", names[i]}},
             SumOf(
                 shards, [i](const ShardMetrics& s) -> auto& { return s.source_connections[i]; }));
  }
}

using M = ShardMetrics;

constexpr Part kRefusedConnections[] = {
    {{"reason", "connections_max"}, {}, &M::refused_global},
    {{"reason", "connections_per_ip_max"}, {}, &M::refused_per_ip},
    {{"reason", "shutting_down"}, {}, &M::refused_stopping},
    {{"reason", "unserved"}, {}, &M::refused_unserved}};

constexpr Part kTlsHandshakes[] = {{{"result", "full"}, {}, &M::tls_handshakes_full},
                                   {{"result", "resumed"}, {}, &M::tls_handshakes_resumed},
                                   {{"result", "failed"}, {}, &M::tls_handshakes_failed},
                                   {{"result", "timeout"}, {}, &M::tls_handshakes_timeout}};

constexpr Part kSmtpAuth[] = {{{"result", "success"}, {}, &M::smtp_auth_success},
                              {{"result", "failure"}, {}, &M::smtp_auth_failure},
                              {{"result", "locked_out"}, {}, &M::smtp_auth_locked_out},
                              {{"result", "error"}, {}, &M::smtp_auth_error}};

constexpr Part kAuthRefusals[] = {
    {{"method", "spf"}, {"reply", "reject"}, &M::auth_rejected_spf},
    {{"method", "spf"}, {"reply", "defer"}, &M::auth_deferred_spf},
    {{"method", "dmarc"}, {"reply", "reject"}, &M::auth_rejected_dmarc},
    {{"method", "dmarc"}, {"reply", "defer"}, &M::auth_deferred_dmarc}};

constexpr Part kHeaderRefusals[] = {
    {{"limit", "header_bytes_max"}, {}, &M::header_too_big},
    {{"limit", "header_fields_max"}, {}, &M::header_too_many_fields},
    {{"limit", "received_max"}, {}, &M::header_too_many_hops}};

constexpr Part kEgressTlsHandshakes[] = {
    {{"result", "ok"}, {}, &M::egress_tls_handshakes_ok},
    {{"result", "failed"}, {}, &M::egress_tls_handshakes_failed},
    {{"result", "timed_out"}, {}, &M::egress_tls_handshakes_timed_out},
    {{"result", "not_offered"}, {}, &M::egress_tls_not_offered}};

// Every family, in exposition order: its name, help and where its samples come from.
const Family kFamilies[] = {
    // Connections.
    {"relais_connections_accepted_total", "SMTP connections accepted.", &M::connections_accepted},
    {"relais_connections_refused_total",
     "SMTP connections refused, by reason (those with a reason got a 421).",
     std::span<const Part>(kRefusedConnections)},
    {"relais_connections_active", "SMTP connections open.", &M::connections_active},
    {"relais_receive_no_buffer_total",
     "Receives that found every provided buffer in use (retried next turn).", &M::recv_no_buffer},
    // SMTP.
    {"relais_smtp_replies_total", "SMTP replies sent, by class.",
     Custom{"counter", RepliesByClass}},
    {"relais_messages_accepted_total", "Messages accepted (answered 250).", &M::messages_accepted},
    {"relais_accepted_message_bytes_total", "Bytes of the messages accepted.",
     &M::message_bytes_accepted},
    {"relais_recipients_duplicate_total",
     "Recipients named again in one transaction, delivered once (dropped at commit).",
     &M::recipients_duplicate},
    {"relais_commit_failures_total",
     "Messages answered 451 or 452 because their spool batch failed.", &M::commit_failures},
    {"relais_transfers_too_slow_total",
     "Message transfers cut with 421 4.4.2: below data_rate_min or past the deadline.",
     &M::transfers_too_slow},
    {"relais_receive_budget_refusals_total",
     "Messages refused 452 4.3.1 because receive_bytes_max was reached.",
     &M::receive_budget_refusals},
    {"relais_receive_bytes", "Memory held by messages being received.", &M::receive_bytes},
    {"relais_message_durable_seconds", "From the end of a message's data to its 250 (on disk).",
     &M::time_to_durable},
    {"relais_tls_handshakes_total",
     "Inbound TLS handshakes (STARTTLS and implicit TLS), by result: full, resumed (session "
     "ticket), failed, timeout (tls.handshake_timeout).",
     std::span<const Part>(kTlsHandshakes)},
    {"relais_tls_handshake_seconds",
     "Inbound TLS handshake time, from its start (the 220 to STARTTLS sent, or the connection "
     "accepted) to its end.",
     &M::tls_handshake_seconds},
    {"relais_smtp_auth_total",
     "SMTP AUTH attempts, by result: success, failure (535), locked_out (454, too many "
     "failures), error (454, not verifiable now).",
     std::span<const Part>(kSmtpAuth)},
    // Spool.
    {"relais_spool_appends_total", "Records appended to the spool.", &M::spool_appends},
    {"relais_spool_fsyncs_total", "Spool batches made durable (one write and one fdatasync each).",
     &M::spool_batches},
    {"relais_spool_fsync_failures_total", "Spool batches whose write or sync failed.",
     &M::spool_batch_failures},
    {"relais_spool_written_bytes_total", "Bytes written to spool segments.",
     &M::spool_bytes_written},
    {"relais_spool_fsync_seconds", "Write plus fdatasync time of a spool batch.",
     &M::spool_batch_seconds},
    {"relais_spool_bytes", "Bytes of live spool segments.", &M::spool_bytes},
    {"relais_spool_segments", "Spool segments on disk.", &M::spool_segments},
    // Queue.
    {"relais_queue_messages", "Messages in the delivery queue, by state.",
     Custom{"gauge", QueueByState}},
    {"relais_spool_messages", "Messages held in the spool.", &M::queue_messages},
    // Delivery.
    {"relais_delivery_attempts_total", "Recipient delivery attempts, by route type and outcome.",
     Custom{"counter", AttemptsByRouteAndOutcome}},
    {"relais_bounces_total", "Delivery status reports queued to senders.", &M::bounces},
    {"relais_maildir_mailboxes_recreated_total",
     "Mailboxes removed while relaisd ran, created again for a delivery.",
     &M::maildir_mailboxes_recreated},
    {"relais_maildir_directories_forgotten_total",
     "Times a delivery worker's set of durable Maildir directories was full and emptied.",
     &M::maildir_directories_forgotten},
    {"relais_delivery_seconds",
     "From a message's reception to a recipient's delivery, retries included.",
     &M::time_to_delivered},
    {"relais_delivery_bounces_total",
     "Recipients failed or deferred, by bounce class (the shipped rules and "
     "bounce.class_rules_file).",
     Custom{"counter", BounceClasses}},
    {"relais_mx_lookups_total",
     "MX resolutions of recipient domains, by result (ok, null_mx, nxdomain, temporary, loop, "
     "no_address).",
     Custom{"counter", MxLookups}},
    {"relais_destinations", "Destinations known, by state (per core).",
     Custom{"gauge", DestinationsByState}},
    {"relais_destination_backoffs_total",
     "Times the adaptive shaping halved a destination's connections and rate.",
     &M::destination_backoffs},
    {"relais_destination_suspensions_total",
     "Times a destination was suspended (a [[shaping.reply]] rule or relaisctl dest suspend).",
     &M::destination_suspensions},
    {"relais_destination_queued",
     "Messages waiting for a destination: each core's 10 with the most, and \"other\".",
     Custom{"gauge", DestinationQueued}},
    {"relais_destination_connections",
     "Connections open to a destination: each core's 10 with the most queued, and \"other\".",
     Custom{"gauge", DestinationConnections}},
    {"relais_source_connections_total", "Outbound connections opened from each [[source]].",
     Custom{"counter", SourceConnections}},
    {"relais_egress_connections_opened_total", "Outbound SMTP/LMTP connections opened.",
     &M::egress_connections_opened},
    {"relais_egress_connect_failures_total",
     "Outbound connections that failed before the greeting and EHLO were done.",
     &M::egress_connect_failures},
    {"relais_egress_tasks_retried_total",
     "Messages sent again on a fresh connection after a cached one was found stale.",
     &M::egress_tasks_retried},
    {"relais_egress_connections", "Outbound connections open.", &M::egress_connections},
    {"relais_egress_connections_unused_total",
     "Outbound connections that greeted and closed without carrying a message.",
     &M::egress_connections_unused},
    {"relais_egress_converted_7bit_total",
     "8-bit messages converted to quoted-printable for a next hop without 8BITMIME.",
     &M::egress_converted_7bit},
    {"relais_egress_not_convertible_total",
     "8-bit messages failed for a next hop without 8BITMIME: not convertible to 7 bits.",
     &M::egress_not_convertible},
    {"relais_egress_smtputf8_not_needed_total",
     "Messages sent without the SMTPUTF8 their client asked for (ASCII envelope and header).",
     &M::egress_smtputf8_not_needed},
    {"relais_egress_tls_handshakes_total",
     "Outbound STARTTLS handshakes by result (not_offered: a route requiring TLS found no "
     "STARTTLS, or it was refused).",
     std::span<const Part>(kEgressTlsHandshakes)},
    {"relais_egress_tls_resumed_total",
     "Outbound STARTTLS handshakes that resumed the session of the same host:port.",
     &M::egress_tls_resumed},
    {"relais_egress_tls_plaintext_fallbacks_total",
     "Outbound connections sent in plaintext to a tls = \"may\" next hop whose handshake "
     "failed recently.",
     &M::egress_tls_plaintext_fallbacks},
    {"relais_log_lines_dropped_total", "Log lines dropped because the log reader fell behind.",
     &M::log_lines_dropped},
    // Sender authentication.
    {"relais_auth_results_total",
     "Sender authentication results written in Authentication-Results, by method "
     "(DKIM: one per signature; none for an unsigned message).",
     Custom{"counter", AuthResults}},
    {"relais_auth_refusals_total",
     "Transactions refused by the authentication policy, by method and reply.",
     std::span<const Part>(kAuthRefusals)},
    {"relais_auth_temperror_actions_total",
     "DMARC temperrors under a reject or quarantine policy, by the action taken "
     "(auth.dmarc_temperror).",
     Custom{"counter", TempErrorActions}},
    {"relais_auth_checks_over_budget_total",
     "Message checks given up at the DNS question cap (undecided results are temperror).",
     &M::auth_checks_over_budget},
    {"relais_auth_dkim_signatures_skipped_total",
     "DKIM signatures not evaluated (over auth.dkim_signatures_max).", &M::auth_dkim_skipped},
    {"relais_messages_refused_header_total",
     "Messages refused at the end of data for their header section, by limit.",
     std::span<const Part>(kHeaderRefusals)},
    {"relais_auth_check_seconds",
     "From the end of a message's data to the DKIM and DMARC verdict (DNS included).",
     &M::auth_check_seconds},
    {"relais_dkim_signed_total",
     "Messages from trusted clients signed with DKIM (one or more signatures each).",
     &M::dkim_signed},
    {"relais_dkim_sign_failures_total",
     "Messages stored unsigned because a DKIM key failed to sign.", &M::dkim_sign_failures},
    {"relais_dkim_sign_not_owned_total",
     "Authenticated users' messages left unsigned: a From domain is not the user's.",
     &M::dkim_sign_not_owned},
    // DNS.
    {"relais_dns_lookups_total", "DNS lookups by the sender checks.", &M::dns_lookups},
    {"relais_dns_cache_hits_total", "DNS lookups answered from the cache.", &M::dns_cache_hits},
    {"relais_dns_queries_total", "DNS questions sent to the servers.", &M::dns_queries},
    {"relais_dns_temporary_failures_total",
     "DNS questions that failed temporarily (SERVFAIL, timeout, unreachable).",
     &M::dns_temporary_failures},
    {"relais_dns_cache_entries", "DNS answers cached.", &M::dns_cache_entries},
};

}  // namespace

std::string RenderMetrics(const Shards& shards) {
  TextWriter w;
  for (const Family& f : kFamilies) {
    std::visit(Writer{w, shards, f.name, f.help}, f.samples);
  }
  return w.Take();
}

size_t MetricsEndpoint::RequestEnd(std::string_view input) {
  http::Request request;
  size_t head_bytes = 0;
  switch (http::ParseRequestHead(input, request, head_bytes)) {
    case http::ParseStatus::kIncomplete:
      return kNeedMore;
    case http::ParseStatus::kOk:
      return head_bytes;
    case http::ParseStatus::kBad:
      // Too long (the server answers 431 via TooLarge) or malformed (OnRequest answers 400).
      return input.size() > http::kHeadBytesMax ? kNeedMore : input.size();
  }
  return input.size();
}

std::string MetricsEndpoint::TooLarge() {
  return http::Response(431, "Request Header Fields Too Large", "text/plain", "too large\n");
}

void MetricsEndpoint::OnRequest(net::RequestServer& server, uint64_t client,
                                std::string_view input) {
  http::Request request;
  size_t head_bytes = 0;
  if (http::ParseRequestHead(input, request, head_bytes) != http::ParseStatus::kOk) {
    server.Respond(client, http::Response(400, "Bad Request", "text/plain", "bad request\n"));
    return;
  }
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) {
    server.Respond(client,
                   http::Response(405, "Method Not Allowed", "text/plain", "GET or HEAD\n", head));
    return;
  }
  if (request.path == "/metrics") {
    std::string body = RenderMetrics(shards_);
    // This endpoint's own clients (shard 0 serves it; these are its counters).
    TextWriter w;
    w.Family("relais_metrics_clients_dropped_total", "counter",
             "Metrics clients closed before completing a request: too slow (timeout) or "
             "making room for a new client (evicted).");
    w.Sample("relais_metrics_clients_dropped_total", {{"reason", "timeout"}}, server.timed_out());
    w.Sample("relais_metrics_clients_dropped_total", {{"reason", "evicted"}}, server.evicted());
    body += w.Take();
    server.Respond(
        client, http::Response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, head));
  } else if (request.path == "/healthz") {
    server.Respond(client, http::Response(200, "OK", "text/plain", "ok\n", head));
  } else if (request.path == "/readyz") {
    server.Respond(client, stopping_ ? http::Response(503, "Service Unavailable", "text/plain",
                                                      "stopping\n", head)
                                     : http::Response(200, "OK", "text/plain", "ready\n", head));
  } else {
    server.Respond(client, http::Response(404, "Not Found", "text/plain", "not found\n", head));
  }
}

}  // namespace relais::relaisd
