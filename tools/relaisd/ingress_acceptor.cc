#include "tools/relaisd/ingress_acceptor.h"

#include "core/net/net_address.h"

#include <cerrno>
#include <cstring>

namespace relais::relaisd {

Acceptor::Acceptor(uring::Engine& engine, int fd, uint32_t listener, AcceptListener& owner)
    : engine_(engine), fd_(fd), listener_(listener), owner_(owner) {
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
      engine_.Cancel(p);
    }
  }
}

void Acceptor::ArmOne(Pending& p) {
  p.armed = true;
  p.length = sizeof(p.address);
  engine_.AcceptDirect(fd_, reinterpret_cast<sockaddr*>(&p.address), &p.length, p);
}

void Acceptor::OnAccepted(Pending& p, int32_t result) {
  p.armed = false;
  if (result >= 0) {
    if (owner_.OnAccepted(uring::FixedFile{static_cast<uint32_t>(result)}, net::PeerAddress(p.address),
                          listener_)) {
      ArmOne(p);
    }
    return;
  }
  if (result != -ECANCELED) {
    owner_.OnAcceptFailed(result);
  }
}

}  // namespace relais::relaisd
