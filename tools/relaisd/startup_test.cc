// The pure steps of startup: what each shard receives, derived from the config and the machine.
#include "tools/relaisd/startup.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

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

// TLS and AUTH reach every shard: one mode per listen address (default STARTTLS once a
// certificate exists), the certificates, the ticket rotation, the limiter's bounds.
TEST(StartupTest, ShardOptionsCarryTlsAndAuth) {
  Config c = Parsed(R"(
[server]
listen = ["127.0.0.1:25", "127.0.0.1:465", "127.0.0.1:587"]
[tls]
ticket_rotation = "2h"
handshake_timeout = "3s"
[[tls.certificate]]
chain = "/c.pem"
key = "/k.pem"
[[listener]]
listen = "127.0.0.1:465"
tls = "implicit"
[[listener]]
listen = "127.0.0.1:587"
tls = "off"
trusted = true
[smtp_auth]
failures_before_delay = 4
lockout_failures = 7
lockout_time = "30m"
require_sender_owned = true
)");
  Environment env;
  Shared shared(c);
  const ShardOptions o = BaseShardOptions(c, env, shared);
  ASSERT_EQ(o.listeners.size(), 3u);
  EXPECT_EQ(o.listeners[0].tls, ListenerTls::kStartTls);
  EXPECT_EQ(o.listeners[1].tls, ListenerTls::kImplicit);
  EXPECT_EQ(o.listeners[2].tls, ListenerTls::kOff);
  EXPECT_TRUE(o.listeners[2].trusted);
  ASSERT_EQ(o.tls.certificates.size(), 1u);
  EXPECT_EQ(o.tls.certificates[0].chain_path, "/c.pem");
  EXPECT_EQ(o.tls.certificates[0].key_path, "/k.pem");
  EXPECT_EQ(o.tls.tickets.rotation_s, 7200u);
  EXPECT_TRUE(o.tls.tickets.secret.empty());  // TicketSecret's, at start.
  EXPECT_EQ(o.tls_handshake_timeout_ms, 3000u);
  EXPECT_EQ(o.login_limits.failures_before_delay, 4u);
  EXPECT_EQ(o.login_limits.lockout_failures, 7u);
  EXPECT_EQ(o.login_limits.lockout_time_ms, 1'800'000u);
  EXPECT_TRUE(o.require_sender_owned);
  EXPECT_EQ(o.credentials, nullptr);    // Loaded by CreateShards.
  EXPECT_EQ(o.login_limiter, nullptr);  // Made by CreateShards, with the credentials.
}

TEST(StartupTest, TicketSecretFromFileOrRandomPerStart) {
  // No certificate: no TLS, no secret.
  auto none = TicketSecret(Parsed(""));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  const std::string cert = "[[tls.certificate]]\nchain = \"/c\"\nkey = \"/k\"\n";
  // No file: 32 random bytes, another value at each start.
  auto a = TicketSecret(Parsed(cert));
  auto b = TicketSecret(Parsed(cert));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
  char dir_template[] = "/tmp/relais_ticket_secret.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string path = dir + "/secret";
  const std::string with_file = "[tls]\nticket_secret_file = \"" + path + "\"\n" + cert;
  auto missing = TicketSecret(Parsed(with_file));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(path), std::string::npos) << missing.status();
  const std::string bytes(48, 'x');
  std::ofstream(path) << bytes;
  chmod(path.c_str(), 0644);
  auto open_to_others = TicketSecret(Parsed(with_file));
  ASSERT_FALSE(open_to_others.ok());
  EXPECT_NE(open_to_others.status().message().find("mode 0644"), std::string::npos)
      << open_to_others.status();
  chmod(path.c_str(), 0600);
  auto read = TicketSecret(Parsed(with_file));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, bytes);  // The same file gives every daemon the same keys.
  std::ofstream(path, std::ios::trunc) << "short";
  auto too_short = TicketSecret(Parsed(with_file));
  ASSERT_FALSE(too_short.ok());
  EXPECT_NE(too_short.status().message().find("holds 5 bytes"), std::string::npos)
      << too_short.status();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace relais::relaisd
