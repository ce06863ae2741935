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

}  // namespace relais::delivery
