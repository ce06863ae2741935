// Fuzzes the bounce class rules parser (BounceClassifier::Create) and Classify. The input is
// the rules text, then a NUL, then a reply text. The rules file is the operator's, but a
// parser must still never crash: an error names its line, an accepted file adds one rule per
// rule line, and any reply text is classified (into a class, never kNone unless delivered).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "queue/delivery/bounce_class.h"

using relais::delivery::BounceClass;
using relais::delivery::BounceClassifier;
using relais::delivery::Outcome;
using relais::delivery::Status;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const size_t shipped = [] {
    auto c = BounceClassifier::Create("");
    RELAIS_CHECK(c.ok()) << c.status();
    return (*c)->rules();
  }();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view rules = input.substr(0, nul);
  const std::string_view reply =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  absl::StatusOr<std::unique_ptr<BounceClassifier>> c = BounceClassifier::Create(rules);
  if (!c.ok()) {
    const std::string message(c.status().message());
    RELAIS_CHECK(message.starts_with("bounce class rules, line ")) << message;
    return 0;
  }
  size_t lines = 0;
  for (std::string_view line : relais::base::Split(rules, '\n')) {
    line = relais::base::Trim(line, [](char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; });
    lines += !line.empty() && line.front() != '#';
  }
  RELAIS_CHECK((*c)->rules() == shipped + lines) << (*c)->rules() << " " << lines;
  const std::string detail(reply);
  for (const Status& s : {Status{Outcome::kFailed, 550, "5.1.1", detail},
                          Status{Outcome::kDeferred, 421, "4.7.0", detail},
                          Status{Outcome::kFailed, 554, "", detail}}) {
    RELAIS_CHECK((*c)->Classify(s) != BounceClass::kNone);
  }
  RELAIS_CHECK((*c)->Classify(Status{Outcome::kDelivered, 250, "2.0.0", detail}) ==
               BounceClass::kNone);
  return 0;
}
