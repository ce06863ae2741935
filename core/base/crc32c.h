// core/base/crc32c.h — CRC-32C (Castagnoli), the checksum of every spool record.
//
// Uses the SSE4.2 crc32 instruction when the CPU has it, a slice-by-8 table otherwise; both
// give the same result (tested against RFC 3720 B.4 vectors). Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace relais::base {

// Extends `crc` (0 to start) over `size` bytes at `data`.
[[nodiscard]] uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

[[nodiscard]] inline uint32_t Crc32c(std::string_view bytes) {
  return Crc32cExtend(0, bytes.data(), bytes.size());
}

}  // namespace relais::base
