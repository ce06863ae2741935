// core/net/acceptor_test.cc — accepts into table slots over the fake socket seam.
#include "core/net/acceptor.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
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

// FakeNet with accepts that fail: every AcceptDirect waits until FailAccepts() completes it
// with `error` (EMFILE, ENFILE), as the kernel does when the process or the table is full.
class FailingAcceptNet final : public io::Net {
 public:
  void AcceptMultishot(io::Socket listener, io::SocketOp& op) override {
    net.AcceptMultishot(listener, op);
  }
  void AcceptDirect(io::Socket, sockaddr*, socklen_t*, io::SocketOp& op) override {
    waiting.push_back(&op);
  }
  io::Socket NewStreamSocket(int family) override { return net.NewStreamSocket(family); }
  void Connect(io::Socket s, const sockaddr* a, socklen_t l, io::SocketOp& op) override {
    net.Connect(s, a, l, op);
  }
  void Recv(io::Socket s, io::SocketOp& op) override { net.Recv(s, op); }
  void Send(io::Socket s, std::string_view d, io::SocketOp& op) override { net.Send(s, d, op); }
  void Close(io::Socket s, io::SocketOp& op) override { net.Close(s, op); }
  void CloseUnused(io::Socket s) override { net.CloseUnused(s); }
  void Cancel(io::SocketOp& op) override { net.Cancel(op); }
  void FailAccepts(int32_t error) {
    std::vector<io::SocketOp*> ops;
    ops.swap(waiting);
    for (io::SocketOp* op : ops) {
      op->OnSocketDone(io::SocketResult{error, {}, false});
    }
  }
  io::FakeNet net;
  std::vector<io::SocketOp*> waiting;
};

TEST(Acceptor, FailedAcceptIsReportedAndWaitsForArm) {
  FailingAcceptNet net;
  Owner owner;
  Acceptor acceptor(net, io::Socket::Descriptor(7), 0, owner);
  acceptor.Arm();
  ASSERT_EQ(net.waiting.size(), Acceptor::kInFlight);
  net.FailAccepts(-EMFILE);
  // Each failure is the owner's to hear; none re-arms by itself (that could spin on an error
  // that leaves the connection queued).
  EXPECT_EQ(owner.errors.size(), Acceptor::kInFlight);
  EXPECT_EQ(owner.errors[0], -EMFILE);
  EXPECT_EQ(acceptor.armed(), 0u);
  EXPECT_TRUE(net.waiting.empty());
  acceptor.Arm();  // The owner's retry, after its pause.
  EXPECT_EQ(acceptor.armed(), Acceptor::kInFlight);
  EXPECT_EQ(net.waiting.size(), Acceptor::kInFlight);
  net.FailAccepts(-ECANCELED);  // A cancel is no failure.
  EXPECT_EQ(owner.errors.size(), Acceptor::kInFlight);
}

}  // namespace
}  // namespace relais::net
