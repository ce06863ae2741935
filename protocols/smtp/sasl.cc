#include "protocols/smtp/sasl.h"

#include <cstdint>

namespace relais::smtp {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

}  // namespace

std::string Base64Encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8 |
                       static_cast<unsigned char>(data[i + 2]);
    out.push_back(kAlphabet[n >> 18 & 63]);
    out.push_back(kAlphabet[n >> 12 & 63]);
    out.push_back(kAlphabet[n >> 6 & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  const size_t left = data.size() - i;
  if (left > 0) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16;
    if (left == 2) {
      n |= static_cast<uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8;
    }
    out.push_back(kAlphabet[n >> 18 & 63]);
    out.push_back(kAlphabet[n >> 12 & 63]);
    out.push_back(left == 2 ? kAlphabet[n >> 6 & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
    if (pad == 1 && text[i + 2] == '=') {
      return std::nullopt;  // "x=y=" style.
    }
    uint32_t n = 0;
    for (int k = 0; k < 4 - pad; ++k) {
      const int v = Value(text[i + static_cast<size_t>(k)]);
      if (v < 0) {
        return std::nullopt;
      }
      n = n << 6 | static_cast<uint32_t>(v);
    }
    n <<= 6 * pad;
    // Non-canonical encodings (bits set in the padding) are refused, so one text has one
    // meaning.
    if ((pad == 1 && (n & 0xFF) != 0) || (pad == 2 && (n & 0xFFFF) != 0)) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(n >> 16 & 0xFF));
    if (pad < 2) {
      out.push_back(static_cast<char>(n >> 8 & 0xFF));
    }
    if (pad < 1) {
      out.push_back(static_cast<char>(n & 0xFF));
    }
  }
  return out;
}

std::optional<PlainCredentials> ParsePlain(std::string_view message) {
  const size_t first = message.find('\0');
  if (first == std::string_view::npos) {
    return std::nullopt;
  }
  const size_t second = message.find('\0', first + 1);
  if (second == std::string_view::npos ||
      message.find('\0', second + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  PlainCredentials c;
  c.authzid = message.substr(0, first);
  c.authcid = message.substr(first + 1, second - first - 1);
  c.password = message.substr(second + 1);
  if (c.authcid.empty() || c.password.empty()) {
    return std::nullopt;
  }
  return c;
}

std::string EncodePlain(std::string_view user, std::string_view password) {
  std::string message;
  message.reserve(user.size() + password.size() + 2);
  message.push_back('\0');
  message.append(user);
  message.push_back('\0');
  message.append(password);
  std::string encoded = Base64Encode(message);
  Wipe(message);  // No copy of the password is left behind.
  return encoded;
}

void Wipe(std::string& secret) {
  // Through a volatile pointer, so that the stores are not dropped as dead.
  volatile char* p = secret.data();
  for (size_t i = 0; i < secret.size(); ++i) {
    p[i] = 0;
  }
  secret.clear();
}

}  // namespace relais::smtp
