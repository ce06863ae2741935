#include "tools/relaisd/config_schema.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/base/strings.h"
#include "protocols/smtp/server_session.h"
#include "queue/routing/router.h"
#include "tools/relaisd/recipient_policy.h"

namespace relais::relaisd {
namespace {

using authcheck::Mode;
using config::RouteType;

TEST(ConfigSchemaTest, EmptyFileGivesDefaults) {
  auto c = ParseConfig("", "empty.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->daemon.listen, std::vector<std::string>{"127.0.0.1:2525"});
  EXPECT_EQ(c->shard.session.command_line_bytes_max, 512u);
  EXPECT_EQ(c->shard.session.recipients_max, 1000u);
  EXPECT_TRUE(c->shard.session.local_domains.empty());  // Only the quick start takes every domain.
  EXPECT_TRUE(c->shard.session.relay_networks.empty());
  EXPECT_FALSE(c->shard.session.allow_untrusted_routing);
  EXPECT_FALSE(c->daemon.open_relay_acknowledged);
  EXPECT_TRUE(c->daemon.connections_per_ip_exempt_relay_networks);
  ASSERT_EQ(c->routes.size(), 1u);
  EXPECT_EQ(c->routes[0].type, RouteType::kMaildir);
  EXPECT_FALSE(c->shard.session.hostname.empty());
}

TEST(ConfigSchemaTest, DefaultTomlParsesBackToDefaults) {
  auto c = ParseConfig(DefaultToml(), "default.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  Config d;
  EXPECT_EQ(c->shard.session.message_bytes_max, d.shard.session.message_bytes_max);
  EXPECT_EQ(c->shard.spool.path, d.shard.spool.path);
  EXPECT_EQ(c->daemon.connections_per_ip_exempt_relay_networks,
            d.daemon.connections_per_ip_exempt_relay_networks);
  EXPECT_EQ(c->shard.session.allow_untrusted_routing, d.shard.session.allow_untrusted_routing);
  EXPECT_EQ(c->routes.size(), 1u);
  // What is printed is the quick start: every domain local, into the Maildir route.
  EXPECT_EQ(c->shard.session.local_domains, std::vector<std::string>{"*"});
  auto q = QuickStart();
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->shard.session.local_domains, std::vector<std::string>{"*"});
  ASSERT_EQ(q->routes.size(), 1u);
  EXPECT_EQ(q->routes[0].type, RouteType::kMaildir);
}

// --print-default-config is part of the interface (operators diff it against their files):
// every key, its doc, its default and its order are pinned by testdata/default_config.toml.
TEST(ConfigSchemaTest, DefaultTomlIsUnchanged) {
  std::ifstream in(RELAIS_DEFAULT_CONFIG);
  ASSERT_TRUE(in) << RELAIS_DEFAULT_CONFIG;
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(DefaultToml(), expected.str());
}

// Each default is the one of the module's options struct the key fills, except where the
// daemon's differs on purpose (Config's constructor).
TEST(ConfigSchemaTest, DefaultsAreTheModulesOwn) {
  auto c = ParseConfig("[server]\nhostname = \"h\"\n", "d.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  const smtp::SessionOptions session;
  EXPECT_EQ(c->shard.session.command_line_bytes_max, session.command_line_bytes_max);
  EXPECT_EQ(c->shard.session.message_bytes_max, session.message_bytes_max);
  EXPECT_EQ(c->shard.session.pipeline_bytes_max, session.pipeline_bytes_max);
  EXPECT_EQ(c->shard.spool.segment_bytes_max, spool::SpoolOptions{}.segment_bytes_max);
  EXPECT_EQ(c->shard.scheduler.lifetime_ms, scheduler::SchedulerOptions{}.lifetime_ms);
  EXPECT_EQ(c->shard.egress.data_end_timeout_ms, EgressOptions{}.data_end_timeout_ms);
  EXPECT_EQ(c->shard.dns.cache_entries_max, dns::ResolverOptions{}.cache_entries_max);
  EXPECT_EQ(c->shard.header_limits.received_max, authcheck::HeaderLimits{}.received_max);
  EXPECT_EQ(c->auth.dmarc_temperror, authcheck::Policy{}.dmarc_temperror);
  EXPECT_EQ(c->shard.data_deadline_stress_ms, ShardOptions{}.data_deadline_stress_ms);
  // The daemon's own: nothing local in a file, names from the host name.
  EXPECT_TRUE(c->shard.session.local_domains.empty());
  EXPECT_EQ(c->shard.session.hostname, "h");
  EXPECT_EQ(c->auth.authserv_id, "h");
}

TEST(ConfigSchemaTest, ReadsEveryKindOfValue) {
  auto c = ParseConfig(R"(
[server]
hostname = "mx.example.net"
threads = 2
listen = ["127.0.0.1:2526", "[::1]:2526"]
[limits]
recipients_max = 50
message_bytes_max = 1048576
[relay]
local_domains = ["Example.COM", "*.example.org"]
networks = ["10.0.0.0/8", "::1"]
[[routes]]
domain = "example.com"
type = "smarthost"
hosts = ["127.0.0.1:25", "127.0.0.2:25"]
[[routes]]
domain = "*"
type = "reject"
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->shard.session.hostname, "mx.example.net");
  EXPECT_EQ(c->daemon.threads, 2u);
  EXPECT_EQ(c->daemon.listen.size(), 2u);
  EXPECT_EQ(c->shard.session.recipients_max, 50u);
  EXPECT_EQ(c->shard.session.message_bytes_max, 1048576u);
  EXPECT_EQ(c->shard.session.local_domains[0], "example.com");
  EXPECT_EQ(c->shard.session.relay_networks.size(), 2u);
  ASSERT_EQ(c->routes.size(), 2u);
  EXPECT_EQ(c->routes[0].hosts.size(), 2u);
  EXPECT_EQ(c->routes[1].type, RouteType::kReject);
}

void ExpectError(std::string_view toml, std::string_view fragment) {
  auto c = ParseConfig(toml, "bad.toml");
  ASSERT_FALSE(c.ok()) << toml;
  EXPECT_NE(std::string(c.status().message()).find(fragment), std::string::npos)
      << c.status().message() << " lacks " << fragment;
}

TEST(ConfigSchemaTest, ErrorsNameTheKeyAndLine) {
  ExpectError("[limits]\nrecipients_maxx = 5\n", "bad.toml:2: limits.recipients_maxx: unknown key");
  ExpectError("[limits]\n\nrecipients_max = 0\n",
              "bad.toml:3: limits.recipients_max: 0 is out of range");
  ExpectError("[limits]\nrecipients_max = \"many\"\n",
              "limits.recipients_max: expected an integer");
  ExpectError("[nope]\nx = 1\n", "nope: unknown table");
  ExpectError("[relay]\nnetworks = [\"10.0.0.0/33\"]\n", "bad.toml:2: relay.networks");
  ExpectError("[relay]\nlocal_domains = [\"bad domain\"]\n", "relay.local_domains");
  ExpectError("[server]\nlisten = [\"nohostport\"]\n", "server.listen");
  ExpectError("[[routes]]\ndomain = \"x.com\"\ntype = \"pigeon\"\n", "bad.toml:3: routes.type");
  ExpectError("[[routes]]\ndomain = \"x.com\"\ntype = \"smarthost\"\n", "routes.hosts");
  ExpectError("[[routes]]\ntype = \"reject\"\n", "routes.domain: is required");
  ExpectError("[limits\n", "bad.toml:1:");
  ExpectError("[auth]\nspf = \"always\"\n",
              "bad.toml:2: auth.spf: 'always' is not one of off,tag,reject");
  ExpectError("[auth]\ndkim = \"reject\"\n", "auth.dkim: 'reject' is not one of off,tag");
  ExpectError("[auth]\ntemperror = 1\n", "auth.temperror: expected a string");
  ExpectError("[dns]\nservers = [\"127.0.0.1\"]\n", "dns.servers: '127.0.0.1' is not host:port");
  ExpectError("[dns]\ntries = 0\n", "dns.tries: 0 is out of range");
  ExpectError("routes = 1\n", "bad.toml:1: routes: expected [[routes]] tables");
  ExpectError("dkim_sign = [1]\n", "bad.toml:1: dkim_sign: expected [[dkim_sign]] tables");
  ExpectError("[auth]\nlistener = \"x\"\n",
              "bad.toml:2: auth.listener: expected [[auth.listener]] tables");
}

// A [[routes]] table for `domain` of `type`, with the fields that type needs.
std::string RouteToml(const std::string& domain, const std::string& type) {
  std::string out = "[[routes]]\ndomain = \"" + domain + "\"\ntype = \"" + type + "\"\n";
  if (type == "smarthost") {
    out += "hosts = [\"127.0.0.1:25\"]\n";
  } else if (type == "lmtp") {
    out += "address = \"/run/l\"\n";
  } else if (type == "maildir") {
    out += "path = \"/m\"\n";
  }
  return out;
}

// One "*" smarthost route added to a file that kept the old default local_domains = ["*"]
// relayed anything from anyone; relay_domains = ["*"] and networks = ["0.0.0.0/0"] passed
// silently too. Every way to "any client, any domain" is refused, naming the keys.
TEST(ConfigSchemaTest, OpenRelayIsRefusedUnlessAcknowledged) {
  const std::string smarthost =
      "[[routes]]\ndomain = \"*\"\ntype = \"smarthost\"\nhosts = "
      "[\"127.0.0.1:25\"]\n";
  const std::string lmtp = "[[routes]]\ndomain = \"*\"\ntype = \"lmtp\"\naddress = \"/run/l\"\n";
  const std::string maildir = "[[routes]]\ndomain = \"*\"\ntype = \"maildir\"\npath = \"/m\"\n";
  const std::string reject = "[[routes]]\ndomain = \"*\"\ntype = \"reject\"\n";
  const std::string local_route =
      "[[routes]]\ndomain = \"example.net\"\ntype = \"maildir\"\npath = \"/m\"\n";
  struct Case {
    std::string toml;
    std::string fragment;  // Empty: the file is fine.
  };
  const Case cases[] = {
      // The reported one: a smarthost "*" route while every domain is local.
      {"[relay]\nlocal_domains = [\"*\"]\n" + smarthost, "relay.local_domains"},
      {"[relay]\nlocal_domains = [\"*\"]\n" + lmtp, "routes[0]"},
      // An mx route sends on what it takes, like a smarthost.
      {"[relay]\nlocal_domains = [\"*\"]\n" + RouteToml("*", "mx"), "to their MX hosts"},
      {"[relay]\nlocal_domains = [\"*.com\"]\n" + RouteToml("*.com", "mx") + maildir,
       "routes[0] (domain \"*.com\")"},
      {"[relay]\nlocal_domains = [\"example.net\", \"*\"]\n" + local_route + smarthost,
       "routes[1]"},
      {"[relay]\nrelay_domains = [\"*\"]\n", "relay.relay_domains"},
      {"[relay]\nrelay_domains = [\"*\"]\n" + maildir, "relay.relay_domains"},
      {"[relay]\nnetworks = [\"0.0.0.0/0\"]\n", "relay.networks (0.0.0.0/0)"},
      {"[relay]\nnetworks = [\"::/0\"]\n", "relay.networks (::/0)"},
      {"[relay]\nnetworks = [\"2000::/3\"]\n", "relay.networks (2000::/3)"},
      {"[relay]\nnetworks = [\"::/1\"]\n", "relay.networks"},
      {"[relay]\nnetworks = [\"0.0.0.0/1\", \"10.0.0.0/8\", \"128.0.0.0/1\"]\n",
       "0.0.0.0/1, 10.0.0.0/8, 128.0.0.0/1"},
      {"[relay]\nnetworks = [\"0.0.0.0/1\"]\n", "relay.networks"},  // Half the Internet.
      {"[relay]\nnetworks = [\"2000::/4\", \"3000::/4\"]\n", "relay.networks"},
      {"[relay]\nnetworks = [\"1.2.3.4/0\"]\n", "relay.networks (0.0.0.0/0)"},
      // Patterns that take a whole TLD or public suffix are "anywhere" too, and a route for
      // such a pattern counts wherever it stands before the first route that takes them all.
      // (a) "*.com" is sent on before the "*" maildir route sees it: 250 for gmail.com.
      {"[relay]\nlocal_domains = [\"*\"]\n" + RouteToml("*.com", "smarthost") + maildir,
       "routes[0] (domain \"*.com\")"},
      // (b) every common TLD local, and the "*" route sends them on.
      {"[relay]\nlocal_domains = [\"*.com\", \"*.net\", \"*.org\"]\n" + smarthost,
       "relay.local_domains holds \"*.com\""},
      // (c) relaying for whole TLDs.
      {"[relay]\nrelay_domains = [\"*.com\", \"*.net\"]\n", "relay.relay_domains holds \"*.com\""},
      {"[relay]\nrelay_domains = [\"example.net\", \"*.NET\"]\n", "\"*.net\""},
      {"[relay]\nrelay_domains = [\"*.co.uk\"]\n", "\"*.co.uk\""},               // A public suffix.
      {"[relay]\nrelay_domains = [\"*.github.io\"]\n", "\"*.github.io\""},       // A private one.
      {"[relay]\nrelay_domains = [\"*.invalidtld\"]\n", "relay.relay_domains"},  // Any label.
      // (d) 7/16 of IPv4, and other sets over one /8 of public space.
      {"[relay]\nnetworks = [\"0.0.0.0/2\", \"64.0.0.0/3\", \"96.0.0.0/4\"]\n",
       "relay.networks (0.0.0.0/2, 64.0.0.0/3, 96.0.0.0/4)"},
      {"[relay]\nnetworks = [\"0.0.0.0/2\", \"64.0.0.0/3\"]\n", "relay.networks"},
      {"[relay]\nnetworks = [\"1.0.0.0/8\", \"2.0.0.0/16\"]\n", "relay.networks"},
      {"[relay]\nnetworks = [\"8.0.0.0/7\"]\n", "relay.networks (8.0.0.0/7)"},
      {"[relay]\nnetworks = [\"11.0.0.0/8\", \"12.0.0.0/8\"]\n", "relay.networks"},
      // The private ranges do not hide public space next to them: 0.0.0.0/4 is 0/8 plus
      // fifteen public /8s (10/8 among them private).
      {"[relay]\nnetworks = [\"0.0.0.0/4\"]\n", "relay.networks"},
      {"[relay]\nnetworks = [\"2001::/31\"]\n", "relay.networks (2001::/31)"},
      {"[relay]\nnetworks = [\"2001:db8::/32\", \"2a00::/32\"]\n", "relay.networks"},
      // Routes for local "*" in first-match order: a narrower "anywhere" maildir route does
      // not shield the rest, a narrower relaying one opens its part.
      {"[relay]\nlocal_domains = [\"*\"]\n" + RouteToml("*.com", "maildir") + smarthost,
       "routes[1] (domain \"*\") sends domains under \"*\""},
      {"[relay]\nlocal_domains = [\"*\"]\n" + RouteToml("*.co.uk", "lmtp") + maildir, "routes[0]"},
      {"[relay]\nlocal_domains = [\"*\"]\n" + local_route + RouteToml("*.net", "smarthost") +
           maildir,
       "routes[1]"},
      // A local TLD pattern and routes that overlap it from either side.
      {"[relay]\nlocal_domains = [\"*.uk\"]\n" + RouteToml("*.co.uk", "smarthost") + maildir,
       "under \"*.co.uk\""},
      {"[relay]\nlocal_domains = [\"*.co.uk\"]\n" + RouteToml("*.uk", "smarthost"), "routes[0]"},
      {"[relay]\nlocal_domains = [\"*.com\"]\n" + RouteToml("*.example.com", "maildir") + smarthost,
       "routes[1]"},
      {"[relay]\nlocal_domains = [\"example.org\", \"*.org\"]\n" + RouteToml("*.org", "lmtp"),
       "relay.local_domains holds \"*.org\""},
      // Closed ones.
      // Closed: "anywhere" patterns whose domains are all kept or refused first.
      {"[relay]\nlocal_domains = [\"*\"]\n" + RouteToml("*.com", "maildir") + maildir + smarthost,
       ""},
      {"[relay]\nlocal_domains = [\"*.com\"]\n" + RouteToml("*.com", "reject") + smarthost, ""},
      {"[relay]\nlocal_domains = [\"*.co.uk\"]\n" + RouteToml("*.uk", "maildir") + smarthost, ""},
      {"[relay]\nlocal_domains = [\"*.com\"]\n" + RouteToml("*.net", "smarthost") + maildir, ""},
      {"[relay]\nlocal_domains = [\"*.com\"]\n" + RouteToml("*.com", "maildir") +
           RouteToml("*.com", "smarthost"),
       ""},  // Never reached.
      // One domain, or all under one domain, is not anywhere, whatever route sends it on.
      {"[relay]\nlocal_domains = [\"*.example.com\", \"example.co.uk\"]\n" + smarthost, ""},
      {"[relay]\nrelay_domains = [\"*.example.co.uk\", \"com\"]\n" + smarthost, ""},
      // Networks within one /8 of public space, private and loopback ranges not counted.
      {"[relay]\nnetworks = [\"10.0.0.0/8\", \"127.0.0.0/8\", \"172.16.0.0/12\", "
       "\"192.168.0.0/16\", \"100.64.0.0/10\", \"169.254.0.0/16\"]\n",
       ""},
      {"[relay]\nnetworks = [\"11.0.0.0/8\", \"10.0.0.0/8\", \"127.0.0.0/8\"]\n", ""},
      {"[relay]\nnetworks = [\"11.0.0.0/8\", \"11.1.0.0/16\"]\n", ""},  // Nested: one /8.
      {"[relay]\nnetworks = [\"2001:db8::/32\", \"fc00::/7\", \"fe80::/10\", \"::1/128\"]\n", ""},
      {"[relay]\nlocal_domains = [\"*\"]\n" + maildir + smarthost, ""},  // First "*" wins.
      {"[relay]\nlocal_domains = [\"*\"]\n" + reject + smarthost, ""},
      {"[relay]\nlocal_domains = [\"*\"]\n", ""},  // The quick start.
      {"[relay]\nlocal_domains = [\"example.net\"]\nnetworks = [\"10.0.0.0/8\", "
       "\"fc00::/7\", \"192.168.0.0/16\"]\n" +
           smarthost,
       ""},
      {"[relay]\nrelay_domains = [\"*.example.net\"]\n" + smarthost, ""},
      {smarthost, ""},  // Nothing local, no relay rules: only trusted... nobody.
  };
  for (const Case& c : cases) {
    auto parsed = ParseConfig(c.toml, "r.toml");
    if (c.fragment.empty()) {
      EXPECT_TRUE(parsed.ok()) << c.toml << parsed.status();
      continue;
    }
    if (parsed.ok()) {
      ADD_FAILURE() << "accepted an open relay:\n" << c.toml;
      continue;
    }
    const std::string message(parsed.status().message());
    EXPECT_NE(message.find(c.fragment), std::string::npos) << message;
    EXPECT_NE(message.find("open relay"), std::string::npos) << message;
    EXPECT_NE(message.find("relay.open_relay_acknowledged"), std::string::npos) << message;
    // The acknowledgement lets it start (in whichever table order).
    const std::string acknowledged = "[relay]\nopen_relay_acknowledged = true\n" +
                                     (c.toml.starts_with("[relay]\n") ? c.toml.substr(8) : c.toml);
    EXPECT_TRUE(ParseConfig(acknowledged, "r.toml").ok()) << acknowledged;
  }
  ExpectError("[relay]\nopen_relay_acknowledged = \"yes\"\n",
              "relay.open_relay_acknowledged: expected true or false");
  ExpectError("[relay]\nallow_untrusted_routing = 1\n", "relay.allow_untrusted_routing");
}

TEST(ConfigSchemaTest, RouteTlsKeys) {
  auto c = ParseConfig(R"([[routes]]
domain = "a.test"
type = "smarthost"
hosts = ["relay.a.test:587"]
tls = "verify"
tls_ca_file = "/etc/relais/ca.pem"
tls_client_chain = "/etc/relais/client.pem"
tls_client_key = "/etc/relais/client.key"
auth_user = "relay-a"
auth_password_file = "/etc/relais/a.pass"
[[routes]]
domain = "b.test"
type = "smarthost"
hosts = ["192.0.2.1:25"]
[[routes]]
domain = "c.test"
type = "lmtp"
address = "127.0.0.1:24"
[[routes]]
domain = "d.test"
type = "smarthost"
hosts = ["192.0.2.1:25"]
tls = "encrypt"
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->routes.size(), 5u);  // And the implicit mx route (no "*" route).
  EXPECT_EQ(c->routes[4].type, RouteType::kMx);
  const config::Route& a = c->routes[0];
  EXPECT_EQ(a.tls, config::RouteTls::kVerify);
  EXPECT_EQ(a.tls_ca_file, "/etc/relais/ca.pem");
  EXPECT_EQ(a.tls_client_chain, "/etc/relais/client.pem");
  EXPECT_EQ(a.tls_client_key, "/etc/relais/client.key");
  EXPECT_EQ(a.auth_user, "relay-a");
  EXPECT_EQ(a.auth_password_file, "/etc/relais/a.pass");
  EXPECT_EQ(c->routes[1].tls, config::RouteTls::kMay);   // Smarthost default.
  EXPECT_EQ(c->routes[2].tls, config::RouteTls::kNone);  // LMTP default.
  EXPECT_EQ(c->routes[3].tls, config::RouteTls::kEncrypt);
  EXPECT_TRUE(c->routes[1].tls_ca_file.empty());  // The system store.
}

TEST(ConfigSchemaTest, RouteTlsErrorsNameTheRoute) {
  const std::string smarthost =
      "[[routes]]\ndomain = \"x.test\"\ntype = \"smarthost\"\nhosts = [\"192.0.2.1:25\"]\n";
  ExpectError(smarthost + "tls = \"always\"\n",
              "bad.toml:5: routes.tls: route for x.test: expected one of none, may, encrypt");
  // verify checks a name: an address literal has none.
  ExpectError(smarthost + "tls = \"verify\"\n", "route for x.test: tls = \"verify\"");
  ExpectError(
      "[[routes]]\ndomain = \"x.test\"\ntype = \"smarthost\"\nhosts = "
      "[\"mx.x.test:25\", \"[2001:db8::1]:25\"]\ntls = \"verify\"\n",
      "'[2001:db8::1]:25' is an address");
  // AUTH only to a verified next hop: "may" could fall back to plaintext, and "encrypt" takes
  // any certificate (a man in the middle would get the password).
  ExpectError(smarthost + "auth_user = \"u\"\nauth_password_file = \"/p\"\n",
              "routes.auth_user: route for x.test: AUTH sends the password only to a verified");
  ExpectError(smarthost + "tls = \"none\"\nauth_user = \"u\"\nauth_password_file = \"/p\"\n",
              "it needs tls = \"verify\"");
  ExpectError(smarthost + "tls = \"encrypt\"\nauth_user = \"u\"\nauth_password_file = \"/p\"\n",
              "it needs tls = \"verify\"");
  ExpectError(smarthost + "tls = \"encrypt\"\nauth_user = \"u\"\n",
              "route for x.test: auth_user and auth_password_file go together");
  ExpectError(smarthost + "tls_client_chain = \"/c\"\n",
              "bad.toml:5: routes.tls_client_chain: route for x.test: tls_client_chain and "
              "tls_client_key go together");
  ExpectError(smarthost + "tls = \"none\"\ntls_client_chain = \"/c\"\ntls_client_key = \"/k\"\n",
              "a client certificate needs tls");
  ExpectError("[[routes]]\ndomain = \"m.test\"\ntype = \"maildir\"\npath = \"/m\"\ntls = \"may\"\n",
              "routes.tls: route for m.test: only smarthost, lmtp and mx routes take it");
  ExpectError(
      "[[routes]]\ndomain = \"l.test\"\ntype = \"lmtp\"\naddress = \"/run/l\"\n"
      "tls = \"encrypt\"\n",
      "route for l.test: a unix socket takes no TLS");
  ExpectError(smarthost + "tls_ca_file = 3\n", "routes.tls_ca_file");
}

TEST(ConfigSchemaTest, TrustKeys) {
  auto c = ParseConfig(
      "[relay]\nallow_untrusted_routing = true\n[limits]\n"
      "connections_per_ip_exempt_relay_networks = false\n",
      "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->shard.session.allow_untrusted_routing);
  EXPECT_FALSE(c->daemon.connections_per_ip_exempt_relay_networks);
  EXPECT_NE(DefaultToml().find("connections_per_ip_exempt_relay_networks = true"),
            std::string::npos);
  EXPECT_NE(DefaultToml().find("allow_untrusted_routing = false"), std::string::npos);
}

TEST(ConfigSchemaTest, DkimSigning) {
  auto c = ParseConfig(R"(
[[dkim_sign]]
domain = "Example.COM"
selector = "ed2026"
key = "/etc/relais/ed.pem"
[[dkim_sign]]
domain = "example.com"
selector = "rsa2026"
key = "/etc/relais/rsa.pem"
canonicalization = "simple/relaxed"
headers = ["From", "subject"]
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->dkim_sign.size(), 2u);
  EXPECT_EQ(c->dkim_sign[0].options.domain, "example.com");
  EXPECT_EQ(c->dkim_sign[0].options.header_canonicalization, dkim::Canonicalization::kRelaxed);
  EXPECT_EQ(c->dkim_sign[0].options.body_canonicalization, dkim::Canonicalization::kRelaxed);
  EXPECT_EQ(c->dkim_sign[0].options.headers, dkim::SignOptions{}.headers);  // The usual set.
  EXPECT_EQ(c->dkim_sign[1].options.header_canonicalization, dkim::Canonicalization::kSimple);
  EXPECT_EQ(c->dkim_sign[1].options.body_canonicalization, dkim::Canonicalization::kRelaxed);
  EXPECT_EQ(c->dkim_sign[1].key_file, "/etc/relais/rsa.pem");
  EXPECT_EQ(c->dkim_sign[1].options.headers, (std::vector<std::string>{"from", "subject"}));
  ExpectError("[[dkim_sign]]\ndomain = \"x.com\"\nselector = \"s\"\n",
              "dkim_sign.key: is required");
  ExpectError("[[dkim_sign]]\ndomain = \"*\"\nselector = \"s\"\nkey = \"k\"\n",
              "dkim_sign.domain: '*' is not a domain");
  ExpectError("[[dkim_sign]]\ndomain = \"x.com\"\nselector = \"a b\"\nkey = \"k\"\n",
              "dkim_sign.selector");
  ExpectError(
      "[[dkim_sign]]\ndomain = \"x.com\"\nselector = \"s\"\nkey = \"k\"\ncanonicalization = "
      "\"loose\"\n",
      "bad.toml:5: dkim_sign.canonicalization: 'loose' is not relaxed/relaxed");
  ExpectError("[[dkim_sign]]\ndomain = \"x.com\"\nselector = \"s\"\nkey = \"k\"\nalgo = 1\n",
              "dkim_sign.algo: unknown key");
}

TEST(ConfigSchemaTest, AuthPerListener) {
  auto c = ParseConfig(R"(
[server]
listen = ["127.0.0.1:25", "127.0.0.1:587"]
[auth]
spf = "reject"
[[auth.listener]]
listen = "127.0.0.1:587"
spf = "off"
dmarc = "off"
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->auth_listeners.size(), 1u);
  EXPECT_EQ(c->auth_listeners[0].listen, "127.0.0.1:587");
  EXPECT_EQ(c->auth_listeners[0].spf, Mode::kOff);
  EXPECT_EQ(c->auth_listeners[0].dmarc, Mode::kOff);
  EXPECT_FALSE(c->auth_listeners[0].dkim.has_value());
  const std::string two = "[server]\nlisten = [\"127.0.0.1:25\"]\n[[auth.listener]]\n";
  ExpectError(two + "listen = \"127.0.0.1:26\"\n",
              "auth.listener: '127.0.0.1:26' is not one of server.listen");
  ExpectError(two + "listen = \"127.0.0.1:25\"\nspf = \"maybe\"\n",
              "bad.toml:5: auth.listener.spf: 'maybe' is not one of off,tag,reject");
  ExpectError(two + "listen = \"127.0.0.1:25\"\nsign = \"yes\"\n",
              "auth.listener.sign: unknown key");
  ExpectError(two + "spf = \"off\"\n", "auth.listener.listen: is required");
  ExpectError(two + "listen = \"127.0.0.1:25\"\n[[auth.listener]]\nlisten = \"127.0.0.1:25\"\n",
              "'127.0.0.1:25' is given twice");
}

TEST(ConfigSchemaTest, AuthAndDns) {
  auto d = ParseConfig("[server]\nhostname = \"mx.example.net\"\n", "d.toml");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->auth.spf, Mode::kTag);
  EXPECT_EQ(d->auth.dmarc, Mode::kTag);
  EXPECT_EQ(d->auth.defer_temperror, false);
  EXPECT_EQ(d->auth.authserv_id, "mx.example.net");  // Defaults to the host name.
  ASSERT_EQ(d->shard.auth_skip_networks.size(), 2u);
  EXPECT_EQ(d->shard.auth_skip_networks[0].ToString(), "127.0.0.0/8");
  EXPECT_TRUE(d->shard.dns.servers.empty());
  auto c = ParseConfig(R"(
[auth]
spf = "reject"
dkim = "off"
dmarc = "reject"
temperror = "defer"
authserv_id = "auth.example.net"
skip_networks = []
[dns]
servers = ["127.0.0.1:5353", "[::1]:53"]
timeout_ms = 500
tries = 3
cache_entries_max = 0
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->auth.spf, Mode::kReject);
  EXPECT_EQ(c->auth.dkim, Mode::kOff);
  EXPECT_EQ(c->auth.dmarc, Mode::kReject);
  EXPECT_EQ(c->auth.defer_temperror, true);
  EXPECT_EQ(c->auth.authserv_id, "auth.example.net");
  EXPECT_TRUE(c->shard.auth_skip_networks.empty());
  EXPECT_EQ(c->shard.dns.servers.size(), 2u);
  EXPECT_EQ(c->shard.dns.timeout_ms, 500u);
  EXPECT_EQ(c->shard.dns.tries, 3u);
  EXPECT_EQ(c->shard.dns.cache_entries_max, 0u);
}

// Without the new tables nothing changes: no certificate, so every listener is plaintext
// without STARTTLS, and AUTH is not offered (no credentials).
TEST(ConfigSchemaTest, TlsAndAuthDefaultsKeepPlaintext) {
  auto c = ParseConfig("", "d.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->tls.certificates.empty());
  EXPECT_TRUE(c->listeners.empty());
  EXPECT_EQ(c->ListenerFor("127.0.0.1:2525").tls, ListenerTls::kOff);
  EXPECT_FALSE(c->ListenerFor("127.0.0.1:2525").trusted);
  EXPECT_EQ(c->tls.handshake_timeout_ms, 10'000u);
  EXPECT_EQ(c->tls.ticket_rotation_s, 3600u);
  EXPECT_EQ(c->tls.fallback_ttl_s, 3600u);
  EXPECT_TRUE(c->tls.ticket_secret_file.empty());
  EXPECT_TRUE(c->smtp_auth.credentials.empty());
  EXPECT_FALSE(c->smtp_auth.require_sender_owned);
  EXPECT_EQ(c->smtp_auth.failures_before_delay, 3u);
  EXPECT_EQ(c->smtp_auth.lockout_failures, 10u);
  EXPECT_EQ(c->smtp_auth.lockout_time_ms, 900'000u);
}

TEST(ConfigSchemaTest, TlsListenersAndSmtpAuth) {
  auto c = ParseConfig(R"(
[server]
listen = ["127.0.0.1:25", "127.0.0.1:465", "127.0.0.1:587", "127.0.0.1:2526"]
[tls]
handshake_timeout = "2500ms"
ticket_rotation = "2h"
ticket_secret_file = "/etc/relais/tickets.key"
fallback_ttl = "30m"
[[tls.certificate]]
chain = "/etc/relais/tls/ecdsa.pem"
key = "/etc/relais/tls/ecdsa.key"
[[tls.certificate]]
chain = "/etc/relais/tls/rsa.pem"
key = "/etc/relais/tls/rsa.key"
[[listener]]
listen = "127.0.0.1:465"
tls = "implicit"
[[listener]]
listen = "127.0.0.1:587"
tls = "required"
[[listener]]
listen = "127.0.0.1:2526"
tls = "off"
trusted = true
[smtp_auth]
credentials = "/etc/relais/passwd"
require_sender_owned = true
failures_before_delay = 2
lockout_failures = 5
lockout_time = "1h"
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->tls.certificates.size(), 2u);
  EXPECT_EQ(c->tls.certificates[0].chain, "/etc/relais/tls/ecdsa.pem");
  EXPECT_EQ(c->tls.certificates[1].key, "/etc/relais/tls/rsa.key");
  EXPECT_EQ(c->tls.handshake_timeout_ms, 2500u);
  EXPECT_EQ(c->tls.ticket_rotation_s, 7200u);
  EXPECT_EQ(c->tls.fallback_ttl_s, 1800u);
  EXPECT_EQ(c->tls.ticket_secret_file, "/etc/relais/tickets.key");
  // Not named by a [[listener]]: STARTTLS, since a certificate exists.
  EXPECT_EQ(c->ListenerFor("127.0.0.1:25").tls, ListenerTls::kStartTls);
  EXPECT_EQ(c->ListenerFor("127.0.0.1:465").tls, ListenerTls::kImplicit);
  EXPECT_EQ(c->ListenerFor("127.0.0.1:587").tls, ListenerTls::kRequired);
  EXPECT_EQ(c->ListenerFor("127.0.0.1:2526").tls, ListenerTls::kOff);
  EXPECT_TRUE(c->ListenerFor("127.0.0.1:2526").trusted);
  EXPECT_FALSE(c->ListenerFor("127.0.0.1:465").trusted);
  EXPECT_EQ(c->smtp_auth.credentials, "/etc/relais/passwd");
  EXPECT_TRUE(c->smtp_auth.require_sender_owned);
  EXPECT_EQ(c->smtp_auth.failures_before_delay, 2u);
  EXPECT_EQ(c->smtp_auth.lockout_failures, 5u);
  EXPECT_EQ(c->smtp_auth.lockout_time_ms, 3'600'000u);
}

TEST(ConfigSchemaTest, TlsAndListenerErrors) {
  const std::string server = "[server]\nlisten = [\"127.0.0.1:25\"]\n";
  const std::string cert = "[[tls.certificate]]\nchain = \"c.pem\"\nkey = \"k.pem\"\n";
  // A TLS mode without a certificate says what is missing.
  ExpectError(server + "[[listener]]\nlisten = \"127.0.0.1:25\"\ntls = \"implicit\"\n",
              "listener: '127.0.0.1:25' has tls = \"implicit\", which needs a certificate: add a "
              "[[tls.certificate]]");
  ExpectError(server + "[[listener]]\nlisten = \"127.0.0.1:25\"\ntls = \"starttls\"\n",
              "needs a certificate");
  ExpectError(server + cert + "[[listener]]\nlisten = \"127.0.0.1:26\"\n",
              "listener: '127.0.0.1:26' is not one of server.listen");
  ExpectError(server + cert + "[[listener]]\nlisten = \"127.0.0.1:25\"\ntls = \"maybe\"\n",
              "bad.toml:8: listener.tls: 'maybe' is not one of off,starttls,required,implicit");
  ExpectError(server + "[[listener]]\nlisten = \"127.0.0.1:25\"\ntrusted = \"yes\"\n",
              "bad.toml:5: listener.trusted: expected true or false");
  ExpectError(server + "[[listener]]\ntls = \"off\"\n", "listener.listen: is required");
  ExpectError(server +
                  "[[listener]]\nlisten = \"127.0.0.1:25\"\n[[listener]]\nlisten = "
                  "\"127.0.0.1:25\"\n",
              "listener: '127.0.0.1:25' is given twice");
  ExpectError(server + "[[listener]]\nlisten = \"127.0.0.1:25\"\nport = 1\n",
              "listener.port: unknown key");
  ExpectError("[[tls.certificate]]\nchain = \"c.pem\"\n", "tls.certificate.key: is required");
  ExpectError("[[tls.certificate]]\nchain = \"c.pem\"\nkey = \"k\"\npassword = \"x\"\n",
              "tls.certificate.password: unknown key");
  ExpectError("[tls]\nhandshake_timeout = \"10\"\n",
              "tls.handshake_timeout: '10' is not a duration");
  ExpectError("[tls]\nhandshake_timeout = \"2 hours\"\n", "is not a duration");
  ExpectError("[tls]\nticket_rotation = \"10s\"\n", "tls.ticket_rotation: '10s' is out of range");
  ExpectError("[tls]\nticket_rotation = \"90500ms\"\n", "whole seconds");
  ExpectError("[tls]\nhandshake_timeout = 10\n", "bad.toml:2: tls.handshake_timeout");
  ExpectError("[tls]\ncertificate = \"x\"\n", "tls.certificate: expected [[tls.certificate]]");
  ExpectError("[smtp_auth]\nlockout_time = \"forever\"\n",
              "smtp_auth.lockout_time: 'forever' is not a duration");
  ExpectError("[smtp_auth]\nfailures_before_delay = 5\nlockout_failures = 4\n",
              "smtp_auth.lockout_failures (4) is below smtp_auth.failures_before_delay (5)");
  ExpectError("[smtp_auth]\nfailures_before_delay = 0\n",
              "smtp_auth.failures_before_delay: 0 is out of range");
  ExpectError("[smtp_auth]\nusers = 1\n", "smtp_auth.users: unknown key");
}

TEST(ConfigSchemaTest, ParsesDurations) {
  EXPECT_EQ(ParseDurationMs("10s"), 10'000u);
  EXPECT_EQ(ParseDurationMs("250ms"), 250u);
  EXPECT_EQ(ParseDurationMs("15m"), 900'000u);
  EXPECT_EQ(ParseDurationMs("1h"), 3'600'000u);
  EXPECT_EQ(ParseDurationMs("2d"), 172'800'000u);
  EXPECT_EQ(ParseDurationMs("0s"), 0u);
  for (const char* bad :
       {"", "s", "10", "10 s", "-1s", "1.5h", "10S", "10sec", "1h30m", "99999999999999999999d"}) {
    EXPECT_FALSE(ParseDurationMs(bad).has_value()) << bad;
  }
}

TEST(ConfigSchemaTest, DkimSigningByUser) {
  auto c = ParseConfig(
      "[[dkim_sign]]\ndomain = \"example.com\"\nselector = \"s\"\nkey = \"k\"\n"
      "users = [\"alice\", \"bob@example.com\"]\n",
      "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->dkim_sign.size(), 1u);
  EXPECT_EQ(c->dkim_sign[0].users, (std::vector<std::string>{"alice", "bob@example.com"}));
  ExpectError(
      "[[dkim_sign]]\ndomain = \"example.com\"\nselector = \"s\"\nkey = \"k\"\n"
      "users = [\"a:b\"]\n",
      "bad.toml:5: dkim_sign.users: expected user names");
}

TEST(ConfigSchemaTest, MxShapingAndBounceKeys) {
  auto c = ParseConfig(R"([mx]
ip_family = "prefer-ipv6"
port = 2525
hosts_per_attempt_max = 3
mx_records_max = 7
addresses_per_host_max = 2
self_names = ["MX1.Example.COM."]
self_addresses = ["192.0.2.7", "2001:db8::7"]
cache_entries_max = 500
[shaping]
connections_max = 4
messages_per_connection_max = 50
recipients_per_transaction_max = 20
rate = "600/min"
adaptive = false
backoff_ms = 30000
recover_after = 5
rate_floor_per_minute = 3
idle_forget_ms = 120000
destinations_max = 1000
[bounce]
class_rules_file = "/etc/relais/bounce-classes"
)",
                       "mx.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  const delivery::MxOptions& mx = c->shard.mx;
  EXPECT_EQ(mx.family, delivery::IpFamily::kPreferIpv6);
  EXPECT_EQ(mx.port, 2525);
  EXPECT_EQ(c->mx.hosts_per_attempt_max, 3u);
  EXPECT_EQ(mx.mx_records_max, 7u);
  EXPECT_EQ(mx.addresses_per_host_max, 2u);
  EXPECT_EQ(mx.self_names, std::vector<std::string>{"mx1.example.com"});
  ASSERT_EQ(mx.self_addresses.size(), 2u);
  EXPECT_EQ(mx.self_addresses[0], *mail::IpAddress::Parse("192.0.2.7"));
  EXPECT_EQ(mx.self_addresses[1], *mail::IpAddress::Parse("2001:db8::7"));
  EXPECT_EQ(mx.cache_entries_max, 500u);
  const delivery::ShapingOptions& shaping = c->shard.shaping;
  EXPECT_EQ(shaping.defaults.connections_max, 4u);
  EXPECT_EQ(shaping.defaults.messages_per_connection_max, 50u);
  EXPECT_EQ(shaping.defaults.recipients_per_transaction_max, 20u);
  EXPECT_EQ(shaping.defaults.rate, (delivery::Rate{600, 60'000}));
  EXPECT_FALSE(shaping.adaptive);
  EXPECT_EQ(shaping.backoff_ms, 30'000u);
  EXPECT_EQ(shaping.recover_after, 5u);
  EXPECT_EQ(shaping.rate_floor_per_minute, 3u);
  EXPECT_EQ(shaping.idle_forget_ms, 120'000u);
  EXPECT_EQ(shaping.destinations_max, 1000u);
  EXPECT_EQ(c->mx.class_rules_file, "/etc/relais/bounce-classes");

  // The defaults are the modules' own.
  auto d = ParseConfig("", "d.toml");
  ASSERT_TRUE(d.ok()) << d.status();
  const delivery::MxOptions mx_defaults;
  EXPECT_EQ(d->shard.mx.family, mx_defaults.family);
  EXPECT_EQ(d->shard.mx.port, mx_defaults.port);
  EXPECT_EQ(d->shard.mx.mx_records_max, mx_defaults.mx_records_max);
  EXPECT_EQ(d->shard.mx.cache_entries_max, mx_defaults.cache_entries_max);
  const delivery::ShapingOptions shaping_defaults;
  EXPECT_EQ(d->shard.shaping.defaults.connections_max, shaping_defaults.defaults.connections_max);
  EXPECT_EQ(d->shard.shaping.defaults.rate, shaping_defaults.defaults.rate);
  EXPECT_EQ(d->shard.shaping.backoff_ms, shaping_defaults.backoff_ms);
  EXPECT_EQ(d->shard.shaping.destinations_max, shaping_defaults.destinations_max);
  EXPECT_TRUE(d->shard.shaping.adaptive);

  ExpectError("[mx]\nip_family = \"ipv5\"\n",
              "bad.toml:2: mx.ip_family: 'ipv5' is not one of any,ipv4,ipv6,prefer-ipv6");
  ExpectError("[mx]\nport = 0\n", "bad.toml:2: mx.port: 0 is out of range");
  ExpectError("[mx]\nport = 65536\n", "mx.port: 65536 is out of range");
  ExpectError("[mx]\nhosts_per_attempt_max = 0\n", "mx.hosts_per_attempt_max");
  ExpectError("[mx]\nself_addresses = [\"mx.example.com\"]\n",
              "mx.self_addresses: 'mx.example.com' is not an IPv4 or IPv6 address");
  ExpectError("[shaping]\nrate = \"fast\"\n", "shaping.rate: 'fast' is not a rate");
  ExpectError("[shaping]\nrate = \"10/day\"\n", "shaping.rate: '10/day' is not a rate");
  ExpectError("[shaping]\nconnections_max = 0\n", "shaping.connections_max: 0 is out of range");
  ExpectError("[shaping]\nadaptive = \"yes\"\n", "shaping.adaptive");
  ExpectError("[bounce]\nrules = \"x\"\n", "bounce.rules: unknown key");
}

TEST(ConfigSchemaTest, ShapingRulesAndReplyRules) {
  auto c = ParseConfig(R"([[source]]
name = "s1"
address = "192.0.2.10"
[[source_pool]]
name = "warm"
sources = ["s1"]
[[shaping.rule]]
mx_suffix = ".Google.com"
connections_max = 5
rate = "300/min"
source_pool = "warm"
[[shaping.rule]]
domain = "*.Example.com"
messages_per_connection_max = 10
recipients_per_transaction_max = 50
adaptive = false
[[shaping.reply]]
pattern = "(?i)temporarily suspended"
action = "suspend"
suspend_ms = 900000
mx_suffix = ".example.net"
[[shaping.reply]]
pattern = "^550 5\\.7\\.1 .*blocked"
action = "bounce"
domain = "example.org"
[[shaping.reply]]
pattern = "slow down"
action = "backoff"
)",
                       "s.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<delivery::ShapingRule>& rules = c->shard.shaping.rules;
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].mx_suffix, ".google.com");
  EXPECT_TRUE(rules[0].domain.empty());
  EXPECT_EQ(rules[0].connections_max, 5u);
  EXPECT_EQ(rules[0].rate, (delivery::Rate{300, 60'000}));
  EXPECT_EQ(rules[0].source_pool, "warm");
  EXPECT_FALSE(rules[0].messages_per_connection_max.has_value());  // Unset: left as it was.
  EXPECT_FALSE(rules[0].adaptive.has_value());
  EXPECT_EQ(rules[1].domain, "*.example.com");
  EXPECT_EQ(rules[1].messages_per_connection_max, 10u);
  EXPECT_EQ(rules[1].recipients_per_transaction_max, 50u);
  EXPECT_EQ(rules[1].adaptive, false);
  EXPECT_FALSE(rules[1].connections_max.has_value());
  EXPECT_FALSE(rules[1].rate.has_value());
  const std::vector<delivery::ReplyRule>& replies = c->shard.shaping.replies;
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(replies[0].pattern, "(?i)temporarily suspended");
  EXPECT_EQ(replies[0].action, delivery::ReplyRule::Action::kSuspend);
  EXPECT_EQ(replies[0].suspend_ms, 900'000u);
  EXPECT_EQ(replies[0].mx_suffix, ".example.net");
  EXPECT_EQ(replies[1].action, delivery::ReplyRule::Action::kBounce);
  EXPECT_EQ(replies[1].domain, "example.org");
  EXPECT_EQ(replies[2].action, delivery::ReplyRule::Action::kBackoff);
  EXPECT_EQ(replies[2].suspend_ms, delivery::ReplyRule{}.suspend_ms);

  const std::string reply = "[[shaping.reply]]\naction = \"suspend\"\n";
  // A bad pattern is refused at load, naming the table, the line and RE2's complaint.
  ExpectError(reply + "pattern = \"(unclosed\"\n",
              "bad.toml:3: shaping.reply.pattern: '(unclosed' is not an RE2 pattern: missing )");
  ExpectError("[[shaping.reply]]\npattern = \"x\"\naction = \"drop\"\n",
              "bad.toml:3: shaping.reply.action: 'drop' is not one of backoff,suspend,bounce");
  ExpectError("[[shaping.reply]]\npattern = \"x\"\n", "shaping.reply.action: is required");
  ExpectError("[[shaping.reply]]\naction = \"bounce\"\n", "shaping.reply.pattern: is required");
  ExpectError("[[shaping.reply]]\npattern = \"x\"\naction = \"bounce\"\nsuspend_ms = 60000\n",
              "shaping.reply.suspend_ms: only action = \"suspend\" takes it");
  ExpectError(reply + "pattern = \"x\"\nsuspend_ms = 10\n",
              "shaping.reply.suspend_ms: 10 is out of range");
  ExpectError(reply + "pattern = \"x\"\nwhen = 1\n", "shaping.reply.when: unknown key");
  ExpectError("[[shaping.rule]]\nconnections_max = 0\n",
              "bad.toml:2: shaping.rule.connections_max: 0 is out of range");
  ExpectError("[[shaping.rule]]\nconnections_max = \"5\"\n",
              "shaping.rule.connections_max: expected an integer");
  ExpectError("[[shaping.rule]]\nrate = \"lots\"\n", "shaping.rule.rate: 'lots' is not a rate");
  ExpectError("[[shaping.rule]]\ndomain = \"bad domain\"\n", "shaping.rule.domain");
  ExpectError("[[shaping.rule]]\nmx_suffix = \"*.google.com\"\n", "shaping.rule.mx_suffix");
  ExpectError("[[shaping.rule]]\nadaptive = 1\n", "shaping.rule.adaptive: expected true or false");
  ExpectError("[[shaping.rule]]\nsource_pool = \"cold\"\n",
              "shaping.rule (domain \"\", mx_suffix \"\"): source_pool 'cold' is not a "
              "[[source_pool]]");
}

TEST(ConfigSchemaTest, SourcesAndPools) {
  // A pool may come before the sources it names.
  auto c = ParseConfig(R"([[source_pool]]
name = "out"
sources = ["s1", "s2"]
weights = [3, 1]
[[source_pool]]
name = "one"
sources = ["s2"]
[[source]]
name = "s1"
address = "192.0.2.10"
ehlo = "MTA1.example.com"
connections_max = 20
warmup_per_day = 5000
[[source]]
name = "s2"
address = "2001:db8::10"
[[routes]]
domain = "*"
type = "mx"
source_pool = "out"
)",
                       "p.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  const delivery::SourceOptions& o = c->shard.sources;
  ASSERT_EQ(o.sources.size(), 2u);
  EXPECT_EQ(o.sources[0].name, "s1");
  EXPECT_EQ(o.sources[0].address, *mail::IpAddress::Parse("192.0.2.10"));
  EXPECT_EQ(o.sources[0].ehlo, "mta1.example.com");
  EXPECT_EQ(o.sources[0].connections_max, 20u);
  EXPECT_EQ(o.sources[0].warmup_per_day, 5000u);
  EXPECT_TRUE(o.sources[1].ehlo.empty());  // server.hostname.
  EXPECT_EQ(o.sources[1].connections_max, 0u);
  ASSERT_EQ(o.pools.size(), 2u);
  EXPECT_EQ(o.pools[0].name, "out");
  ASSERT_EQ(o.pools[0].members.size(), 2u);
  EXPECT_EQ(o.pools[0].members[0].source, 0u);
  EXPECT_EQ(o.pools[0].members[0].weight, 3u);
  EXPECT_EQ(o.pools[0].members[1].source, 1u);
  EXPECT_EQ(o.pools[0].members[1].weight, 1u);
  ASSERT_EQ(o.pools[1].members.size(), 1u);
  EXPECT_EQ(o.pools[1].members[0].source, 1u);
  EXPECT_EQ(o.pools[1].members[0].weight, 1u);  // Default.
  ASSERT_EQ(c->routes.size(), 1u);
  EXPECT_EQ(c->routes[0].type, RouteType::kMx);
  EXPECT_EQ(c->routes[0].source_pool, "out");
  EXPECT_EQ(c->routes[0].tls, config::RouteTls::kMay);  // The mx default.

  const std::string s1 = "[[source]]\nname = \"s1\"\naddress = \"192.0.2.10\"\n";
  ExpectError("[[source_pool]]\nname = \"out\"\nsources = [\"s1\", \"s9\"]\n" + s1,
              "bad.toml: source_pool 'out': no [[source]] is named 's9'");
  ExpectError(s1 + "[[routes]]\ndomain = \"*\"\ntype = \"mx\"\nsource_pool = \"nope\"\n",
              "route for *: source_pool 'nope' is not a [[source_pool]]");
  ExpectError(s1 + "[[source_pool]]\nname = \"p\"\nsources = [\"s1\"]\nweights = [1, 2]\n",
              "source_pool.weights: has 2 entries for 1 sources");
  ExpectError(s1 + "[[source_pool]]\nname = \"p\"\nsources = [\"s1\"]\nweights = [0]\n",
              "source_pool.weights: 0 is out of range");
  ExpectError(s1 + "[[source_pool]]\nname = \"p\"\nsources = []\n",
              "source_pool.sources: a source pool needs a non-empty array of source names");
  ExpectError(s1 + "[[source_pool]]\nname = \"p\"\n", "source_pool.sources");
  ExpectError(s1 + s1, "bad.toml:5: source.name: 's1' is given twice");
  ExpectError("[[source]]\nname = \"s1\"\naddress = \"mta1.example.com\"\n",
              "bad.toml:3: source.address: 'mta1.example.com' is not an IPv4 or IPv6 address");
  ExpectError("[[source]]\nname = \"s 1\"\naddress = \"192.0.2.1\"\n", "source.name");
  ExpectError(s1 + "ehlo = \"*.example.com\"\n", "source.ehlo: '*.example.com' is not a host name");
  ExpectError(s1 + "connections_max = -1\n", "source.connections_max");
  ExpectError("[[source]]\naddress = \"192.0.2.1\"\n", "source.name: is required");
  // source_pool is for the routes that connect out by SMTP.
  ExpectError(s1 + "[[source_pool]]\nname = \"p\"\nsources = [\"s1\"]\n" +
                  RouteToml("a.test", "lmtp") + "source_pool = \"p\"\n",
              "routes.source_pool: route for a.test: only smarthost and mx routes take it");
}

TEST(ConfigSchemaTest, RoutesOfTypeMx) {
  auto c = ParseConfig(R"([[routes]]
domain = "*.example.net"
type = "mx"
tls = "verify"
tls_ca_file = "/etc/relais/ca.pem"
[[routes]]
domain = "*"
type = "mx"
tls = "none"
)",
                       "m.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->routes.size(), 2u);  // A "*" route of its own: nothing implicit.
  EXPECT_EQ(c->routes[0].type, RouteType::kMx);
  EXPECT_EQ(c->routes[0].tls, config::RouteTls::kVerify);
  EXPECT_EQ(c->routes[0].tls_ca_file, "/etc/relais/ca.pem");
  EXPECT_EQ(c->routes[1].tls, config::RouteTls::kNone);
  ExpectError(RouteToml("a.test", "mx") + "tls = \"sometimes\"\n", "routes.tls: route for a.test");
  ExpectError(RouteToml("a.test", "maildir") + "tls = \"may\"\n",
              "only smarthost, lmtp and mx routes take it");
  ExpectError(RouteToml("a.test", "bounce"),
              "'bounce' is not one of maildir, smarthost, lmtp, reject, mx");
}

// A relayed domain no route matches goes to its MX hosts: a file without a "*" route ends with
// the implicit one. The quick start's "*" maildir route, and files whose local_domains take
// every domain, keep theirs (those domains are ours, never sent on).
TEST(ConfigSchemaTest, ImplicitMxRoute) {
  const std::string production =
      "[relay]\nlocal_domains = [\"local.test\"]\nnetworks = [\"10.0.0.0/8\"]\n" +
      RouteToml("local.test", "maildir") + RouteToml("*.corp.test", "smarthost");
  auto c = ParseConfig(production, "p.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->routes.size(), 3u);
  EXPECT_EQ(c->routes[2].domain, "*");
  EXPECT_EQ(c->routes[2].type, RouteType::kMx);
  EXPECT_EQ(c->routes[2].tls, config::RouteTls::kMay);
  EXPECT_TRUE(c->routes[2].source_pool.empty());

  auto with_catch_all = ParseConfig(production + RouteToml("*", "reject"), "p.toml");
  ASSERT_TRUE(with_catch_all.ok()) << with_catch_all.status();
  ASSERT_EQ(with_catch_all->routes.size(), 3u);
  EXPECT_EQ(with_catch_all->routes[2].type, RouteType::kReject);

  auto quick = QuickStart();
  ASSERT_TRUE(quick.ok()) << quick.status();
  ASSERT_EQ(quick->routes.size(), 1u);
  EXPECT_EQ(quick->routes[0].type, RouteType::kMaildir);

  auto every_domain_local = ParseConfig(
      "[relay]\nlocal_domains = [\"*\"]\n" + RouteToml("example.com", "maildir"), "l.toml");
  ASSERT_TRUE(every_domain_local.ok()) << every_domain_local.status();
  ASSERT_EQ(every_domain_local->routes.size(), 1u);  // Unrouted domains: 550 5.1.2 as before.
}

// The implicit mx route relays only what the RCPT rules let through: a stranger is refused
// relaying (554 5.7.1) before the router is asked; a relay network client, and mail for a local
// domain, are taken.
TEST(ConfigSchemaTest, ImplicitMxRouteRelaysNothingForStrangers) {
  auto c = ParseConfig(
      "[server]\nhostname = \"mx.local.test\"\n"
      "[relay]\nlocal_domains = [\"local.test\"]\nnetworks = [\"10.0.0.0/8\"]\n" +
          RouteToml("local.test", "maildir"),
      "p.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->routes.back().type, RouteType::kMx);
  EXPECT_EQ(OpenRelayProblem(*c), "");
  routing::Router router(c->routes, c->shard.session.hostname);
  RouterPolicy policy(router);
  smtp::SessionOptions options = c->shard.session;
  options.recipient_policy = &policy;
  const auto rcpt = [&](std::string_view client, std::string_view to) {
    smtp::ServerSession session(options, *mail::IpAddress::Parse(client));
    session.Start();
    session.ConsumeOutput(session.PendingOutput().size());
    session.Feed(
        base::StrCat("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<", to, ">\r\n"));
    const std::string out(session.PendingOutput());
    const size_t last = out.rfind("\r\n", out.size() - 3);
    return out.substr(last == std::string::npos ? 0 : last + 2, 3);
  };
  EXPECT_EQ(rcpt("198.51.100.7", "victim@gmail.example"), "554");  // A stranger: no relaying.
  EXPECT_EQ(rcpt("198.51.100.7", "bob@local.test"), "250");        // Ours.
  EXPECT_EQ(rcpt("10.1.2.3", "friend@gmail.example"), "250");      // A relay client: by MX.
}

}  // namespace
}  // namespace relais::relaisd
