// core/net/listener.h — the listening sockets: one SO_REUSEPORT socket per shard per
// configured address, so the kernel spreads connections over shards with no shared accept
// queue. Port 0 binds an ephemeral port once and the other shards' sockets join it. A port
// another socket already listens on is refused, not shared.
// Startup thread only.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace relais::net {

struct Listeners {
  std::vector<std::vector<int>> fds_by_shard;  // [shard][address]
  std::vector<std::string> bound;              // "host:port" with the real port, per address.
};

// Binds and listens on the unix socket `path` with mode 0600 from the start (no window in which
// others could connect). Whatever must be checked or removed at the path first is the
// caller's (the admin socket: tools/relaisd/admin_socket.h).
[[nodiscard]] absl::StatusOr<int> OpenUnixListener(const std::string& path);

// Fails, naming the address, when another socket already listens on it (SO_REUSEPORT would
// otherwise share the port with it), after waiting up to `busy_wait_ms` for a daemon killed a
// moment ago to let go of it.
[[nodiscard]] absl::StatusOr<Listeners> OpenListeners(const std::vector<std::string>& addresses,
                                                      uint32_t shards,
                                                      uint32_t busy_wait_ms = 2000);

}  // namespace relais::net
