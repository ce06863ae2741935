#include "core/net/listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/strings.h"
#include "core/io/posix_io.h"
#include "core/net/net_address.h"

namespace relais::net {
namespace {

absl::Status SocketError(const std::string& address, const char* what) {
  return absl::UnavailableError(
      base::StrCat("listen ", address, ": ", what, ": ", std::strerror(errno)));
}

// SO_REUSEPORT lets any socket of the same user join a listening port, and the kernel then
// splits the connections between them: a second daemon, or any program of ours that bound the
// port while a crashed daemon was down, would silently take part of the traffic. So before the
// shards' sockets join each other, a socket without SO_REUSEPORT binds the address: with
// SO_REUSEADDR that fails only when something listens there. A daemon killed a moment ago may
// still be listening until the kernel has torn its ring down: that ends within `wait_ms`.
absl::Status CheckNobodyListens(const std::string& address, const sockaddr_storage& addr,
                                socklen_t len, uint32_t wait_ms) {
  for (uint32_t waited = 0;; waited += 50) {
    const int probe = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      return SocketError(address, "socket");
    }
    const int one = 1;
    setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr.ss_family == AF_INET6) {
      setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    const bool bound = bind(probe, reinterpret_cast<const sockaddr*>(&addr), len) == 0;
    const int error = errno;
    close(probe);
    if (bound) {
      return absl::OkStatus();
    }
    if (error != EADDRINUSE) {
      errno = error;
      return SocketError(address, "bind");
    }
    if (waited >= wait_ms) {
      return absl::FailedPreconditionError(base::StrCat(
          "listen ", address, ": address already in use (another socket listens there)"));
    }
    usleep(50'000);
  }
}

void CloseAll(const Listeners& listeners) {
  for (const std::vector<int>& fds : listeners.fds_by_shard) {
    for (const int fd : fds) {
      close(fd);
    }
  }
}

// Binds one address for every shard into `out`.
absl::Status OpenListener(const std::string& address, uint32_t shards, uint32_t busy_wait_ms,
                          Listeners& out) {
  std::string host, port;
  if (!SplitHostPort(address, host, port, /*allow_port_zero=*/true)) {
    return absl::InvalidArgumentError(
        base::StrCat("listen ", address, ": expected host:port or [v6]:port"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    return absl::InvalidArgumentError(
        base::StrCat("listen ", address, ": cannot resolve: ", gai_strerror(rc)));
  }
  sockaddr_storage bind_addr{};
  std::memcpy(&bind_addr, result->ai_addr, result->ai_addrlen);
  const socklen_t bind_len = result->ai_addrlen;
  const int family = result->ai_family;
  freeaddrinfo(result);
  const uint16_t wanted_port = family == AF_INET6
                                   ? reinterpret_cast<const sockaddr_in6*>(&bind_addr)->sin6_port
                                   : reinterpret_cast<const sockaddr_in*>(&bind_addr)->sin_port;
  // Port 0: the kernel picks a port no other socket holds, even one with SO_REUSEPORT.
  if (wanted_port != 0) {
    if (absl::Status s = CheckNobodyListens(address, bind_addr, bind_len, busy_wait_ms); !s.ok()) {
      return s;
    }
  }
  for (uint32_t shard = 0; shard < shards; ++shard) {
    const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      return SocketError(address, "socket");
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
      close(fd);
      return SocketError(address, "SO_REUSEPORT");
    }
    if (family == AF_INET6) {
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    // Accepted connections inherit it (they are accepted without a descriptor to set it on).
    // Replies are small and already batched per turn: waiting for more bytes only adds latency.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<sockaddr*>(&bind_addr), bind_len) != 0) {
      close(fd);
      return SocketError(address, "bind");
    }
    if (listen(fd, 4096) != 0) {
      close(fd);
      return SocketError(address, "listen");
    }
    if (shard == 0) {
      // With port 0 the kernel chose a port: every other shard binds that one.
      socklen_t len = sizeof(bind_addr);
      getsockname(fd, reinterpret_cast<sockaddr*>(&bind_addr), &len);
      out.bound.push_back(SocketAddressText(bind_addr));
    }
    out.fds_by_shard[shard].push_back(fd);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> OpenUnixListener(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(base::StrCat("unix socket ", path, ": path too long"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return SocketError(path, "socket");
  }
  // Created 0600 from the start: no window in which others could connect.
  const mode_t old_umask = umask(0177);
  const int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old_umask);
  if (rc != 0 || listen(fd, 64) != 0) {
    close(fd);
    return SocketError(path, "bind");
  }
  return fd;
}

absl::StatusOr<Listeners> OpenListeners(const std::vector<std::string>& addresses, uint32_t shards,
                                        uint32_t busy_wait_ms) {
  Listeners out;
  out.fds_by_shard.resize(shards);
  for (const std::string& address : addresses) {
    if (absl::Status s = OpenListener(address, shards, busy_wait_ms, out); !s.ok()) {
      CloseAll(out);
      return s;
    }
  }
  return out;
}

}  // namespace relais::net
