// protocols/tls/tls_pair.h — two TLS transports joined in memory, for tests and benches: each
// side is a transport and a BufferSession; Move hands one side's output to the other.
// Header-only test support; no socket.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/net/buffer_session.h"
#include "protocols/tls/tls.h"

namespace relais::tls {

struct Side {
  std::unique_ptr<TlsTransport> tls;
  net::BufferSession session;
};

// Moves what `from` has to send into `to`, in pieces of `chunk` bytes. False when nothing moved.
inline bool Move(Side& from, Side& to, size_t chunk = SIZE_MAX) {
  std::string bytes;
  from.tls->TakeOutput(from.session, bytes);
  if (bytes.empty()) {
    return false;
  }
  for (size_t at = 0; at < bytes.size(); at += chunk) {
    to.tls->OnReceived(std::string_view(bytes).substr(at, chunk), to.session);
  }
  return true;
}

// Moves bytes both ways each turn until neither side has anything to send. False when the pair
// was still talking after `turns_max` turns.
inline bool RunUntilQuiet(Side& a, Side& b, size_t chunk = SIZE_MAX, int turns_max = 100'000) {
  for (int i = 0; i < turns_max; ++i) {
    const bool x = Move(a, b, chunk);
    const bool y = Move(b, a, chunk);
    if (!x && !y) {
      return true;
    }
  }
  return false;
}

}  // namespace relais::tls
