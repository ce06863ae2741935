// queue/delivery/next_hops.cc — see next_hops.h.
#include "queue/delivery/next_hops.h"

#include "core/base/check.h"

namespace relais::delivery {

uint32_t NextHops::Pick() const {
  const auto count = static_cast<uint32_t>(down_.size());
  RELAIS_CHECK(count > 0) << "a destination without next hops";
  uint32_t index = preferred_ % count;
  for (uint32_t k = 0; k < count && down_[index]; ++k) {
    index = (index + 1) % count;  // The first next hop, in order, not known to be down.
  }
  return index;
}

bool NextHops::Failed(uint32_t index, bool others_ready) {
  if (!down_[index]) {
    down_[index] = true;
    ++down_count_;
  }
  if (down_count_ == down_.size() && !others_ready) {
    Clear();
    return true;
  }
  return false;
}

void NextHops::Worked(uint32_t index) {
  Clear();
  preferred_ = index;
}

void NextHops::Clear() {
  down_.assign(down_.size(), false);
  down_count_ = 0;
}

bool TaskHops::Has(const std::vector<uint32_t>& v, uint32_t x) {
  for (uint32_t y : v) {
    if (y == x) {
      return true;
    }
  }
  return false;
}

bool TaskHops::Allows(uint32_t endpoint, uint32_t host, uint32_t hosts_max) const {
  if (Has(failed_addresses_, endpoint) || Has(failed_hosts_, host)) {
    return false;
  }
  return Has(tried_, host) || hosts_max == 0 || tried_.size() < hosts_max;
}

std::optional<uint32_t> TaskHops::Pick(std::span<const uint32_t> hosts, const NextHops& pool,
                                       uint32_t hosts_max) const {
  std::optional<uint32_t> first;
  for (uint32_t e = 0; e < hosts.size(); ++e) {
    if (!Allows(e, hosts[e], hosts_max)) {
      continue;
    }
    if (e >= pool.size() || !pool.down(e)) {
      return e;
    }
    if (!first) {
      first = e;  // Down for the pool: only when nothing else is left.
    }
  }
  return first;
}

void TaskHops::Tried(uint32_t host) {
  if (!Has(tried_, host)) {
    tried_.push_back(host);
  }
}

void TaskHops::AddressFailed(uint32_t endpoint, uint32_t host) {
  Tried(host);
  if (!Has(failed_addresses_, endpoint)) {
    failed_addresses_.push_back(endpoint);
  }
}

void TaskHops::HostFailed(uint32_t host) {
  Tried(host);
  if (!Has(failed_hosts_, host)) {
    failed_hosts_.push_back(host);
  }
}

}  // namespace relais::delivery
