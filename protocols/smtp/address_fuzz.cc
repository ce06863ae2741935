// Fuzzes RFC 5321 path parsing. Checks that an accepted path is a view into the input, obeys
// the RFC 5321 4.5.3.1 lengths, and is ASCII unless SMTPUTF8 allowed otherwise.
#include <cstdint>
#include <string_view>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "protocols/smtp/address.h"

namespace {
bool Inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais::smtp;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (PathKind kind : {PathKind::kReversePath, PathKind::kForwardPath}) {
    for (bool utf8 : {false, true}) {
      const ParsedPath p = ParsePath(text, kind, utf8);
      if (p.error != PathError::kNone) {
        continue;
      }
      RELAIS_CHECK(Inside(p.mailbox, text) && Inside(p.local_part, text) &&
                   Inside(p.domain, text) && Inside(p.rest, text));
      RELAIS_CHECK(p.local_part.size() <= 64 && p.domain.size() <= 255);
      RELAIS_CHECK(utf8 || relais::base::IsAscii(p.mailbox));
      RELAIS_CHECK(IsValidUtf8(p.mailbox));
      RELAIS_CHECK(p.mailbox.find_first_of("<>\r\n") == std::string_view::npos ||
                   p.local_part.starts_with('"'));
    }
  }
  return 0;
}
