// core/io/fake_net_test.cc — the in-memory socket seam: what tests and the shard simulation
// rely on (ordering, the received view's lifetime, faults, misuse caught).
#include "core/io/fake_net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cerrno>
#include <string>
#include <vector>

namespace relais::io {
namespace {

struct Recorder final : SocketOp {
  void OnSocketDone(const SocketResult& done) override {
    results.push_back(done.result);
    received.emplace_back(done.received);
    view = done.received;
    more = done.more;
  }
  std::vector<int32_t> results;
  std::vector<std::string> received;
  std::string_view view;
  bool more = false;
};

TEST(FakeNetTest, NothingCompletesInsideTheCallThatStartedIt) {
  FakeNet net;
  const Socket s = net.Connected();
  net.PeerSends(s, "hi");
  Recorder r;
  net.Recv(s, r);
  EXPECT_TRUE(r.results.empty());
  EXPECT_EQ(net.RunUntilIdle(), 1u);
  EXPECT_EQ(r.received, std::vector<std::string>{"hi"});
}

TEST(FakeNetTest, TheReceivedViewDiesWithItsCallback) {
  FakeNet net(4);
  const Socket s = net.Connected();
  net.PeerSends(s, "abcdef");
  Recorder r;
  net.Recv(s, r);
  net.RunUntilIdle();
  EXPECT_EQ(r.received[0], "abcd");  // At most one buffer's worth per receive.
  EXPECT_NE(r.view, "abcd");         // Overwritten once the callback returned.
  net.Recv(s, r);
  net.RunUntilIdle();
  EXPECT_EQ(r.received[1], "ef");
}

TEST(FakeNetTest, FaultsAreInjectedWhereAsked) {
  FakeNet net;
  const Socket s = net.Connected(/*registered=*/true);
  EXPECT_TRUE(s.registered());
  net.FailRecvs(1, -ENOBUFS);
  Recorder r;
  net.Recv(s, r);
  net.RunUntilIdle();
  EXPECT_EQ(r.results.back(), -ENOBUFS);
  net.SetSendBytesMax(s, 3);
  Recorder w;
  net.Send(s, "hello", w);
  net.RunUntilIdle();
  EXPECT_EQ(w.results.back(), 3);  // Short.
  net.StallSends(s, true);
  net.Send(s, "lo", w);
  EXPECT_EQ(net.RunUntilIdle(), 0u);  // Waits while the peer does not read.
  net.StallSends(s, false);
  net.RunUntilIdle();
  EXPECT_EQ(net.sent(s), "hello");
  net.Recv(s, r);
  net.PeerResets(s);
  net.RunUntilIdle();
  EXPECT_EQ(r.results.back(), -ECONNRESET);
  net.PeerShutsWrite(s);
}

TEST(FakeNetTest, CancelAndEndOfInput) {
  FakeNet net;
  const Socket s = net.Connected();
  Recorder r;
  net.Recv(s, r);
  net.Cancel(r);
  net.RunUntilIdle();
  EXPECT_EQ(r.results.back(), -ECANCELED);
  net.PeerSends(s, "x");
  net.PeerShutsWrite(s);
  net.Recv(s, r);
  net.RunUntilIdle();
  net.Recv(s, r);
  net.RunUntilIdle();
  EXPECT_EQ(r.results.back(), 0);
  Recorder c;
  net.Close(s, c);
  net.RunUntilIdle();
  EXPECT_TRUE(net.closed(s));
}

TEST(FakeNetTest, AcceptsGiveThePeerAddressAndConnectRecordsTheTarget) {
  FakeNet net;
  const Socket listener = net.Listener();
  Recorder multi;
  net.AcceptMultishot(listener, multi);
  net.PeerConnects(listener);
  net.PeerConnects(listener);
  net.RunUntilIdle();
  EXPECT_EQ(multi.results.size(), 2u);
  EXPECT_TRUE(multi.more);
  net.Cancel(multi);
  net.RunUntilIdle();
  EXPECT_EQ(multi.results.back(), -ECANCELED);
  EXPECT_FALSE(multi.more);

  Recorder direct;
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  net.AcceptDirect(listener, reinterpret_cast<sockaddr*>(&address), &length, direct);
  sockaddr_storage from{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&from);
  v4->sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.5", &v4->sin_addr);
  const Socket accepted = net.PeerConnects(listener, from);
  net.RunUntilIdle();
  EXPECT_TRUE(accepted.registered());
  EXPECT_EQ(Socket::Registered(static_cast<uint32_t>(direct.results.back())), accepted);
  EXPECT_EQ(address.ss_family, AF_INET);
  EXPECT_EQ(reinterpret_cast<sockaddr_in*>(&address)->sin_addr.s_addr, v4->sin_addr.s_addr);

  const Socket out = net.NewStreamSocket(AF_INET);
  net.SetConnectResult(out, -ECONNREFUSED);
  Recorder connect;
  net.Connect(out, reinterpret_cast<const sockaddr*>(&from), sizeof(sockaddr_in), connect);
  net.RunUntilIdle();
  EXPECT_EQ(connect.results.back(), -ECONNREFUSED);
  EXPECT_EQ(net.connected_to(out).ss_family, AF_INET);
}

TEST(FakeNetTest, BindRecordsTheSourceAddressAndCanBeMadeToFail) {
  FakeNet net;
  const Socket out = net.NewStreamSocket(AF_INET);
  EXPECT_EQ(net.bound_to(out).ss_family, 0);  // Not bound.
  sockaddr_in source{};
  source.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.7", &source.sin_addr);
  EXPECT_EQ(net.Bind(out, reinterpret_cast<const sockaddr*>(&source), sizeof(source)), 0);
  EXPECT_EQ(net.bound_to(out).ss_family, AF_INET);
  EXPECT_EQ(reinterpret_cast<const sockaddr_in*>(&net.bound_to(out))->sin_addr.s_addr,
            source.sin_addr.s_addr);
  net.FailBinds(-EADDRNOTAVAIL);
  const Socket other = net.NewStreamSocket(AF_INET);
  EXPECT_EQ(net.Bind(other, reinterpret_cast<const sockaddr*>(&source), sizeof(source)),
            -EADDRNOTAVAIL);
  EXPECT_EQ(net.Bind(other, reinterpret_cast<const sockaddr*>(&source), sizeof(source)), 0);
  net.CloseUnused(out);
  net.CloseUnused(other);
}

TEST(FakeNetTest, AStalledConnectWaitsUntilCancelledOrUnstalled) {
  FakeNet net;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(25);
  const Socket a = net.NewStreamSocket(AF_INET);
  const Socket b = net.NewStreamSocket(AF_INET);
  net.StallConnect(a, true);
  net.StallConnect(b, true);
  Recorder ra;
  Recorder rb;
  net.Connect(a, reinterpret_cast<const sockaddr*>(&to), sizeof(to), ra);
  net.Connect(b, reinterpret_cast<const sockaddr*>(&to), sizeof(to), rb);
  EXPECT_EQ(net.RunUntilIdle(), 0u);  // No SYN-ACK: the connects wait (a connect timeout's case).
  net.Cancel(ra);
  net.StallConnect(b, false);
  EXPECT_EQ(net.RunUntilIdle(), 2u);
  EXPECT_EQ(ra.results, std::vector<int32_t>{-ECANCELED});
  EXPECT_EQ(rb.results, std::vector<int32_t>{0});
}

TEST(FakeNetDeathTest, MisuseIsCaught) {
  FakeNet net;
  const Socket s = net.Connected();
  Recorder r;
  net.Recv(s, r);
  EXPECT_DEATH(net.Recv(s, r), "already in flight");
  Recorder c;
  EXPECT_DEATH(net.Close(s, c), "close with an operation in flight");
}

}  // namespace
}  // namespace relais::io
