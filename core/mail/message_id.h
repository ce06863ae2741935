// core/mail/message_id.h — the identity of an accepted message, unique across shards and
// restarts.
//
// `hi` is the spool's epoch: microseconds since the Unix epoch when the shard's spool opened,
// forced past every ID already in the spool, so a restart never reuses one. `lo` carries the
// shard number in its top 16 bits and, below, a per-epoch counter put through a keyed
// permutation of 48 bits: IDs stay unique (a permutation never maps two counters to one
// value) but a client that reads "queued as ID" learns nothing about how many messages the
// shard took before or after, and cannot predict the next ID. The key is secret and drawn
// per process (SetMessageIdKey at startup; IDs of earlier runs differ in `hi` anyway).
// Nothing orders messages by `lo`. Rendered as 32 lowercase hex digits: safe in file names,
// log lines and SMTP replies.
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

  [[nodiscard]] static MessageId Make(uint64_t epoch_us, uint16_t shard, uint64_t counter);
  [[nodiscard]] uint16_t shard() const { return static_cast<uint16_t>(lo >> 48); }
  [[nodiscard]] std::string ToString() const;
  [[nodiscard]] static std::optional<MessageId> Parse(std::string_view text);
  auto operator<=>(const MessageId&) const = default;
};

// The permutation's key (128 bits, from a cryptographic source). Until it is set the key is a
// fixed one, so tests and simulations replay. Call before any shard makes IDs.
void SetMessageIdKey(uint64_t k0, uint64_t k1);
// The keyed permutation of [0, 2^48) that Make applies to the counter, and its inverse.
[[nodiscard]] uint64_t PermuteCounter(uint64_t counter);
[[nodiscard]] uint64_t UnpermuteCounter(uint64_t value);

struct MessageIdHash {
  size_t operator()(const MessageId& id) const {
    return static_cast<size_t>(id.hi * 0x9E3779B97F4A7C15ull ^ id.lo);
  }
};

}  // namespace relais::mail
