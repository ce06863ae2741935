// tools/relaisd/request_server.h — a small request/response server on a shard's io_uring:
// one request per connection, one response, then close. Serves the admin socket (relaisctl)
// and the metrics port (Prometheus).
//
// The handler says where a request ends in the bytes read so far; once it does, OnRequest
// gets it and answers with Respond, at once or later (an admin query waits for other shards).
// Bounded: at most connections_max clients, request_bytes_max bytes of request, and a client
// that has not completed its request within timeout_ms is closed. Owned by one shard; not
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/base/clock.h"
#include "core/timer/timer_wheel.h"
#include "core/uring/engine.h"

namespace relais::relaisd {

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
};

class RequestServer final : uring::Completion {
 public:
  RequestServer(uring::Engine& engine, timer::TimerWheel& timers, const base::Clock& clock,
                int listen_fd, RequestServerOptions options, RequestHandler& handler);
  ~RequestServer();
  RequestServer(const RequestServer&) = delete;
  RequestServer& operator=(const RequestServer&) = delete;

  void Arm();
  // Stops accepting; clients already connected still get their answers.
  void Stop();
  // Sends `response` to `client` and closes; nothing happens if the client is gone.
  void Respond(uint64_t client, std::string response);

 private:
  struct Client;
  void OnCqe(int32_t result, uint32_t flags) override;

  uring::Engine& engine_;
  timer::TimerWheel& timers_;
  const base::Clock& clock_;
  const int listen_fd_;
  const RequestServerOptions options_;
  RequestHandler& handler_;
  bool armed_ = false;
  bool stopped_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Client>> clients_;
};

}  // namespace relais::relaisd
