// core/net/listener_test.cc — the listening sockets: shards share a port among themselves,
// never with another socket already listening there, and a restart gets its port back at once.
#include "core/net/listener.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace relais::net {
namespace {

void CloseAll(const Listeners& listeners) {
  for (const std::vector<int>& fds : listeners.fds_by_shard) {
    for (const int fd : fds) {
      close(fd);
    }
  }
}

uint16_t PortOf(const std::string& bound) {
  return static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
}

// A listening loopback socket of "another program", with or without SO_REUSEPORT.
int ForeignListener(uint16_t port, bool reuseport) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (reuseport) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(fd, 8), 0);
  return fd;
}

// Sessions are accepted straight into io_uring's file table, with no descriptor to set options
// on: what they need is set on the listener, and the kernel copies it into each connection.
TEST(Listeners, ConnectionsInheritNoDelay) {
  absl::StatusOr<Listeners> l = OpenListeners({"127.0.0.1:0"}, 1, 0);
  ASSERT_TRUE(l.ok()) << l.status();
  const int listener = l->fds_by_shard[0][0];
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(PortOf(l->bound[0]));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  pollfd ready{listener, POLLIN, 0};
  ASSERT_EQ(poll(&ready, 1, 5000), 1);  // The listener is non-blocking.
  const int accepted = accept(listener, nullptr, nullptr);
  ASSERT_GE(accepted, 0);
  int nodelay = 0;
  socklen_t len = sizeof(nodelay);
  ASSERT_EQ(getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
  EXPECT_EQ(nodelay, 1);
  close(accepted);
  close(client);
  CloseAll(*l);
}

TEST(Listeners, ShardsShareOnePortChosenByTheKernel) {
  absl::StatusOr<Listeners> l = OpenListeners({"127.0.0.1:0"}, 3, 0);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ(l->bound.size(), 1u);
  ASSERT_EQ(l->fds_by_shard.size(), 3u);
  const uint16_t port = PortOf(l->bound[0]);
  EXPECT_NE(port, 0);
  for (const std::vector<int>& fds : l->fds_by_shard) {
    ASSERT_EQ(fds.size(), 1u);
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    ASSERT_EQ(getsockname(fds[0], reinterpret_cast<sockaddr*>(&addr), &len), 0);
    EXPECT_EQ(ntohs(addr.sin_port), port);
  }
  CloseAll(*l);
}

TEST(Listeners, APortAnotherSocketListensOnIsRefusedNotShared) {
  absl::StatusOr<Listeners> first = OpenListeners({"127.0.0.1:0"}, 2, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = first->bound[0];
  // A second daemon (same user, same SO_REUSEPORT) would otherwise get half the connections.
  absl::StatusOr<Listeners> second = OpenListeners({address}, 2, 0);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("listen " + address), std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("already in use"), std::string::npos) << second.status();
  CloseAll(*first);

  // So is a port held by any other program's SO_REUSEPORT socket.
  const int foreign = ForeignListener(PortOf(address), /*reuseport=*/true);
  absl::StatusOr<Listeners> third = OpenListeners({address}, 1, 0);
  EXPECT_FALSE(third.ok());
  close(foreign);
}

TEST(Listeners, AFailedAddressClosesWhatWasOpened) {
  absl::StatusOr<Listeners> taken = OpenListeners({"127.0.0.1:0"}, 1, 0);
  ASSERT_TRUE(taken.ok()) << taken.status();
  absl::StatusOr<Listeners> free_one = OpenListeners({"127.0.0.1:0"}, 1, 0);
  ASSERT_TRUE(free_one.ok()) << free_one.status();
  const std::string free_address = free_one->bound[0];
  CloseAll(*free_one);
  // The first address opens, the second is refused: the first must be let go again.
  absl::StatusOr<Listeners> both = OpenListeners({free_address, taken->bound[0]}, 2, 0);
  ASSERT_FALSE(both.ok());
  absl::StatusOr<Listeners> again = OpenListeners({free_address}, 2, 0);
  EXPECT_TRUE(again.ok()) << again.status();
  if (again.ok()) {
    CloseAll(*again);
  }
  CloseAll(*taken);
}

TEST(Listeners, ARestartGetsItsPortBackDespiteTimeWait) {
  absl::StatusOr<Listeners> l = OpenListeners({"127.0.0.1:0"}, 1, 0);
  ASSERT_TRUE(l.ok()) << l.status();
  const std::string address = l->bound[0];
  // A connection the server side closes first leaves the port in TIME_WAIT.
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(PortOf(address));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const int fd = l->fds_by_shard[0][0];
  int accepted = -1;
  for (int i = 0; i < 200 && accepted < 0; ++i) {  // The listener is non-blocking.
    accepted = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (accepted < 0) {
      usleep(5'000);
    }
  }
  ASSERT_GE(accepted, 0);
  close(accepted);
  char byte;
  EXPECT_EQ(read(client, &byte, 1), 0);  // The server's FIN arrived.
  close(client);
  CloseAll(*l);
  absl::StatusOr<Listeners> restarted = OpenListeners({address}, 2, 0);
  EXPECT_TRUE(restarted.ok()) << restarted.status();
  if (restarted.ok()) {
    CloseAll(*restarted);
  }
}

TEST(Listeners, BadAddressesAreNamed) {
  absl::StatusOr<Listeners> l = OpenListeners({"127.0.0.1"}, 1, 0);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("listen 127.0.0.1: expected host:port"), std::string::npos)
      << l.status();
}

}  // namespace
}  // namespace relais::net
