#include "core/mail/ip_network.h"

#include <gtest/gtest.h>

namespace relais::mail {
namespace {

bool In(const char* net, const char* ip) {
  auto n = IpNetwork::Parse(net);
  auto a = IpAddress::Parse(ip);
  EXPECT_TRUE(n.has_value()) << net;
  EXPECT_TRUE(a.has_value()) << ip;
  return n && a && n->Contains(*a);
}

TEST(IpNetworkTest, MatchesIpv4Prefixes) {
  EXPECT_TRUE(In("127.0.0.0/8", "127.1.2.3"));
  EXPECT_FALSE(In("127.0.0.0/8", "128.0.0.1"));
  EXPECT_TRUE(In("192.0.2.128/25", "192.0.2.200"));
  EXPECT_FALSE(In("192.0.2.128/25", "192.0.2.100"));
  EXPECT_TRUE(In("0.0.0.0/0", "8.8.8.8"));
  EXPECT_TRUE(In("10.1.2.3", "10.1.2.3"));
  EXPECT_FALSE(In("10.1.2.3", "10.1.2.4"));
}

TEST(IpNetworkTest, MatchesIpv6AndUnmapsIpv4MappedAddresses) {
  EXPECT_TRUE(In("2001:db8::/32", "2001:db8:1::5"));
  EXPECT_FALSE(In("2001:db8::/32", "2001:db9::1"));
  EXPECT_TRUE(In("::1/128", "::1"));
  EXPECT_TRUE(In("127.0.0.0/8", "::ffff:127.0.0.1"));
  EXPECT_FALSE(In("::/0", "127.0.0.1"));
}

TEST(IpNetworkTest, RejectsMalformedNetworks) {
  EXPECT_FALSE(IpNetwork::Parse("").has_value());
  EXPECT_FALSE(IpNetwork::Parse("127.0.0.0/33").has_value());
  EXPECT_FALSE(IpNetwork::Parse("127.0.0.0/").has_value());
  EXPECT_FALSE(IpNetwork::Parse("::1/129").has_value());
  EXPECT_FALSE(IpNetwork::Parse("example.com/8").has_value());
  EXPECT_FALSE(IpNetwork::Parse("1.2.3.4/8x").has_value());
}

}  // namespace
}  // namespace relais::mail

#include "core/mail/domain.h"

namespace relais::mail {
namespace {

TEST(DomainPatternTest, ExactSuffixAndAny) {
  EXPECT_TRUE(DomainMatches("*", "anything.example"));
  EXPECT_TRUE(DomainMatches("example.com", "EXAMPLE.com"));
  EXPECT_FALSE(DomainMatches("example.com", "sub.example.com"));
  EXPECT_TRUE(DomainMatches("*.example.com", "sub.example.com"));
  EXPECT_FALSE(DomainMatches("*.example.com", "example.com"));
  EXPECT_FALSE(DomainMatches("*.example.com", "badexample.com"));
}

}  // namespace
}  // namespace relais::mail
