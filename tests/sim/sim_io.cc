// tests/sim/sim_io.cc — see sim_io.h.
#include "tests/sim/sim_io.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/base/strings.h"
#include "core/io/durable_dirs.h"
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
  if (mode == io::OpenMode::kCreateExclusive ? Mutate() : dead_) {
    return io::ErrnoStatus(EIO, path, "open");
  }
  const auto [dir, name] = Split(path);
  if (!DirVisible(dir)) {
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
  std::string full;
  (void)Join(io::kWorkingDirectory, path, full);
  const auto d = dirs_.find(full);
  if (d == dirs_.end() || !DirVisible(d->first)) {
    return io::ErrnoStatus(ENOENT, path, "opendir");
  }
  std::vector<std::string> names;
  for (const auto& [name, inode] : d->second.visible) {
    names.push_back(name);
  }
  return names;
}

bool SimIo::Mutate() {
  if (!dead_ && hook_ && ops_until_hook_ > 0 && --ops_until_hook_ == 0) {
    std::function<void()> hook = std::move(hook_);
    hook_ = nullptr;
    hook();
  }
  if (!dead_ && ops_until_cut_ > 0 && --ops_until_cut_ == 0) {
    if (crash_ == Crash::kPowerCut) {
      PowerCut();
    } else {
      Kill();
    }
  }
  return dead_;
}

bool SimIo::Join(io::FileHandle base, const std::string& path, std::string& out) const {
  std::string dir;
  if (base.fd != io::kWorkingDirectory.fd) {
    const auto it = open_dirs_.find(base.fd);
    if (it == open_dirs_.end()) {
      return false;
    }
    dir = it->second;
  }
  // Lexical, as the simulated disk has no symlinks: "." is skipped, ".." goes up.
  std::vector<std::string> parts;
  if (path.empty() || path.front() != '/') {
    size_t at = 1;
    while (!dir.empty() && at <= dir.size()) {
      const size_t slash = dir.find('/', at);
      parts.push_back(dir.substr(at, slash == std::string::npos ? slash : slash - at));
      at = slash == std::string::npos ? dir.size() + 1 : slash + 1;
    }
  }
  size_t at = 0;
  while (at <= path.size()) {
    const size_t slash = path.find('/', at);
    const std::string name = path.substr(at, slash == std::string::npos ? slash : slash - at);
    if (name == "..") {
      if (!parts.empty()) {
        parts.pop_back();
      }
    } else if (!name.empty() && name != ".") {
      parts.push_back(name);
    }
    at = slash == std::string::npos ? path.size() + 1 : slash + 1;
  }
  out.clear();
  for (const std::string& part : parts) {
    out += "/" + part;
  }
  return true;
}

bool SimIo::DirVisible(const std::string& path) const {
  if (path.empty()) {
    return true;
  }
  const auto [parent, name] = Split(path);
  const auto p = dirs_.find(parent);
  if (p == dirs_.end() || !DirVisible(parent)) {
    return false;
  }
  const auto e = p->second.visible.find(name);
  return e != p->second.visible.end() && e->second == kDirectory && dirs_.contains(path);
}

absl::Status SimIo::MakeDir(io::FileHandle base, const std::string& path) {
  if (Mutate()) {
    return io::ErrnoStatus(EIO, path, "mkdir");
  }
  std::string full;
  if (!Join(base, path, full)) {
    return io::ErrnoStatus(EBADF, path, "mkdir");
  }
  if (full.empty()) {
    return io::ErrnoStatus(EEXIST, path, "mkdir");
  }
  ++mkdirs_;
  const auto [parent, name] = Split(full);
  if (!DirVisible(parent)) {
    return io::ErrnoStatus(ENOENT, path, "mkdir");
  }
  Directory& p = dirs_[parent];
  if (p.visible.contains(name)) {
    return io::ErrnoStatus(EEXIST, path, "mkdir");
  }
  // Visible now; durable only when `parent` is synced (and `parent` itself is durable).
  p.visible[name] = kDirectory;
  dirs_[full] = Directory{};
  return absl::OkStatus();
}

absl::StatusOr<io::FileHandle> SimIo::OpenDir(io::FileHandle base, const std::string& path,
                                              io::Resolve resolve) {
  if (dead_) {
    return io::ErrnoStatus(EIO, path, "open directory");
  }
  if (resolve == io::Resolve::kBeneath && !io::BeneathPathIsPlain(path)) {
    return absl::InvalidArgumentError(path + ": refused, not a plain relative path");
  }
  std::string full;
  if (!Join(base, path, full)) {
    return io::ErrnoStatus(EBADF, path, "open directory");
  }
  if (!DirVisible(full)) {
    return io::ErrnoStatus(ENOENT, path, "open directory");
  }
  const int32_t fd = next_fd_++;
  open_dirs_[fd] = full;
  return io::FileHandle{fd};
}

absl::Status SimIo::SyncOpenDir(io::FileHandle dir) {
  const auto it = open_dirs_.find(dir.fd);
  if (dead_ || it == open_dirs_.end()) {
    return io::ErrnoStatus(dead_ ? EIO : EBADF, "?", "fsync dir");
  }
  return SyncDir(it->second.empty() ? std::string() : it->second);
}

absl::StatusOr<io::FileHandle> SimIo::OpenAt(io::FileHandle dir, const std::string& name,
                                             io::OpenMode mode) {
  std::string full;
  if (!Join(dir, name, full)) {
    return io::ErrnoStatus(EBADF, name, "open");
  }
  return Open(full, mode);
}

absl::Status SimIo::RenameAt(io::FileHandle from_dir, const std::string& from,
                             io::FileHandle to_dir, const std::string& to) {
  std::string a;
  std::string b;
  if (!Join(from_dir, from, a) || !Join(to_dir, to, b)) {
    return io::ErrnoStatus(EBADF, from, "rename");
  }
  return Rename(a, b);
}

absl::Status SimIo::UnlinkAt(io::FileHandle dir, const std::string& name) {
  std::string full;
  if (!Join(dir, name, full)) {
    return io::ErrnoStatus(EBADF, name, "unlink");
  }
  return Unlink(full);
}

void SimIo::RemoveTree(const std::string& path) {
  const auto [parent, name] = Split(path);
  if (auto p = dirs_.find(parent); p != dirs_.end()) {
    p->second.visible.erase(name);
    p->second.durable.erase(name);
  }
  const std::string below = path + "/";
  std::erase_if(dirs_,
                [&](const auto& d) { return d.first == path || d.first.starts_with(below); });
}

absl::Status SimIo::SyncDir(const std::string& path) {
  if (Mutate()) {
    return io::ErrnoStatus(EIO, path, "fsync dir");
  }
  ++dir_syncs_;
  std::string full;
  (void)Join(io::kWorkingDirectory, path, full);  // "/", "." and "" all name the root.
  const auto d = dirs_.find(full);
  if (d == dirs_.end() || !DirVisible(d->first)) {
    return io::ErrnoStatus(ENOENT, path, "fsync dir");
  }
  d->second.durable = d->second.visible;
  return absl::OkStatus();
}

absl::Status SimIo::Unlink(const std::string& path) {
  if (Mutate()) {
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
  if (Mutate()) {
    return io::ErrnoStatus(EIO, from, "rename");
  }
  const auto [from_dir, from_name] = Split(from);
  const auto [to_dir, to_name] = Split(to);
  const auto f = dirs_.find(from_dir);
  if (f == dirs_.end() || !DirVisible(from_dir) || !f->second.visible.contains(from_name) ||
      !DirVisible(to_dir)) {
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
  Inode* inode = Mutate() ? nullptr : InodeOf(file);
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
  Inode* inode = Mutate() ? nullptr : InodeOf(file);
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
  Inode* inode = Mutate() ? nullptr : InodeOf(file);
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
  // A parent sorts before its children (it is a prefix of their paths), so its fate is known
  // when theirs is decided.
  std::set<std::string> survivors;
  for (auto it = dirs_.begin(); it != dirs_.end();) {
    if (!it->first.empty()) {
      const auto [parent, name] = Split(it->first);
      const auto p = dirs_.find(parent);
      const bool durable = survivors.contains(parent) && p != dirs_.end() &&
                           p->second.durable.contains(name) &&
                           p->second.durable.at(name) == kDirectory;
      if (!durable) {
        it = dirs_.erase(it);
        continue;
      }
    }
    survivors.insert(it->first);
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
  Kill();
}

void SimIo::Kill() {
  open_.clear();
  open_dirs_.clear();
  for (auto& [op, result] : completions_) {
    result = -EIO;
  }
  dead_ = true;
}

void SimIo::Reboot() {
  completions_.clear();
  open_.clear();
  open_dirs_.clear();
  ops_until_cut_ = 0;
  ops_until_hook_ = 0;
  hook_ = nullptr;
  dead_ = false;
}

}  // namespace relais::sim
