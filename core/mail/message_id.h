// core/mail/message_id.h — the identity of an accepted message, unique across shards and
// restarts.
//
// `hi` is the spool's epoch: microseconds since the Unix epoch when the shard's spool opened,
// forced past every ID already in the spool, so a restart never reuses one. `lo` carries the
// shard number in its top 16 bits and a per-epoch counter below. Rendered as 32 lowercase hex
// digits: safe in file names, log lines and SMTP replies.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace relais::mail {

struct MessageId {
  uint64_t hi = 0;
  uint64_t lo = 0;

  [[nodiscard]] static MessageId Make(uint64_t epoch_us, uint16_t shard, uint64_t counter) {
    return MessageId{epoch_us, (uint64_t{shard} << 48) | (counter & ((uint64_t{1} << 48) - 1))};
  }
  [[nodiscard]] uint16_t shard() const { return static_cast<uint16_t>(lo >> 48); }
  [[nodiscard]] std::string ToString() const;
  [[nodiscard]] static std::optional<MessageId> Parse(std::string_view text);
  auto operator<=>(const MessageId&) const = default;
};

struct MessageIdHash {
  size_t operator()(const MessageId& id) const {
    return static_cast<size_t>(id.hi * 0x9E3779B97F4A7C15ull ^ id.lo);
  }
};

}  // namespace relais::mail
