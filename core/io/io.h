// core/io/io.h — the seam between the spool and the kernel.
//
// Everything the spool asks of the file system goes through Io, so that tests can run the
// spool over an in-memory or fault-injecting implementation. Control-plane calls (open, list,
// unlink, directory sync, reads during recovery) are synchronous and return absl::Status naming
// the path and errno. The data plane (Write, Fdatasync) is asynchronous: the caller owns `op`
// until its OnIoComplete has run, which happens later on the same thread, never inside the
// call that started it.
//
// Implementations: uring::UringIo (production, on the shard's io_uring), io::PosixIo
// (synchronous syscalls with deferred completions: tools and tests).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace relais::io {

struct FileHandle {
  int32_t fd = -1;
  [[nodiscard]] bool valid() const { return fd >= 0; }
};

enum class OpenMode : uint8_t {
  kReadOnly,
  kCreateExclusive,  // O_CREAT | O_EXCL | O_RDWR: a new file that must not exist yet.
  kReadWrite,
};

// A caller-owned completion. `result` is bytes transferred (Write) or 0 (Fdatasync) on
// success, -errno on failure.
class IoOp {
 public:
  virtual void OnIoComplete(int32_t result) = 0;

 protected:
  ~IoOp() = default;
};

class Io {
 public:
  virtual ~Io() = default;

  [[nodiscard]] virtual absl::StatusOr<FileHandle> Open(const std::string& path, OpenMode mode) = 0;
  virtual void Close(FileHandle file) = 0;
  // Names in `path` (no "." or ".."), unsorted.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& path) = 0;
  // mkdir -p with mode 0700; syncs each parent whose entries it changed.
  [[nodiscard]] virtual absl::Status MakeDirs(const std::string& path) = 0;
  [[nodiscard]] virtual absl::Status SyncDir(const std::string& path) = 0;
  [[nodiscard]] virtual absl::Status Unlink(const std::string& path) = 0;
  [[nodiscard]] virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  [[nodiscard]] virtual absl::StatusOr<uint64_t> Size(FileHandle file) = 0;
  [[nodiscard]] virtual absl::Status Truncate(FileHandle file, uint64_t size) = 0;
  // Reads up to out.size() bytes; fewer only at end of file.
  [[nodiscard]] virtual absl::StatusOr<size_t> ReadAt(FileHandle file, uint64_t offset,
                                                      std::span<char> out) = 0;
  // Synchronous write + fdatasync, for control-plane records (segment headers).
  [[nodiscard]] virtual absl::Status WriteAndSync(FileHandle file, uint64_t offset,
                                                  std::string_view data) = 0;

  // Data plane. `data` must stay valid until `op` completes.
  virtual void Write(FileHandle file, uint64_t offset, std::string_view data, IoOp& op) = 0;
  virtual void Fdatasync(FileHandle file, IoOp& op) = 0;
};

}  // namespace relais::io
