// Fuzzes DMARC record parsing and evaluation: the input is the TXT record at
// _dmarc.example.com. Checks the parsed values stay in range and the outcome is consistent.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "protocols/dmarc/dmarc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais;
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string problem;
  if (const std::optional<dmarc::Record> r = dmarc::ParseRecord(text, problem)) {
    RELAIS_CHECK(r->pct <= 100);
  } else {
    RELAIS_CHECK(!problem.empty());
  }
  for (uint8_t sample : {0, 50, 99}) {
    dmarc::Evaluation e({"mail.example.com", dmarc::Identifier{true, "example.com"}, {}, sample});
    int rounds = 0;
    while (!e.Run()) {
      RELAIS_CHECK(++rounds < 5);
      dns::Answer a{dns::AnswerStatus::kOk};
      a.texts = {text};
      e.Provide(e.needed(), a);
    }
    const dmarc::Outcome& o = e.outcome();
    RELAIS_CHECK(o.result != dmarc::Result::kPass || o.disposition == dmarc::Policy::kNone);
    RELAIS_CHECK(o.policy.has_value() == o.record.has_value());
  }
  return 0;
}
