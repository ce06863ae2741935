// core/io/fake_net.h — io::Net in memory, for tests: deterministic, with injected faults.
//
// The test plays every peer. Sockets made here (Connected, NewStreamSocket, accepts) have a
// peer side the test drives: PeerSends, PeerShutsWrite, PeerResets, a per-send byte limit
// (short sends), StallSends (a peer whose window is full), StallConnect (no SYN-ACK), FailRecvs
// (ENOBUFS, or any error). Nothing completes inside the call that started it: operations wait in
// submission order and Step / RunUntilIdle complete the first one that can, so a run is a pure
// function of the test's calls (the seeded shard simulation builds on that). Received bytes are
// overwritten right after OnSocketDone returns, so a user that keeps the view past its callback
// reads garbage in a test instead of working by luck.
//
// Misuse the real kernel would punish later is a crash here: a second operation on a SocketOp
// already in flight, any operation on a closed socket, a close while another operation on the
// socket is in flight.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/io/net.h"

namespace relais::io {

class FakeNet final : public Net {
 public:
  explicit FakeNet(uint32_t buffer_bytes = 16384) : buffer_bytes_(buffer_bytes) {}

  // Net.
  void AcceptMultishot(Socket listener, SocketOp& op) override;
  void AcceptDirect(Socket listener, sockaddr* address, socklen_t* length, SocketOp& op) override;
  [[nodiscard]] Socket NewStreamSocket(int family) override;
  [[nodiscard]] int32_t Bind(Socket socket, const sockaddr* address, socklen_t length) override;
  void Connect(Socket socket, const sockaddr* address, socklen_t length, SocketOp& op) override;
  void Recv(Socket socket, SocketOp& op) override;
  void Send(Socket socket, std::string_view data, SocketOp& op) override;
  void Close(Socket socket, SocketOp& op) override;
  void CloseUnused(Socket socket) override;
  void Cancel(SocketOp& op) override;

  // Runs the first operation that can complete; false when none can.
  bool Step();
  // Steps until nothing can complete. Returns how many completed.
  size_t RunUntilIdle();

  // Sockets and their peers.
  [[nodiscard]] Socket Listener();
  // A connected socket as an accept would return it (registered: a table slot).
  [[nodiscard]] Socket Connected(bool registered = false);
  // A client from `from` connects to `listener`: the next accept completes with a new socket,
  // returned here (an AcceptDirect's address gets `from`).
  Socket PeerConnects(Socket listener, const sockaddr_storage& from = {});
  // Where `socket` connected to (Connect's address), for a test that plays the next hop.
  [[nodiscard]] const sockaddr_storage& connected_to(Socket socket) const;
  // The local address `socket` was bound to (Bind), all zero when it was not.
  [[nodiscard]] const sockaddr_storage& bound_to(Socket socket) const;
  // The next Bind fails with `error` (-EADDRNOTAVAIL: the source address is not ours).
  void FailBinds(int32_t error) { bind_error_ = error; }
  void PeerSends(Socket socket, std::string_view bytes);
  void PeerShutsWrite(Socket socket);  // EOF once the bytes already sent are read.
  void PeerResets(Socket socket);      // Every operation fails with ECONNRESET from now on.
  void SetSendBytesMax(Socket socket, size_t bytes);  // Each send takes at most this much.
  void StallSends(Socket socket, bool stalled);       // Sends wait while stalled.
  void SetConnectResult(Socket socket, int32_t result);
  // A connect on `socket` waits while stalled (a next hop that never answers the SYN), until
  // cancelled or unstalled.
  void StallConnect(Socket socket, bool stalled);
  // The next `count` receives (on any socket) complete with `error` (-ENOBUFS: every provided
  // buffer was in use).
  void FailRecvs(uint32_t count, int32_t error);

  // What the socket sent so far (the peer's view), and takes it.
  [[nodiscard]] const std::string& sent(Socket socket) const;
  [[nodiscard]] std::string TakeSent(Socket socket);
  [[nodiscard]] bool closed(Socket socket) const;
  [[nodiscard]] uint32_t in_flight(Socket socket) const;
  [[nodiscard]] uint32_t in_flight() const { return static_cast<uint32_t>(waiting_.size()); }
  [[nodiscard]] uint64_t sends() const { return sends_; }
  [[nodiscard]] uint64_t recvs() const { return recvs_; }

 private:
  enum class Kind : uint8_t { kAccept, kAcceptMultishot, kConnect, kRecv, kSend, kClose };
  struct Op {
    Kind kind;
    Socket socket;
    SocketOp* op;
    std::string_view data;
    bool cancelled = false;
    sockaddr* address = nullptr;  // AcceptDirect's out-parameters.
    socklen_t* length = nullptr;
  };
  struct State {
    std::string inbound;  // Sent by the peer, not received yet.
    std::string sent;
    bool eof = false;
    bool reset = false;
    bool closed = false;
    bool stalled = false;
    bool listener = false;
    std::deque<std::pair<Socket, sockaddr_storage>> backlog;  // Listener: not accepted yet.
    sockaddr_storage peer{};                                  // Connect's address.
    sockaddr_storage bound{};                                 // Bind's address.
    bool connect_started = false;
    size_t send_bytes_max = SIZE_MAX;
    int32_t connect_result = 0;
    bool connect_stalled = false;
  };

  void Start(Kind kind, Socket socket, SocketOp& op, std::string_view data = {});
  State& At(Socket socket);
  const State& At(Socket socket) const;
  // The result of `op` now, or false when it must wait.
  bool Ready(Op& op, SocketResult& done, bool& last);

  const uint32_t buffer_bytes_;
  int32_t next_socket_ = 100;
  std::map<std::pair<int32_t, bool>, State> sockets_;
  std::vector<Op> waiting_;  // In submission order.
  uint32_t failing_recvs_ = 0;
  int32_t bind_error_ = 0;
  int32_t recv_error_ = 0;
  std::string receive_buffer_;
  uint64_t sends_ = 0;
  uint64_t recvs_ = 0;
};

}  // namespace relais::io
