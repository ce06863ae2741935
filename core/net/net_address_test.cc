// core/net/net_address_test.cc — host:port parsing and socket address text.
#include "core/net/net_address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

namespace relais::net {
namespace {

TEST(NetAddress, SplitsHostAndPort) {
  std::string host, port;
  ASSERT_TRUE(SplitHostPort("127.0.0.1:25", host, port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, "25");
  ASSERT_TRUE(SplitHostPort("[::1]:2525", host, port));
  EXPECT_EQ(host, "::1");
  ASSERT_TRUE(SplitHostPort("mx.example:587", host, port));
  EXPECT_EQ(host, "mx.example");
  EXPECT_FALSE(SplitHostPort("127.0.0.1", host, port));
  EXPECT_FALSE(SplitHostPort("::1:25", host, port));  // IPv6 needs brackets.
  EXPECT_FALSE(SplitHostPort("[::1:25", host, port));
  EXPECT_FALSE(SplitHostPort("h:65536", host, port));
  EXPECT_FALSE(SplitHostPort("h:2x", host, port));
  EXPECT_FALSE(SplitHostPort("h:", host, port));
  EXPECT_FALSE(SplitHostPort("h:0", host, port));
  EXPECT_TRUE(SplitHostPort("h:0", host, port, /*allow_port_zero=*/true));
}

TEST(NetAddress, FormatsSocketAddresses) {
  sockaddr_storage s{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&s);
  v4->sin_family = AF_INET;
  v4->sin_port = htons(25);
  inet_pton(AF_INET, "192.0.2.1", &v4->sin_addr);
  EXPECT_EQ(SocketAddressText(s), "192.0.2.1:25");
  sockaddr_storage t{};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&t);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(2525);
  inet_pton(AF_INET6, "2001:db8::1", &v6->sin6_addr);
  EXPECT_EQ(SocketAddressText(t), "[2001:db8::1]:2525");
}

TEST(NetAddress, PeerAddressUnmapsIpv4AndRefusesOtherFamilies) {
  sockaddr_storage s{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&s);
  v4->sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.7", &v4->sin_addr);
  ASSERT_TRUE(PeerAddress(s).has_value());
  EXPECT_EQ(PeerAddress(s)->ToString(), "192.0.2.7");
  sockaddr_storage t{};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&t);
  v6->sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:198.51.100.2", &v6->sin6_addr);
  ASSERT_TRUE(PeerAddress(t).has_value());
  EXPECT_EQ(PeerAddress(t)->family, AF_INET);
  EXPECT_EQ(PeerAddress(t)->ToString(), "198.51.100.2");
  inet_pton(AF_INET6, "2001:db8::9", &v6->sin6_addr);
  EXPECT_EQ(PeerAddress(t)->ToString(), "2001:db8::9");
  sockaddr_storage u{};
  u.ss_family = AF_UNIX;
  EXPECT_FALSE(PeerAddress(u).has_value());
}

}  // namespace
}  // namespace relais::net
