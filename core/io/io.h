// core/io/io.h — the seam between the spool and the kernel.
//
// Everything the spool and the Maildir delivery ask of the file system goes through Io, so that
// tests can run them over an in-memory or fault-injecting implementation. Io offers primitives
// only (one mkdir, one directory fsync, one open): every decision about what must be synced for
// what to be durable lives above the seam (core/io/durable_dirs.h, the spool, queue/maildir), so
// the simulated disk runs the same decisions as the daemon. Control-plane calls (open, list,
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

// A file or a directory (OpenDir) of this Io.
struct FileHandle {
  int32_t fd = -1;
  [[nodiscard]] bool valid() const { return fd >= 0; }
};

// The process's working directory as the base of the *At calls (AT_FDCWD); never closed.
inline constexpr FileHandle kWorkingDirectory{-100};

// How OpenDir resolves its path below its base.
enum class Resolve : uint8_t {
  // As open(2) does: absolute paths, "..", any symlink. Only for paths from the config.
  kFollow,
  // Never leaves the base directory: no absolute path, no "." or ".." or empty component, no
  // magic link, no symlink that points outside (openat2 RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  // without openat2, one O_NOFOLLOW openat per component). A path that would leave is refused
  // with kInvalidArgument, before anything outside is touched.
  kBeneath,
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
  // fsync of the directory at `path`: makes its entries (creates, renames, unlinks) durable.
  [[nodiscard]] virtual absl::Status SyncDir(const std::string& path) = 0;
  [[nodiscard]] virtual absl::Status Unlink(const std::string& path) = 0;
  [[nodiscard]] virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;

  // Directories, relative to an open directory (or kWorkingDirectory). The new entry of
  // MakeDir is NOT durable until its parent is synced: see core/io/durable_dirs.h.
  // mkdir of the last component of `path` (mode 0700). kAlreadyExists if the name exists,
  // whatever it is (a symlink is not followed).
  [[nodiscard]] virtual absl::Status MakeDir(FileHandle base, const std::string& path) = 0;
  // Opens a directory for the *At calls and SyncOpenDir. The caller closes it (Close).
  [[nodiscard]] virtual absl::StatusOr<FileHandle> OpenDir(FileHandle base, const std::string& path,
                                                           Resolve resolve) = 0;
  // fsync of an open directory.
  [[nodiscard]] virtual absl::Status SyncOpenDir(FileHandle dir) = 0;
  // `name` is one component in `dir`; a symlink there is never followed.
  [[nodiscard]] virtual absl::StatusOr<FileHandle> OpenAt(FileHandle dir, const std::string& name,
                                                          OpenMode mode) = 0;
  [[nodiscard]] virtual absl::Status RenameAt(FileHandle from_dir, const std::string& from,
                                              FileHandle to_dir, const std::string& to) = 0;
  [[nodiscard]] virtual absl::Status UnlinkAt(FileHandle dir, const std::string& name) = 0;
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
