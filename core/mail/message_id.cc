#include "core/mail/message_id.h"

#include "absl/strings/str_format.h"

namespace relais::mail {

std::string MessageId::ToString() const { return absl::StrFormat("%016x%016x", hi, lo); }

std::optional<MessageId> MessageId::Parse(std::string_view text) {
  if (text.size() != 32) {
    return std::nullopt;
  }
  MessageId id;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    uint64_t nibble;
    if (c >= '0' && c <= '9') {
      nibble = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      nibble = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    uint64_t& half = i < 16 ? id.hi : id.lo;
    half = (half << 4) | nibble;
  }
  return id;
}

}  // namespace relais::mail
