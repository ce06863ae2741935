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
