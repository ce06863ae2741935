// core/mail/ip_network.h — IPv4/IPv6 addresses and CIDR networks, for relay decisions and
// connection limits. Plain values; parsing never allocates beyond the returned object.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace relais::mail {

struct IpAddress {
  uint8_t family = 0;               // AF_INET or AF_INET6.
  std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4; IPv4-mapped IPv6 is unmapped.

  [[nodiscard]] static std::optional<IpAddress> Parse(std::string_view text);
  // An IPv4 client seen through a dual-stack IPv6 socket (::ffff:a.b.c.d) becomes the IPv4
  // address it is, so that relay rules and limits see one address per client.
  void Unmap();
  [[nodiscard]] std::string ToString() const;
  bool operator==(const IpAddress&) const = default;
};

struct IpNetwork {
  IpAddress base;
  uint8_t prefix_bits = 0;

  // "192.0.2.0/24", "2001:db8::/32", or a bare address (a host network).
  [[nodiscard]] static std::optional<IpNetwork> Parse(std::string_view text);
  [[nodiscard]] bool Contains(const IpAddress& address) const;
  [[nodiscard]] std::string ToString() const;
};

}  // namespace relais::mail
