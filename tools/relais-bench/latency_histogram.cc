// tools/relais-bench/latency_histogram.cc — see latency_histogram.h.
#include "tools/relais-bench/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace relais::bench {

LatencyHistogram::LatencyHistogram() : counts_(kBuckets, 0) {}

uint32_t LatencyHistogram::BucketOf(uint64_t micros) {
  if (micros < kLinearBuckets) {
    return static_cast<uint32_t>(micros);
  }
  // The top 7 bits of the value: a leading 1 and a 6-bit position within its power of two.
  const uint32_t msb = 63u - static_cast<uint32_t>(std::countl_zero(micros));
  const uint32_t shift = msb - 6;                                    // >= 1 here.
  const uint32_t mantissa = static_cast<uint32_t>(micros >> shift);  // In [64, 128).
  return kLinearBuckets + (shift - 1) * kSubBuckets + (mantissa - kSubBuckets);
}

uint64_t LatencyHistogram::UpperBound(uint32_t bucket) {
  if (bucket < kLinearBuckets) {
    return bucket;
  }
  const uint32_t shift = (bucket - kLinearBuckets) / kSubBuckets + 1;
  const uint64_t mantissa = (bucket - kLinearBuckets) % kSubBuckets + kSubBuckets;
  if (shift + 7 >= 64 && mantissa == 2 * kSubBuckets - 1) {
    return UINT64_MAX;
  }
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::Record(uint64_t micros) {
  ++counts_[BucketOf(micros)];
  ++count_;
  sum_ += micros;
  min_ = std::min(min_, micros);
  max_ = std::max(max_, micros);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (uint32_t i = 0; i < kBuckets; ++i) {
    counts_[i] += other.counts_[i];
  }
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

uint64_t LatencyHistogram::Percentile(double q) const {
  if (count_ == 0) {
    return 0;
  }
  q = std::clamp(q, 0.0, 1.0);
  const uint64_t rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_) - 1e-9)));
  uint64_t seen = 0;
  for (uint32_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::clamp(UpperBound(i), min_, max_);
    }
  }
  return max_;
}

std::vector<std::pair<uint64_t, double>> LatencyHistogram::Cdf() const {
  std::vector<std::pair<uint64_t, double>> out;
  uint64_t seen = 0;
  for (uint32_t i = 0; i < kBuckets && seen < count_; ++i) {
    if (counts_[i] != 0) {
      seen += counts_[i];
      out.emplace_back(std::clamp(UpperBound(i), min_, max_),
                       static_cast<double>(seen) / static_cast<double>(count_));
    }
  }
  return out;
}

}  // namespace relais::bench
