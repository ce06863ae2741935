// tools/relais-bench/latency_histogram_test.cc — bucket arithmetic and percentiles.
#include "tools/relais-bench/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/base/random.h"

namespace relais::bench {
namespace {

TEST(LatencyHistogram, BucketsAreContiguousAndTight) {
  // Every bucket's range starts right after the previous one's and is at most 1/64 wide.
  uint64_t previous_upper = 0;
  for (uint32_t b = 1; b < LatencyHistogram::kBuckets - 1; ++b) {
    const uint64_t lower = previous_upper + 1;
    const uint64_t upper = LatencyHistogram::UpperBound(b);
    ASSERT_EQ(LatencyHistogram::BucketOf(lower), b);
    ASSERT_EQ(LatencyHistogram::BucketOf(upper), b);
    ASSERT_LE(static_cast<double>(upper - lower), static_cast<double>(lower) / 64.0) << b;
    previous_upper = upper;
  }
  EXPECT_EQ(LatencyHistogram::BucketOf(UINT64_MAX), LatencyHistogram::kBuckets - 1);
  EXPECT_EQ(LatencyHistogram::UpperBound(LatencyHistogram::kBuckets - 1), UINT64_MAX);
}

TEST(LatencyHistogram, PercentilesMatchSortedValuesWithinPrecision) {
  base::Random random(7);
  LatencyHistogram h;
  std::vector<uint64_t> values;
  for (int i = 0; i < 100'000; ++i) {
    // Log-uniform from 1 us to about 10 s.
    const uint64_t v =
        static_cast<uint64_t>(std::exp(static_cast<double>(random.Below(16'000)) / 1000.0));
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const uint64_t exact = values[static_cast<size_t>(std::ceil(q * values.size())) - 1];
    const uint64_t got = h.Percentile(q);
    EXPECT_GE(got, exact) << q;
    EXPECT_LE(static_cast<double>(got), static_cast<double>(exact) * (1 + 1.0 / 64) + 1) << q;
  }
  EXPECT_EQ(h.Percentile(1.0), values.back());
  EXPECT_EQ(h.max(), values.back());
  EXPECT_EQ(h.min(), values.front());
  EXPECT_EQ(h.count(), values.size());
}

TEST(LatencyHistogram, SmallCountsAndMerge) {
  LatencyHistogram a, b;
  EXPECT_EQ(a.Percentile(0.5), 0u);
  EXPECT_TRUE(a.Cdf().empty());
  a.Record(10);
  a.Record(20);
  b.Record(30);
  b.Record(1'000'000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 4u);
  EXPECT_EQ(a.Percentile(0.25), 10u);
  EXPECT_EQ(a.Percentile(0.5), 20u);
  EXPECT_EQ(a.Percentile(0.75), 30u);
  EXPECT_EQ(a.Percentile(1.0), 1'000'000u);
  EXPECT_DOUBLE_EQ(a.mean(), (10 + 20 + 30 + 1'000'000) / 4.0);
  const auto cdf = a.Cdf();
  ASSERT_EQ(cdf.size(), 4u);
  EXPECT_EQ(cdf.front().first, 10u);
  EXPECT_DOUBLE_EQ(cdf.front().second, 0.25);
  EXPECT_EQ(cdf.back().first, 1'000'000u);
  EXPECT_DOUBLE_EQ(cdf.back().second, 1.0);
}

}  // namespace
}  // namespace relais::bench
