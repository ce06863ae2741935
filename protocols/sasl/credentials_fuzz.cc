// Fuzzes the credentials file parser (sasl::Credentials::Parse). The file is the operator's,
// not a client's, but a parser must still never crash, and what it accepts must hold together:
// every accepted user is found again, and owns its own domain when its name is an address.
// Verify is not called: a hash costs milliseconds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "protocols/sasl/credentials.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<relais::sasl::Credentials> parsed = relais::sasl::Credentials::Parse(text, "fuzz");
  if (!parsed.ok()) {
    const std::string message(parsed.status().message());
    RELAIS_CHECK(message.starts_with("credentials file fuzz line ")) << message;
    return 0;
  }
  size_t users = 0;
  for (std::string_view line : relais::base::Split(text, '\n')) {
    line = relais::base::Trim(line, relais::base::IsFwsChar);
    if (line.empty() || line.front() == '#') {
      continue;
    }
    const std::string_view user = line.substr(0, line.find(':'));
    ++users;
    RELAIS_CHECK(parsed->Contains(user)) << user;
    const size_t at = user.rfind('@');
    if (at != std::string_view::npos) {
      RELAIS_CHECK(parsed->OwnsDomain(user, user.substr(at + 1))) << user;
    }
  }
  RELAIS_CHECK(users == parsed->size());
  return 0;
}
