// core/config/route.h — a route as the config file declares it: recipient domain → where its
// mail goes. Parsed and validated by the daemon's schema (tools/relaisd/config_schema.cc) so a
// bad file fails at start, not at first delivery; queue/routing's Router matches and uses them.
// TODO(#14): this vocabulary type moves to queue/routing (routing::Route) in a change that may
// also edit its users in queue/delivery (status.h includes core/config/config.h for it) and
// tools/relaisd/egress; core/config itself does not use it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace relais::config {

enum class RouteType : uint8_t { kMaildir, kSmarthost, kLmtp, kReject };

struct Route {
  std::string domain;  // "example.com", "*.example.com" or "*".
  RouteType type = RouteType::kMaildir;
  std::string path;                // maildir: root directory.
  std::vector<std::string> hosts;  // smarthost: host:port list, tried in order.
  std::string address;             // lmtp: host:port or unix socket path.
};

}  // namespace relais::config
