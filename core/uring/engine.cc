#include "core/uring/engine.h"

#include <sys/mman.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/base/check.h"
#include "core/base/strings.h"

namespace relais::uring {
namespace {

constexpr uint64_t kIoOpTag = 1;  // user_data bit 0: an io::IoOp rather than a Completion.

uint64_t Tag(Completion& c) { return reinterpret_cast<uint64_t>(&c); }
uint64_t Tag(io::IoOp& op) { return reinterpret_cast<uint64_t>(&op) | kIoOpTag; }
// user_data bit 1: an io::SocketOp (the socket seam). Completions are at least 8-aligned.
constexpr uint64_t kSocketOpTag = 2;

std::string HowToFix(int error) {
  if (error == EPERM || error == EACCES) {
    return "io_uring is blocked (EPERM): a seccomp profile forbids it, or sysctl "
           "kernel.io_uring_disabled is 2 (or 1 without CAP_SYS_ADMIN); allow io_uring_setup, "
           "io_uring_enter and io_uring_register in the seccomp profile (Docker: "
           "--security-opt seccomp=PROFILE), or run `sysctl -w kernel.io_uring_disabled=0`";
  }
  if (error == ENOSYS) {
    return "io_uring is not available (ENOSYS): this kernel lacks it or a sandbox hides it; "
           "Relais needs Linux 6.0 or later with io_uring enabled";
  }
  if (error == ENOMEM) {
    return "io_uring setup failed (ENOMEM): raise the locked-memory limit (ulimit -l) or "
           "lower the number of threads";
  }
  return base::StrCat("io_uring setup failed: ", std::strerror(error));
}

}  // namespace

absl::Status Probe() {
  io_uring ring;
  const int rc = io_uring_queue_init(8, &ring, 0);
  if (rc < 0) {
    return absl::FailedPreconditionError(HowToFix(-rc));
  }
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  std::string missing;
  if (probe == nullptr) {
    missing = "opcode probe";
  } else {
    const std::pair<int, const char*> needed[] = {
        {IORING_OP_ACCEPT, "ACCEPT"},
        {IORING_OP_RECV, "RECV"},
        {IORING_OP_SEND, "SEND"},
        {IORING_OP_WRITE, "WRITE"},
        {IORING_OP_FSYNC, "FSYNC"},
        {IORING_OP_CLOSE, "CLOSE"},
        {IORING_OP_READ, "READ"},
        {IORING_OP_MSG_RING, "MSG_RING"},
        {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    };
    for (const auto& [op, name] : needed) {
      if (!io_uring_opcode_supported(probe, op)) {
        base::StrAppend(&missing, missing.empty() ? "" : ", ", name);
      }
    }
    io_uring_free_probe(probe);
  }
  io_uring_queue_exit(&ring);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        base::StrCat("io_uring lacks ", missing,
                     " (the kernel is too old or a filter hides them); Relais "
                     "needs Linux 6.0 or later"));
  }
  return absl::OkStatus();
}

void UringIo::Write(io::FileHandle file, uint64_t offset, std::string_view data, io::IoOp& op) {
  engine_.Write(file.fd, offset, data, op);
}

void UringIo::Fdatasync(io::FileHandle file, io::IoOp& op) { engine_.Fdatasync(file.fd, op); }

Engine::Engine(const EngineOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  RELAIS_CHECK(options.buffer_count > 0 && (options.buffer_count & (options.buffer_count - 1)) == 0)
      << "buffer_count must be a power of two";
  RELAIS_CHECK(options.buffer_count <= 32768);
  std::unique_ptr<Engine> engine(new Engine(options));
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
  params.cq_entries = options.entries * 2;
  int rc = io_uring_queue_init_params(options.entries, &engine->ring_, &params);
  if (rc == -EINVAL) {
    // COOP_TASKRUN is an optimisation (Linux 5.19); go without it rather than fail.
    params = io_uring_params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = options.entries * 2;
    rc = io_uring_queue_init_params(options.entries, &engine->ring_, &params);
  }
  if (rc < 0) {
    return absl::FailedPreconditionError(HowToFix(-rc));
  }
  engine->ring_ready_ = true;

  // The buffer ring must be page-aligned memory shared with the kernel.
  engine->buffer_ring_bytes_ = sizeof(io_uring_buf) * options.buffer_count;
  void* ring_mem = mmap(nullptr, engine->buffer_ring_bytes_, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (ring_mem == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        base::StrCat("mmap of the receive buffer ring: ", std::strerror(errno)));
  }
  engine->buffer_ring_ = static_cast<io_uring_buf_ring*>(ring_mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(ring_mem);
  reg.ring_entries = options.buffer_count;
  reg.bgid = kBufferGroup;
  rc = io_uring_register_buf_ring(&engine->ring_, &reg, 0);
  if (rc < 0) {
    return absl::FailedPreconditionError(
        base::StrCat("io_uring provided buffer rings are unavailable (", std::strerror(-rc),
                     "); Relais needs Linux 5.19 or later"));
  }
  // The receive buffers are resident from the start (MAP_POPULATE). The kernel hands them out
  // in ring order, so left to fault in they would all become resident anyway, a page at a time
  // as ever larger reads reach deeper into each one: RSS would creep for minutes under steady
  // load (+5.5% in a 10-minute soak), looking like a leak, and faults would land on the hot
  // path. Populated, a shard's RSS shows its receive buffers in full at start and then stays
  // flat (+0.2%). Cost: buffer_count x buffer_bytes (8 MiB) of RSS per shard from the start.
  engine->buffers_bytes_ = size_t{options.buffer_count} * options.buffer_bytes;
  void* buffers = mmap(nullptr, engine->buffers_bytes_, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (buffers == MAP_FAILED) {
    return absl::ResourceExhaustedError(base::StrCat(
        "mmap of ", engine->buffers_bytes_, " bytes of receive buffers: ", std::strerror(errno)));
  }
  engine->buffers_ = static_cast<char*>(buffers);
  engine->buffer_mask_ = static_cast<uint32_t>(io_uring_buf_ring_mask(options.buffer_count));
  io_uring_buf_ring_init(engine->buffer_ring_);
  for (uint32_t i = 0; i < options.buffer_count; ++i) {
    io_uring_buf_ring_add(engine->buffer_ring_, engine->buffers_ + size_t{i} * options.buffer_bytes,
                          options.buffer_bytes, static_cast<uint16_t>(i),
                          static_cast<int>(engine->buffer_mask_), static_cast<int>(i));
  }
  io_uring_buf_ring_advance(engine->buffer_ring_, static_cast<int>(options.buffer_count));

  if (options.fixed_files > 0) {
    rc = io_uring_register_files_sparse(&engine->ring_, options.fixed_files);
    if (rc < 0) {
      return absl::ResourceExhaustedError(base::StrCat(
          "io_uring registered-file table of ", options.fixed_files, " slots: ", std::strerror(-rc),
          rc == -EMFILE ? " (more than the descriptor limit, RLIMIT_NOFILE, allows; raise "
                          "`ulimit -n` or LimitNOFILE=, or lower limits.connections_max)"
                        : ""));
    }
  }
  return engine;
}

Engine::~Engine() {
  if (ring_ready_) {
    io_uring_queue_exit(&ring_);
  }
  if (buffer_ring_ != nullptr) {
    munmap(buffer_ring_, buffer_ring_bytes_);
  }
  if (buffers_ != nullptr) {
    munmap(buffers_, buffers_bytes_);
  }
}

io_uring_sqe* Engine::NextSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The SQ is full: submit what is queued (without waiting) and take a fresh entry.
    const int rc = io_uring_submit(&ring_);
    RELAIS_CHECK(rc >= 0) << "io_uring_submit: " << std::strerror(-rc);
    sqe = io_uring_get_sqe(&ring_);
    RELAIS_CHECK(sqe != nullptr) << "submission queue still full after submit";
  }
  return sqe;
}

void Engine::AcceptMultishot(int listen_fd, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::QueueRecv(int fd, uint8_t sqe_flags, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_recv(sqe, fd, nullptr, options_.buffer_bytes, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT | sqe_flags;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::AcceptDirect(int listen_fd, sockaddr* address, socklen_t* length,
                          Completion& completion) {
  RELAIS_CHECK(options_.fixed_files > 0);
  io_uring_sqe* sqe = NextSqe();
  // SOCK_CLOEXEC is meaningless (and refused) for a socket that has no descriptor.
  io_uring_prep_accept(sqe, listen_fd, address, length, SOCK_NONBLOCK);
  // The kernel reads the field as the slot + 1, or IORING_FILE_INDEX_ALLOC for "any free slot".
  // (liburing 2.3's io_uring_prep_accept_direct adds 1 to that too, which makes it 0: a plain
  // accept.)
  sqe->file_index = IORING_FILE_INDEX_ALLOC;
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::Recv(int fd, Completion& completion) { QueueRecv(fd, 0, completion); }

void Engine::Recv(FixedFile file, Completion& completion) {
  RELAIS_CHECK(file.index < options_.fixed_files);
  QueueRecv(static_cast<int>(file.index), IOSQE_FIXED_FILE, completion);
}

void Engine::QueueSend(int fd, uint8_t sqe_flags, std::string_view data, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_send(sqe, fd, data.data(), data.size(), MSG_NOSIGNAL);
  sqe->flags |= sqe_flags;
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::Send(int fd, std::string_view data, Completion& completion) {
  QueueSend(fd, 0, data, completion);
}

void Engine::Send(FixedFile file, std::string_view data, Completion& completion) {
  RELAIS_CHECK(file.index < options_.fixed_files);
  QueueSend(static_cast<int>(file.index), IOSQE_FIXED_FILE, data, completion);
}

void Engine::Connect(int fd, const sockaddr* address, socklen_t length, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_connect(sqe, fd, address, length);
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::Read(int fd, void* buffer, uint32_t bytes, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_read(sqe, fd, buffer, bytes, 0);
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::Close(int fd, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_close(sqe, fd);
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::QueueCloseDirect(FixedFile file, uint64_t user_data) {
  RELAIS_CHECK(file.index < options_.fixed_files);
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_close_direct(sqe, file.index);
  io_uring_sqe_set_data64(sqe, user_data);
}

void Engine::Close(FixedFile file, Completion& completion) {
  QueueCloseDirect(file, Tag(completion));
}

void Engine::Close(FixedFile file) { QueueCloseDirect(file, 0); }  // No handler: Run skips it.

void Engine::PollOnce(int fd, uint32_t events, Completion& completion) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_poll_add(sqe, fd, events);
  io_uring_sqe_set_data64(sqe, Tag(completion));
}

void Engine::Cancel(Completion& target) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_cancel64(sqe, Tag(target), IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, 0);  // The cancel's own CQE needs no handler.
}

void Engine::Wake(int ring_fd, Completion& target, int32_t result) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_msg_ring(sqe, ring_fd, static_cast<unsigned>(result), Tag(target), 0);
  io_uring_sqe_set_data64(sqe, 0);
}

void Engine::Write(int fd, uint64_t offset, std::string_view data, io::IoOp& op) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_write(sqe, fd, data.data(), static_cast<unsigned>(data.size()), offset);
  io_uring_sqe_set_data64(sqe, Tag(op));
}

void Engine::Fdatasync(int fd, io::IoOp& op) {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(sqe, Tag(op));
}

uint32_t Engine::Run(int64_t timeout_ms) {
  io_uring_cqe* cqe = nullptr;
  int rc;
  if (timeout_ms < 0) {
    rc = io_uring_submit_and_wait(&ring_, 1);
  } else if (timeout_ms == 0) {
    rc = io_uring_submit(&ring_);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (timeout_ms % 1000) * 1'000'000;
    rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    RELAIS_CHECK(false) << "io_uring_enter failed: " << std::strerror(-rc);
  }
  uint32_t ran = 0;
  // Dispatch in batches: callbacks may queue SQEs but never re-enter Run.
  while (true) {
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* c;
    io_uring_cqe* batch[256];
    io_uring_for_each_cqe(&ring_, head, c) {
      batch[seen++] = c;
      if (seen == 256) {
        break;
      }
    }
    if (seen == 0) {
      break;
    }
    // Copy out before advancing, so the kernel can reuse the slots while callbacks run.
    struct Item {
      uint64_t data;
      int32_t res;
      uint32_t flags;
    } items[256];
    for (unsigned i = 0; i < seen; ++i) {
      items[i] = Item{batch[i]->user_data, batch[i]->res, batch[i]->flags};
    }
    io_uring_cq_advance(&ring_, seen);
    for (unsigned i = 0; i < seen; ++i) {
      const Item& item = items[i];
      if (item.data == 0) {
        continue;
      }
      if ((item.data & kIoOpTag) != 0) {
        reinterpret_cast<io::IoOp*>(item.data & ~kIoOpTag)->OnIoComplete(item.res);
      } else if ((item.data & kSocketOpTag) != 0) {
        DispatchSocketOp(item.data, item.res, item.flags);
      } else {
        reinterpret_cast<Completion*>(item.data)->OnCqe(item.res, item.flags);
      }
      ++ran;
    }
  }
  return ran;
}

std::string_view Engine::Buffer(uint16_t buffer_id, uint32_t bytes) const {
  RELAIS_CHECK(buffer_id < options_.buffer_count && bytes <= options_.buffer_bytes);
  return std::string_view(buffers_ + size_t{buffer_id} * options_.buffer_bytes, bytes);
}

uint64_t Engine::SocketTag(io::SocketOp& op) {
  return reinterpret_cast<uint64_t>(&op) | kSocketOpTag;
}

void Engine::DispatchSocketOp(uint64_t user_data, int32_t result, uint32_t flags) {
  auto* op = reinterpret_cast<io::SocketOp*>(user_data & ~kSocketOpTag);
  io::SocketResult done{result, {}, (flags & IORING_CQE_F_MORE) != 0};
  if (!HasBuffer(flags)) {
    op->OnSocketDone(done);
    return;
  }
  // The op may free itself in its callback; the buffer is the engine's and goes back after.
  const uint16_t buffer = BufferId(flags);
  done.received = Buffer(buffer, result > 0 ? static_cast<uint32_t>(result) : 0);
  op->OnSocketDone(done);
  ReturnBuffer(buffer);
}

void Engine::ReturnBuffer(uint16_t buffer_id) {
  io_uring_buf_ring_add(buffer_ring_, buffers_ + size_t{buffer_id} * options_.buffer_bytes,
                        options_.buffer_bytes, buffer_id, static_cast<int>(buffer_mask_), 0);
  io_uring_buf_ring_advance(buffer_ring_, 1);
}

}  // namespace relais::uring
