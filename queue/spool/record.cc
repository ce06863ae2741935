#include "queue/spool/record.h"

#include <algorithm>
#include <cstring>

#include "core/base/check.h"
#include "core/base/crc32c.h"

namespace relais::spool {
namespace {

template <typename T>
void Put(std::string& out, T value) {
  char buf[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) {
    buf[i] = static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xFF);
  }
  out.append(buf, sizeof(T));
}

void PutBytes16(std::string& out, std::string_view s) {
  RELAIS_CHECK(s.size() <= 0xFFFF) << "field of " << s.size() << " bytes";
  Put<uint16_t>(out, static_cast<uint16_t>(s.size()));
  out.append(s);
}

// Bounds-checked little-endian reader over untrusted bytes.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T& value) {
    if (bytes_.size() - pos_ < sizeof(T)) {
      return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    value = static_cast<T>(v);
    pos_ += sizeof(T);
    return true;
  }
  bool GetBytes(size_t n, std::string_view& out) {
    if (bytes_.size() - pos_ < n) {
      return false;
    }
    out = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool GetString16(std::string& out) {
    uint16_t n;
    std::string_view v;
    if (!Get(n) || !GetBytes(n, v)) {
      return false;
    }
    out.assign(v);
    return true;
  }
  [[nodiscard]] size_t pos() const { return pos_; }
  [[nodiscard]] bool done() const { return pos_ == bytes_.size(); }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

// Reserves the record header, returning its offset; FinishRecord fills it in.
size_t BeginRecord(RecordType type, std::string& out) {
  const size_t start = out.size();
  out.append(8, '\0');
  out.push_back(static_cast<char>(type));
  return start;
}

void FinishRecord(size_t start, std::string& out) {
  const size_t payload = out.size() - start - kRecordHeaderBytes;
  RELAIS_CHECK(payload <= kRecordPayloadMax) << "record payload " << payload;
  const uint32_t crc = base::Crc32c(std::string_view(out).substr(start + 8));
  std::string header;
  Put<uint32_t>(header, static_cast<uint32_t>(payload));
  Put<uint32_t>(header, crc);
  std::memcpy(out.data() + start, header.data(), 8);
}

}  // namespace

void EncodeSegmentHeader(const SegmentHeader& header, std::string& out) {
  const size_t start = out.size();
  out.append(kSegmentMagic);
  Put<uint32_t>(out, kFormatVersion);
  Put<uint16_t>(out, header.shard);
  Put<uint16_t>(out, 0);
  Put<uint64_t>(out, header.sequence);
  Put<uint64_t>(out, header.created_us);
  Put<uint32_t>(out, 0);  // Flags, none defined in version 1.
  Put<uint32_t>(out, base::Crc32c(std::string_view(out).substr(start)));
  RELAIS_CHECK(out.size() - start == kSegmentHeaderBytes);
}

std::optional<SegmentHeader> DecodeSegmentHeader(std::string_view bytes) {
  if (bytes.size() < kSegmentHeaderBytes || bytes.substr(0, 8) != kSegmentMagic) {
    return std::nullopt;
  }
  Reader r(bytes.substr(8, kSegmentHeaderBytes - 8));
  uint32_t version, flags, crc;
  uint16_t reserved;
  SegmentHeader h;
  if (!r.Get(version) || !r.Get(h.shard) || !r.Get(reserved) || !r.Get(h.sequence) ||
      !r.Get(h.created_us) || !r.Get(flags) || !r.Get(crc)) {
    return std::nullopt;
  }
  if (version != kFormatVersion || crc != base::Crc32c(bytes.substr(0, kSegmentHeaderBytes - 4))) {
    return std::nullopt;
  }
  return h;
}

size_t EncodeMessage(const MessageRecord& record, std::string_view trace, std::string_view body,
                     std::string& out) {
  const mail::Envelope& env = record.envelope;
  RELAIS_CHECK(!env.recipients.empty()) << "a message without recipients";
  const size_t start = BeginRecord(RecordType::kMessage, out);
  Put<uint64_t>(out, record.id.hi);
  Put<uint64_t>(out, record.id.lo);
  Put<uint64_t>(out, record.received_us);
  Put<uint8_t>(out, static_cast<uint8_t>(env.body_type));
  // Flag bit 1: RFC 3461 fields follow the recipients. Messages without any stay as short as
  // before the DSN extension, and old records read as they always did.
  const bool dsn =
      env.dsn_return != mail::DsnReturn::kUnspecified || !env.envid.empty() ||
      std::any_of(env.recipients.begin(), env.recipients.end(),
                  [](const mail::Recipient& r) { return r.notify != 0 || !r.orcpt.empty(); });
  Put<uint8_t>(out, static_cast<uint8_t>((env.smtputf8 ? 1 : 0) | (dsn ? 2 : 0)));
  PutBytes16(out, env.sender);
  PutBytes16(out, env.helo);
  PutBytes16(out, env.client_address);
  Put<uint32_t>(out, static_cast<uint32_t>(env.recipients.size()));
  for (const mail::Recipient& r : env.recipients) {
    PutBytes16(out, r.address);
  }
  if (dsn) {
    Put<uint8_t>(out, static_cast<uint8_t>(env.dsn_return));
    PutBytes16(out, env.envid);
    for (const mail::Recipient& r : env.recipients) {
      Put<uint8_t>(out, r.notify);
      PutBytes16(out, r.orcpt);
    }
  }
  Put<uint64_t>(out, trace.size() + body.size());
  const size_t body_offset = out.size() - start;
  out.append(trace);
  out.append(body);
  FinishRecord(start, out);
  return body_offset;
}

void EncodeOutcome(const OutcomeRecord& record, std::string& out) {
  const size_t start = BeginRecord(RecordType::kOutcome, out);
  Put<uint64_t>(out, record.id.hi);
  Put<uint64_t>(out, record.id.lo);
  Put<uint32_t>(out, record.recipient_index);
  Put<uint8_t>(out, static_cast<uint8_t>(record.state));
  FinishRecord(start, out);
}

void EncodeDeferral(const DeferralRecord& record, std::string& out) {
  const size_t start = BeginRecord(RecordType::kDeferral, out);
  Put<uint64_t>(out, record.id.hi);
  Put<uint64_t>(out, record.id.lo);
  Put<uint64_t>(out, record.next_attempt_us);
  Put<uint32_t>(out, record.attempts);
  PutBytes16(out, std::string_view(record.last_reply).substr(0, 1000));
  if (record.delay_reported) {
    Put<uint8_t>(out, 1);  // Flags, only when set: other deferrals keep their old length.
  }
  FinishRecord(start, out);
}

DecodeStatus DecodeRecord(std::string_view bytes, DecodedRecord& out) {
  Reader header(bytes);
  uint32_t length, crc;
  uint8_t type;
  if (!header.Get(length) || !header.Get(crc) || !header.Get(type)) {
    return DecodeStatus::kIncomplete;
  }
  if (length > kRecordPayloadMax) {
    return DecodeStatus::kBadChecksum;  // No writer produces this: treat as corruption.
  }
  if (bytes.size() - kRecordHeaderBytes < length) {
    return DecodeStatus::kIncomplete;
  }
  if (crc != base::Crc32c(bytes.substr(8, 1 + length))) {
    return DecodeStatus::kBadChecksum;
  }
  out.size = kRecordHeaderBytes + length;
  Reader r(bytes.substr(kRecordHeaderBytes, length));
  if (type == static_cast<uint8_t>(RecordType::kMessage)) {
    out.type = RecordType::kMessage;
    MessageRecord& m = out.message;
    mail::Envelope& env = m.envelope;
    uint8_t body_type, flags;
    uint32_t recipients;
    uint64_t body_size;
    if (!r.Get(m.id.hi) || !r.Get(m.id.lo) || !r.Get(m.received_us) || !r.Get(body_type) ||
        !r.Get(flags) || body_type > 2 || (flags & ~3u) != 0 || !r.GetString16(env.sender) ||
        !r.GetString16(env.helo) || !r.GetString16(env.client_address) || !r.Get(recipients) ||
        recipients == 0 || recipients > length / 2) {
      return DecodeStatus::kBadPayload;
    }
    env.body_type = static_cast<mail::BodyType>(body_type);
    env.smtputf8 = (flags & 1) != 0;
    env.recipients.resize(recipients);
    for (mail::Recipient& rcpt : env.recipients) {
      if (!r.GetString16(rcpt.address)) {
        return DecodeStatus::kBadPayload;
      }
    }
    if ((flags & 2) != 0) {
      uint8_t ret;
      if (!r.Get(ret) || ret > 2 || !r.GetString16(env.envid)) {
        return DecodeStatus::kBadPayload;
      }
      env.dsn_return = static_cast<mail::DsnReturn>(ret);
      for (mail::Recipient& rcpt : env.recipients) {
        if (!r.Get(rcpt.notify) || rcpt.notify > 15 || !r.GetString16(rcpt.orcpt)) {
          return DecodeStatus::kBadPayload;
        }
      }
    }
    if (!r.Get(body_size)) {
      return DecodeStatus::kBadPayload;
    }
    out.body_offset = kRecordHeaderBytes + r.pos();
    if (!r.GetBytes(body_size, m.body) || !r.done()) {
      return DecodeStatus::kBadPayload;
    }
    return DecodeStatus::kOk;
  }
  if (type == static_cast<uint8_t>(RecordType::kOutcome)) {
    out.type = RecordType::kOutcome;
    OutcomeRecord& o = out.outcome;
    uint8_t state;
    if (!r.Get(o.id.hi) || !r.Get(o.id.lo) || !r.Get(o.recipient_index) || !r.Get(state) ||
        state > 2 || !r.done()) {
      return DecodeStatus::kBadPayload;
    }
    o.state = static_cast<RecipientState>(state);
    return DecodeStatus::kOk;
  }
  if (type == static_cast<uint8_t>(RecordType::kDeferral)) {
    out.type = RecordType::kDeferral;
    DeferralRecord& d = out.deferral;
    if (!r.Get(d.id.hi) || !r.Get(d.id.lo) || !r.Get(d.next_attempt_us) || !r.Get(d.attempts) ||
        !r.GetString16(d.last_reply) || d.last_reply.size() > 1000) {
      return DecodeStatus::kBadPayload;
    }
    if (!r.done()) {
      uint8_t flags;
      if (!r.Get(flags) || flags != 1 || !r.done()) {
        return DecodeStatus::kBadPayload;
      }
      d.delay_reported = true;
    }
    return DecodeStatus::kOk;
  }
  return DecodeStatus::kBadPayload;
}

}  // namespace relais::spool
