// queue/spool/record.h — the byte format of spool segments (docs/spool-format.md).
//
// A segment is a 40-byte header followed by records. A record is
//   u32 payload_length | u32 crc32c(type byte + payload) | u8 type | payload
// with every integer little-endian. Encoding validates what it writes; decoding checks the
// CRC and every length against the bytes present and never trusts either (pair assertions:
// before the write and after the read). Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/mail/envelope.h"
#include "core/mail/message_id.h"

namespace relais::spool {

inline constexpr std::string_view kSegmentMagic = "RLSSPOOL";
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 40;
inline constexpr size_t kRecordHeaderBytes = 9;
inline constexpr uint32_t kRecordPayloadMax = (1u << 30) + (1u << 24);  // Body cap + envelope.

enum class RecordType : uint8_t { kMessage = 1, kOutcome = 2, kDeferral = 3 };

enum class RecipientState : uint8_t { kPending = 0, kDelivered = 1, kFailed = 2 };

// "pending", "delivered" or "failed": the words relaisctl and the admin socket show.
[[nodiscard]] constexpr std::string_view RecipientStateName(RecipientState state) {
  return state == RecipientState::kPending     ? "pending"
         : state == RecipientState::kDelivered ? "delivered"
                                               : "failed";
}

struct SegmentHeader {
  uint16_t shard = 0;
  uint64_t sequence = 0;
  uint64_t created_us = 0;
};

struct MessageRecord {
  mail::MessageId id;
  uint64_t received_us = 0;
  mail::Envelope envelope;
  std::string_view body;  // Trace header included. Decoding: a view into the input.
};

// A message's pending recipients were deferred: when to try again (wall clock, so that it
// means the same after a restart), how many attempts so far, and what the destination said.
struct DeferralRecord {
  mail::MessageId id;
  uint64_t next_attempt_us = 0;
  uint32_t attempts = 0;
  std::string last_reply;       // At most 1000 bytes are kept.
  bool delay_reported = false;  // An RFC 3461 delay report went to the sender.
};

struct OutcomeRecord {
  mail::MessageId id;
  uint32_t recipient_index = 0;
  RecipientState state = RecipientState::kPending;
};

void EncodeSegmentHeader(const SegmentHeader& header, std::string& out);
[[nodiscard]] std::optional<SegmentHeader> DecodeSegmentHeader(std::string_view bytes);

// Appends one message record whose body is `trace` followed by `body`. Returns the offset of
// the body's first byte relative to the start of the record.
size_t EncodeMessage(const MessageRecord& record, std::string_view trace, std::string_view body,
                     std::string& out);
void EncodeOutcome(const OutcomeRecord& record, std::string& out);
void EncodeDeferral(const DeferralRecord& record, std::string& out);

enum class DecodeStatus : uint8_t {
  kOk,
  kIncomplete,  // Fewer bytes than the header or its length claims: a torn tail if at the end.
  kBadChecksum,
  kBadPayload,  // The CRC matched but the payload does not parse: a bug or a foreign file.
};

struct DecodedRecord {
  RecordType type = RecordType::kMessage;
  size_t size = 0;          // Header plus payload.
  size_t body_offset = 0;   // kMessage: where the body starts, relative to the record.
  MessageRecord message;    // Valid for kMessage.
  OutcomeRecord outcome;    // Valid for kOutcome.
  DeferralRecord deferral;  // Valid for kDeferral.
};

// Decodes the record at the start of `bytes`. Views in `out` point into `bytes`.
[[nodiscard]] DecodeStatus DecodeRecord(std::string_view bytes, DecodedRecord& out);

}  // namespace relais::spool
