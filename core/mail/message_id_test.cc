#include "core/mail/message_id.h"

#include <gtest/gtest.h>

namespace relais::mail {
namespace {

TEST(MessageIdTest, RoundTripsThroughText) {
  const MessageId id = MessageId::Make(1764000000123456, 3, 42);
  EXPECT_EQ(id.shard(), 3);
  const std::string text = id.ToString();
  EXPECT_EQ(text.size(), 32u);
  auto parsed = MessageId::Parse(text);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(*parsed, id);
}

TEST(MessageIdTest, RejectsMalformedText) {
  EXPECT_FALSE(MessageId::Parse("").has_value());
  EXPECT_FALSE(MessageId::Parse("0123").has_value());
  EXPECT_FALSE(MessageId::Parse(std::string(32, 'g')).has_value());
  EXPECT_FALSE(MessageId::Parse(std::string(32, 'A')).has_value());
}

TEST(MessageIdTest, DistinctShardsAndCountersGiveDistinctIds) {
  EXPECT_NE(MessageId::Make(1, 0, 1), MessageId::Make(1, 1, 1));
  EXPECT_NE(MessageId::Make(1, 0, 1), MessageId::Make(1, 0, 2));
  EXPECT_NE(MessageId::Make(1, 0, 1), MessageId::Make(2, 0, 1));
}

}  // namespace
}  // namespace relais::mail
