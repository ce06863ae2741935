// tools/relaisd/secure_random.h — secrets from the kernel's CSPRNG (getrandom(2)): the key
// of the message ID permutation at startup, the MIME boundary of each delivery report.
// Blocks only until the kernel's pool is initialised (early boot). Not for the hot path.
#pragma once

#include <sys/random.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/check.h"

namespace relais::relaisd {

// `bytes` (at most 256) random bytes into `out`.
inline void SecureRandomFill(void* out, size_t bytes) {
  auto* p = static_cast<uint8_t*>(out);
  for (size_t done = 0; done < bytes;) {
    const ssize_t n = ::getrandom(p + done, bytes - done, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    RELAIS_CHECK(n > 0) << "getrandom: " << errno;
    done += static_cast<size_t>(n);
  }
}

// `bytes` random bytes as lowercase hex (2 * bytes characters).
[[nodiscard]] inline std::string SecureRandomHex(size_t bytes) {
  uint8_t raw[64];
  RELAIS_CHECK(bytes <= sizeof(raw));
  SecureRandomFill(raw, bytes);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    out.push_back(kDigits[raw[i] >> 4]);
    out.push_back(kDigits[raw[i] & 15]);
  }
  return out;
}

}  // namespace relais::relaisd
