// Fuzzes DMARC record parsing and evaluation: the input is the TXT record at
// _dmarc.example.com. Checks the parsed values stay in range and the outcome is consistent.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocols/dmarc/dmarc.h"

namespace {
void Check(bool ok) {
  if (!ok) {
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string problem;
  if (const std::optional<dmarc::Record> r = dmarc::ParseRecord(text, problem)) {
    Check(r->pct <= 100);
  } else {
    Check(!problem.empty());
  }
  for (uint8_t sample : {0, 50, 99}) {
    dmarc::Evaluation e({"mail.example.com", dmarc::Identifier{true, "example.com"}, {}, sample});
    int rounds = 0;
    while (!e.Run()) {
      Check(++rounds < 5);
      dns::Answer a{dns::AnswerStatus::kOk};
      a.texts = {text};
      e.Provide(e.needed(), a);
    }
    const dmarc::Outcome& o = e.outcome();
    Check(o.result != dmarc::Result::kPass || o.disposition == dmarc::Policy::kNone);
    Check(o.policy.has_value() == o.record.has_value());
  }
  return 0;
}
