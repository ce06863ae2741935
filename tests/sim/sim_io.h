// tests/sim/sim_io.h — a deterministic, in-memory io::Io with power cuts and injected faults.
//
// Every file has two states: what is durable (survives a power cut) and what the running
// program sees. A Write changes only what the program sees and is remembered as unsynced; an
// Fdatasync makes the file's unsynced writes durable. Directory entries work the same way: a
// created, renamed or unlinked name becomes durable only when its directory is synced, and
// that holds for directories too: a MakeDir is visible at once but survives a power cut only
// once its parent has been synced (and the parent's own entry, up to the root). So a crash
// between a mkdir and the parent's fsync leaves a directory that the next program run sees
// but that the next power cut takes away, with everything in it; Kill() produces that state.
//
// PowerCut() is the crash: every file falls back to its durable state plus a random subset of
// its unsynced writes (so later writes may survive while earlier ones do not: reordering), and
// any surviving write may be torn (only a prefix of it lands). Names not yet synced are lost.
// Then the program starts over on what is left. Kill() is the other crash (kill -9, OOM): the
// program dies, the kernel keeps everything it was told, synced or not.
//
// Faults (seeded): a Write may fail with EIO or ENOSPC (nothing of it applied) or be short;
// an Fdatasync may fail with EIO or ENOSPC, after which the file's unsynced writes are in limbo
// (they may or may not survive a power cut, as dirty pages after a failed writeback on Linux) and
// the file is poisoned: any later write to it is recorded as a violation, because the program
// must not trust that file again (no retry-fsync-and-hope).
//
// Completions are queued and delivered by RunCompletions(), never inside the call. One thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/base/random.h"
#include "core/io/io.h"

namespace relais::sim {

struct SimFaults {
  double write_error = 0;  // Probability that a Write fails (EIO or ENOSPC, half each).
  double short_write = 0;  // Probability that a Write transfers only part of its bytes.
  double sync_error = 0;   // Probability that an Fdatasync fails (EIO or ENOSPC, half each).
};

class SimIo final : public io::Io {
 public:
  explicit SimIo(uint64_t seed) : random_(seed) {}

  void set_faults(const SimFaults& faults) { faults_ = faults; }
  // The crash: see above. From here until Reboot() the old program is dead: its queued
  // completions report EIO (it never answered anyone) and every further call fails without
  // touching the disk, so it can be torn down without its teardown writing anything.
  void PowerCut();
  // A crash (PowerCut or Kill) just before the `ops`-th mutating call from now (mkdir,
  // create, rename, unlink, write, sync); that call and all after it fail with EIO until
  // Reboot(). 0: never.
  enum class Crash : uint8_t { kPowerCut, kKill };
  void CrashBefore(uint64_t ops, Crash crash) {
    ops_until_cut_ = ops;
    crash_ = crash;
  }
  // Runs `hook` once, just before the `ops`-th mutating call from now: another thread's work
  // (a second shard) interleaved at that exact point. The hook runs once; its own calls count
  // toward a crash scheduled by CrashBefore.
  void InterleaveBefore(uint64_t ops, std::function<void()> hook) {
    ops_until_hook_ = ops;
    hook_ = std::move(hook);
  }
  [[nodiscard]] bool dead() const { return dead_; }
  // The program is killed: its open files and queued completions die with it (-EIO), the
  // disk keeps both what is durable and what is only visible. Reboot() starts the next run.
  void Kill();
  void Reboot();
  // An operator's `rm -rf path` followed by a sync: gone, durably.
  void RemoveTree(const std::string& path);
  // Delivers queued completions (and any they queue). Returns how many ran.
  size_t RunCompletions();

  // Writes to a file after an Fdatasync on it failed (must stay empty).
  [[nodiscard]] const std::vector<std::string>& violations() const { return violations_; }
  [[nodiscard]] uint64_t write_errors() const { return write_errors_; }
  [[nodiscard]] uint64_t sync_errors() const { return sync_errors_; }
  [[nodiscard]] uint64_t torn_writes() const { return torn_writes_; }

  // io::Io.
  [[nodiscard]] absl::StatusOr<io::FileHandle> Open(const std::string& path,
                                                    io::OpenMode mode) override;
  void Close(io::FileHandle file) override;
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  [[nodiscard]] absl::Status SyncDir(const std::string& path) override;
  [[nodiscard]] absl::Status Unlink(const std::string& path) override;
  [[nodiscard]] absl::Status Rename(const std::string& from, const std::string& to) override;
  [[nodiscard]] absl::StatusOr<uint64_t> Size(io::FileHandle file) override;
  [[nodiscard]] absl::Status Truncate(io::FileHandle file, uint64_t size) override;
  [[nodiscard]] absl::StatusOr<size_t> ReadAt(io::FileHandle file, uint64_t offset,
                                              std::span<char> out) override;
  [[nodiscard]] absl::Status WriteAndSync(io::FileHandle file, uint64_t offset,
                                          std::string_view data) override;
  [[nodiscard]] absl::Status MakeDir(io::FileHandle base, const std::string& path) override;
  [[nodiscard]] absl::StatusOr<io::FileHandle> OpenDir(io::FileHandle base, const std::string& path,
                                                       io::Resolve resolve) override;
  [[nodiscard]] absl::Status SyncOpenDir(io::FileHandle dir) override;
  [[nodiscard]] absl::StatusOr<io::FileHandle> OpenAt(io::FileHandle dir, const std::string& name,
                                                      io::OpenMode mode) override;
  [[nodiscard]] absl::Status RenameAt(io::FileHandle from_dir, const std::string& from,
                                      io::FileHandle to_dir, const std::string& to) override;
  [[nodiscard]] absl::Status UnlinkAt(io::FileHandle dir, const std::string& name) override;
  void Write(io::FileHandle file, uint64_t offset, std::string_view data, io::IoOp& op) override;

  // Counts of the directory primitives called (what the durability rules cost).
  [[nodiscard]] uint64_t mkdirs() const { return mkdirs_; }
  [[nodiscard]] uint64_t dir_syncs() const { return dir_syncs_; }
  void Fdatasync(io::FileHandle file, io::IoOp& op) override;

 private:
  struct PendingWrite {
    uint64_t offset;  // For a truncate: the new size.
    std::string data;
    bool truncate;
  };
  struct Inode {
    std::string durable;
    std::string visible;
    std::vector<PendingWrite> unsynced;  // In the order written.
    bool poisoned = false;               // An Fdatasync on it failed.
  };
  // A name -> inode map per directory, as seen and as durable. A directory survives a power
  // cut when its name is in its parent's durable map and its parent survives.
  struct Directory {
    std::map<std::string, uint64_t> visible;
    std::map<std::string, uint64_t> durable;
  };

  static void Apply(std::string& content, uint64_t offset, std::string_view data);
  Inode* InodeOf(io::FileHandle file);
  bool Chance(double p);
  void Complete(io::IoOp& op, int32_t result) { completions_.emplace_back(&op, result); }
  // Called first by every mutating call: counts down to a scheduled power cut. True: dead.
  bool Mutate();
  // The full path of `path` below the directory `base` ("" for the root). False: bad handle.
  bool Join(io::FileHandle base, const std::string& path, std::string& out) const;
  // True when `path` is a directory the program can see.
  bool DirVisible(const std::string& path) const;

  base::Random random_;
  SimFaults faults_;
  std::map<uint64_t, Inode> inodes_;
  std::map<std::string, Directory> dirs_;     // By full path, without a trailing slash.
  std::map<int32_t, uint64_t> open_;          // fd -> inode
  std::map<int32_t, std::string> open_dirs_;  // fd -> directory path
  uint64_t ops_until_cut_ = 0;
  Crash crash_ = Crash::kPowerCut;
  uint64_t ops_until_hook_ = 0;
  std::function<void()> hook_;
  uint64_t mkdirs_ = 0;
  uint64_t dir_syncs_ = 0;
  int32_t next_fd_ = 3;
  uint64_t next_inode_ = 1;
  std::deque<std::pair<io::IoOp*, int32_t>> completions_;
  std::vector<std::string> violations_;
  bool dead_ = false;
  uint64_t write_errors_ = 0;
  uint64_t sync_errors_ = 0;
  uint64_t torn_writes_ = 0;
};

}  // namespace relais::sim
