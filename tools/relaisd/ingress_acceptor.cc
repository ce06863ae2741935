#include "tools/relaisd/ingress_acceptor.h"

#include <netinet/in.h>

#include <cerrno>
#include <cstring>

namespace relais::relaisd {

std::optional<mail::IpAddress> PeerAddress(const sockaddr_storage& ss) {
  mail::IpAddress a;
  if (ss.ss_family == AF_INET) {
    a.family = AF_INET;
    std::memcpy(a.bytes.data(), &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, 4);
    return a;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    a.family = AF_INET6;
    std::memcpy(a.bytes.data(), &sin6->sin6_addr, 16);
    a.Unmap();
    return a;
  }
  return std::nullopt;
}

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
    if (owner_.OnAccepted(uring::FixedFile{static_cast<uint32_t>(result)}, PeerAddress(p.address),
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
