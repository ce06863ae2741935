// core/io/posix_io.h — io::Io over plain syscalls.
//
// Control-plane calls run at once. Write and Fdatasync run at once too, but their completions
// are queued and delivered by RunCompletions(), so callers see the same ordering as with
// io_uring (never a completion inside the call that started it). For tools (relaisctl) and
// tests. One thread; not thread-safe.
#pragma once

#include <deque>
#include <utility>

#include "core/io/io.h"

namespace relais::io {

class PosixIo : public Io {
 public:
  [[nodiscard]] absl::StatusOr<FileHandle> Open(const std::string& path, OpenMode mode) override;
  void Close(FileHandle file) override;
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  [[nodiscard]] absl::Status SyncDir(const std::string& path) override;
  [[nodiscard]] absl::Status Unlink(const std::string& path) override;
  [[nodiscard]] absl::Status Rename(const std::string& from, const std::string& to) override;
  [[nodiscard]] absl::StatusOr<uint64_t> Size(FileHandle file) override;
  [[nodiscard]] absl::Status Truncate(FileHandle file, uint64_t size) override;
  [[nodiscard]] absl::StatusOr<size_t> ReadAt(FileHandle file, uint64_t offset,
                                              std::span<char> out) override;
  [[nodiscard]] absl::Status WriteAndSync(FileHandle file, uint64_t offset,
                                          std::string_view data) override;
  [[nodiscard]] absl::Status MakeDir(FileHandle base, const std::string& path) override;
  [[nodiscard]] absl::StatusOr<FileHandle> OpenDir(FileHandle base, const std::string& path,
                                                   Resolve resolve) override;
  [[nodiscard]] absl::Status SyncOpenDir(FileHandle dir) override;
  [[nodiscard]] absl::StatusOr<FileHandle> OpenAt(FileHandle dir, const std::string& name,
                                                  OpenMode mode) override;
  [[nodiscard]] absl::Status RenameAt(FileHandle from_dir, const std::string& from,
                                      FileHandle to_dir, const std::string& to) override;
  [[nodiscard]] absl::Status UnlinkAt(FileHandle dir, const std::string& name) override;
  void Write(FileHandle file, uint64_t offset, std::string_view data, IoOp& op) override;
  void Fdatasync(FileHandle file, IoOp& op) override;

  // mkdir -p of a path from the config, every component made durable (DurableDirs::Ensure,
  // with no memory of earlier calls: for one-off callers at startup).
  [[nodiscard]] absl::Status MakeDirs(const std::string& path);

  // Tests only: behave as on a kernel without openat2 (the per-component fallback).
  static void DisableOpenat2ForTest(bool disabled);

  // Delivers queued completions (including ones queued by the callbacks it runs). Returns how
  // many ran.
  size_t RunCompletions();

 private:
  std::deque<std::pair<IoOp*, int32_t>> completions_;
};

// "path: what: strerror(errno)" as an absl::Status with a canonical code for `error`.
[[nodiscard]] absl::Status ErrnoStatus(int error, std::string_view path, std::string_view what);

}  // namespace relais::io
