// tools/relaisd/metrics_endpoint.h — the HTTP endpoint Prometheus scrapes: /metrics (text
// exposition format 0.0.4, every shard's block summed or labelled by core), /healthz (the
// process serves) and /readyz (it accepts mail; 503 once it is stopping). Served by shard 0
// through a RequestServer; reading other shards' blocks is relaxed atomic loads, no handoff.
#pragma once

#include <atomic>
#include <string>
#include <string_view>
#include <vector>

#include "core/net/request_server.h"
#include "tools/relaisd/shard_metrics.h"

namespace relais::relaisd {

// Every metric of every shard in the text exposition format.
[[nodiscard]] std::string RenderMetrics(const std::vector<const ShardMetrics*>& shards);

class MetricsEndpoint final : public net::RequestHandler {
 public:
  // `stopping` is read at each /readyz; `shards` must outlive the endpoint.
  MetricsEndpoint(const std::vector<const ShardMetrics*>& shards, const bool& stopping)
      : shards_(shards), stopping_(stopping) {}

  size_t RequestEnd(std::string_view input) override;
  void OnRequest(net::RequestServer& server, uint64_t client, std::string_view request) override;
  std::string TooLarge() override;

 private:
  const std::vector<const ShardMetrics*>& shards_;
  const bool& stopping_;
};

}  // namespace relais::relaisd
