// Fuzzes the 8bit-to-7bit conversion. Checks that a converted message is 7-bit, that a 7-bit
// input comes out unchanged, and that the output stays within the quoted-printable bound.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/check.h"
#include "protocols/mime/seven_bit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace relais::mime;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string out;
  // A small nesting bound, so the fuzzer reaches it.
  const SevenBitOptions options{.nesting_max = 8};
  if (ConvertTo7Bit(in, options, out) != SevenBitOutcome::kConverted) {
    return 0;
  }
  bool seven_bit_input = true;
  for (char c : in) {
    seven_bit_input = seven_bit_input && static_cast<unsigned char>(c) < 0x80;
  }
  for (char c : out) {
    RELAIS_CHECK(static_cast<unsigned char>(c) < 0x80);
  }
  RELAIS_CHECK(!seven_bit_input || out == in);
  // Each byte at most 3, a soft line break per 25 encoded bytes, and added header fields.
  RELAIS_CHECK(out.size() <= 4 * in.size() + 1024);
  // Converting again changes nothing: the output is 7-bit.
  std::string again;
  RELAIS_CHECK(ConvertTo7Bit(out, options, again) == SevenBitOutcome::kConverted && again == out);
  return 0;
}
