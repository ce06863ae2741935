#include "core/mail/ip_network.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

#include "core/base/strings.h"

namespace relais::mail {

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return std::nullopt;
  }
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress out;
  if (inet_pton(AF_INET, buf, out.bytes.data()) == 1) {
    out.family = AF_INET;
    return out;
  }
  if (inet_pton(AF_INET6, buf, out.bytes.data()) == 1) {
    out.family = AF_INET6;
    out.Unmap();
    return out;
  }
  return std::nullopt;
}

void IpAddress::Unmap() {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (family == AF_INET6 && std::memcmp(bytes.data(), kMapped, 12) == 0) {
    std::memmove(bytes.data(), bytes.data() + 12, 4);
    std::memset(bytes.data() + 4, 0, 12);
    family = AF_INET;
  }
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(family, bytes.data(), buf, sizeof(buf)) == nullptr) {
    return "?";
  }
  return buf;
}

std::optional<IpNetwork> IpNetwork::Parse(std::string_view text) {
  IpNetwork net;
  const size_t slash = text.find('/');
  auto base = IpAddress::Parse(text.substr(0, slash));
  if (!base) {
    return std::nullopt;
  }
  net.base = *base;
  const uint32_t width = base->family == AF_INET ? 32 : 128;
  uint32_t bits = width;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), bits);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
        bits > width) {
      return std::nullopt;
    }
  }
  net.prefix_bits = static_cast<uint8_t>(bits);
  // Clear host bits so that Contains compares masked bytes only.
  for (uint32_t i = 0; i < 16; ++i) {
    const uint32_t first_bit = i * 8;
    if (first_bit >= bits) {
      net.base.bytes[i] = 0;
    } else if (bits - first_bit < 8) {
      net.base.bytes[i] &= static_cast<uint8_t>(0xFF << (8 - (bits - first_bit)));
    }
  }
  return net;
}

bool IpNetwork::Contains(const IpAddress& address) const {
  if (address.family != base.family) {
    return false;
  }
  uint32_t bits = prefix_bits;
  for (uint32_t i = 0; bits > 0; ++i) {
    const uint8_t mask = bits >= 8 ? 0xFF : static_cast<uint8_t>(0xFF << (8 - bits));
    if ((address.bytes[i] & mask) != base.bytes[i]) {
      return false;
    }
    bits = bits >= 8 ? bits - 8 : 0;
  }
  return true;
}

std::string IpNetwork::ToString() const { return base::StrCat(base.ToString(), "/", prefix_bits); }

}  // namespace relais::mail
