// Fuzzes the daemon's config loader: any bytes give a Config or an error naming where, never a
// crash.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tools/relaisd/config_schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = relais::relaisd::ParseConfig(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  if (!config.ok() && config.status().message().empty()) {
    std::abort();  // Every error says what is wrong.
  }
  return 0;
}
