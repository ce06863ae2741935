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

TEST(StringsTest, SplitKeepsEmptyPiecesAndTrimTakesItsClass) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(Split("a;;b;", ';'), (V{"a", "", "b", ""}));
  EXPECT_EQ(Split("", ';'), (V{""}));
  EXPECT_EQ(Split("abc", ';'), (V{"abc"}));
  EXPECT_EQ(Trim(" \t a b\t "), "a b");
  EXPECT_EQ(Trim("\r\n a \r\n"), "\r\n a \r\n");  // WSP only by default.
  EXPECT_EQ(Trim("\r\n a \r\n", IsFwsChar), "a");
  EXPECT_EQ(Trim("   "), "");
}

}  // namespace
}  // namespace relais::base
