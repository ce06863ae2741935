// Fuzzes the reading of DNS replies from the network: c-ares' parsers as we call them, and our
// own walk over the answer and authority sections for TTLs.
#include <cstdint>
#include <cstdlib>

#include "protocols/dns/blocking_resolver.h"
#include "protocols/dns/resolver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais::dns;
  const int length = static_cast<int>(size);
  for (RecordType type :
       {RecordType::kA, RecordType::kAaaa, RecordType::kMx, RecordType::kTxt, RecordType::kPtr}) {
    const Answer a = ParseReply(type, data, length);
    if (a.status == AnswerStatus::kOk && a.addresses.empty() && a.mx.empty() && a.texts.empty()) {
      std::abort();  // kOk always carries records.
    }
  }
  (void)AnswerTtl(data, length);
  (void)NegativeTtl(data, length);
  return 0;
}
