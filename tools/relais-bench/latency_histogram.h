// tools/relais-bench/latency_histogram.h — a log-linear histogram of latencies in
// microseconds, for percentiles that stay accurate from microseconds to minutes.
//
// Values below 128 have a bucket each; above, every power of two is split into 64 equal
// buckets, so a percentile is within 1/64 (1.6%) of the true value, and the whole range of
// uint64 fits in 3 776 counters (30 KiB). Recording is one count increment; merging adds the
// counters. A percentile is reported as the upper end of its bucket, clamped to the largest
// value seen, so p100 is the exact maximum. One thread per instance.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace relais::bench {

class LatencyHistogram {
 public:
  static constexpr uint32_t kLinearBuckets = 128;
  static constexpr uint32_t kSubBuckets = 64;
  static constexpr uint32_t kBuckets = kLinearBuckets + 57 * kSubBuckets;

  LatencyHistogram();
  void Record(uint64_t micros);
  void Merge(const LatencyHistogram& other);

  [[nodiscard]] uint64_t count() const { return count_; }
  [[nodiscard]] uint64_t min() const { return count_ == 0 ? 0 : min_; }
  [[nodiscard]] uint64_t max() const { return max_; }
  [[nodiscard]] double mean() const {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }
  // The smallest recorded value v such that at least fraction `q` (0..1] of all values are
  // <= v, up to the bucket's precision. 0 when empty.
  [[nodiscard]] uint64_t Percentile(double q) const;
  // (upper end of bucket, fraction of values at or below it) for every non-empty bucket, in
  // ascending order: the points of the latency CDF.
  [[nodiscard]] std::vector<std::pair<uint64_t, double>> Cdf() const;

  [[nodiscard]] static uint32_t BucketOf(uint64_t micros);
  // Largest value that falls in `bucket`.
  [[nodiscard]] static uint64_t UpperBound(uint32_t bucket);

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace relais::bench
