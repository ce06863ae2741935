// core/uring/net_test.cc — UringNet, the socket seam on a real ring: provided-buffer receives
// handed over as bytes and recycled, registered slots and descriptors behind one io::Socket,
// accept, connect, cancel, close.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <string>

#include "core/uring/engine.h"

namespace relais::uring {
namespace {

struct Done final : io::SocketOp {
  void OnSocketDone(const io::SocketResult& d) override {
    result = d.result;
    more = d.more;
    received.assign(d.received);
    ++calls;
  }
  int32_t result = 0;
  bool more = false;
  std::string received;
  int calls = 0;
};

std::unique_ptr<Engine> MakeEngine(uint32_t fixed_files) {
  auto e = Engine::Create(EngineOptions{64, 4, 64, fixed_files});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

void RunUntil(Engine& e, const std::function<bool()>& done) {
  for (int i = 0; i < 1000 && !done(); ++i) {
    e.Run(10);
  }
  ASSERT_TRUE(done());
}

int Listener(sockaddr_in& addr) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  addr = sockaddr_in{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 16) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return -1;
  }
  return fd;
}

TEST(UringNetTest, RegisteredSocketReceivesSendsAndCloses) {
  auto engine = MakeEngine(4);
  ASSERT_NE(engine, nullptr);
  io::Net& net = engine->net();
  sockaddr_in addr{};
  const int listener = Listener(addr);
  ASSERT_GE(listener, 0);
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  Done accepted;
  sockaddr_storage peer{};
  socklen_t peer_length = sizeof(peer);
  net.AcceptDirect(io::Socket::Descriptor(listener), reinterpret_cast<sockaddr*>(&peer),
                   &peer_length, accepted);
  RunUntil(*engine, [&] { return accepted.calls == 1; });
  ASSERT_GE(accepted.result, 0);
  const io::Socket socket = io::Socket::Registered(static_cast<uint32_t>(accepted.result));
  // More receives than the ring has buffers (4): each buffer goes back after its callback.
  for (int i = 0; i < 10; ++i) {
    const std::string text = "line " + std::to_string(i);
    ASSERT_EQ(write(client, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    Done received;
    net.Recv(socket, received);
    RunUntil(*engine, [&] { return received.calls == 1; });
    EXPECT_EQ(received.result, static_cast<int32_t>(text.size()));
    EXPECT_EQ(received.received, text);
  }
  Done sent;
  net.Send(socket, "hello", sent);
  RunUntil(*engine, [&] { return sent.calls == 1; });
  EXPECT_EQ(sent.result, 5);
  char buffer[8];
  EXPECT_EQ(read(client, buffer, sizeof(buffer)), 5);
  shutdown(client, SHUT_WR);
  Done eof;
  net.Recv(socket, eof);
  RunUntil(*engine, [&] { return eof.calls == 1; });
  EXPECT_EQ(eof.result, 0);
  EXPECT_TRUE(eof.received.empty());
  Done closed;
  net.Close(socket, closed);
  RunUntil(*engine, [&] { return closed.calls == 1; });
  EXPECT_EQ(closed.result, 0);
  EXPECT_EQ(read(client, buffer, sizeof(buffer)), 0);  // The slot held the only reference.
  close(client);
  close(listener);
}

TEST(UringNetTest, ConnectMultishotAcceptAndCancel) {
  auto engine = MakeEngine(0);
  ASSERT_NE(engine, nullptr);
  io::Net& net = engine->net();
  sockaddr_in addr{};
  const int listener = Listener(addr);
  ASSERT_GE(listener, 0);
  Done accepts;
  net.AcceptMultishot(io::Socket::Descriptor(listener), accepts);
  const io::Socket out = net.NewStreamSocket(AF_INET);
  ASSERT_TRUE(out.valid());
  EXPECT_FALSE(out.registered());
  Done connected;
  net.Connect(out, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr), connected);
  RunUntil(*engine, [&] { return connected.calls == 1 && accepts.calls == 1; });
  EXPECT_EQ(connected.result, 0);
  ASSERT_GE(accepts.result, 0);
  EXPECT_TRUE(accepts.more);  // Still armed.
  const io::Socket in = io::Socket::Descriptor(accepts.result);
  // A receive nobody answers ends with -ECANCELED.
  Done waiting;
  net.Recv(in, waiting);
  engine->Run(0);
  net.Cancel(waiting);
  RunUntil(*engine, [&] { return waiting.calls == 1; });
  EXPECT_EQ(waiting.result, -ECANCELED);
  net.Cancel(accepts);
  RunUntil(*engine, [&] { return accepts.calls == 2; });
  EXPECT_EQ(accepts.result, -ECANCELED);
  EXPECT_FALSE(accepts.more);
  Done closed_in, closed_out;
  net.Close(in, closed_in);
  net.Close(out, closed_out);
  RunUntil(*engine, [&] { return closed_in.calls == 1 && closed_out.calls == 1; });
  EXPECT_EQ(closed_in.result, 0);
  EXPECT_EQ(closed_out.result, 0);
  close(listener);
}

TEST(UringNetTest, BindSetsTheSourceAddressOfAnOutboundConnection) {
  auto engine = MakeEngine(0);
  ASSERT_NE(engine, nullptr);
  io::Net& net = engine->net();
  sockaddr_in addr{};
  const int listener = Listener(addr);
  ASSERT_GE(listener, 0);
  const io::Socket out = net.NewStreamSocket(AF_INET);
  ASSERT_TRUE(out.valid());
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl(0x7f000002);  // 127.0.0.2: loopback, and not the default.
  ASSERT_EQ(net.Bind(out, reinterpret_cast<const sockaddr*>(&source), sizeof(source)), 0);
  Done connected;
  net.Connect(out, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr), connected);
  RunUntil(*engine, [&] { return connected.calls == 1; });
  EXPECT_EQ(connected.result, 0);
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  ASSERT_EQ(getsockname(out.value(), reinterpret_cast<sockaddr*>(&local), &length), 0);
  EXPECT_EQ(local.sin_addr.s_addr, source.sin_addr.s_addr);
  EXPECT_NE(local.sin_port, 0);  // Chosen at connect time (IP_BIND_ADDRESS_NO_PORT).
  // An address that is not ours is refused, synchronously.
  const io::Socket other = net.NewStreamSocket(AF_INET);
  sockaddr_in foreign{};
  foreign.sin_family = AF_INET;
  foreign.sin_addr.s_addr = htonl(0xc0000207);  // 192.0.2.7 (TEST-NET-1).
  EXPECT_EQ(net.Bind(other, reinterpret_cast<const sockaddr*>(&foreign), sizeof(foreign)),
            -EADDRNOTAVAIL);
  net.CloseUnused(other);
  net.CloseUnused(out);
  close(listener);
}

}  // namespace
}  // namespace relais::uring
