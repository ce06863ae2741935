// The pure steps of startup: what each shard receives, derived from the config and the machine.
#include "tools/relaisd/startup.h"

#include <gtest/gtest.h>

namespace relais::relaisd {
namespace {

Config Parsed(std::string_view toml) {
  absl::StatusOr<Config> c = ParseConfig(toml, "t.toml");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : Config{};
}

TEST(StartupTest, ReceiveBudgetIsAQuarterOfMemoryPerShardWithinBounds) {
  constexpr uint64_t kMiB = 1 << 20;
  EXPECT_EQ(DefaultReceiveBytesMax(8192 * kMiB, 4, 25 * kMiB), 512 * kMiB);
  EXPECT_EQ(DefaultReceiveBytesMax(64 * kMiB, 4, 1 * kMiB), 16 * kMiB);  // At least 16 MiB,
  EXPECT_EQ(DefaultReceiveBytesMax(1024 * 1024 * kMiB, 1, 25 * kMiB),
            1024 * kMiB);                                                   // at most 1 GiB,
  EXPECT_EQ(DefaultReceiveBytesMax(64 * kMiB, 4, 100 * kMiB), 101 * kMiB);  // one message + 1 MiB.
  EXPECT_EQ(DefaultReceiveBytesMax(64 * kMiB, 0, 1 * kMiB), 16 * kMiB);     // No division by 0.
}

TEST(StartupTest, SessionSlotsAreConnectionsPlusRefusalsUnderTheDescriptorLimit) {
  Config c = Parsed("[limits]\nconnections_max = 2000\n");
  EXPECT_EQ(SessionSlots(c, 1'000'000), 3024u);
  EXPECT_EQ(SessionSlots(c, 1024), 1024u);
  EXPECT_EQ(SessionSlots(Parsed("[limits]\nconnections_max = 10000000\n"), ~uint64_t{0}), 1u << 20);
}

TEST(StartupTest, ShardOptionsComeFromTheConfigWithRunTimeShares) {
  Config c = Parsed(R"(
[server]
hostname = "mx.example.net"
listen = ["127.0.0.1:25", "127.0.0.1:587"]
[limits]
recipients_max = 77
connections_max = 1000
[delivery]
connections_per_destination_max = 10
[spool]
path = "/var/spool/relais"
[auth]
spf = "reject"
[[auth.listener]]
listen = "127.0.0.1:587"
spf = "off"
temperror = "defer"
)");
  Environment env;
  env.shards = 4;
  env.descriptor_limit = 65536;
  env.memory_bytes = uint64_t{16} << 30;
  Shared shared(c);
  const ShardOptions o = BaseShardOptions(c, env, shared);
  EXPECT_EQ(o.count, 4u);
  EXPECT_EQ(o.session.hostname, "mx.example.net");
  EXPECT_EQ(o.session.recipients_max, 77u);
  EXPECT_EQ(o.session.recipient_policy, &shared.policy);
  EXPECT_TRUE(o.session.local_domains.empty());
  EXPECT_EQ(o.spool.path, "/var/spool/relais");
  EXPECT_EQ(o.spool.shard_count, 4);
  EXPECT_EQ(o.egress.connections_max, 2u);  // 10 for all shards: 2 each (rounded down).
  EXPECT_EQ(o.stress_connections, 500u);
  EXPECT_EQ(o.connections_per_shard_hard_max, 2024u);
  EXPECT_EQ(o.receive_bytes_max, uint64_t{1} << 30);  // 16 GiB / 4 / 4 shards, capped.
  EXPECT_EQ(o.router, &shared.router);
  EXPECT_EQ(o.destinations, &shared.destinations);
  EXPECT_EQ(o.delay_warning_ms, 4ull * 3600 * 1000);
  // One policy per listen address, in listen order: [auth], then the listener's overrides.
  ASSERT_EQ(o.auth_by_listener.size(), 2u);
  EXPECT_EQ(o.auth_by_listener[0].spf, authcheck::Mode::kReject);
  EXPECT_FALSE(o.auth_by_listener[0].defer_temperror);
  EXPECT_EQ(o.auth_by_listener[1].spf, authcheck::Mode::kOff);
  EXPECT_TRUE(o.auth_by_listener[1].defer_temperror);
  EXPECT_EQ(o.auth_by_listener[1].dmarc, authcheck::Mode::kTag);
  EXPECT_EQ(o.auth_by_listener[1].authserv_id, "mx.example.net");

  // Each shard keeps one connection per destination however many shards share the cap; an
  // explicit receive budget is taken as written.
  Config d = Parsed("[limits]\nreceive_bytes_max = 12345678\n");
  env.shards = 64;
  Shared shared_d(d);
  const ShardOptions p = BaseShardOptions(d, env, shared_d);
  EXPECT_EQ(p.egress.connections_max, 1u);
  EXPECT_EQ(p.receive_bytes_max, 12345678u);
}

}  // namespace
}  // namespace relais::relaisd
