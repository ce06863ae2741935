// queue/delivery/sources.cc — see sources.h.
#include "queue/delivery/sources.h"

#include <algorithm>

namespace relais::delivery {
namespace {

constexpr uint64_t kDayMs = 86'400'000;

}  // namespace

int32_t SourceOptions::PoolIndex(std::string_view name) const {
  for (size_t i = 0; i < pools.size(); ++i) {
    if (pools[i].name == name) {
      return static_cast<int32_t>(i);
    }
  }
  return -1;
}

Sources::Sources(const SourceOptions& options, const base::Clock& clock, base::Random& random)
    : options_(options), clock_(clock), random_(random) {}

uint32_t Sources::Today() const {
  return static_cast<uint32_t>(clock_.UnixMicros() / 1000 / kDayMs);
}

Sources::Use* Sources::Find(uint32_t source, uint32_t destination) {
  const auto it = use_.find(destination);
  if (it == use_.end()) {
    return nullptr;
  }
  for (Use& use : it->second) {
    if (use.source == source) {
      return &use;
    }
  }
  return nullptr;
}

Sources::Use& Sources::Make(uint32_t source, uint32_t destination) {
  std::vector<Use>& uses = use_[destination];
  for (Use& use : uses) {
    if (use.source == source) {
      return use;
    }
  }
  uses.push_back(Use{.source = source});
  return uses.back();
}

void Sources::Drop(uint32_t source, uint32_t destination) {
  const auto it = use_.find(destination);
  if (it == use_.end()) {
    return;
  }
  std::erase_if(it->second, [&](const Use& use) { return use.source == source; });
  if (it->second.empty()) {
    use_.erase(it);
  }
}

std::optional<Sources::Choice> Sources::Pick(int32_t pool, uint32_t destination, int family,
                                             Refusal* why) {
  Refusal refusal = Refusal::kFamily;
  if (pool < 0 || static_cast<size_t>(pool) >= options_.pools.size()) {
    if (why != nullptr) {
      *why = refusal;  // No such pool: no source of any family.
    }
    return std::nullopt;
  }
  const uint32_t today = Today();
  const SourcePool& members = options_.pools[static_cast<size_t>(pool)];
  // Eligible members and their cumulative weights; pools are small (a few sources).
  uint64_t total = 0;
  std::vector<std::pair<uint64_t, uint32_t>> eligible;  // (cumulative weight, source)
  eligible.reserve(members.members.size());
  for (const SourcePool::Member& member : members.members) {
    if (member.source >= options_.sources.size()) {
      continue;
    }
    const Source& source = options_.sources[member.source];
    if (source.address.family != 0 && source.address.family != family) {
      continue;
    }
    const Use* use = Find(member.source, destination);
    if (source.warmup_per_day != 0 && use != nullptr && use->day == today &&
        use->sent_today >= source.warmup_per_day) {
      if (refusal == Refusal::kFamily) {
        refusal = Refusal::kWarmup;
      }
      continue;
    }
    if (source.connections_max != 0 && use != nullptr &&
        use->connections >= source.connections_max) {
      refusal = Refusal::kConnections;  // One closing makes room: the better news.
      continue;
    }
    total += std::max<uint32_t>(1, member.weight);
    eligible.emplace_back(total, member.source);
  }
  if (eligible.empty()) {
    if (why != nullptr) {
      *why = refusal;
    }
    return std::nullopt;
  }
  const uint64_t roll = random_.Below(total);
  for (const auto& [cumulative, source] : eligible) {
    if (roll < cumulative) {
      return Choice{source};
    }
  }
  return Choice{eligible.back().second};
}

void Sources::Opened(uint32_t source, uint32_t destination) {
  ++Make(source, destination).connections;
}

void Sources::Closed(uint32_t source, uint32_t destination) {
  Use* use = Find(source, destination);
  if (use == nullptr) {
    return;
  }
  if (use->connections > 0) {
    --use->connections;
  }
  const bool counting = source < options_.sources.size() &&
                        options_.sources[source].warmup_per_day != 0 && use->day == Today() &&
                        use->sent_today != 0;
  if (use->connections == 0 && !counting) {
    Drop(source, destination);
  }
}

void Sources::Sent(uint32_t source, uint32_t destination) {
  if (source >= options_.sources.size() || options_.sources[source].warmup_per_day == 0) {
    return;  // Nothing to count against.
  }
  Use& use = Make(source, destination);
  const uint32_t today = Today();
  if (use.day != today) {
    use.day = today;
    use.sent_today = 0;
  }
  ++use.sent_today;
}

void Sources::Forget(uint32_t destination) { use_.erase(destination); }

uint64_t Sources::MsUntilNextDay() const {
  const uint64_t now_ms = clock_.UnixMicros() / 1000;
  return kDayMs - now_ms % kDayMs;
}

size_t Sources::size() const {
  size_t n = 0;
  for (const auto& [destination, uses] : use_) {
    n += uses.size();
  }
  return n;
}

}  // namespace relais::delivery
