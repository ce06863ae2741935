// tools/relaisd/metrics_endpoint.cc — see metrics_endpoint.h.
#include "tools/relaisd/metrics_endpoint.h"

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
using metrics::TextWriter;
using Shards = std::vector<const ShardMetrics*>;

uint64_t Sum(const Shards& shards, const Counter ShardMetrics::*field) {
  uint64_t total = 0;
  for (const ShardMetrics* s : shards) {
    total += (s->*field).value();
  }
  return total;
}

void Total(TextWriter& w, const Shards& shards, std::string_view name, std::string_view help,
           const Counter ShardMetrics::*field) {
  w.Family(name, "counter", help);
  w.Sample(name, {}, Sum(shards, field));
}

void PerCore(TextWriter& w, const Shards& shards, std::string_view name, std::string_view help,
             const Gauge ShardMetrics::*field) {
  w.Family(name, "gauge", help);
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string core = base::StrCat(i);
    w.SampleSigned(name, {{"core", core}}, (shards[i]->*field).value());
  }
}

void Summed(TextWriter& w, const Shards& shards, std::string_view name, std::string_view help,
            const Histogram ShardMetrics::*field) {
  w.Family(name, "histogram", help);
  std::vector<const Histogram*> parts;
  for (const ShardMetrics* s : shards) {
    parts.push_back(&(s->*field));
  }
  w.Histograms(name, {}, parts);
}

}  // namespace

std::string RenderMetrics(const Shards& shards) {
  TextWriter w;
  // Connections.
  Total(w, shards, "relais_connections_accepted_total", "SMTP connections accepted.",
        &ShardMetrics::connections_accepted);
  w.Family("relais_connections_refused_total", "counter",
           "SMTP connections refused, by reason (those with a reason got a 421).");
  w.Sample("relais_connections_refused_total", {{"reason", "connections_max"}},
           Sum(shards, &ShardMetrics::refused_global));
  w.Sample("relais_connections_refused_total", {{"reason", "connections_per_ip_max"}},
           Sum(shards, &ShardMetrics::refused_per_ip));
  w.Sample("relais_connections_refused_total", {{"reason", "shutting_down"}},
           Sum(shards, &ShardMetrics::refused_stopping));
  w.Sample("relais_connections_refused_total", {{"reason", "unserved"}},
           Sum(shards, &ShardMetrics::refused_unserved));
  PerCore(w, shards, "relais_connections_active", "SMTP connections open.",
          &ShardMetrics::connections_active);
  Total(w, shards, "relais_receive_no_buffer_total",
        "Receives that found every provided buffer in use (retried next turn).",
        &ShardMetrics::recv_no_buffer);
  // SMTP.
  w.Family("relais_smtp_replies_total", "counter", "SMTP replies sent, by class.");
  for (size_t cls = 2; cls <= 5; ++cls) {
    uint64_t total = 0;
    for (const ShardMetrics* s : shards) {
      total += s->replies_by_class[cls].value();
    }
    const std::string label = base::StrCat(cls, "xx");
    w.Sample("relais_smtp_replies_total", {{"class", label}}, total);
  }
  Total(w, shards, "relais_messages_accepted_total", "Messages accepted (answered 250).",
        &ShardMetrics::messages_accepted);
  Total(w, shards, "relais_accepted_message_bytes_total", "Bytes of the messages accepted.",
        &ShardMetrics::message_bytes_accepted);
  Total(w, shards, "relais_recipients_duplicate_total",
        "Recipients named again in one transaction, delivered once (dropped at commit).",
        &ShardMetrics::recipients_duplicate);
  Total(w, shards, "relais_commit_failures_total",
        "Messages answered 451 or 452 because their spool batch failed.",
        &ShardMetrics::commit_failures);
  Total(w, shards, "relais_transfers_too_slow_total",
        "Message transfers cut with 421 4.4.2: below data_rate_min or past the deadline.",
        &ShardMetrics::transfers_too_slow);
  Total(w, shards, "relais_receive_budget_refusals_total",
        "Messages refused 452 4.3.1 because receive_bytes_max was reached.",
        &ShardMetrics::receive_budget_refusals);
  PerCore(w, shards, "relais_receive_bytes", "Memory held by messages being received.",
          &ShardMetrics::receive_bytes);
  Summed(w, shards, "relais_message_durable_seconds",
         "From the end of a message's data to its 250 (on disk).", &ShardMetrics::time_to_durable);
  // Spool.
  Total(w, shards, "relais_spool_appends_total", "Records appended to the spool.",
        &ShardMetrics::spool_appends);
  Total(w, shards, "relais_spool_fsyncs_total",
        "Spool batches made durable (one write and one fdatasync each).",
        &ShardMetrics::spool_batches);
  Total(w, shards, "relais_spool_fsync_failures_total", "Spool batches whose write or sync failed.",
        &ShardMetrics::spool_batch_failures);
  Total(w, shards, "relais_spool_written_bytes_total", "Bytes written to spool segments.",
        &ShardMetrics::spool_bytes_written);
  Summed(w, shards, "relais_spool_fsync_seconds", "Write plus fdatasync time of a spool batch.",
         &ShardMetrics::spool_batch_seconds);
  PerCore(w, shards, "relais_spool_bytes", "Bytes of live spool segments.",
          &ShardMetrics::spool_bytes);
  PerCore(w, shards, "relais_spool_segments", "Spool segments on disk.",
          &ShardMetrics::spool_segments);
  // Queue.
  w.Family("relais_queue_messages", "gauge", "Messages in the delivery queue, by state.");
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string core = base::StrCat(i);
    w.SampleSigned("relais_queue_messages", {{"core", core}, {"state", "ready"}},
                   shards[i]->queue_ready.value());
    w.SampleSigned("relais_queue_messages", {{"core", core}, {"state", "deferred"}},
                   shards[i]->queue_deferred.value());
    w.SampleSigned("relais_queue_messages", {{"core", core}, {"state", "in_flight"}},
                   shards[i]->queue_in_flight.value());
  }
  PerCore(w, shards, "relais_spool_messages", "Messages held in the spool.",
          &ShardMetrics::queue_messages);
  // Delivery.
  w.Family("relais_delivery_attempts_total", "counter",
           "Recipient delivery attempts, by route type and outcome.");
  for (size_t r = 0; r < kRouteNames.size(); ++r) {
    for (size_t o = 0; o < kOutcomeNames.size(); ++o) {
      uint64_t total = 0;
      for (const ShardMetrics* s : shards) {
        total += s->attempts[r][o].value();
      }
      w.Sample("relais_delivery_attempts_total",
               {{"route", kRouteNames[r]}, {"outcome", kOutcomeNames[o]}}, total);
    }
  }
  Total(w, shards, "relais_bounces_total", "Delivery status reports queued to senders.",
        &ShardMetrics::bounces);
  Total(w, shards, "relais_maildir_mailboxes_recreated_total",
        "Mailboxes removed while relaisd ran, created again for a delivery.",
        &ShardMetrics::maildir_mailboxes_recreated);
  Total(w, shards, "relais_maildir_directories_forgotten_total",
        "Times a delivery worker's set of durable Maildir directories was full and emptied.",
        &ShardMetrics::maildir_directories_forgotten);
  Summed(w, shards, "relais_delivery_seconds",
         "From a message's reception to a recipient's delivery, retries included.",
         &ShardMetrics::time_to_delivered);
  Total(w, shards, "relais_egress_connections_opened_total",
        "Outbound SMTP/LMTP connections opened.", &ShardMetrics::egress_connections_opened);
  Total(w, shards, "relais_egress_connect_failures_total",
        "Outbound connections that failed before the greeting and EHLO were done.",
        &ShardMetrics::egress_connect_failures);
  Total(w, shards, "relais_egress_tasks_retried_total",
        "Messages sent again on a fresh connection after a cached one was found stale.",
        &ShardMetrics::egress_tasks_retried);
  PerCore(w, shards, "relais_egress_connections", "Outbound connections open.",
          &ShardMetrics::egress_connections);
  Total(w, shards, "relais_egress_connections_unused_total",
        "Outbound connections that greeted and closed without carrying a message.",
        &ShardMetrics::egress_connections_unused);
  Total(w, shards, "relais_egress_converted_7bit_total",
        "8-bit messages converted to quoted-printable for a next hop without 8BITMIME.",
        &ShardMetrics::egress_converted_7bit);
  Total(w, shards, "relais_egress_not_convertible_total",
        "8-bit messages failed for a next hop without 8BITMIME: not convertible to 7 bits.",
        &ShardMetrics::egress_not_convertible);
  Total(w, shards, "relais_egress_smtputf8_not_needed_total",
        "Messages sent without the SMTPUTF8 their client asked for (ASCII envelope and header).",
        &ShardMetrics::egress_smtputf8_not_needed);
  Total(w, shards, "relais_log_lines_dropped_total",
        "Log lines dropped because the log reader fell behind.", &ShardMetrics::log_lines_dropped);
  // Sender authentication.
  w.Family("relais_auth_results_total", "counter",
           "Sender authentication results written in Authentication-Results, by method "
           "(DKIM: one per signature; none for an unsigned message).");
  auto results = [&](std::string_view method, auto member, size_t count, auto name) {
    for (size_t i = 0; i < count; ++i) {
      uint64_t total = 0;
      for (const ShardMetrics* s : shards) {
        total += (s->*member)[i].value();
      }
      w.Sample("relais_auth_results_total", {{"method", method}, {"result", name(i)}}, total);
    }
  };
  results("spf", &ShardMetrics::auth_spf, 7,
          [](size_t i) { return spf::ResultName(static_cast<spf::Result>(i)); });
  results("dkim", &ShardMetrics::auth_dkim, 7, [](size_t i) {
    return i == 6 ? std::string_view("none") : dkim::ResultName(static_cast<dkim::Result>(i));
  });
  results("dmarc", &ShardMetrics::auth_dmarc, 5,
          [](size_t i) { return dmarc::ResultName(static_cast<dmarc::Result>(i)); });
  w.Family("relais_auth_refusals_total", "counter",
           "Transactions refused by the authentication policy, by method and reply.");
  w.Sample("relais_auth_refusals_total", {{"method", "spf"}, {"reply", "reject"}},
           Sum(shards, &ShardMetrics::auth_rejected_spf));
  w.Sample("relais_auth_refusals_total", {{"method", "spf"}, {"reply", "defer"}},
           Sum(shards, &ShardMetrics::auth_deferred_spf));
  w.Sample("relais_auth_refusals_total", {{"method", "dmarc"}, {"reply", "reject"}},
           Sum(shards, &ShardMetrics::auth_rejected_dmarc));
  w.Sample("relais_auth_refusals_total", {{"method", "dmarc"}, {"reply", "defer"}},
           Sum(shards, &ShardMetrics::auth_deferred_dmarc));
  w.Family("relais_auth_temperror_actions_total", "counter",
           "DMARC temperrors under a reject or quarantine policy, by the action taken "
           "(auth.dmarc_temperror).");
  for (size_t i = 0; i < 3; ++i) {
    static constexpr std::string_view kActions[] = {"defer", "accept", "reject"};
    uint64_t total = 0;
    for (const ShardMetrics* s : shards) {
      total += s->auth_temperror_actions[i].value();
    }
    w.Sample("relais_auth_temperror_actions_total", {{"action", kActions[i]}}, total);
  }
  Total(w, shards, "relais_auth_checks_over_budget_total",
        "Message checks given up at the DNS question cap (undecided results are temperror).",
        &ShardMetrics::auth_checks_over_budget);
  Total(w, shards, "relais_auth_dkim_signatures_skipped_total",
        "DKIM signatures not evaluated (over auth.dkim_signatures_max).",
        &ShardMetrics::auth_dkim_skipped);
  w.Family("relais_messages_refused_header_total", "counter",
           "Messages refused at the end of data for their header section, by limit.");
  w.Sample("relais_messages_refused_header_total", {{"limit", "header_bytes_max"}},
           Sum(shards, &ShardMetrics::header_too_big));
  w.Sample("relais_messages_refused_header_total", {{"limit", "header_fields_max"}},
           Sum(shards, &ShardMetrics::header_too_many_fields));
  w.Sample("relais_messages_refused_header_total", {{"limit", "received_max"}},
           Sum(shards, &ShardMetrics::header_too_many_hops));
  Summed(w, shards, "relais_auth_check_seconds",
         "From the end of a message's data to the DKIM and DMARC verdict (DNS included).",
         &ShardMetrics::auth_check_seconds);
  Total(w, shards, "relais_dkim_signed_total",
        "Messages from trusted clients signed with DKIM (one or more signatures each).",
        &ShardMetrics::dkim_signed);
  Total(w, shards, "relais_dkim_sign_failures_total",
        "Messages stored unsigned because a DKIM key failed to sign.",
        &ShardMetrics::dkim_sign_failures);
  // DNS.
  Total(w, shards, "relais_dns_lookups_total", "DNS lookups by the sender checks.",
        &ShardMetrics::dns_lookups);
  Total(w, shards, "relais_dns_cache_hits_total", "DNS lookups answered from the cache.",
        &ShardMetrics::dns_cache_hits);
  Total(w, shards, "relais_dns_queries_total", "DNS questions sent to the servers.",
        &ShardMetrics::dns_queries);
  Total(w, shards, "relais_dns_temporary_failures_total",
        "DNS questions that failed temporarily (SERVFAIL, timeout, unreachable).",
        &ShardMetrics::dns_temporary_failures);
  PerCore(w, shards, "relais_dns_cache_entries", "DNS answers cached.",
          &ShardMetrics::dns_cache_entries);
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
