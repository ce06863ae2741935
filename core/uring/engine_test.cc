#include "core/uring/engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/uring/mesh.h"

namespace relais::uring {
namespace {

struct Recorder final : Completion {
  void OnCqe(int32_t r, uint32_t f) override {
    result = r;
    flags = f;
    ++calls;
  }
  int32_t result = 0;
  uint32_t flags = 0;
  int calls = 0;
};

struct IoRecorder final : io::IoOp {
  void OnIoComplete(int32_t r) override {
    result = r;
    ++calls;
  }
  int32_t result = 0;
  int calls = 0;
};

std::unique_ptr<Engine> MakeEngine(uint32_t buffers = 8, uint32_t bytes = 64) {
  EXPECT_TRUE(Probe().ok()) << Probe();
  auto e = Engine::Create(EngineOptions{64, buffers, bytes});
  EXPECT_TRUE(e.ok()) << e.status();
  return std::move(*e);
}

void RunUntil(Engine& e, const std::function<bool()>& done) {
  for (int i = 0; i < 1000 && !done(); ++i) {
    e.Run(10);
  }
  ASSERT_TRUE(done());
}

// A listening loopback socket on a port the kernel picks, whose address goes to `addr`; -1 on
// failure.
int LoopbackListener(sockaddr_in& addr, int backlog) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  addr = sockaddr_in{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, backlog) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return -1;
  }
  return fd;
}

// A client connected to `addr` (blocking; the listener's backlog takes it); -1 on failure.
int ConnectTo(const sockaddr_in& addr) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return -1;
  }
  return fd;
}

TEST(EngineTest, RecvUsesProvidedBuffersAndSendWrites) {
  auto engine = MakeEngine();
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  Recorder recv;
  engine->Recv(fds[0], recv);
  engine->Run(0);
  EXPECT_EQ(recv.calls, 0);  // Waiting, holding no buffer.
  ASSERT_EQ(write(fds[1], "hello", 5), 5);
  RunUntil(*engine, [&] { return recv.calls == 1; });
  ASSERT_EQ(recv.result, 5);
  ASSERT_TRUE(Engine::HasBuffer(recv.flags));
  const uint16_t bid = Engine::BufferId(recv.flags);
  EXPECT_EQ(engine->Buffer(bid, 5), "hello");
  engine->ReturnBuffer(bid);

  Recorder send;
  engine->Send(fds[0], "world", send);
  RunUntil(*engine, [&] { return send.calls == 1; });
  EXPECT_EQ(send.result, 5);
  char buf[8] = {};
  ASSERT_EQ(read(fds[1], buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf, 5), "world");
  close(fds[0]);
  close(fds[1]);
}

TEST(EngineTest, ConnectReachesAListenerAndReportsRefusal) {
  auto engine = MakeEngine();
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);

  const int client = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  Recorder connected;
  engine->Connect(client, reinterpret_cast<const sockaddr*>(&address), sizeof(address), connected);
  RunUntil(*engine, [&] { return connected.calls == 1; });
  EXPECT_EQ(connected.result, 0);
  const int server = accept(listener, nullptr, nullptr);
  EXPECT_GE(server, 0);
  close(server);
  close(client);

  // Nobody listens on the port any more: the completion carries the error.
  close(listener);
  const int again = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  Recorder refused;
  engine->Connect(again, reinterpret_cast<const sockaddr*>(&address), sizeof(address), refused);
  RunUntil(*engine, [&] { return refused.calls == 1; });
  EXPECT_EQ(refused.result, -ECONNREFUSED);
  close(again);
}

// More receives than buffers: each returned buffer is reused, none leaks.
// Left to fault in, the buffers would become resident piece by piece as ever larger reads reach
// into them (the ring hands out every one in turn), and RSS would creep under steady load.
TEST(EngineTest, ReceiveBuffersAreResidentFromTheStart) {
  constexpr uint32_t kBuffers = 64;
  constexpr uint32_t kBytes = 16384;
  auto engine = MakeEngine(kBuffers, kBytes);
  const char* first = engine->Buffer(0, kBytes).data();
  const char* last = engine->Buffer(kBuffers - 1, kBytes).data();
  ASSERT_EQ(last - first, ptrdiff_t{kBytes} * (kBuffers - 1));
  const long page = sysconf(_SC_PAGESIZE);
  ASSERT_EQ(reinterpret_cast<uintptr_t>(first) % page, 0u);
  const size_t length = size_t{kBuffers} * kBytes;
  std::vector<unsigned char> resident(length / page);
  ASSERT_EQ(mincore(const_cast<char*>(first), length, resident.data()), 0) << strerror(errno);
  EXPECT_EQ(std::count_if(resident.begin(), resident.end(), [](unsigned char v) { return v & 1; }),
            static_cast<ptrdiff_t>(resident.size()));
}

TEST(EngineTest, BuffersAreRecycled) {
  auto engine = MakeEngine(2, 16);
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  for (int i = 0; i < 50; ++i) {
    Recorder recv;
    engine->Recv(fds[0], recv);
    ASSERT_EQ(write(fds[1], "x", 1), 1);
    RunUntil(*engine, [&] { return recv.calls == 1; });
    ASSERT_EQ(recv.result, 1) << "round " << i;
    engine->ReturnBuffer(Engine::BufferId(recv.flags));
  }
  close(fds[0]);
  close(fds[1]);
}

TEST(EngineTest, CancelEndsAPendingRecv) {
  auto engine = MakeEngine();
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  Recorder recv;
  engine->Recv(fds[0], recv);
  engine->Run(0);
  engine->Cancel(recv);
  RunUntil(*engine, [&] { return recv.calls == 1; });
  EXPECT_EQ(recv.result, -ECANCELED);
  close(fds[0]);
  close(fds[1]);
}

// A poll waits for readiness without taking the bytes: they stay for whoever reads them.
TEST(EngineTest, PollOnceReportsReadinessAndCanBeCancelled) {
  auto engine = MakeEngine();
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, fds), 0);
  Recorder writable;
  engine->PollOnce(fds[0], POLLOUT, writable);
  RunUntil(*engine, [&] { return writable.calls == 1; });
  EXPECT_TRUE(writable.result & POLLOUT);
  Recorder readable;
  engine->PollOnce(fds[0], POLLIN, readable);
  engine->Run(0);
  EXPECT_EQ(readable.calls, 0);
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  RunUntil(*engine, [&] { return readable.calls == 1; });
  EXPECT_TRUE(readable.result & POLLIN);
  char byte = 0;
  EXPECT_EQ(read(fds[0], &byte, 1), 1);  // Still there.
  Recorder cancelled;
  engine->PollOnce(fds[0], POLLIN, cancelled);
  engine->Run(0);
  engine->Cancel(cancelled);
  RunUntil(*engine, [&] { return cancelled.calls == 1; });
  EXPECT_EQ(cancelled.result, -ECANCELED);
  close(fds[0]);
  close(fds[1]);
}

TEST(EngineTest, UringIoWritesAndSyncs) {
  auto engine = MakeEngine();
  char path[] = "/tmp/relais-uring-io-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  IoRecorder write_op, sync_op;
  engine->io().Write(io::FileHandle{fd}, 3, "abc", write_op);
  RunUntil(*engine, [&] { return write_op.calls == 1; });
  EXPECT_EQ(write_op.result, 3);
  engine->io().Fdatasync(io::FileHandle{fd}, sync_op);
  RunUntil(*engine, [&] { return sync_op.calls == 1; });
  EXPECT_EQ(sync_op.result, 0);
  char buf[6] = {};
  ASSERT_EQ(pread(fd, buf, 6, 0), 6);
  EXPECT_EQ(std::string(buf + 3, 3), "abc");
  close(fd);
  unlink(path);
}

TEST(EngineTest, AcceptMultishotTakesManyConnections) {
  auto engine = MakeEngine();
  sockaddr_in addr{};
  const int listener = LoopbackListener(addr, 16);
  ASSERT_GE(listener, 0);
  struct Acceptor final : Completion {
    void OnCqe(int32_t r, uint32_t f) override {
      if (r >= 0) {
        fds.push_back(r);
      }
      more = (f & IORING_CQE_F_MORE) != 0;
    }
    std::vector<int> fds;
    bool more = true;
  } acceptor;
  engine->AcceptMultishot(listener, acceptor);
  std::vector<int> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(ConnectTo(addr));
    ASSERT_GE(clients.back(), 0);
  }
  RunUntil(*engine, [&] { return acceptor.fds.size() == 5; });
  EXPECT_TRUE(acceptor.more);  // One SQE, still armed.
  for (int fd : acceptor.fds) {
    close(fd);
  }
  for (int fd : clients) {
    close(fd);
  }
  engine->Cancel(acceptor);
  RunUntil(*engine, [&] { return !acceptor.more; });
  close(listener);
}

// The kernel ends a multishot accept when the completion queue overflows, with a connection in
// its last completion (no IORING_CQE_F_MORE): whoever accepts must re-arm on such a success as
// well as after an error, or the listener silently stops taking connections (relaisd's shards
// did, under a flood of 100 000 connections).
TEST(EngineTest, MultishotAcceptEndsWhenTheCompletionQueueOverflows) {
  auto created = Engine::Create(EngineOptions{4, 8, 64});  // A completion queue of 8.
  ASSERT_TRUE(created.ok()) << created.status();
  Engine& engine = **created;
  sockaddr_in addr{};
  const int listener = LoopbackListener(addr, 128);
  ASSERT_GE(listener, 0);
  struct Acceptor final : Completion {
    void OnCqe(int32_t r, uint32_t f) override {
      if (r >= 0) {
        fds.push_back(r);
      }
      if ((f & IORING_CQE_F_MORE) == 0) {
        ended_with = r;
        ++ends;
        if (r >= 0) {
          engine->AcceptMultishot(listen_fd, *this);  // What relaisd's acceptor does.
        }
      }
    }
    Engine* engine = nullptr;
    int listen_fd = -1;
    std::vector<int> fds;
    int ends = 0;
    int32_t ended_with = 0;
  } acceptor;
  acceptor.engine = &engine;
  acceptor.listen_fd = listener;
  engine.AcceptMultishot(listener, acceptor);
  engine.Run(0);
  constexpr size_t kClients = 40;
  std::vector<int> clients;
  for (size_t i = 0; i < kClients; ++i) {
    clients.push_back(ConnectTo(addr));
    ASSERT_GE(clients.back(), 0);
  }
  RunUntil(engine, [&] { return acceptor.fds.size() == kClients; });
  EXPECT_GE(acceptor.ends, 1) << "the completion queue of 8 never overflowed";
  EXPECT_GE(acceptor.ended_with, 0);
  for (int fd : acceptor.fds) {
    close(fd);
  }
  for (int fd : clients) {
    close(fd);
  }
  close(listener);
}

std::unique_ptr<Engine> MakeTableEngine(uint32_t slots) {
  auto e = Engine::Create(EngineOptions{64, 64, 64, slots});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

size_t OpenDescriptors() {
  size_t n = 0;
  for (int fd = 0; fd < 4096; ++fd) {
    n += fcntl(fd, F_GETFD) != -1 ? 1 : 0;
  }
  return n;
}

// Connections accepted straight into the table: the result names the slot, the peer's address
// is written, the process gains no descriptor, and when the table is full the kernel closes
// the connection and says -ENFILE. Closing a slot ends its connection and frees the slot.
TEST(EngineTest, AcceptDirectFillsTheTableAndNoDescriptor) {
  auto engine = MakeTableEngine(2);
  ASSERT_NE(engine, nullptr);
  sockaddr_in addr{};
  const int listener = LoopbackListener(addr, 16);
  ASSERT_GE(listener, 0);
  std::vector<int> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(ConnectTo(addr));
    ASSERT_GE(clients.back(), 0);
  }
  const size_t descriptors = OpenDescriptors();
  struct Accept {
    Recorder done;
    sockaddr_in peer{};
    socklen_t length = sizeof(sockaddr_in);
  } accepts[3];
  std::vector<uint32_t> slots;
  for (int i = 0; i < 3; ++i) {
    engine->AcceptDirect(listener, reinterpret_cast<sockaddr*>(&accepts[i].peer),
                         &accepts[i].length, accepts[i].done);
    RunUntil(*engine, [&] { return accepts[i].done.calls == 1; });
    if (i < 2) {
      ASSERT_GE(accepts[i].done.result, 0);
      slots.push_back(static_cast<uint32_t>(accepts[i].done.result));
    }
  }
  EXPECT_EQ(accepts[2].done.result, -ENFILE);  // Two slots, three connections.
  EXPECT_EQ(OpenDescriptors(), descriptors);
  ASSERT_NE(slots[0], slots[1]);
  EXPECT_LT(std::max(slots[0], slots[1]), 2u);
  // The address written is the client's (accepts complete in the order the connections were
  // made), and the connection is served through its slot.
  for (int i = 0; i < 2; ++i) {
    sockaddr_in local{};
    socklen_t local_len = sizeof(local);
    getsockname(clients[i], reinterpret_cast<sockaddr*>(&local), &local_len);
    EXPECT_EQ(accepts[i].peer.sin_port, local.sin_port);
    ASSERT_EQ(write(clients[i], "hi", 2), 2);
    Recorder recv;
    engine->Recv(FixedFile{slots[i]}, recv);
    RunUntil(*engine, [&] { return recv.calls == 1; });
    EXPECT_EQ(recv.result, 2);
    engine->ReturnBuffer(Engine::BufferId(recv.flags));
  }
  char byte;
  EXPECT_LE(read(clients[2], &byte, 1), 0);  // Closed by the kernel: EOF or reset.
  Recorder closed;
  engine->Close(FixedFile{slots[1]}, closed);
  RunUntil(*engine, [&] { return closed.calls == 1; });
  EXPECT_EQ(closed.result, 0);
  EXPECT_EQ(read(clients[1], &byte, 1), 0);  // The table held the only reference: EOF.
  engine->Close(FixedFile{slots[0]});        // Nobody waits; the slot frees all the same.
  Recorder again;
  sockaddr_in peer{};
  socklen_t peer_len = sizeof(peer);
  const int late = ConnectTo(addr);
  ASSERT_GE(late, 0);
  engine->AcceptDirect(listener, reinterpret_cast<sockaddr*>(&peer), &peer_len, again);
  RunUntil(*engine, [&] { return again.calls == 1; });
  EXPECT_TRUE(again.result == static_cast<int32_t>(slots[0]) ||
              again.result == static_cast<int32_t>(slots[1]))
      << again.result;
  close(late);
  for (int fd : clients) {
    close(fd);
  }
  close(listener);
}

// The kernel sizes a table no larger than the descriptor limit (liburing raises the soft limit
// as far as the hard one for it) nor past 2^20 slots; beyond, Create fails naming the remedy.
TEST(EngineTest, TableLargerThanTheDescriptorLimitIsRefused) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  const auto too_many = static_cast<uint32_t>(std::min<rlim_t>(limit.rlim_max, 1U << 20) + 1);
  auto refused = Engine::Create(EngineOptions{64, 8, 64, too_many});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("RLIMIT_NOFILE"), std::string::npos)
      << refused.status();
}

// Two shards on two threads flood each other through small rings: every handoff arrives,
// in order, exactly once, although the rings fill up again and again.
TEST(MeshTest, HandoffsCrossShardsInOrderUnderContention) {
  constexpr uint64_t kPerShard = 200'000;
  Mesh mesh(2, 6);
  std::unique_ptr<Engine> engines[2] = {MakeEngine(), MakeEngine()};
  std::atomic<uint64_t> received[2] = {0, 0};
  std::atomic<bool> order_ok{true};
  std::unique_ptr<MeshPort> ports[2];
  for (uint32_t s = 0; s < 2; ++s) {
    ports[s] = std::make_unique<MeshPort>(mesh, s, *engines[s], [&, s](uint32_t from, Handoff&& h) {
      if (from == s || h.value != received[s].load(std::memory_order_relaxed)) {
        order_ok = false;
      }
      received[s].fetch_add(1, std::memory_order_relaxed);
    });
  }
  auto run = [&](uint32_t s) {
    uint64_t sent = 0;
    const uint32_t peer = 1 - s;
    while (sent < kPerShard || received[s].load() < kPerShard) {
      while (sent < kPerShard) {
        Handoff h;
        h.value = sent;
        if (!ports[s]->Send(peer, std::move(h))) {
          break;  // Full: let the peer drain.
        }
        ++sent;
      }
      engines[s]->Run(1);
    }
    // Let the last wake-ups land.
    engines[s]->Run(0);
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();
  EXPECT_TRUE(order_ok.load());
  EXPECT_EQ(received[0].load(), kPerShard);
  EXPECT_EQ(received[1].load(), kPerShard);
}

}  // namespace
}  // namespace relais::uring
