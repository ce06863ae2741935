// core/io/net.h — the socket half of the I/O seam: what a connection asks of the kernel.
//
// Everything the stream pump (core/net/stream_pump.h), the listeners and the request server do
// with a socket goes through Net, so tests (and the seeded shard simulation in tests/sim) can
// run them over an in-memory implementation that injects faults deterministically (resets,
// short sends, ENOBUFS, a peer that stalls). Implementations: uring::UringNet (production, on
// the shard's io_uring: core/uring/engine.h) and io::FakeNet (core/io/fake_net.h, tests).
//
// Every operation names a caller-owned SocketOp; the caller keeps it alive, and does not start
// another operation on it, until its completion has run (for a multishot accept, until a
// completion with `more` false). Completions run later on the same thread, never inside the
// call that started the operation. Results are bytes (or a new socket) on success, -errno on
// failure; -ECANCELED after Cancel. Nothing here allocates per operation.
//
// Receives use provided buffers: a socket that waits for input holds no buffer. The received
// bytes are a view valid only during OnSocketDone; the buffer goes back to the pool right
// after. When every buffer is in use the receive completes with -ENOBUFS (try again later).
//
// Owned by one shard; not thread-safe.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <string_view>

namespace relais::io {

// A connected or listening stream socket of a Net: a descriptor of the process, or a slot of
// the engine's registered-file table (accepted with AcceptDirect). Users never look inside.
class Socket {
 public:
  constexpr Socket() = default;
  [[nodiscard]] static constexpr Socket Descriptor(int fd) { return Socket(fd, false); }
  [[nodiscard]] static constexpr Socket Registered(uint32_t slot) {
    return Socket(static_cast<int32_t>(slot), true);
  }
  [[nodiscard]] constexpr bool valid() const { return value_ >= 0; }
  [[nodiscard]] constexpr bool registered() const { return registered_; }
  // The descriptor, or the table slot when registered(). For the Net implementations, and for
  // control-plane calls on descriptors (getsockopt) that have no place in the seam.
  [[nodiscard]] constexpr int32_t value() const { return value_; }
  friend constexpr bool operator==(Socket, Socket) = default;

 private:
  constexpr Socket(int32_t value, bool registered) : value_(value), registered_(registered) {}
  int32_t value_ = -1;
  bool registered_ = false;
};

// The end of one socket operation.
struct SocketResult {
  // Bytes received or sent (0 from a receive: the peer shut its sending side), 0 for a
  // connect or close, the new socket's descriptor or slot for an accept; or -errno.
  int32_t result = 0;
  // The bytes of a receive; valid only during OnSocketDone.
  std::string_view received;
  // A multishot accept stays armed: more completions follow for the same op.
  bool more = false;
};

class SocketOp {
 public:
  virtual void OnSocketDone(const SocketResult& done) = 0;

 protected:
  ~SocketOp() = default;
};

class Net {
 public:
  virtual ~Net() = default;

  // Accepts connections on `listener` until cancelled or failed (multishot: every completion
  // but the last has `more`). Each new socket is a descriptor: Socket::Descriptor(result).
  virtual void AcceptMultishot(Socket listener, SocketOp& op) = 0;
  // Accepts one connection straight into a free slot of the registered-file table:
  // Socket::Registered(result). The peer's address goes to `address` (*length bytes at most);
  // both stay valid until the completion runs. -ENFILE: the table was full.
  virtual void AcceptDirect(Socket listener, sockaddr* address, socklen_t* length,
                            SocketOp& op) = 0;
  // A new non-blocking stream socket (a descriptor) of `family`, or -errno in value().
  [[nodiscard]] virtual Socket NewStreamSocket(int family) = 0;
  // Binds a socket of NewStreamSocket, before its Connect, to the local `address` (a source
  // address; port 0). TCP sockets get IP_BIND_ADDRESS_NO_PORT, so the port is chosen at
  // connect time, per destination, and one source address is not limited to one port range
  // for all its connections. Synchronous (a descriptor, a control-plane call): 0 or -errno.
  // A Net that cannot bind says -EOPNOTSUPP (the default).
  [[nodiscard]] virtual int32_t Bind(Socket /*socket*/, const sockaddr* /*address*/,
                                     socklen_t /*length*/) {
    return -EOPNOTSUPP;
  }
  // `address` stays valid until the completion runs.
  virtual void Connect(Socket socket, const sockaddr* address, socklen_t length, SocketOp& op) = 0;
  // Receives into a provided buffer (see the header comment).
  virtual void Recv(Socket socket, SocketOp& op) = 0;
  // Sends what it can of `data` (the result may be short); `data` stays valid until then.
  virtual void Send(Socket socket, std::string_view data, SocketOp& op) = 0;
  // Closes the socket (a registered slot is freed once the completion has run). Start it only
  // when no other operation on the socket is in flight.
  virtual void Close(Socket socket, SocketOp& op) = 0;
  // Closes a socket nobody has operated on yet (a refused connection), without a completion.
  virtual void CloseUnused(Socket socket) = 0;
  // Cancels every operation in flight on `op`: each completes with -ECANCELED, or with its own
  // result if it finished first.
  virtual void Cancel(SocketOp& op) = 0;
};

}  // namespace relais::io
