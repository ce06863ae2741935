#include "core/log/log.h"

#include <gtest/gtest.h>

namespace relais::log {
namespace {

TEST(LogTest, FormatsOneJsonLineWithFixedKeysFirst) {
  const std::string line =
      Format(1764000000123456, Level::kWarning, 2, "spool_recovered",
             {{"path", "/var/spool"}, {"messages", uint64_t{7}}, {"ok", true}, {"delta", -3}});
  EXPECT_EQ(line,
            "{\"ts\":\"2025-11-24T16:00:00.123456Z\",\"level\":\"warning\",\"shard\":2,"
            "\"event\":\"spool_recovered\",\"path\":\"/var/spool\",\"messages\":7,\"ok\":true,"
            "\"delta\":-3}\n");
}

TEST(LogTest, EscapesControlCharactersAndQuotes) {
  std::string out;
  AppendJsonEscaped(out, "a\"b\\c\r\n\x01\x7f\xC3\xA9");
  EXPECT_EQ(out, "a\\\"b\\\\c\\r\\n\\u0001\\u007f\xC3\xA9");
}

TEST(LogTest, QuotesJsonStrings) { EXPECT_EQ(JsonString("a\"b"), "\"a\\\"b\""); }

TEST(LogTest, OmitsShardOutsideShards) {
  const std::string line = Format(0, Level::kInfo, -1, "start", {});
  EXPECT_EQ(line.find("shard"), std::string::npos);
}

}  // namespace
}  // namespace relais::log
