// core/net/acceptor.cc — see acceptor.h.
#include "core/net/acceptor.h"

#include <cerrno>

#include "core/net/net_address.h"

namespace relais::net {

Acceptor::Acceptor(io::Net& net, io::Socket socket, uint32_t listener, AcceptOwner& owner)
    : net_(net), socket_(socket), listener_(listener), owner_(owner) {
  for (Pending& p : pending_) {
    p.acceptor = this;
  }
}

void Acceptor::Arm() {
  for (Pending& p : pending_) {
    if (!p.armed) {
      ArmOne(p);
    }
  }
}

void Acceptor::Cancel() {
  for (Pending& p : pending_) {
    if (p.armed) {
      net_.Cancel(p);
    }
  }
}

size_t Acceptor::armed() const {
  size_t n = 0;
  for (const Pending& p : pending_) {
    n += p.armed ? 1 : 0;
  }
  return n;
}

void Acceptor::ArmOne(Pending& p) {
  p.armed = true;
  p.length = sizeof(p.address);
  net_.AcceptDirect(socket_, reinterpret_cast<sockaddr*>(&p.address), &p.length, p);
}

void Acceptor::OnAccepted(Pending& p, int32_t result) {
  p.armed = false;
  if (result >= 0) {
    // The address is read before the re-arm overwrites it.
    if (owner_.OnAccepted(io::Socket::Registered(static_cast<uint32_t>(result)),
                          PeerAddress(p.address), listener_)) {
      ArmOne(p);
    }
    return;
  }
  if (result != -ECANCELED) {
    owner_.OnAcceptFailed(result);
  }
}

}  // namespace relais::net
