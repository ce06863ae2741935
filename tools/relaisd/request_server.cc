// tools/relaisd/request_server.cc — see request_server.h.
#include "tools/relaisd/request_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace relais::relaisd {

// One connection. Freed when its close completes; until then every operation may name it.
struct RequestServer::Client final : timer::Timer {
  template <void (Client::*Handler)(int32_t, uint32_t)>
  struct Op final : uring::Completion {
    explicit Op(Client* c) : client(c) {}
    void OnCqe(int32_t result, uint32_t flags) override { (client->*Handler)(result, flags); }
    Client* client;
  };

  Client(RequestServer* s, uint64_t i, int f) : server(s), id(i), fd(f) {}

  void Read() {
    recv_armed = true;
    server->engine_.Recv(fd, recv_op);
  }
  void OnRecv(int32_t result, uint32_t flags) {
    recv_armed = false;
    uring::Engine& engine = server->engine_;
    if (result <= 0 || !uring::Engine::HasBuffer(flags)) {
      if (result != -ENOBUFS || closing) {
        Close();
      } else {
        Read();  // Every buffer was busy; try again.
      }
      return;
    }
    const uint16_t buffer = uring::Engine::BufferId(flags);
    input.append(engine.Buffer(buffer, static_cast<uint32_t>(result)));
    engine.ReturnBuffer(buffer);
    if (answered || closing) {
      return;  // Bytes after the request are not read: one request per connection.
    }
    const size_t end = server->handler_.RequestEnd(input);
    if (end != RequestHandler::kNeedMore) {
      answered = true;
      server->timers_.Cancel(*this);
      server->handler_.OnRequest(*server, id, std::string_view(input).substr(0, end));
    } else if (input.size() > server->options_.request_bytes_max) {
      answered = true;
      Send(server->handler_.TooLarge());
    } else {
      Read();
    }
  }
  void Send(std::string text) {
    output = std::move(text);
    sent = 0;
    send_in_flight = true;
    server->engine_.Send(fd, output, send_op);
  }
  void OnSend(int32_t result, uint32_t) {
    send_in_flight = false;
    if (result > 0 && (sent += static_cast<size_t>(result)) < output.size()) {
      send_in_flight = true;
      server->engine_.Send(fd, std::string_view(output).substr(sent), send_op);
      return;
    }
    Close();
  }
  void OnTimer() override {  // Too slow to ask: a stalled or hostile client.
    ++server->timed_out_;
    Close();
  }
  void Close() {
    if (!closing) {
      closing = true;
      --server->open_;
      server->timers_.Cancel(*this);
      if (recv_armed) {
        server->engine_.Cancel(recv_op);
      }
    }
    if (recv_armed || send_in_flight || close_submitted) {
      return;  // The pending completion comes back here.
    }
    close_submitted = true;
    server->engine_.Close(fd, close_op);
  }
  void OnClosed(int32_t, uint32_t) { server->clients_.erase(id); }  // Deletes this.

  RequestServer* server;
  const uint64_t id;
  const int fd;
  std::string input;
  std::string output;
  size_t sent = 0;
  bool recv_armed = false;
  bool send_in_flight = false;
  bool answered = false;
  bool closing = false;
  bool close_submitted = false;
  Op<&Client::OnRecv> recv_op{this};
  Op<&Client::OnSend> send_op{this};
  Op<&Client::OnClosed> close_op{this};
};

RequestServer::RequestServer(uring::Engine& engine, timer::TimerWheel& timers,
                             const base::Clock& clock, int listen_fd, RequestServerOptions options,
                             RequestHandler& handler)
    : engine_(engine),
      timers_(timers),
      clock_(clock),
      listen_fd_(listen_fd),
      options_(options),
      handler_(handler) {}

RequestServer::~RequestServer() {
  for (auto& [id, client] : clients_) {
    timers_.Cancel(*client);
  }
}

void RequestServer::Arm() {
  armed_ = true;
  engine_.AcceptMultishot(listen_fd_, *this);
}

void RequestServer::Stop() {
  stopped_ = true;
  if (armed_) {
    engine_.Cancel(*this);
  }
}

void RequestServer::OnCqe(int32_t result, uint32_t flags) {
  if ((flags & IORING_CQE_F_MORE) == 0) {
    armed_ = false;
  }
  if (result >= 0) {
    if (stopped_) {
      ::close(result);
    } else if (options_.same_user_only && !PeerIsUserOrRoot(result)) {
      ++refused_peers_;  // The socket's mode should keep them out; this is the second lock.
      ::close(result);
    } else if (open_ >= options_.connections_max && !EvictOldestWaiting()) {
      ::close(result);  // Every slot is sending its answer: the operator's tools retry.
    } else {
      ++open_;
      const uint64_t id = next_id_++;
      auto client = std::make_unique<Client>(this, id, result);
      Client& c = *client;
      clients_.emplace(id, std::move(client));
      timers_.Arm(c, clock_.MonotonicMs() + options_.timeout_ms);
      c.Read();
    }
  }
  if (!armed_ && !stopped_ && result != -ECANCELED) {
    Arm();
  }
}

bool RequestServer::EvictOldestWaiting() {
  Client* oldest = nullptr;
  for (auto& [id, client] : clients_) {  // At most connections_max, once per full accept.
    if (!client->answered && !client->closing && (oldest == nullptr || id < oldest->id)) {
      oldest = client.get();
    }
  }
  if (oldest == nullptr) {
    return false;
  }
  ++evicted_;
  oldest->Close();
  return true;
}

bool PeerIsUserOrRoot(int fd, uint32_t* peer_uid) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
    return false;
  }
  if (peer_uid != nullptr) {
    *peer_uid = cred.uid;
  }
  return cred.uid == ::geteuid() || cred.uid == 0;
}

void RequestServer::Respond(uint64_t client, std::string response) {
  auto it = clients_.find(client);
  if (it == clients_.end() || it->second->closing) {
    return;
  }
  it->second->Send(std::move(response));
}

}  // namespace relais::relaisd
