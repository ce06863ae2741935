// core/net/request_server.h — a small request/response server on a shard's socket seam
// (io::Net): one request per connection, one response, then close. Serves the admin socket
// (relaisctl) and the metrics port (Prometheus). Each client is a StreamPump
// (core/net/stream_pump.h) driving a one-request session.
//
// The handler says where a request ends in the bytes read so far; once it does, OnRequest
// gets it and answers with Respond, at once or later (an admin query waits for other shards).
// Bounded: at most connections_max clients, request_bytes_max bytes of request, and a client
// that has not completed its request within timeout_ms is closed. Idle clients cannot starve
// the others: when every slot is taken, a new client takes the slot of the oldest one still
// waiting for its request (evicted), so a scrape gets in however many idle connections there
// are. With same_user_only, a peer that is neither our user nor root (SO_PEERCRED) is closed
// at once. Owned by one shard; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/base/clock.h"
#include "core/io/net.h"
#include "core/timer/timer_wheel.h"

namespace relais::net {

class RequestServer;

class RequestHandler {
 public:
  static constexpr size_t kNeedMore = 0;
  // Length of the complete request at the start of `input`, or kNeedMore.
  [[nodiscard]] virtual size_t RequestEnd(std::string_view input) = 0;
  // A request is complete: answer it with server.Respond(client, ...), now or later.
  virtual void OnRequest(RequestServer& server, uint64_t client, std::string_view request) = 0;
  // What to send a client whose request grew past request_bytes_max.
  [[nodiscard]] virtual std::string TooLarge() = 0;

 protected:
  ~RequestHandler() = default;
};

struct RequestServerOptions {
  uint32_t connections_max = 64;
  uint32_t request_bytes_max = 4096;
  uint32_t timeout_ms = 10'000;
  bool same_user_only = false;  // Unix sockets: only our user and root are served.
};

// True when the peer of the unix socket `fd` runs as our effective user or as root; its uid
// in `peer_uid` when known.
[[nodiscard]] bool PeerIsUserOrRoot(int fd, uint32_t* peer_uid = nullptr);

class RequestServer final : io::SocketOp {
 public:
  // `listen_fd` is a listening descriptor (listener.h); `net`, `timers`, `clock` and `handler`
  // outlive the server.
  RequestServer(io::Net& net, timer::TimerWheel& timers, const base::Clock& clock, int listen_fd,
                RequestServerOptions options, RequestHandler& handler);
  ~RequestServer();
  RequestServer(const RequestServer&) = delete;
  RequestServer& operator=(const RequestServer&) = delete;

  void Arm();
  // Stops accepting; clients already connected still get their answers.
  void Stop();
  // Sends `response` to `client` and closes; nothing happens if the client is gone.
  void Respond(uint64_t client, std::string response);

  // Clients closed before their request was complete: too slow, or evicted by a newcomer;
  // and peers refused for their credentials.
  [[nodiscard]] uint64_t timed_out() const { return timed_out_; }
  [[nodiscard]] uint64_t evicted() const { return evicted_; }
  [[nodiscard]] uint64_t refused_peers() const { return refused_peers_; }

 private:
  struct Client;
  void OnSocketDone(const io::SocketResult& done) override;  // An accept.
  // Closes the oldest client still waiting for its request; false when there is none.
  bool EvictOldestWaiting();

  io::Net& net_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  const int listen_fd_;
  const RequestServerOptions options_;
  RequestHandler& handler_;
  bool armed_ = false;
  bool stopped_ = false;
  uint64_t next_id_ = 1;
  uint32_t open_ = 0;  // Clients not closing.
  uint64_t timed_out_ = 0;
  uint64_t evicted_ = 0;
  uint64_t refused_peers_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<Client>> clients_;
};

}  // namespace relais::net
