// protocols/dns/answer.h — the resolver's vocabulary: a question, and an answer that keeps the
// outcomes SPF and DMARC must tell apart (RFC 7208 4.4, 2.6.6; RFC 7489 6.6.3): records,
// no such name (NXDOMAIN), the name exists with no records of that type (no data), and a
// temporary failure (SERVFAIL, timeout, unreachable servers).
//
// Plain values; no I/O. The c-ares backend (per shard, on its io_uring) produces them; tests
// build them by hand.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/mail/ip_network.h"

namespace relais::dns {

enum class RecordType : uint16_t {
  kA = 1,
  kCname = 5,
  kPtr = 12,
  kMx = 15,
  kTxt = 16,
  kAaaa = 28,
};

// The form an evaluation files a question's answer under and asks it by: lower case, without
// trailing dots. Idempotent, so that a name asked for is always found once answered (an
// evaluation that normalized differently when asking and when filing would ask forever).
[[nodiscard]] inline std::string QuestionKey(std::string_view name) {
  while (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  std::string key(name);
  for (char& c : key) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return key;
}

struct Question {
  std::string name;  // Without the trailing dot; compared case-insensitively.
  RecordType type = RecordType::kA;
  bool operator==(const Question&) const = default;
};

enum class AnswerStatus : uint8_t {
  kOk,         // Records (possibly none of the asked type after CNAMEs: see kNoData).
  kNoData,     // NOERROR with no record of the type.
  kNxDomain,   // The name does not exist.
  kTemporary,  // SERVFAIL, timeout, refused, network: try again later.
};

struct MxRecord {
  uint16_t preference = 0;
  std::string exchange;
};

struct Answer {
  AnswerStatus status = AnswerStatus::kTemporary;
  uint32_t ttl_seconds = 0;
  std::vector<mail::IpAddress> addresses;  // A, AAAA.
  std::vector<MxRecord> mx;                // MX.
  std::vector<std::string> texts;          // TXT: each record's strings joined; PTR: names.
  [[nodiscard]] bool void_lookup() const {
    return status == AnswerStatus::kNoData || status == AnswerStatus::kNxDomain;
  }
};

}  // namespace relais::dns
