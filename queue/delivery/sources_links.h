// queue/delivery/sources_links.h — the pools' LinkSources (pools.h) over a shard's Sources
// (sources.h). Its own header, apart from pools.h, so that the pools' code and tests never
// see the concrete class (a compiler may otherwise inline it where a fake is meant).
#pragma once

#include <cstdint>
#include <optional>

#include "queue/delivery/pools.h"
#include "queue/delivery/sources.h"

namespace relais::delivery {

class SourcesLinks final : public LinkSources {
 public:
  explicit SourcesLinks(Sources& sources) : sources_(sources) {}
  [[nodiscard]] std::optional<Sources::Choice> Pick(int32_t pool, uint32_t destination, int family,
                                                    Sources::Refusal* why) override {
    return sources_.Pick(pool, destination, family, why);
  }
  void Opened(uint32_t source, uint32_t destination) override {
    sources_.Opened(source, destination);
  }
  void Closed(uint32_t source, uint32_t destination) override {
    sources_.Closed(source, destination);
  }
  void Sent(uint32_t source, uint32_t destination) override { sources_.Sent(source, destination); }

 private:
  Sources& sources_;
};

}  // namespace relais::delivery
