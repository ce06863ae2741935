#include "core/mail/message_id.h"

#include <gtest/gtest.h>

#include <unordered_set>

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

// A client that reads one "queued as" ID must not learn the next one, nor how many messages
// the shard took: consecutive counters give unrelated IDs, and no two counters collide.
TEST(MessageIdTest, ConsecutiveCountersGiveUnpredictableDistinctIds) {
  std::unordered_set<uint64_t> seen;
  int small_steps = 0;
  uint64_t previous = MessageId::Make(7, 2, 0).lo;
  for (uint64_t counter = 1; counter <= 100'000; ++counter) {
    const MessageId id = MessageId::Make(7, 2, counter);
    EXPECT_EQ(id.shard(), 2);
    EXPECT_TRUE(seen.insert(id.lo).second) << counter;
    const uint64_t low = id.lo & ((uint64_t{1} << 48) - 1);
    EXPECT_EQ(UnpermuteCounter(low), counter);
    const uint64_t step = id.lo > previous ? id.lo - previous : previous - id.lo;
    small_steps += step < 1'000'000;
    previous = id.lo;
  }
  EXPECT_LT(small_steps, 10);  // Random 48-bit values: a step this small is a 1 in 2^28 event.
  EXPECT_NE(MessageId::Make(7, 2, 1).lo & 0xFFFF, 1u);
}

TEST(MessageIdTest, TheKeyChangesTheMapping) {
  const uint64_t before = PermuteCounter(1);
  SetMessageIdKey(0x0123456789abcdefull, 0xfedcba9876543210ull);
  const uint64_t after = PermuteCounter(1);
  EXPECT_NE(before, after);
  EXPECT_EQ(UnpermuteCounter(after), 1u);
  SetMessageIdKey(0x736f6d6570736575ull, 0x646f72616e646f6dull);
  EXPECT_EQ(PermuteCounter(1), before);
}

}  // namespace
}  // namespace relais::mail
