// core/uring/net.cc — UringNet, the socket seam on the engine (engine.h).
#include <liburing.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/base/check.h"
#include "core/uring/engine.h"

namespace relais::uring {
namespace {

// The descriptor or slot of `socket`, with the SQE flag that says which.
void Target(Engine& engine, io::Socket socket, io_uring_sqe* sqe) {
  if (socket.registered()) {
    RELAIS_CHECK(static_cast<uint32_t>(socket.value()) < engine.fixed_files());
    sqe->flags |= IOSQE_FIXED_FILE;
  }
}

}  // namespace

void UringNet::AcceptMultishot(io::Socket listener, io::SocketOp& op) {
  RELAIS_CHECK(!listener.registered());
  io_uring_sqe* sqe = engine_.NewSqe();
  io_uring_prep_multishot_accept(sqe, listener.value(), nullptr, nullptr,
                                 SOCK_CLOEXEC | SOCK_NONBLOCK);
  io_uring_sqe_set_data64(sqe, Engine::SocketTag(op));
}

void UringNet::AcceptDirect(io::Socket listener, sockaddr* address, socklen_t* length,
                            io::SocketOp& op) {
  RELAIS_CHECK(!listener.registered() && engine_.fixed_files() > 0);
  io_uring_sqe* sqe = engine_.NewSqe();
  // As Engine::AcceptDirect: no SOCK_CLOEXEC for a socket without a descriptor, and
  // IORING_FILE_INDEX_ALLOC (any free slot) written by hand.
  io_uring_prep_accept(sqe, listener.value(), address, length, SOCK_NONBLOCK);
  sqe->file_index = IORING_FILE_INDEX_ALLOC;
  io_uring_sqe_set_data64(sqe, Engine::SocketTag(op));
}

io::Socket UringNet::NewStreamSocket(int family) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return io::Socket::Descriptor(fd < 0 ? -errno : fd);
}

int32_t UringNet::Bind(io::Socket socket, const sockaddr* address, socklen_t length) {
  // NewStreamSocket's sockets are descriptors (never table slots): a plain bind(2) here, at
  // connect time, costs one syscall per new outbound connection, on the control path.
  RELAIS_CHECK(!socket.registered()) << "bind on a registered socket";
  if (address->sa_family == AF_INET || address->sa_family == AF_INET6) {
    // The port is chosen by the connect, per (source, destination): one source address is
    // not one ephemeral port range for every next hop.
    const int one = 1;
    ::setsockopt(socket.value(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
  }
  return ::bind(socket.value(), address, length) == 0 ? 0 : -errno;
}

void UringNet::Connect(io::Socket socket, const sockaddr* address, socklen_t length,
                       io::SocketOp& op) {
  io_uring_sqe* sqe = engine_.NewSqe();
  io_uring_prep_connect(sqe, socket.value(), address, length);
  Target(engine_, socket, sqe);
  io_uring_sqe_set_data64(sqe, Engine::SocketTag(op));
}

void UringNet::Recv(io::Socket socket, io::SocketOp& op) {
  io_uring_sqe* sqe = engine_.NewSqe();
  io_uring_prep_recv(sqe, socket.value(), nullptr, engine_.buffer_bytes(), 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = Engine::kBufferGroup;
  Target(engine_, socket, sqe);
  io_uring_sqe_set_data64(sqe, Engine::SocketTag(op));
}

void UringNet::Send(io::Socket socket, std::string_view data, io::SocketOp& op) {
  io_uring_sqe* sqe = engine_.NewSqe();
  io_uring_prep_send(sqe, socket.value(), data.data(), data.size(), MSG_NOSIGNAL);
  Target(engine_, socket, sqe);
  io_uring_sqe_set_data64(sqe, Engine::SocketTag(op));
}

void UringNet::Close(io::Socket socket, io::SocketOp& op) {
  io_uring_sqe* sqe = engine_.NewSqe();
  if (socket.registered()) {
    RELAIS_CHECK(static_cast<uint32_t>(socket.value()) < engine_.fixed_files());
    io_uring_prep_close_direct(sqe, static_cast<unsigned>(socket.value()));
  } else {
    io_uring_prep_close(sqe, socket.value());
  }
  io_uring_sqe_set_data64(sqe, Engine::SocketTag(op));
}

void UringNet::CloseUnused(io::Socket socket) {
  if (socket.registered()) {
    engine_.Close(FixedFile{static_cast<uint32_t>(socket.value())});
  } else if (socket.valid()) {
    ::close(socket.value());
  }
}

void UringNet::Cancel(io::SocketOp& op) {
  io_uring_sqe* sqe = engine_.NewSqe();
  io_uring_prep_cancel64(sqe, Engine::SocketTag(op), IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, 0);  // The cancel's own CQE needs no handler.
}

}  // namespace relais::uring
