// core/net/request_server.cc — see request_server.h.
#include "core/net/request_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "core/net/stream_pump.h"

namespace relais::net {

// One connection: the one-request session its pump drives. Freed when its pump has closed;
// until then every operation may name it.
struct RequestServer::Client final : StreamSession, StreamPumpOwner {
  Client(RequestServer* s, uint64_t i, io::Socket socket)
      : server(s), id(i), pump(s->net_, socket, *this, *this, &s->timers_) {}

  // StreamSession.
  void Feed(std::string_view bytes) override {
    if (answered) {
      return;  // Bytes after the request are not read: one request per connection.
    }
    input.append(bytes);
    const size_t end = server->handler_.RequestEnd(input);
    if (end != RequestHandler::kNeedMore) {
      answered = true;
      pump.ClearDeadline();
      feeding = true;  // A Respond from inside OnRequest is sent by the pump's own Drive.
      server->handler_.OnRequest(*server, id, std::string_view(input).substr(0, end));
      feeding = false;
    } else if (input.size() > server->options_.request_bytes_max) {
      answered = true;
      responded = true;
      output = server->handler_.TooLarge();
    }
  }
  [[nodiscard]] std::string_view PendingOutput() const override { return output; }
  void ConsumeOutput(size_t bytes) override { output.erase(0, bytes); }
  [[nodiscard]] bool WantsInput() const override { return !answered && !ended; }
  [[nodiscard]] bool WantsClose() const override {
    // Answered and sent; or the client stopped sending before its request was complete.
    return (responded && output.empty()) || (ended && !answered);
  }
  void EndOfInput() override { ended = true; }

  // StreamPumpOwner.
  void OnPumpReady(StreamPump&) override { Drive(); }
  void OnPumpTimeout(StreamPump&) override {  // Too slow to ask: a stalled or hostile client.
    ++server->timed_out_;
    Abort();
  }
  void OnPumpClosed(StreamPump&) override {
    NoteClosing();
    server->clients_.erase(id);  // Deletes this (and the pump, which touches nothing after).
  }

  void Respond(std::string text) {
    responded = true;
    output = std::move(text);
    if (!feeding) {
      Drive();
    }
  }
  void Drive() {
    pump.Drive();
    NoteClosing();
  }
  void Abort() {
    pump.Abort();
    NoteClosing();
  }
  // A closing client no longer holds one of the connections_max slots.
  void NoteClosing() {
    if (pump.closing() && !closing) {
      closing = true;
      --server->open_;
    }
  }

  RequestServer* server;
  const uint64_t id;
  std::string input;
  std::string output;
  bool answered = false;   // The request is complete (or too large): nothing more is read.
  bool responded = false;  // The answer is in `output` (or sent).
  bool ended = false;
  bool feeding = false;
  bool closing = false;
  StreamPump pump;
};

RequestServer::RequestServer(io::Net& net, timer::TimerWheel& timers, const base::Clock& clock,
                             int listen_fd, RequestServerOptions options, RequestHandler& handler)
    : net_(net),
      timers_(timers),
      clock_(clock),
      listen_fd_(listen_fd),
      options_(options),
      handler_(handler) {}

RequestServer::~RequestServer() = default;

void RequestServer::Arm() {
  armed_ = true;
  net_.AcceptMultishot(io::Socket::Descriptor(listen_fd_), *this);
}

void RequestServer::Stop() {
  stopped_ = true;
  if (armed_) {
    net_.Cancel(*this);
  }
}

void RequestServer::OnSocketDone(const io::SocketResult& done) {
  if (!done.more) {
    armed_ = false;
  }
  const int32_t result = done.result;
  if (result >= 0) {
    const io::Socket socket = io::Socket::Descriptor(result);
    if (stopped_) {
      net_.CloseUnused(socket);
    } else if (options_.same_user_only && !PeerIsUserOrRoot(result)) {
      ++refused_peers_;  // The socket's mode should keep them out; this is the second lock.
      net_.CloseUnused(socket);
    } else if (open_ >= options_.connections_max && !EvictOldestWaiting()) {
      net_.CloseUnused(socket);  // Every slot is sending its answer: the operator's tools retry.
    } else {
      ++open_;
      const uint64_t id = next_id_++;
      auto client = std::make_unique<Client>(this, id, socket);
      Client& c = *client;
      clients_.emplace(id, std::move(client));
      c.pump.SetDeadline(clock_.MonotonicMs() + options_.timeout_ms);
      c.Drive();
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
  oldest->Abort();
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
  if (it == clients_.end() || it->second->closing || it->second->pump.closing()) {
    return;
  }
  it->second->Respond(std::move(response));
}

}  // namespace relais::net
