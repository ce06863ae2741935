// core/metrics/metrics_test.cc — single-writer metrics and the text exposition format.
#include "core/metrics/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace relais::metrics {
namespace {

TEST(Metrics, CountersAndGauges) {
  Counter c;
  c.Add();
  c.Add(41);
  EXPECT_EQ(c.value(), 42u);
  Gauge g;
  g.Set(-3);
  EXPECT_EQ(g.value(), -3);
}

TEST(Metrics, HistogramBuckets) {
  Histogram h(kLatencyBoundsUs);
  h.ObserveMicros(50);          // <= 100 us
  h.ObserveMicros(100);         // <= 100 us: bounds are inclusive ("le")
  h.ObserveMicros(101);         // <= 250 us
  h.ObserveMicros(60'000'000);  // +Inf
  EXPECT_EQ(h.bucket(0), 2u);
  EXPECT_EQ(h.bucket(1), 1u);
  EXPECT_EQ(h.bucket(std::size(kLatencyBoundsUs)), 1u);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(h.sum_us(), 60'000'251u);
}

TEST(Metrics, TextFormat) {
  TextWriter w;
  w.Family("relais_x_total", "counter", "Things.");
  w.Sample("relais_x_total", {}, 7);
  w.Sample("relais_x_total", {{"reason", "a\"b\\c\nd"}}, 1);
  w.Family("relais_g", "gauge", "A gauge.");
  w.SampleSigned("relais_g", {{"core", "0"}, {"state", "ready"}}, -2);
  EXPECT_EQ(w.Take(),
            "# HELP relais_x_total Things.\n# TYPE relais_x_total counter\n"
            "relais_x_total 7\n"
            "relais_x_total{reason=\"a\\\"b\\\\c\\nd\"} 1\n"
            "# HELP relais_g A gauge.\n# TYPE relais_g gauge\n"
            "relais_g{core=\"0\",state=\"ready\"} -2\n");
}

TEST(Metrics, HistogramsAreSummedAndCumulative) {
  static constexpr uint64_t kBounds[] = {1'000, 1'000'000};
  Histogram a(kBounds), b(kBounds);
  a.ObserveMicros(500);
  b.ObserveMicros(500);
  b.ObserveMicros(2'000'000);
  TextWriter w;
  w.Histograms("relais_h_seconds", {{"route", "lmtp"}}, {&a, &b});
  EXPECT_EQ(w.Take(),
            "relais_h_seconds_bucket{route=\"lmtp\",le=\"0.001\"} 2\n"
            "relais_h_seconds_bucket{route=\"lmtp\",le=\"1.0\"} 2\n"
            "relais_h_seconds_bucket{route=\"lmtp\",le=\"+Inf\"} 3\n"
            "relais_h_seconds_sum{route=\"lmtp\"} 2.001\n"
            "relais_h_seconds_count{route=\"lmtp\"} 3\n");
}

TEST(Metrics, ConcurrentReaderSeesMonotonicValues) {
  Counter c;
  std::atomic<bool> done{false};
  std::thread reader([&] {
    uint64_t last = 0;
    while (!done.load()) {
      const uint64_t v = c.value();
      ASSERT_GE(v, last);
      last = v;
    }
  });
  for (int i = 0; i < 100000; ++i) {
    c.Add();
  }
  done = true;
  reader.join();
  EXPECT_EQ(c.value(), 100000u);
}

}  // namespace
}  // namespace relais::metrics
