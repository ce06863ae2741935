// tests/sim/sim_io.cc — see sim_io.h.
#include "tests/sim/sim_io.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/base/strings.h"
#include "core/io/posix_io.h"

namespace relais::sim {
namespace {

constexpr uint64_t kDirectory = 0;  // The inode number of a directory entry.

// ("/a/b", "c") from "/a/b/c"; the root is "".
std::pair<std::string, std::string> Split(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    return {"", path};
  }
  return {path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

bool SimIo::Chance(double p) {
  return p > 0 && static_cast<double>(random_.Next() >> 11) * 0x1.0p-53 < p;
}

void SimIo::Apply(std::string& content, uint64_t offset, std::string_view data) {
  if (content.size() < offset + data.size()) {
    content.resize(offset + data.size(), '\0');  // A hole reads as zeros.
  }
  std::memcpy(content.data() + offset, data.data(), data.size());
}

SimIo::Inode* SimIo::InodeOf(io::FileHandle file) {
  if (dead_) {
    return nullptr;  // Every handle operation fails with EBADF.
  }
  const auto it = open_.find(file.fd);
  return it == open_.end() ? nullptr : &inodes_[it->second];
}

absl::StatusOr<io::FileHandle> SimIo::Open(const std::string& path, io::OpenMode mode) {
  if (dead_) {
    return io::ErrnoStatus(EIO, path, "open");
  }
  const auto [dir, name] = Split(path);
  const auto d = dirs_.find(dir);
  if (!dir.empty() && d == dirs_.end()) {
    return io::ErrnoStatus(ENOENT, path, "open");
  }
  Directory& directory = dirs_[dir];
  const auto entry = directory.visible.find(name);
  uint64_t inode = 0;
  if (mode == io::OpenMode::kCreateExclusive) {
    if (entry != directory.visible.end()) {
      return io::ErrnoStatus(EEXIST, path, "open");
    }
    inode = next_inode_++;
    inodes_[inode] = Inode{};
    directory.visible[name] = inode;
  } else {
    if (entry == directory.visible.end() || entry->second == kDirectory) {
      return io::ErrnoStatus(ENOENT, path, "open");
    }
    inode = entry->second;
  }
  const int32_t fd = next_fd_++;
  open_[fd] = inode;
  return io::FileHandle{fd};
}

void SimIo::Close(io::FileHandle file) { open_.erase(file.fd); }

absl::StatusOr<std::vector<std::string>> SimIo::ListDir(const std::string& path) {
  if (dead_) {
    return io::ErrnoStatus(EIO, path, "opendir");
  }
  const auto d = dirs_.find(path);
  if (d == dirs_.end()) {
    return io::ErrnoStatus(ENOENT, path, "opendir");
  }
  std::vector<std::string> names;
  for (const auto& [name, inode] : d->second.visible) {
    names.push_back(name);
  }
  return names;
}

absl::Status SimIo::MakeDirs(const std::string& path) {
  if (dead_) {
    return io::ErrnoStatus(EIO, path, "mkdir");
  }
  // Each component, outermost first; the parents are synced (the contract of MakeDirs).
  size_t at = 0;
  while (at != std::string::npos) {
    at = path.find('/', at + 1);
    const std::string prefix = path.substr(0, at);
    if (prefix.empty()) {
      continue;
    }
    const auto [parent, name] = Split(prefix);
    Directory& p = dirs_[parent];
    p.visible[name] = kDirectory;
    p.durable[name] = kDirectory;
    p.durable_exists = true;
    Directory& self = dirs_[prefix];
    self.durable_exists = true;
  }
  return absl::OkStatus();
}

absl::Status SimIo::SyncDir(const std::string& path) {
  if (dead_) {
    return io::ErrnoStatus(EIO, path, "fsync dir");
  }
  const auto d = dirs_.find(path);
  if (d == dirs_.end()) {
    return io::ErrnoStatus(ENOENT, path, "fsync dir");
  }
  d->second.durable = d->second.visible;
  return absl::OkStatus();
}

absl::Status SimIo::Unlink(const std::string& path) {
  if (dead_) {
    return io::ErrnoStatus(EIO, path, "unlink");
  }
  const auto [dir, name] = Split(path);
  const auto d = dirs_.find(dir);
  if (d == dirs_.end() || d->second.visible.erase(name) == 0) {
    return io::ErrnoStatus(ENOENT, path, "unlink");
  }
  return absl::OkStatus();
}

absl::Status SimIo::Rename(const std::string& from, const std::string& to) {
  if (dead_) {
    return io::ErrnoStatus(EIO, from, "rename");
  }
  const auto [from_dir, from_name] = Split(from);
  const auto [to_dir, to_name] = Split(to);
  const auto f = dirs_.find(from_dir);
  if (f == dirs_.end() || !f->second.visible.contains(from_name) || !dirs_.contains(to_dir)) {
    return io::ErrnoStatus(ENOENT, from, "rename");
  }
  const uint64_t inode = f->second.visible[from_name];
  f->second.visible.erase(from_name);
  dirs_[to_dir].visible[to_name] = inode;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> SimIo::Size(io::FileHandle file) {
  Inode* inode = InodeOf(file);
  if (inode == nullptr) {
    return io::ErrnoStatus(EBADF, "?", "fstat");
  }
  return inode->visible.size();
}

absl::Status SimIo::Truncate(io::FileHandle file, uint64_t size) {
  Inode* inode = InodeOf(file);
  if (inode == nullptr) {
    return io::ErrnoStatus(EBADF, "?", "ftruncate");
  }
  inode->visible.resize(size, '\0');
  // Remembered like a write: durable only once synced. An empty write at `size` with the
  // content cut there stands for it at a power cut.
  inode->unsynced.push_back({size, std::string(), true});
  return absl::OkStatus();
}

absl::StatusOr<size_t> SimIo::ReadAt(io::FileHandle file, uint64_t offset, std::span<char> out) {
  Inode* inode = InodeOf(file);
  if (inode == nullptr) {
    return io::ErrnoStatus(EBADF, "?", "pread");
  }
  if (offset >= inode->visible.size()) {
    return 0;
  }
  const size_t n = std::min<size_t>(out.size(), inode->visible.size() - offset);
  std::memcpy(out.data(), inode->visible.data() + offset, n);
  return n;
}

absl::Status SimIo::WriteAndSync(io::FileHandle file, uint64_t offset, std::string_view data) {
  Inode* inode = InodeOf(file);
  if (inode == nullptr) {
    return io::ErrnoStatus(EBADF, "?", "pwrite");
  }
  if (inode->poisoned) {
    violations_.push_back("WriteAndSync to a file whose fdatasync failed");
  }
  Apply(inode->visible, offset, data);
  inode->durable = inode->visible;
  inode->unsynced.clear();
  return absl::OkStatus();
}

void SimIo::Write(io::FileHandle file, uint64_t offset, std::string_view data, io::IoOp& op) {
  Inode* inode = InodeOf(file);
  if (inode == nullptr) {
    Complete(op, -EBADF);
    return;
  }
  if (inode->poisoned) {
    violations_.push_back(
        base::StrCat("write of ", data.size(), " bytes to a file whose fdatasync failed"));
  }
  if (Chance(faults_.write_error)) {
    ++write_errors_;
    Complete(op, Chance(0.5) ? -EIO : -ENOSPC);
    return;
  }
  size_t n = data.size();
  if (n > 1 && Chance(faults_.short_write)) {
    n = 1 + static_cast<size_t>(random_.Below(n - 1));
  }
  Apply(inode->visible, offset, data.substr(0, n));
  inode->unsynced.push_back({offset, std::string(data.substr(0, n)), false});
  Complete(op, static_cast<int32_t>(n));
}

void SimIo::Fdatasync(io::FileHandle file, io::IoOp& op) {
  Inode* inode = InodeOf(file);
  if (inode == nullptr) {
    Complete(op, -EBADF);
    return;
  }
  if (Chance(faults_.sync_error)) {
    // The unsynced writes stay in limbo: a power cut may keep or drop each of them.
    ++sync_errors_;
    inode->poisoned = true;
    Complete(op, Chance(0.5) ? -EIO : -ENOSPC);
    return;
  }
  inode->durable = inode->visible;
  inode->unsynced.clear();
  Complete(op, 0);
}

size_t SimIo::RunCompletions() {
  size_t ran = 0;
  while (!completions_.empty()) {
    const auto [op, result] = completions_.front();
    completions_.pop_front();
    op->OnIoComplete(result);
    ++ran;
  }
  return ran;
}

void SimIo::PowerCut() {
  for (auto& [number, inode] : inodes_) {
    std::string content = inode.durable;
    for (const PendingWrite& w : inode.unsynced) {
      if (!Chance(0.5)) {
        continue;  // Never reached the disk; a later write may have (reordering).
      }
      if (w.truncate) {
        content.resize(w.offset, '\0');
      } else if (!w.data.empty() && Chance(0.3)) {
        ++torn_writes_;
        Apply(
            content, w.offset,
            std::string_view(w.data).substr(0, static_cast<size_t>(random_.Below(w.data.size()))));
      } else {
        Apply(content, w.offset, w.data);
      }
    }
    inode.durable = content;
    inode.visible = std::move(content);
    inode.unsynced.clear();
    inode.poisoned = false;
  }
  for (auto it = dirs_.begin(); it != dirs_.end();) {
    if (!it->second.durable_exists && !it->first.empty()) {
      it = dirs_.erase(it);
      continue;
    }
    it->second.visible = it->second.durable;
    ++it;
  }
  std::set<uint64_t> reachable;
  for (const auto& [path, dir] : dirs_) {
    for (const auto& [name, inode] : dir.durable) {
      reachable.insert(inode);
    }
  }
  std::erase_if(inodes_, [&](const auto& item) { return !reachable.contains(item.first); });
  open_.clear();
  for (auto& [op, result] : completions_) {
    result = -EIO;
  }
  dead_ = true;
}

void SimIo::Reboot() {
  completions_.clear();
  open_.clear();
  dead_ = false;
}

}  // namespace relais::sim
