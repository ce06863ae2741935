#include "core/mail/message_id.h"

#include "absl/strings/str_format.h"

namespace relais::mail {
namespace {

// Written once at startup, before the shards start (SetMessageIdKey), then only read.
uint64_t g_key[2] = {0x736f6d6570736575ull, 0x646f72616e646f6dull};

constexpr uint64_t kHalfMask = (uint64_t{1} << 24) - 1;
constexpr int kRounds = 8;

uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

// SipHash-2-4 of one 64-bit word under the key: the Feistel round function (a PRF, so the
// network is a pseudorandom permutation, Luby-Rackoff).
uint64_t SipHash(uint64_t m) {
  uint64_t v0 = g_key[0] ^ 0x736f6d6570736575ull;
  uint64_t v1 = g_key[1] ^ 0x646f72616e646f6dull;
  uint64_t v2 = g_key[0] ^ 0x6c7967656e657261ull;
  uint64_t v3 = g_key[1] ^ 0x7465646279746573ull;
  const auto round = [&] {
    v0 += v1;
    v1 = Rotl(v1, 13);
    v1 ^= v0;
    v0 = Rotl(v0, 32);
    v2 += v3;
    v3 = Rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = Rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = Rotl(v1, 17);
    v1 ^= v2;
    v2 = Rotl(v2, 32);
  };
  const uint64_t b = uint64_t{8} << 56;  // Message length 8, no tail bytes.
  v3 ^= m;
  round();
  round();
  v0 ^= m;
  v3 ^= b;
  round();
  round();
  v0 ^= b;
  v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) {
    round();
  }
  return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t RoundFunction(int round, uint64_t half) {
  return SipHash((uint64_t(round) << 32) | half) & kHalfMask;
}

}  // namespace

void SetMessageIdKey(uint64_t k0, uint64_t k1) {
  g_key[0] = k0;
  g_key[1] = k1;
}

uint64_t PermuteCounter(uint64_t counter) {
  uint64_t left = (counter >> 24) & kHalfMask;
  uint64_t right = counter & kHalfMask;
  for (int r = 0; r < kRounds; ++r) {
    const uint64_t next = left ^ RoundFunction(r, right);
    left = right;
    right = next;
  }
  return (left << 24) | right;
}

uint64_t UnpermuteCounter(uint64_t value) {
  uint64_t left = (value >> 24) & kHalfMask;
  uint64_t right = value & kHalfMask;
  for (int r = kRounds - 1; r >= 0; --r) {
    const uint64_t previous = right ^ RoundFunction(r, left);
    right = left;
    left = previous;
  }
  return (left << 24) | right;
}

MessageId MessageId::Make(uint64_t epoch_us, uint16_t shard, uint64_t counter) {
  return MessageId{epoch_us,
                   (uint64_t{shard} << 48) | PermuteCounter(counter & ((uint64_t{1} << 48) - 1))};
}

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
