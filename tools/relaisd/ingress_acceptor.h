// tools/relaisd/ingress_acceptor.h — accepts SMTP connections on one listening socket straight
// into the shard's registered-file table: a session never holds a descriptor of the process,
// and its accept costs no syscall of its own (the kernel writes the peer's address;
// TCP_NODELAY is inherited from the listener). kInFlight single-shot accepts stay armed, each
// with its own address buffer (a multishot accept has one buffer for all its connections), and
// each re-arms as it completes. Owned by the shard's Ingress; not thread-safe.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "core/mail/ip_network.h"
#include "core/uring/engine.h"

namespace relais::relaisd {

class AcceptListener {
 public:
  // A connection arrived on listener `listener`; its socket is a slot of the file table that
  // the listener now owns. `peer` is nullopt when the address is not IP. Returns whether to
  // keep accepting (re-arm this accept).
  [[nodiscard]] virtual bool OnAccepted(uring::FixedFile socket,
                                        std::optional<mail::IpAddress> peer, uint32_t listener) = 0;
  // An accept failed with `error` (a negative errno, not -ECANCELED); it stays unarmed until
  // the next Arm().
  virtual void OnAcceptFailed(int32_t error) = 0;

 protected:
  ~AcceptListener() = default;
};

class Acceptor final {
 public:
  static constexpr size_t kInFlight = 16;

  // `fd` listens; `listener` is its index among the server's listen addresses. The engine and
  // the listener must outlive the acceptor, and no accept may be in flight when it dies.
  Acceptor(uring::Engine& engine, int fd, uint32_t listener, AcceptListener& owner);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Arms every accept that is not armed.
  void Arm();
  // Cancels every armed accept (each completes with -ECANCELED).
  void Cancel();

 private:
  struct Pending final : uring::Completion {
    void OnCqe(int32_t result, uint32_t) override { acceptor->OnAccepted(*this, result); }
    Acceptor* acceptor = nullptr;
    sockaddr_storage address{};
    socklen_t length = 0;
    bool armed = false;
  };

  void ArmOne(Pending& p);
  void OnAccepted(Pending& p, int32_t result);

  uring::Engine& engine_;
  const int fd_;
  const uint32_t listener_;  // Index of its server.listen address.
  AcceptListener& owner_;
  std::array<Pending, kInFlight> pending_;
};

}  // namespace relais::relaisd
