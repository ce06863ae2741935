// tools/relaisd/metrics_endpoint_test.cc — rendering every shard's metrics, and the HTTP
// routes. (promtool checks the full output in tests/integration/test_metrics.py.)
#include "tools/relaisd/metrics_endpoint.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace relais::relaisd {
namespace {

TEST(MetricsEndpoint, SumsCountersAndLabelsGaugesByCore) {
  ShardMetrics a, b;
  a.messages_accepted.Add(2);
  b.messages_accepted.Add(3);
  a.connections_active.Set(4);
  b.connections_active.Set(1);
  b.attempts[static_cast<size_t>(delivery::Route::kSmarthost)][2].Add();
  a.replies_by_class[5].Add(7);
  a.recipients_duplicate.Add(2);
  const std::string text = RenderMetrics({&a, &b});
  EXPECT_NE(text.find("\nrelais_messages_accepted_total 5\n"), std::string::npos);
  EXPECT_NE(text.find("relais_connections_active{core=\"0\"} 4\n"
                      "relais_connections_active{core=\"1\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_delivery_attempts_total{route=\"smarthost\",outcome=\"failed\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_smtp_replies_total{class=\"5xx\"} 7\n"), std::string::npos);
  EXPECT_NE(text.find("\nrelais_recipients_duplicate_total 2\n"), std::string::npos);
  EXPECT_EQ(kRouteNames[static_cast<size_t>(delivery::Route::kNone)], "none");
}

TEST(MetricsEndpoint, LabelledFamiliesSumEachLabelOverShards) {
  ShardMetrics a, b;
  a.refused_unserved.Add(2);
  b.refused_unserved.Add(1);
  b.auth_deferred_dmarc.Add(4);
  a.header_too_many_hops.Add(6);
  a.auth_temperror_actions[1].Add(3);
  a.auth_dkim[6].Add(5);
  a.queue_deferred.Set(7);
  a.time_to_durable.ObserveMicros(1000);
  b.time_to_durable.ObserveMicros(2000);
  a.tls_handshakes_resumed.Add(2);
  b.tls_handshakes_resumed.Add(1);
  b.tls_handshakes_timeout.Add(4);
  a.tls_handshake_seconds.ObserveMicros(3000);
  b.smtp_auth_failure.Add(9);
  a.smtp_auth_locked_out.Add(1);
  const std::string text = RenderMetrics({&a, &b});
  EXPECT_NE(text.find("relais_tls_handshakes_total{result=\"resumed\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("relais_tls_handshakes_total{result=\"timeout\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("relais_tls_handshakes_total{result=\"full\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("relais_tls_handshake_seconds_count 1\n"), std::string::npos);
  EXPECT_NE(text.find("relais_smtp_auth_total{result=\"failure\"} 9\n"), std::string::npos);
  EXPECT_NE(text.find("relais_smtp_auth_total{result=\"locked_out\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("relais_connections_refused_total{reason=\"unserved\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_connections_refused_total{reason=\"shutting_down\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_auth_refusals_total{method=\"dmarc\",reply=\"defer\"} 4\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_messages_refused_header_total{limit=\"received_max\"} 6\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_auth_temperror_actions_total{action=\"accept\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_auth_results_total{method=\"dkim\",result=\"none\"} 5\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_queue_messages{core=\"0\",state=\"deferred\"} 7\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_message_durable_seconds_count 2\n"), std::string::npos);
  // Each family is introduced once, with its type.
  EXPECT_NE(text.find("# TYPE relais_queue_messages gauge\n"), std::string::npos);
  EXPECT_EQ(text.find("# TYPE relais_connections_refused_total counter\n"),
            text.rfind("# TYPE relais_connections_refused_total counter\n"));
}

TEST(MetricsEndpoint, MxDeliveryFamiliesHaveBoundedLabels) {
  ShardMetrics a, b;
  a.bounce_classes[static_cast<size_t>(delivery::BounceClass::kBadMailbox)].Add(2);
  b.bounce_classes[static_cast<size_t>(delivery::BounceClass::kBadMailbox)].Add(3);
  b.bounce_classes[static_cast<size_t>(delivery::BounceClass::kSpamRelated)].Add(1);
  a.mx_lookups[0].Add(10);  // ok
  b.mx_lookups[1].Add(1);   // null_mx
  a.mx_lookups[5].Add(2);   // no_address
  a.destinations[static_cast<size_t>(delivery::DestinationState::kActive)].Set(40);
  b.destinations[static_cast<size_t>(delivery::DestinationState::kSuspended)].Set(2);
  a.destination_backoffs.Add(3);
  b.destination_suspensions.Add(1);
  a.source_names = b.source_names = {"s1", "s2"};
  a.source_connections[0].Add(4);
  b.source_connections[1].Add(5);
  a.SetTopDestinations({{"mx.big.example", 900, 10}, {"other", 12, 3}});
  b.SetTopDestinations({{"aspmx.l.google.com", 5, 2}});
  const std::string text = RenderMetrics({&a, &b});
  EXPECT_NE(text.find("relais_delivery_bounces_total{class=\"bad-mailbox\"} 5\n"),
            std::string::npos);
  EXPECT_NE(text.find("relais_delivery_bounces_total{class=\"spam-related\"} 1\n"),
            std::string::npos);
  EXPECT_EQ(text.find("relais_delivery_bounces_total{class=\"none\"}"), std::string::npos);
  EXPECT_NE(text.find("relais_mx_lookups_total{result=\"ok\"} 10\n"), std::string::npos);
  EXPECT_NE(text.find("relais_mx_lookups_total{result=\"null_mx\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("relais_mx_lookups_total{result=\"no_address\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("relais_destinations{core=\"0\",state=\"active\"} 40\n"), std::string::npos);
  EXPECT_NE(text.find("relais_destinations{core=\"1\",state=\"suspended\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("\nrelais_destination_backoffs_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("\nrelais_destination_suspensions_total 1\n"), std::string::npos);
  EXPECT_NE(
      text.find("relais_destination_queued{core=\"0\",destination=\"mx.big.example\"} 900\n"
                "relais_destination_queued{core=\"0\",destination=\"other\"} 12\n"
                "relais_destination_queued{core=\"1\",destination=\"aspmx.l.google.com\"} 5\n"),
      std::string::npos);
  EXPECT_NE(
      text.find("relais_destination_connections{core=\"0\",destination=\"mx.big.example\"} 10\n"),
      std::string::npos);
  EXPECT_NE(text.find("relais_source_connections_total{source=\"s1\"} 4\n"
                      "relais_source_connections_total{source=\"s2\"} 5\n"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE relais_destination_queued gauge\n"), std::string::npos);
}

TEST(MetricsEndpoint, Routes) {
  ShardMetrics a;
  const std::vector<const ShardMetrics*> shards = {&a};
  bool stopping = false;
  MetricsEndpoint endpoint(shards, stopping);
  EXPECT_EQ(endpoint.RequestEnd("GET /metrics HTTP/1.1\r\n"), net::RequestHandler::kNeedMore);
  EXPECT_EQ(endpoint.RequestEnd("GET /metrics HTTP/1.1\r\n\r\n"), 25u);
  EXPECT_EQ(endpoint.RequestEnd("BAD\r\n\r\n"), 7u);  // Complete, to be answered 400.
  EXPECT_EQ(endpoint.RequestEnd(std::string(9000, 'x')), net::RequestHandler::kNeedMore);
}

}  // namespace
}  // namespace relais::relaisd
