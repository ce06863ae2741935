// core/net/acceptor_test.cc — accepts into table slots over the fake socket seam.
#include "core/net/acceptor.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <vector>

#include "core/io/fake_net.h"

namespace relais::net {
namespace {

struct Owner final : AcceptOwner {
  bool OnAccepted(io::Socket socket, std::optional<mail::IpAddress> peer,
                  uint32_t listener) override {
    sockets.push_back(socket);
    peers.push_back(peer ? peer->ToString() : "none");
    listeners.push_back(listener);
    return keep_accepting;
  }
  void OnAcceptFailed(int32_t error) override { errors.push_back(error); }
  std::vector<io::Socket> sockets;
  std::vector<std::string> peers;
  std::vector<uint32_t> listeners;
  std::vector<int32_t> errors;
  bool keep_accepting = true;
};

sockaddr_storage V4(const char* ip) {
  sockaddr_storage s{};
  auto* in = reinterpret_cast<sockaddr_in*>(&s);
  in->sin_family = AF_INET;
  in->sin_port = htons(4242);
  inet_pton(AF_INET, ip, &in->sin_addr);
  return s;
}

TEST(Acceptor, AcceptsIntoSlotsWithPeerAndReArms) {
  io::FakeNet net;
  const io::Socket listener = net.Listener();
  Owner owner;
  Acceptor acceptor(net, listener, 3, owner);
  acceptor.Arm();
  EXPECT_EQ(acceptor.armed(), Acceptor::kInFlight);
  // More connections than accepts in flight: each accept re-arms as it completes.
  std::vector<io::Socket> expected;
  for (size_t i = 0; i < Acceptor::kInFlight * 2 + 1; ++i) {
    expected.push_back(net.PeerConnects(listener, V4(i % 2 == 0 ? "192.0.2.1" : "198.51.100.7")));
  }
  net.RunUntilIdle();
  ASSERT_EQ(owner.sockets.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(owner.sockets[i].registered());
    EXPECT_EQ(owner.listeners[i], 3u);
  }
  EXPECT_EQ(owner.peers[0], "192.0.2.1");
  EXPECT_EQ(owner.peers[1], "198.51.100.7");
  EXPECT_EQ(acceptor.armed(), Acceptor::kInFlight);
  EXPECT_TRUE(owner.errors.empty());
  acceptor.Cancel();
  net.RunUntilIdle();
  EXPECT_EQ(acceptor.armed(), 0u);
  EXPECT_TRUE(owner.errors.empty());  // A cancel is no failure.
}

TEST(Acceptor, NonIpPeerAndStopAccepting) {
  io::FakeNet net;
  const io::Socket listener = net.Listener();
  Owner owner;
  owner.keep_accepting = false;
  Acceptor acceptor(net, listener, 0, owner);
  acceptor.Arm();
  (void)net.PeerConnects(listener);  // AF_UNSPEC: not an IP peer.
  net.RunUntilIdle();
  ASSERT_EQ(owner.peers.size(), 1u);
  EXPECT_EQ(owner.peers[0], "none");
  EXPECT_EQ(acceptor.armed(), Acceptor::kInFlight - 1);  // The owner said stop: not re-armed.
  acceptor.Arm();
  EXPECT_EQ(acceptor.armed(), Acceptor::kInFlight);
  acceptor.Cancel();
  net.RunUntilIdle();
}

}  // namespace
}  // namespace relais::net
