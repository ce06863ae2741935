// core/io/durable_dirs.h — make a directory exist and be durable, once per process.
//
// A directory that the program can see is not yet durable: its entry lives in its parent, and
// only an fsync of the parent makes it survive a power cut. A kill -9 between someone's mkdir
// and that fsync, another shard that created it a moment ago, or an installer that just made
// it, all leave a directory that exists but may vanish, with everything later written into it.
// So the rule is not "sync the parent when our mkdir succeeded" but: before the first byte in
// a directory is acknowledged, each component of its path has had its parent synced by this
// process, whoever created it. DurableDirs does that once per directory and remembers it
// (a bounded set), so the steady state costs no mkdir and no directory fsync.
//
// This is the logic above the io::Io seam: it uses only Io's primitives (MakeDir, SyncDir,
// OpenDir, SyncOpenDir), so the simulated disk (tests/sim) runs exactly what the daemon runs.
//
// One object per owner (a shard's spool, a delivery worker); not thread-safe. Several owners
// may race on the same directories: each one syncs before it trusts, so whichever wins the
// mkdir, nobody acknowledges data in a directory it has not itself made durable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>

#include "core/io/io.h"

namespace relais::io {

// True when `relative` is one or more plain names joined by single '/': not empty, not
// absolute, no empty, "." or ".." component, no NUL. What Resolve::kBeneath accepts by name.
[[nodiscard]] bool BeneathPathIsPlain(std::string_view relative);

class DurableDirs {
 public:
  struct Stats {
    uint64_t made = 0;        // mkdir calls that created a directory.
    uint64_t synced = 0;      // Directory fsyncs done to make an entry durable.
    uint64_t evictions = 0;   // Times the known set reached known_max and was emptied.
    uint64_t unreadable = 0;  // Parents of pre-existing components we may not open to sync.
  };

  // `known_max` bounds the set of directories remembered as durable; when full it is emptied
  // (each directory then costs one more round of syncs, nothing else).
  explicit DurableDirs(Io& io, size_t known_max = 4096) : io_(io), known_max_(known_max) {}

  // `path` comes from the config (symlinks followed, absolute or relative to the working
  // directory). Each component, outermost first, is created if missing (mode 0700) and its
  // parent synced, whether it was created now or found; the working directory or "/" is the
  // root that is trusted as is. A path already known costs nothing.
  [[nodiscard]] absl::Status Ensure(const std::string& path);

  // `relative` below `root`: Ensure(root), then each component of `relative` is created and
  // made durable the same way, every step resolved with Resolve::kBeneath from the directory
  // above it, so nothing outside `root` is created, opened or synced whatever `relative`
  // holds ("..", an absolute path, a symlink to elsewhere: kInvalidArgument). Returns the
  // final directory, open; the caller closes it.
  [[nodiscard]] absl::StatusOr<FileHandle> EnsureBeneath(const std::string& root,
                                                         const std::string& relative);

  [[nodiscard]] bool Known(const std::string& path) const { return known_.contains(path); }
  // Forgets `path` and everything below it, e.g. a mailbox removed behind our back: the next
  // EnsureBeneath creates and syncs it again.
  void Forget(const std::string& path);

  [[nodiscard]] const Stats& stats() const { return stats_; }

 private:
  // mkdir (kAlreadyExists is fine) then fsync of the parent, which is `parent` (open) when
  // valid, else the directory named `parent_path`.
  absl::Status MakeDurable(FileHandle parent, const std::string& parent_path, FileHandle base,
                           const std::string& name);
  void Remember(const std::string& path);

  Io& io_;
  const size_t known_max_;
  std::unordered_set<std::string> known_;
  Stats stats_;
};

}  // namespace relais::io
