// protocols/dns/hosts_file_test.cc — the hosts file table: hosts(5) lines, the bounds, the
// localhost default, and reading the file.
#include "protocols/dns/hosts_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

namespace relais::dns {
namespace {

std::vector<std::string> Texts(const std::vector<mail::IpAddress>* addresses) {
  std::vector<std::string> out;
  if (addresses != nullptr) {
    for (const mail::IpAddress& address : *addresses) {
      out.push_back(address.ToString());
    }
  }
  return out;
}

using Strings = std::vector<std::string>;

TEST(HostsTableTest, CommentsAliasesAndFamilies) {
  const HostsTable table = HostsTable::Parse(
      "# The static table lookup for host names\n"
      "\n"
      "   \t  # an indented comment\n"
      "127.0.0.1\tlocalhost\n"
      "192.0.2.10   relay.example.net relay  mail-hub # the smarthost\n"
      "2001:db8::10 relay.example.net\n"
      "::1 localhost ip6-localhost ip6-loopback\n");
  EXPECT_EQ(Texts(table.Find("relay.example.net")), (Strings{"192.0.2.10", "2001:db8::10"}));
  EXPECT_EQ(Texts(table.Find("relay")), Strings{"192.0.2.10"});
  EXPECT_EQ(Texts(table.Find("mail-hub")), Strings{"192.0.2.10"});
  EXPECT_EQ(Texts(table.Find("ip6-loopback")), Strings{"::1"});
  EXPECT_EQ(Texts(table.Find("localhost")), (Strings{"127.0.0.1", "::1"}));
  EXPECT_EQ(table.Find("the"), nullptr);  // Words of a comment are no names.
  EXPECT_EQ(table.Find("smarthost"), nullptr);
  EXPECT_EQ(table.Find("example.net"), nullptr);
  EXPECT_EQ(table.skipped_lines(), 0u);
}

TEST(HostsTableTest, NamesAreCaseInsensitiveWithoutTrailingDot) {
  const HostsTable table = HostsTable::Parse("192.0.2.1 Relay.EXAMPLE.net.\n");
  EXPECT_EQ(Texts(table.Find("relay.example.net")), Strings{"192.0.2.1"});
  EXPECT_EQ(Texts(table.Find("RELAY.example.NET")), Strings{"192.0.2.1"});
  EXPECT_EQ(Texts(table.Find("relay.example.net.")), Strings{"192.0.2.1"});
}

TEST(HostsTableTest, BadLinesAndNamesAreSkipped) {
  const HostsTable table = HostsTable::Parse(
      "300.1.2.3 broken-v4\n"
      "fe80::1%eth0 zoned\n"
      "not-an-address name\n"
      "192.0.2.7\n"                         // No name.
      "192.0.2.8 good bad/name b@d ok\r\n"  // CRLF; the bad names only are skipped.
      "192.0.2.9 good\n"
      "192.0.2.8 good\n");  // An address once per name.
  EXPECT_EQ(table.Find("broken-v4"), nullptr);
  EXPECT_EQ(table.Find("zoned"), nullptr);
  EXPECT_EQ(table.Find("name"), nullptr);
  EXPECT_EQ(table.Find("bad/name"), nullptr);
  EXPECT_EQ(Texts(table.Find("good")), (Strings{"192.0.2.8", "192.0.2.9"}));
  EXPECT_EQ(Texts(table.Find("ok")), Strings{"192.0.2.8"});
  EXPECT_EQ(table.skipped_lines(), 4u);
}

TEST(HostsTableTest, MappedIpv6IsTheIpv4Address) {
  const HostsTable table = HostsTable::Parse("::ffff:192.0.2.5 mapped\n");
  EXPECT_EQ(Texts(table.Find("mapped")), Strings{"192.0.2.5"});
}

TEST(HostsTableTest, LocalhostResolvesWithoutAnEntry) {
  EXPECT_EQ(Texts(HostsTable().Find("localhost")), (Strings{"127.0.0.1", "::1"}));
  EXPECT_EQ(Texts(HostsTable::Parse("").Find("LOCALHOST.")), (Strings{"127.0.0.1", "::1"}));
  // The file's own entry wins.
  EXPECT_EQ(Texts(HostsTable::Parse("127.0.0.2 localhost\n").Find("localhost")),
            Strings{"127.0.0.2"});
}

TEST(HostsTableTest, Bounded) {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "192.0.2." + std::to_string(i) + " many\n";
  }
  text += "192.0.2.1 " + std::string(HostsTable::kLineBytesMax, 'a') + " long\n";
  const HostsTable table = HostsTable::Parse(text);
  ASSERT_NE(table.Find("many"), nullptr);
  EXPECT_EQ(table.Find("many")->size(), HostsTable::kAddressesPerNameMax);
  EXPECT_EQ(table.Find("long"), nullptr);  // The over-long line is skipped whole.

  std::string names;
  for (size_t i = 0; i < HostsTable::kNamesMax + 10; ++i) {
    names += "192.0.2.1 h" + std::to_string(i) + "\n";
  }
  const HostsTable big = HostsTable::Parse(names);
  EXPECT_LE(big.size(), HostsTable::kNamesMax + 1);  // Plus the localhost default.
  EXPECT_NE(big.Find("h0"), nullptr);
  EXPECT_EQ(big.Find("h" + std::to_string(HostsTable::kNamesMax + 5)), nullptr);
  EXPECT_NE(big.Find("localhost"), nullptr);
}

TEST(HostsTableTest, ReadsTheFileAndAMissingFileIsEmpty) {
  char path[] = "/tmp/hosts_file_test.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "198.51.100.4 smarthost.test\n";
  }
  const HostsTable table = ReadHostsFile(path);
  EXPECT_EQ(Texts(table.Find("smarthost.test")), Strings{"198.51.100.4"});
  unlink(path);
  const HostsTable missing = ReadHostsFile("/nonexistent/hosts");
  EXPECT_EQ(missing.Find("smarthost.test"), nullptr);
  EXPECT_EQ(Texts(missing.Find("localhost")), (Strings{"127.0.0.1", "::1"}));
}

}  // namespace
}  // namespace relais::dns
