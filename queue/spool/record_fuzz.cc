// Fuzzes spool record and segment-header decoding, the code that reads whatever a crash or a
// bad disk left behind. A record that decodes must encode back to exactly the same bytes:
// nothing is accepted that the writer could not have written.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "queue/spool/record.h"

namespace {
void Check(bool ok) {
  if (!ok) {
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais::spool;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)DecodeSegmentHeader(bytes);
  size_t pos = 0;
  while (pos < bytes.size()) {
    DecodedRecord record;
    if (DecodeRecord(bytes.substr(pos), record) != DecodeStatus::kOk) {
      break;
    }
    Check(record.size > 0 && record.size <= bytes.size() - pos);
    std::string again;
    switch (record.type) {
      case RecordType::kMessage:
        EncodeMessage(record.message, "", record.message.body, again);
        break;
      case RecordType::kOutcome:
        EncodeOutcome(record.outcome, again);
        break;
      case RecordType::kDeferral:
        EncodeDeferral(record.deferral, again);
        break;
    }
    Check(again == bytes.substr(pos, record.size));
    pos += record.size;
  }
  return 0;
}
