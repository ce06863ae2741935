// core/metrics/metrics.h — counters, gauges and histograms that one shard writes and a scrape
// reads from another thread, and the Prometheus text exposition format (version 0.0.4).
//
// Every metric has a single writer (its shard), so an update is a relaxed load and store of
// the shard's own cache lines: no read-modify-write, no lock, no line shared with another
// writer. A scrape reads with relaxed loads and sums across shards; a value it sees may be a
// turn old, never torn. Histograms keep per-bucket counts (cumulated when written out) over
// fixed bounds in microseconds.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace relais::metrics {

class Counter {
 public:
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Publishes a monotonic total that the same writer keeps elsewhere (a module's own stats).
  void Mirror(uint64_t total) { value_.store(total, std::memory_order_relaxed); }
  [[nodiscard]] uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  [[nodiscard]] int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Upper bounds in microseconds, ascending; +Inf is implied.
inline constexpr uint64_t kLatencyBoundsUs[] = {
    100,    250,     500,     1'000,   2'500,     5'000,     10'000,    25'000,
    50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000};
// For waits of minutes to days (time until delivery, with retries).
inline constexpr uint64_t kDelayBoundsUs[] = {
    1'000,       10'000,        100'000,       1'000'000,      10'000'000,     60'000'000,
    300'000'000, 1'800'000'000, 3'600'000'000, 14'400'000'000, 86'400'000'000, 432'000'000'000};

class Histogram {
 public:
  static constexpr size_t kBucketsMax = 24;
  explicit Histogram(std::span<const uint64_t> bounds_us);
  void ObserveMicros(uint64_t us);
  [[nodiscard]] std::span<const uint64_t> bounds_us() const { return bounds_; }
  // Count in bucket i (non-cumulative); i == bounds_us().size() is the +Inf bucket.
  [[nodiscard]] uint64_t bucket(size_t i) const {
    return buckets_[i].load(std::memory_order_relaxed);
  }
  [[nodiscard]] uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  [[nodiscard]] uint64_t sum_us() const { return sum_us_.load(std::memory_order_relaxed); }

 private:
  std::span<const uint64_t> bounds_;
  std::atomic<uint64_t> buckets_[kBucketsMax + 1] = {};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

struct Label {
  std::string_view name;
  std::string_view value;
};

// Writes the text exposition format: a family header, then its samples.
class TextWriter {
 public:
  // "# HELP name help" and "# TYPE name type" (counter, gauge or histogram).
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value);
  void SampleSigned(std::string_view name, std::initializer_list<Label> labels, int64_t value);
  // The _bucket (cumulative, with le), _sum (seconds) and _count samples of histograms summed
  // over `parts` (one per shard, same bounds).
  void Histograms(std::string_view name, std::initializer_list<Label> labels,
                  const std::vector<const Histogram*>& parts);
  [[nodiscard]] std::string Take() { return std::move(out_); }

 private:
  void Head(std::string_view name, std::string_view suffix, std::initializer_list<Label> labels,
            const Label* extra);
  std::string out_;
};

}  // namespace relais::metrics
