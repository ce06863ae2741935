#include "core/io/durable_dirs.h"

#include "core/base/strings.h"

namespace relais::io {

bool BeneathPathIsPlain(std::string_view relative) {
  if (relative.empty() || relative.front() == '/') {
    return false;
  }
  size_t at = 0;
  while (true) {
    const size_t slash = relative.find('/', at);
    const std::string_view name =
        relative.substr(at, slash == std::string_view::npos ? slash : slash - at);
    if (name.empty() || name == "." || name == ".." || name.find('\0') != std::string_view::npos) {
      return false;
    }
    if (slash == std::string_view::npos) {
      return true;
    }
    at = slash + 1;
  }
}

void DurableDirs::Remember(const std::string& path) {
  if (known_.size() >= known_max_) {
    known_.clear();
    ++stats_.evictions;
  }
  known_.insert(path);
}

void DurableDirs::Forget(const std::string& path) {
  const std::string below = path + "/";
  std::erase_if(known_, [&](const std::string& k) { return k == path || k.starts_with(below); });
}

absl::Status DurableDirs::MakeDurable(FileHandle parent, const std::string& parent_path,
                                      FileHandle base, const std::string& name) {
  bool made = false;
  if (absl::Status s = io_.MakeDir(base, name); s.ok()) {
    made = true;
    ++stats_.made;
  } else if (s.code() != absl::StatusCode::kAlreadyExists) {
    return s;
  }
  // The entry is durable only once its parent is synced. Found rather than made is no
  // excuse: whoever made it may have died (or not yet come) between mkdir and this fsync.
  absl::Status synced = parent.valid() ? io_.SyncOpenDir(parent) : io_.SyncDir(parent_path);
  if (synced.ok()) {
    ++stats_.synced;
    return absl::OkStatus();
  }
  if (!made && synced.code() == absl::StatusCode::kPermissionDenied) {
    // An ancestor we may not even read (another user's directory above ours): we can neither
    // have created the entry nor make it more durable; whoever owns it answers for it.
    ++stats_.unreadable;
    return absl::OkStatus();
  }
  return synced;
}

absl::Status DurableDirs::Ensure(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') {
    p.pop_back();
  }
  if (p.empty() || p == "/" || p == ".") {
    return absl::OkStatus();  // The root of the walk: trusted as is.
  }
  if (Known(p)) {
    return absl::OkStatus();
  }
  // Each prefix ending before a '/' (and the whole path), outermost first.
  size_t at = 0;
  while (at != std::string::npos) {
    at = p.find('/', at + 1);
    const std::string prefix = p.substr(0, at);
    // "a//b" and "./a" hold prefixes that name no new directory.
    if (prefix.empty() || prefix.back() == '/' || prefix == "." || prefix.ends_with("/.") ||
        Known(prefix)) {
      continue;
    }
    const size_t slash = prefix.rfind('/');
    const std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : prefix.substr(0, slash));
    if (absl::Status s = MakeDurable(FileHandle{}, parent, kWorkingDirectory, prefix); !s.ok()) {
      return s;
    }
    // A file (or a dangling symlink) where a directory should be fails here, not later.
    auto dir = io_.OpenDir(kWorkingDirectory, prefix, Resolve::kFollow);
    if (!dir.ok()) {
      return dir.status();
    }
    io_.Close(*dir);
    Remember(prefix);
  }
  return absl::OkStatus();
}

absl::StatusOr<FileHandle> DurableDirs::EnsureBeneath(const std::string& root,
                                                      const std::string& relative) {
  if (!BeneathPathIsPlain(relative)) {
    return absl::InvalidArgumentError(
        base::StrCat(root, "/", relative, ": refused, not a plain relative path below ", root));
  }
  if (absl::Status s = Ensure(root); !s.ok()) {
    return s;
  }
  auto opened = io_.OpenDir(kWorkingDirectory, root, Resolve::kFollow);
  if (!opened.ok()) {
    return opened.status();
  }
  FileHandle dir = *opened;
  std::string key = root;
  size_t at = 0;
  while (true) {
    const size_t slash = relative.find('/', at);
    const std::string name = relative.substr(at, slash == std::string::npos ? slash : slash - at);
    key = base::StrCat(key, "/", name);
    const bool known = Known(key);
    if (!known) {
      if (absl::Status s = MakeDurable(dir, std::string(), dir, name); !s.ok()) {
        io_.Close(dir);
        return s;
      }
    }
    auto next = io_.OpenDir(dir, name, Resolve::kBeneath);
    io_.Close(dir);
    if (!next.ok()) {
      return next.status();
    }
    dir = *next;
    if (!known) {
      Remember(key);
    }
    if (slash == std::string::npos) {
      return dir;
    }
    at = slash + 1;
  }
}

}  // namespace relais::io
