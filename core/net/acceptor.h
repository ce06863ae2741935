// core/net/acceptor.h — accepts stream connections on one listening socket straight into the
// Net's registered-file table (io::Net::AcceptDirect): a connection never holds a descriptor of
// the process, and its accept costs no syscall of its own (the kernel writes the peer's
// address; TCP_NODELAY is inherited from the listener). kInFlight single-shot accepts stay
// armed, each with its own address buffer (a multishot accept has one buffer for all its
// connections), and each re-arms as it completes, so a burst of connections is taken kInFlight
// at a time without waiting for the loop. A failed accept (EMFILE, ENFILE: the table is full)
// is not re-armed: accepting again at once could spin on an error that leaves the connection
// queued; the owner calls Arm() again after a pause of its choosing.
//
// It knows nothing of the protocol: it hands (socket, peer address, listener index) to its
// owner. Owned by one shard; not thread-safe.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "core/io/net.h"
#include "core/mail/ip_network.h"

namespace relais::net {

class AcceptOwner {
 public:
  // A connection arrived on listener `listener`; `socket` (registered: a table slot) is now the
  // owner's. `peer` is nullopt when the address is not IP. Returns whether to keep accepting
  // (re-arm this accept).
  [[nodiscard]] virtual bool OnAccepted(io::Socket socket, std::optional<mail::IpAddress> peer,
                                        uint32_t listener) = 0;
  // An accept failed with `error` (a negative errno, not -ECANCELED); it stays unarmed until
  // the next Arm().
  virtual void OnAcceptFailed(int32_t error) = 0;

 protected:
  ~AcceptOwner() = default;
};

class Acceptor final {
 public:
  static constexpr size_t kInFlight = 16;

  // `socket` listens; `listener` is its index among the owner's listen addresses. The net and
  // the owner must outlive the acceptor, and no accept may be in flight when it dies.
  Acceptor(io::Net& net, io::Socket socket, uint32_t listener, AcceptOwner& owner);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Arms every accept that is not armed.
  void Arm();
  // Cancels every armed accept (each completes with -ECANCELED).
  void Cancel();
  // Accepts armed now (kInFlight unless some failed or were cancelled).
  [[nodiscard]] size_t armed() const;

 private:
  struct Pending final : io::SocketOp {
    void OnSocketDone(const io::SocketResult& done) override {
      acceptor->OnAccepted(*this, done.result);
    }
    Acceptor* acceptor = nullptr;
    sockaddr_storage address{};
    socklen_t length = 0;
    bool armed = false;
  };

  void ArmOne(Pending& p);
  void OnAccepted(Pending& p, int32_t result);

  io::Net& net_;
  const io::Socket socket_;
  const uint32_t listener_;
  AcceptOwner& owner_;
  std::array<Pending, kInFlight> pending_;
};

}  // namespace relais::net
