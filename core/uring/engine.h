// core/uring/engine.h — one shard's io_uring: submission, completion dispatch, the provided
// receive-buffer ring, and the io::Io data plane for the spool.
//
// Every operation names a caller-owned completion: a uring::Completion (network, timers,
// wake-ups) or an io::IoOp (spool writes). user_data carries the pointer, tagged in bit 0 so
// the two kinds need no allocation or lookup. The caller keeps the object alive until its
// callback has run (for multishot operations, until a CQE without IORING_CQE_F_MORE).
// SQEs are queued during a loop turn and submitted together by Run (one io_uring_enter that
// also waits), which is what batches a turn's writes into one syscall.
//
// Receives use a provided-buffer ring: a connection that waits for input holds no buffer; the
// kernel picks one when bytes arrive, and the owner hands it back right after use. The buffers
// are resident from creation (buffer_count x buffer_bytes of RSS), so memory stays flat under
// load instead of creeping as reads fault them in.
//
// Sockets that live long and see many operations (a shard's SMTP sessions) can live in the
// ring's registered-file table, accepted straight into it (AcceptDirect): operations then name
// a table slot (FixedFile), which skips the kernel's descriptor lookup and reference count on
// every operation, and the socket holds no descriptor of the process, so the sessions of a
// shard are bounded by its own table (at most RLIMIT_NOFILE slots) rather than all shards
// sharing one descriptor limit.
//
// Owned by one shard thread; not thread-safe, except ring_fd(), which other shards use as the
// target of IORING_OP_MSG_RING.
#pragma once

#include <liburing.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/io/net.h"
#include "core/io/posix_io.h"

namespace relais::uring {

class Completion {
 public:
  // `result` is the CQE's res (-errno on failure); `flags` its flags.
  virtual void OnCqe(int32_t result, uint32_t flags) = 0;

 protected:
  ~Completion() = default;
};

struct EngineOptions {
  uint32_t entries = 4096;        // Submission queue size; the CQ is twice that.
  uint32_t buffer_count = 512;    // Provided receive buffers, a power of two.
  uint32_t buffer_bytes = 16384;  // Size of each.
  // Slots of the registered-file table (0: none). The kernel refuses more than the process's
  // RLIMIT_NOFILE; Create says so.
  uint32_t fixed_files = 0;
};

// A slot of the engine's registered-file table holding a socket.
struct FixedFile {
  uint32_t index;
};

// Checks that io_uring works here with the features the engine needs. The error says what is
// missing and how to fix it, in one line.
[[nodiscard]] absl::Status Probe();

class Engine;

// io::Io whose data plane runs on the engine's ring; control-plane calls are PosixIo's.
class UringIo final : public io::PosixIo {
 public:
  explicit UringIo(Engine& engine) : engine_(engine) {}
  void Write(io::FileHandle file, uint64_t offset, std::string_view data, io::IoOp& op) override;
  void Fdatasync(io::FileHandle file, io::IoOp& op) override;

 private:
  Engine& engine_;
};

// io::Net (the socket seam) on the engine's ring: each operation queues one SQE whose user_data
// names the caller's io::SocketOp (no allocation, no adapter object); the engine dispatches the
// CQE straight to it, handing a receive's provided buffer over as bytes and returning it right
// after. Registered-file sockets (AcceptDirect) are named by slot with IOSQE_FIXED_FILE.
class UringNet final : public io::Net {
 public:
  explicit UringNet(Engine& engine) : engine_(engine) {}

  void AcceptMultishot(io::Socket listener, io::SocketOp& op) override;
  void AcceptDirect(io::Socket listener, sockaddr* address, socklen_t* length,
                    io::SocketOp& op) override;
  [[nodiscard]] io::Socket NewStreamSocket(int family) override;
  [[nodiscard]] int32_t Bind(io::Socket socket, const sockaddr* address, socklen_t length) override;
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

class Engine {
 public:
  static constexpr uint16_t kBufferGroup = 0;

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Operations. Each queues one SQE (submitting early only if the SQ is full).
  void AcceptMultishot(int listen_fd, Completion& completion);
  // Accepts one connection straight into a free slot of the registered-file table, chosen by
  // the kernel: the result is the slot's index, and no descriptor of the process is ever made.
  // The peer's address goes to `address` (*length bytes at most; both must stay valid until the
  // completion runs). -ENFILE: the table was full and the kernel closed the connection.
  void AcceptDirect(int listen_fd, sockaddr* address, socklen_t* length, Completion& completion);
  // Receives into a provided buffer; the CQE flags carry its id (BufferId()).
  void Recv(int fd, Completion& completion);
  void Recv(FixedFile file, Completion& completion);
  void Send(int fd, std::string_view data, Completion& completion);
  void Send(FixedFile file, std::string_view data, Completion& completion);
  // Connects a non-blocking socket; `address` must stay valid until the completion runs.
  void Connect(int fd, const sockaddr* address, socklen_t length, Completion& completion);
  void Read(int fd, void* buffer, uint32_t bytes, Completion& completion);
  void Close(int fd, Completion& completion);
  // Closes the socket in `file` and frees the slot (once the completion runs it may be reused).
  void Close(FixedFile file, Completion& completion);
  // The same when nobody waits for the result.
  void Close(FixedFile file);
  // Completes once `fd` is ready for `events` (POLLIN, POLLOUT); the result is the ready mask
  // (with POLLERR / POLLHUP when those happened). For sockets a library reads and writes itself
  // (c-ares).
  void PollOnce(int fd, uint32_t events, Completion& completion);
  // Cancels every operation whose completion is `target` (they complete with -ECANCELED).
  void Cancel(Completion& target);
  // Posts a CQE carrying `target` on the ring `ring_fd` (another shard's engine), which
  // delivers it to target.OnCqe(result, 0) on that shard. `target` belongs to that shard.
  void Wake(int ring_fd, Completion& target, int32_t result);
  void Write(int fd, uint64_t offset, std::string_view data, io::IoOp& op);
  void Fdatasync(int fd, io::IoOp& op);

  // Submits what is queued, waits up to `timeout_ms` (-1: forever, 0: not at all) for at
  // least one completion, and dispatches every completion available. Returns how many ran.
  uint32_t Run(int64_t timeout_ms);

  [[nodiscard]] static uint16_t BufferId(uint32_t cqe_flags) {
    return static_cast<uint16_t>(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
  }
  [[nodiscard]] static bool HasBuffer(uint32_t cqe_flags) {
    return (cqe_flags & IORING_CQE_F_BUFFER) != 0;
  }
  [[nodiscard]] std::string_view Buffer(uint16_t buffer_id, uint32_t bytes) const;
  // Returns a provided buffer to the kernel.
  void ReturnBuffer(uint16_t buffer_id);

  // For UringNet (the socket seam, above): a fresh SQE to prepare, and the user_data
  // that routes its CQE to `op`. A receive's provided buffer is handed to the op as bytes and
  // returned to the kernel right after OnSocketDone.
  [[nodiscard]] io_uring_sqe* NewSqe() { return NextSqe(); }
  [[nodiscard]] static uint64_t SocketTag(io::SocketOp& op);
  [[nodiscard]] uint32_t buffer_bytes() const { return options_.buffer_bytes; }
  [[nodiscard]] uint32_t fixed_files() const { return options_.fixed_files; }

  [[nodiscard]] int ring_fd() const { return ring_.ring_fd; }
  [[nodiscard]] UringIo& io() { return io_; }
  // The socket seam on this engine (core/io/net.h).
  [[nodiscard]] UringNet& net() { return net_; }

 private:
  explicit Engine(const EngineOptions& options);
  io_uring_sqe* NextSqe();
  // `fd` is a descriptor, or a table slot when `sqe_flags` has IOSQE_FIXED_FILE.
  void QueueRecv(int fd, uint8_t sqe_flags, Completion& completion);
  void QueueSend(int fd, uint8_t sqe_flags, std::string_view data, Completion& completion);
  void QueueCloseDirect(FixedFile file, uint64_t user_data);
  void DispatchSocketOp(uint64_t user_data, int32_t result, uint32_t flags);

  const EngineOptions options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  io_uring_buf_ring* buffer_ring_ = nullptr;
  size_t buffer_ring_bytes_ = 0;
  char* buffers_ = nullptr;  // buffer_count x buffer_bytes, its own mapping.
  size_t buffers_bytes_ = 0;
  uint32_t buffer_mask_ = 0;
  UringIo io_{*this};
  UringNet net_{*this};
};

}  // namespace relais::uring
