// core/base/strings_test.cc — the ASCII character classes the protocols share.
#include "core/base/strings.h"

#include <gtest/gtest.h>

namespace relais::base {
namespace {

TEST(StringsTest, AsciiClassesAreLocaleFreeAndRejectEightBitBytes) {
  EXPECT_TRUE(IsAsciiAlpha('a') && IsAsciiAlpha('Z'));
  EXPECT_FALSE(IsAsciiAlpha('0') || IsAsciiAlpha('@') || IsAsciiAlpha('[') || IsAsciiAlpha('\xe9'));
  EXPECT_TRUE(IsAsciiDigit('0') && IsAsciiDigit('9'));
  EXPECT_FALSE(IsAsciiDigit('a') || IsAsciiDigit('/') || IsAsciiDigit(':') || IsAsciiDigit('\xb2'));
}

TEST(StringsTest, WspIsSpaceAndTabAndFoldingAddsCrLf) {
  EXPECT_TRUE(IsWsp(' ') && IsWsp('\t'));
  EXPECT_FALSE(IsWsp('\r') || IsWsp('\n') || IsWsp('\v') || IsWsp('a'));
  EXPECT_TRUE(IsFwsChar(' ') && IsFwsChar('\t') && IsFwsChar('\r') && IsFwsChar('\n'));
  EXPECT_FALSE(IsFwsChar('\v') || IsFwsChar('\f') || IsFwsChar('x'));
}

TEST(StringsTest, IsAsciiFindsAnyEightBitByte) {
  EXPECT_TRUE(IsAscii(""));
  EXPECT_TRUE(IsAscii(std::string_view("a\x7f\0b", 4)));
  EXPECT_FALSE(IsAscii("caf\xc3\xa9"));
  EXPECT_FALSE(IsAscii("\x80"));
  EXPECT_TRUE(IsEightBit('\xff') && IsEightBit('\x80'));
  EXPECT_FALSE(IsEightBit('\x7f') || IsEightBit('\0'));
  static_assert(IsAscii("abc") && !IsAscii("\xc3\xa9"));
}

}  // namespace
}  // namespace relais::base
