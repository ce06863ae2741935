// core/uring/net.h — io::Net (the socket seam) on a shard's io_uring engine.
//
// Each operation queues one SQE whose user_data names the caller's io::SocketOp (no allocation,
// no adapter object); the engine dispatches the CQE straight to it, handing a receive's
// provided buffer over as bytes and returning it right after. Registered-file sockets
// (AcceptDirect) are named by slot with IOSQE_FIXED_FILE. Owned by the engine's shard.
#pragma once

#include "core/io/net.h"
#include "core/uring/engine.h"

namespace relais::uring {

class UringNet final : public io::Net {
 public:
  explicit UringNet(Engine& engine) : engine_(engine) {}

  void AcceptMultishot(io::Socket listener, io::SocketOp& op) override;
  void AcceptDirect(io::Socket listener, sockaddr* address, socklen_t* length,
                    io::SocketOp& op) override;
  [[nodiscard]] io::Socket NewStreamSocket(int family) override;
  void Connect(io::Socket socket, const sockaddr* address, socklen_t length,
               io::SocketOp& op) override;
  void Recv(io::Socket socket, io::SocketOp& op) override;
  void Send(io::Socket socket, std::string_view data, io::SocketOp& op) override;
  void Close(io::Socket socket, io::SocketOp& op) override;
  void CloseUnused(io::Socket socket) override;
  void Cancel(io::SocketOp& op) override;

 private:
  Engine& engine_;
};

}  // namespace relais::uring
