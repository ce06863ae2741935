#include "core/base/crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace relais::base {
namespace {

// RFC 3720 appendix B.4 test vectors.
TEST(Crc32cTest, MatchesRfc3720Vectors) {
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
  }
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
}

TEST(Crc32cTest, ExtendingInPiecesEqualsWhole) {
  std::string data;
  for (int i = 0; i < 1000; ++i) {
    data.push_back(static_cast<char>(i * 7 + 3));
  }
  const uint32_t whole = Crc32c(data);
  for (size_t split = 0; split <= data.size(); split += 37) {
    uint32_t c = Crc32cExtend(0, data.data(), split);
    c = Crc32cExtend(c, data.data() + split, data.size() - split);
    EXPECT_EQ(c, whole) << "split at " << split;
  }
}

TEST(Crc32cTest, DetectsSingleBitFlip) {
  std::string data(4096, 'a');
  const uint32_t before = Crc32c(data);
  data[1234] ^= 0x10;
  EXPECT_NE(Crc32c(data), before);
}

}  // namespace
}  // namespace relais::base
