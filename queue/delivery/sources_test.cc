// queue/delivery/sources_test.cc — tests of sources.h (fake clock, seeded random).
#include "queue/delivery/sources.h"

#include <sys/socket.h>

#include <array>

#include "gtest/gtest.h"

namespace relais::delivery {
namespace {

Source MakeSource(std::string name, std::string_view address, uint32_t connections_max = 0,
                  uint32_t warmup_per_day = 0) {
  Source source;
  source.name = std::move(name);
  source.address = *mail::IpAddress::Parse(address);
  source.ehlo = source.name + ".example.com";
  source.connections_max = connections_max;
  source.warmup_per_day = warmup_per_day;
  return source;
}

SourcePool MakePool(std::string name, std::vector<SourcePool::Member> members) {
  return SourcePool{std::move(name), std::move(members)};
}

TEST(SourceOptionsTest, PoolIndexByName) {
  SourceOptions options;
  options.pools = {MakePool("out", {}), MakePool("warm", {})};
  EXPECT_EQ(options.PoolIndex("out"), 0);
  EXPECT_EQ(options.PoolIndex("warm"), 1);
  EXPECT_EQ(options.PoolIndex("cold"), -1);
  EXPECT_EQ(options.PoolIndex(""), -1);
}

TEST(SourceTest, PicksInProportionToTheWeights) {
  SourceOptions options;
  options.sources = {MakeSource("s1", "127.0.0.2"), MakeSource("s2", "127.0.0.3"),
                     MakeSource("s3", "127.0.0.4")};
  options.pools = {MakePool("out", {{0, 3}, {1, 1}, {2, 0}})};  // Weight 0 counts as 1.
  base::FakeClock clock;
  base::Random random(42);
  Sources sources(options, clock, random);
  std::array<int, 3> picks{};
  constexpr int kPicks = 50'000;
  for (int i = 0; i < kPicks; ++i) {
    Sources::Refusal why{};
    const auto choice = sources.Pick(0, 7, AF_INET, &why);
    ASSERT_TRUE(choice.has_value());
    ++picks[choice->source];
  }
  // 3 : 1 : 1, within 2% of all picks.
  EXPECT_NEAR(picks[0], kPicks * 3 / 5, kPicks / 50);
  EXPECT_NEAR(picks[1], kPicks / 5, kPicks / 50);
  EXPECT_NEAR(picks[2], kPicks / 5, kPicks / 50);
  EXPECT_EQ(sources.size(), 0u);  // Picking alone holds nothing.
}

TEST(SourceTest, FiltersByAddressFamily) {
  SourceOptions options;
  options.sources = {MakeSource("v4", "127.0.0.2"), MakeSource("v6", "::1")};
  options.pools = {MakePool("both", {{0, 1}, {1, 1}}), MakePool("v4only", {{0, 1}})};
  base::FakeClock clock;
  base::Random random(1);
  Sources sources(options, clock, random);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(sources.Pick(0, 1, AF_INET, nullptr)->source, 0u);
    EXPECT_EQ(sources.Pick(0, 1, AF_INET6, nullptr)->source, 1u);
  }
  Sources::Refusal why = Sources::Refusal::kConnections;
  EXPECT_FALSE(sources.Pick(1, 1, AF_INET6, &why).has_value());
  EXPECT_EQ(why, Sources::Refusal::kFamily);
  // No such pool: nothing of any family.
  why = Sources::Refusal::kConnections;
  EXPECT_FALSE(sources.Pick(5, 1, AF_INET, &why).has_value());
  EXPECT_EQ(why, Sources::Refusal::kFamily);
  EXPECT_FALSE(sources.Pick(-1, 1, AF_INET, &why).has_value());
}

TEST(SourceTest, ConnectionLimitIsPerSourceAndDestination) {
  SourceOptions options;
  options.sources = {MakeSource("s1", "127.0.0.2", /*connections_max=*/2),
                     MakeSource("s2", "127.0.0.3", /*connections_max=*/1)};
  options.pools = {MakePool("out", {{0, 1}, {1, 1}})};
  base::FakeClock clock;
  base::Random random(7);
  Sources sources(options, clock, random);
  constexpr uint32_t kDestination = 9;
  for (int i = 0; i < 3; ++i) {
    const auto choice = sources.Pick(0, kDestination, AF_INET, nullptr);
    ASSERT_TRUE(choice.has_value()) << i;
    sources.Opened(choice->source, kDestination);
  }
  Sources::Refusal why{};
  EXPECT_FALSE(sources.Pick(0, kDestination, AF_INET, &why).has_value());
  EXPECT_EQ(why, Sources::Refusal::kConnections);
  // Another destination is not limited by this one's connections.
  EXPECT_TRUE(sources.Pick(0, kDestination + 1, AF_INET, nullptr).has_value());
  // One closing makes room for that source only.
  sources.Closed(1, kDestination);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(sources.Pick(0, kDestination, AF_INET, nullptr)->source, 1u);
  }
  sources.Closed(0, kDestination);
  sources.Closed(0, kDestination);
  EXPECT_EQ(sources.size(), 0u);  // Nothing open, no warm-up: nothing kept.
}

TEST(SourceTest, WarmupCapsMessagesPerDestinationPerDayAndRollsOver) {
  SourceOptions options;
  options.sources = {MakeSource("new", "127.0.0.2", 0, /*warmup_per_day=*/3),
                     MakeSource("old", "127.0.0.3")};
  options.pools = {MakePool("warm", {{0, 1}}), MakePool("mixed", {{0, 1}, {1, 1}})};
  base::FakeClock clock;
  base::Random random(3);
  Sources sources(options, clock, random);
  constexpr uint32_t kDestination = 4;
  // Move to one minute before a UTC midnight.
  clock.AdvanceMs(sources.MsUntilNextDay() - 60'000);
  EXPECT_EQ(sources.MsUntilNextDay(), 60'000u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(sources.Pick(0, kDestination, AF_INET, nullptr).has_value());
    sources.Sent(0, kDestination);
  }
  Sources::Refusal why{};
  EXPECT_FALSE(sources.Pick(0, kDestination, AF_INET, &why).has_value());
  EXPECT_EQ(why, Sources::Refusal::kWarmup);
  // The cap is per destination.
  EXPECT_TRUE(sources.Pick(0, kDestination + 1, AF_INET, nullptr).has_value());
  // A mixed pool goes on with the warm source.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(sources.Pick(1, kDestination, AF_INET, nullptr)->source, 1u);
  }
  // Counts of a source without a cap are not kept.
  sources.Sent(1, kDestination);
  EXPECT_EQ(sources.size(), 1u);
  // The next UTC day starts over.
  clock.AdvanceMs(60'000);
  EXPECT_EQ(sources.MsUntilNextDay(), 86'400'000u);
  EXPECT_TRUE(sources.Pick(0, kDestination, AF_INET, nullptr).has_value());
  sources.Sent(0, kDestination);
  EXPECT_TRUE(sources.Pick(0, kDestination, AF_INET, nullptr).has_value());
}

TEST(SourceTest, ConnectionLimitOutranksWarmupInTheReason) {
  SourceOptions options;
  options.sources = {MakeSource("capped", "127.0.0.2", 0, 1),
                     MakeSource("busy", "127.0.0.3", 1, 0)};
  options.pools = {MakePool("out", {{0, 1}, {1, 1}})};
  base::FakeClock clock;
  base::Random random(5);
  Sources sources(options, clock, random);
  sources.Sent(0, 1);
  sources.Opened(1, 1);
  Sources::Refusal why{};
  EXPECT_FALSE(sources.Pick(0, 1, AF_INET, &why).has_value());
  // The busy source frees up when its connection closes: wait rather than defer for a day.
  EXPECT_EQ(why, Sources::Refusal::kConnections);
}

TEST(SourceTest, ForgetDropsADestinationsCounters) {
  SourceOptions options;
  options.sources = {MakeSource("s1", "127.0.0.2", 1, 1)};
  options.pools = {MakePool("out", {{0, 1}})};
  base::FakeClock clock;
  base::Random random(5);
  Sources sources(options, clock, random);
  sources.Opened(0, 1);
  sources.Sent(0, 1);
  sources.Opened(0, 2);
  EXPECT_EQ(sources.size(), 2u);
  EXPECT_FALSE(sources.Pick(0, 1, AF_INET, nullptr).has_value());
  sources.Forget(1);
  EXPECT_EQ(sources.size(), 1u);
  // The id, reused by a new destination, starts clean.
  EXPECT_TRUE(sources.Pick(0, 1, AF_INET, nullptr).has_value());
  // A connection closing after the day's count keeps the count.
  sources.Sent(0, 2);
  sources.Closed(0, 2);
  EXPECT_EQ(sources.size(), 1u);
  Sources::Refusal why{};
  EXPECT_FALSE(sources.Pick(0, 2, AF_INET, &why).has_value());
  EXPECT_EQ(why, Sources::Refusal::kWarmup);
}

}  // namespace
}  // namespace relais::delivery
