#include "core/net/net_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>

#include "core/base/strings.h"

namespace relais::net {

bool SplitHostPort(std::string_view address, std::string& host, std::string& port,
                   bool allow_port_zero) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) {
    return false;
  }
  std::string_view h = address.substr(0, colon);
  const std::string_view p = address.substr(colon + 1);
  if (h.starts_with('[') != h.ends_with(']')) {
    return false;
  }
  if (h.size() >= 2 && h.front() == '[') {
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string_view::npos) {
    return false;  // An IPv6 address needs its brackets.
  }
  uint32_t value = 0;
  if (p.empty() || p.size() > 5) {
    return false;
  }
  for (char c : p) {
    if (c < '0' || c > '9') {
      return false;
    }
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535 || (value == 0 && !allow_port_zero)) {
    return false;
  }
  host.assign(h);
  port.assign(p);
  return true;
}

std::string SocketAddressText(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  switch (address.ss_family) {
    case AF_INET: {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&address);
      inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
      return base::StrCat(text, ":", ntohs(a->sin_port));
    }
    case AF_INET6: {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&address);
      inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
      return base::StrCat("[", text, "]:", ntohs(a->sin6_port));
    }
    case AF_UNIX: {
      const auto* a = reinterpret_cast<const sockaddr_un*>(&address);
      return std::string(a->sun_path, strnlen(a->sun_path, sizeof(a->sun_path)));
    }
    default:
      return "?";
  }
}

std::optional<mail::IpAddress> PeerAddress(const sockaddr_storage& address) {
  mail::IpAddress a;
  if (address.ss_family == AF_INET) {
    a.family = AF_INET;
    std::memcpy(a.bytes.data(), &reinterpret_cast<const sockaddr_in*>(&address)->sin_addr, 4);
    return a;
  }
  if (address.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&address);
    a.family = AF_INET6;
    std::memcpy(a.bytes.data(), &sin6->sin6_addr, 16);
    a.Unmap();
    return a;
  }
  return std::nullopt;
}

}  // namespace relais::net
