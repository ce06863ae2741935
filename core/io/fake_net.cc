// core/io/fake_net.cc — see fake_net.h.
#include "core/io/fake_net.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/base/check.h"

namespace relais::io {

FakeNet::State& FakeNet::At(Socket socket) {
  auto it = sockets_.find({socket.value(), socket.registered()});
  RELAIS_CHECK(it != sockets_.end()) << "unknown socket " << socket.value();
  return it->second;
}

const FakeNet::State& FakeNet::At(Socket socket) const {
  auto it = sockets_.find({socket.value(), socket.registered()});
  RELAIS_CHECK(it != sockets_.end()) << "unknown socket " << socket.value();
  return it->second;
}

void FakeNet::Start(Kind kind, Socket socket, SocketOp& op, std::string_view data) {
  for (const Op& w : waiting_) {
    RELAIS_CHECK(w.op != &op) << "a second operation on a SocketOp already in flight";
  }
  const State& state = At(socket);
  RELAIS_CHECK(!state.closed) << "operation on closed socket " << socket.value();
  if (kind == Kind::kClose) {
    RELAIS_CHECK(in_flight(socket) == 0) << "close with an operation in flight";
  }
  waiting_.push_back(Op{kind, socket, &op, data});
}

void FakeNet::AcceptMultishot(Socket listener, SocketOp& op) {
  Start(Kind::kAcceptMultishot, listener, op);
}

void FakeNet::AcceptDirect(Socket listener, sockaddr* address, socklen_t* length, SocketOp& op) {
  Start(Kind::kAccept, listener, op);
  waiting_.back().address = address;
  waiting_.back().length = length;
}

Socket FakeNet::NewStreamSocket(int) { return Connected(false); }

int32_t FakeNet::Bind(Socket socket, const sockaddr* address, socklen_t length) {
  State& state = At(socket);
  RELAIS_CHECK(!state.closed && !state.connect_started) << "bind after connect";
  if (bind_error_ != 0) {
    return std::exchange(bind_error_, 0);
  }
  state.bound = sockaddr_storage{};
  std::memcpy(&state.bound, address, std::min<size_t>(length, sizeof(state.bound)));
  return 0;
}

void FakeNet::Connect(Socket socket, const sockaddr* address, socklen_t length, SocketOp& op) {
  State& state = At(socket);
  state.connect_started = true;
  state.peer = sockaddr_storage{};
  std::memcpy(&state.peer, address, std::min<size_t>(length, sizeof(state.peer)));
  Start(Kind::kConnect, socket, op);
}

void FakeNet::Recv(Socket socket, SocketOp& op) {
  ++recvs_;
  Start(Kind::kRecv, socket, op);
}

void FakeNet::Send(Socket socket, std::string_view data, SocketOp& op) {
  ++sends_;
  Start(Kind::kSend, socket, op, data);
}

void FakeNet::Close(Socket socket, SocketOp& op) { Start(Kind::kClose, socket, op); }

void FakeNet::CloseUnused(Socket socket) {
  RELAIS_CHECK(in_flight(socket) == 0);
  At(socket).closed = true;
}

void FakeNet::Cancel(SocketOp& op) {
  for (Op& w : waiting_) {
    if (w.op == &op && w.kind != Kind::kClose) {
      w.cancelled = true;
    }
  }
}

bool FakeNet::Ready(Op& w, SocketResult& done, bool& last) {
  State& state = At(w.socket);
  last = true;
  if (w.cancelled) {
    done.result = -ECANCELED;
    return true;
  }
  switch (w.kind) {
    case Kind::kAccept:
    case Kind::kAcceptMultishot: {
      if (state.backlog.empty()) {
        return false;
      }
      const auto [accepted, from] = state.backlog.front();
      state.backlog.pop_front();
      if (w.address != nullptr && w.length != nullptr) {
        const socklen_t n = std::min<socklen_t>(*w.length, sizeof(from));
        std::memcpy(w.address, &from, n);
        *w.length = n;
      }
      done.result = accepted.value();
      last = w.kind == Kind::kAccept;
      done.more = !last;
      return true;
    }
    case Kind::kConnect:
      if (state.connect_stalled && !state.reset) {
        return false;
      }
      done.result = state.reset ? -ECONNREFUSED : state.connect_result;
      return true;
    case Kind::kRecv: {
      if (state.reset) {
        done.result = -ECONNRESET;
        return true;
      }
      if (failing_recvs_ > 0) {
        --failing_recvs_;
        done.result = recv_error_;
        return true;
      }
      if (!state.inbound.empty()) {
        const size_t n = std::min<size_t>(state.inbound.size(), buffer_bytes_);
        receive_buffer_.assign(state.inbound, 0, n);
        state.inbound.erase(0, n);
        done.result = static_cast<int32_t>(n);
        done.received = receive_buffer_;
        return true;
      }
      if (state.eof) {
        done.result = 0;
        return true;
      }
      return false;
    }
    case Kind::kSend: {
      if (state.reset) {
        done.result = -ECONNRESET;
        return true;
      }
      if (state.stalled) {
        return false;
      }
      const size_t n = std::min(w.data.size(), state.send_bytes_max);
      state.sent.append(w.data.substr(0, n));
      done.result = static_cast<int32_t>(n);
      return true;
    }
    case Kind::kClose:
      state.closed = true;
      done.result = 0;
      return true;
  }
  return false;
}

bool FakeNet::Step() {
  for (size_t i = 0; i < waiting_.size(); ++i) {
    SocketResult done;
    bool last = true;
    if (!Ready(waiting_[i], done, last)) {
      continue;
    }
    SocketOp* op = waiting_[i].op;
    if (last) {
      waiting_.erase(waiting_.begin() + static_cast<ptrdiff_t>(i));
    }
    op->OnSocketDone(done);
    // The view dies with the callback: poison it.
    std::fill(receive_buffer_.begin(), receive_buffer_.end(), '\xAA');
    return true;
  }
  return false;
}

size_t FakeNet::RunUntilIdle() {
  size_t ran = 0;
  while (Step()) {
    ++ran;
  }
  return ran;
}

Socket FakeNet::Listener() {
  const Socket socket = Socket::Descriptor(next_socket_++);
  sockets_[{socket.value(), false}].listener = true;
  return socket;
}

Socket FakeNet::Connected(bool registered) {
  const int32_t id = next_socket_++;
  const Socket socket =
      registered ? Socket::Registered(static_cast<uint32_t>(id)) : Socket::Descriptor(id);
  sockets_[{socket.value(), socket.registered()}];
  return socket;
}

Socket FakeNet::PeerConnects(Socket listener, const sockaddr_storage& from) {
  State& state = At(listener);
  RELAIS_CHECK(state.listener);
  // Whether the waiting accept is direct decides the kind of socket; look at the first one.
  bool registered = false;
  for (const Op& w : waiting_) {
    if (w.socket == listener && !w.cancelled) {
      registered = w.kind == Kind::kAccept;
      break;
    }
  }
  const Socket socket = Connected(registered);
  At(listener).backlog.emplace_back(socket, from);
  return socket;
}

void FakeNet::PeerSends(Socket socket, std::string_view bytes) {
  State& state = At(socket);
  RELAIS_CHECK(!state.eof) << "the peer shut its sending side";
  state.inbound.append(bytes);
}

void FakeNet::PeerShutsWrite(Socket socket) { At(socket).eof = true; }
void FakeNet::PeerResets(Socket socket) { At(socket).reset = true; }
void FakeNet::SetSendBytesMax(Socket socket, size_t bytes) { At(socket).send_bytes_max = bytes; }
void FakeNet::StallSends(Socket socket, bool stalled) { At(socket).stalled = stalled; }
void FakeNet::SetConnectResult(Socket socket, int32_t result) {
  At(socket).connect_result = result;
}

void FakeNet::StallConnect(Socket socket, bool stalled) { At(socket).connect_stalled = stalled; }

void FakeNet::FailRecvs(uint32_t count, int32_t error) {
  failing_recvs_ = count;
  recv_error_ = error;
}

const std::string& FakeNet::sent(Socket socket) const { return At(socket).sent; }

std::string FakeNet::TakeSent(Socket socket) { return std::exchange(At(socket).sent, {}); }

bool FakeNet::closed(Socket socket) const { return At(socket).closed; }

const sockaddr_storage& FakeNet::connected_to(Socket socket) const { return At(socket).peer; }

const sockaddr_storage& FakeNet::bound_to(Socket socket) const { return At(socket).bound; }

uint32_t FakeNet::in_flight(Socket socket) const {
  return static_cast<uint32_t>(std::count_if(waiting_.begin(), waiting_.end(),
                                             [&](const Op& w) { return w.socket == socket; }));
}

}  // namespace relais::io
