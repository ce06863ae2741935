#include "core/metrics/metrics.h"

#include <algorithm>
#include <cstdio>

#include "core/base/check.h"
#include "core/base/strings.h"

namespace relais::metrics {

Histogram::Histogram(std::span<const uint64_t> bounds_us) : bounds_(bounds_us) {
  RELAIS_CHECK(bounds_.size() <= kBucketsMax && std::is_sorted(bounds_.begin(), bounds_.end()));
}

void Histogram::ObserveMicros(uint64_t us) {
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), us) - bounds_.begin());
  buckets_[i].store(buckets_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  sum_us_.store(sum_us_.load(std::memory_order_relaxed) + us, std::memory_order_relaxed);
}

namespace {

// Label values escape backslash, double quote and line feed (exposition format 0.0.4).
void AppendEscaped(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
}

std::string Seconds(uint64_t us) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", static_cast<double>(us) / 1e6);
  std::string s(buf);
  while (s.size() > 1 && s.back() == '0' && s[s.size() - 2] != '.') {
    s.pop_back();  // 0.000100 -> 0.0001; 1.000000 -> 1.0
  }
  return s;
}

}  // namespace

void TextWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  base::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void TextWriter::Head(std::string_view name, std::string_view suffix,
                      std::initializer_list<Label> labels, const Label* extra) {
  base::StrAppend(&out_, name, suffix);
  if (labels.size() == 0 && extra == nullptr) {
    out_.push_back(' ');
    return;
  }
  out_.push_back('{');
  bool first = true;
  auto put = [&](const Label& l) {
    base::StrAppend(&out_, first ? "" : ",", l.name, "=\"");
    AppendEscaped(out_, l.value);
    out_.push_back('"');
    first = false;
  };
  for (const Label& l : labels) {
    put(l);
  }
  if (extra != nullptr) {
    put(*extra);
  }
  out_.append("} ");
}

void TextWriter::Sample(std::string_view name, std::initializer_list<Label> labels,
                        uint64_t value) {
  Head(name, "", labels, nullptr);
  base::StrAppend(&out_, value, "\n");
}

void TextWriter::SampleSigned(std::string_view name, std::initializer_list<Label> labels,
                              int64_t value) {
  Head(name, "", labels, nullptr);
  base::StrAppend(&out_, value, "\n");
}

void TextWriter::Histograms(std::string_view name, std::initializer_list<Label> labels,
                            const std::vector<const Histogram*>& parts) {
  RELAIS_CHECK(!parts.empty());
  const std::span<const uint64_t> bounds = parts.front()->bounds_us();
  uint64_t cumulative = 0, sum_us = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    for (const Histogram* h : parts) {
      cumulative += h->bucket(i);
    }
    const std::string le = i < bounds.size() ? Seconds(bounds[i]) : "+Inf";
    const Label extra{"le", le};
    Head(name, "_bucket", labels, &extra);
    base::StrAppend(&out_, cumulative, "\n");
  }
  for (const Histogram* h : parts) {
    sum_us += h->sum_us();
  }
  // The writer may observe while we read: _count is taken from the buckets just read, so that
  // it always equals the +Inf bucket as Prometheus requires.
  Head(name, "_sum", labels, nullptr);
  base::StrAppend(&out_, Seconds(sum_us), "\n");
  Head(name, "_count", labels, nullptr);
  base::StrAppend(&out_, cumulative, "\n");
}

}  // namespace relais::metrics
