#include "core/io/posix_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/base/strings.h"
#include "core/io/durable_dirs.h"

namespace relais::io {

absl::Status ErrnoStatus(int error, std::string_view path, std::string_view what) {
  const std::string message = base::StrCat(path, ": ", what, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case EAGAIN:
    case EINTR:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

namespace {

static_assert(kWorkingDirectory.fd == AT_FDCWD);

// False once openat2 answered ENOSYS (kernel before 5.6) or EPERM (a seccomp filter that
// does not know it; openat2 has no other EPERM for a read-only directory open).
std::atomic<bool> openat2_available{true};

int OpenFlags(OpenMode mode) {
  int flags = O_CLOEXEC;
  switch (mode) {
    case OpenMode::kReadOnly:
      flags |= O_RDONLY;
      break;
    case OpenMode::kCreateExclusive:
      flags |= O_RDWR | O_CREAT | O_EXCL;
      break;
    case OpenMode::kReadWrite:
      flags |= O_RDWR;
      break;
  }
  return flags;
}

absl::Status Escapes(std::string_view path, std::string_view why) {
  return absl::InvalidArgumentError(base::StrCat(path, ": refused, ", why));
}

// The fallback of Resolve::kBeneath: one openat per component, each a plain name, no symlink.
absl::StatusOr<FileHandle> OpenBeneathByComponent(int base, const std::string& path) {
  int dir = base;
  size_t at = 0;
  while (true) {
    const size_t slash = path.find('/', at);
    const std::string name = path.substr(at, slash == std::string::npos ? slash : slash - at);
    const int next = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    const int error = errno;
    // O_NOFOLLOW | O_DIRECTORY on a symlink says ELOOP or ENOTDIR: tell a symlink (refused
    // for good) from a file in the way (an operator's mistake, retried).
    struct stat st;
    const bool symlink = next < 0 && (error == ELOOP || error == ENOTDIR) &&
                         ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                         S_ISLNK(st.st_mode);
    if (dir != base) {
      ::close(dir);
    }
    if (next < 0) {
      if (symlink) {
        return Escapes(path, "a symlink on the way");
      }
      return ErrnoStatus(error, path, "open directory");
    }
    dir = next;
    if (slash == std::string::npos) {
      return FileHandle{dir};
    }
    at = slash + 1;
  }
}

}  // namespace

void PosixIo::DisableOpenat2ForTest(bool disabled) { openat2_available = !disabled; }

absl::Status PosixIo::MakeDir(FileHandle base, const std::string& path) {
  if (::mkdirat(base.fd, path.c_str(), 0700) != 0) {
    return ErrnoStatus(errno, path, "mkdir");
  }
  return absl::OkStatus();
}

absl::StatusOr<FileHandle> PosixIo::OpenDir(FileHandle base, const std::string& path,
                                            Resolve resolve) {
  if (resolve == Resolve::kFollow) {
    const int fd = ::openat(base.fd, path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      return ErrnoStatus(errno, path, "open directory");
    }
    return FileHandle{fd};
  }
  // Refused by name first, whatever the kernel offers: the same rule with or without openat2.
  if (!BeneathPathIsPlain(path)) {
    return Escapes(path, "not a plain relative path (empty, '.' or '..' component, or absolute)");
  }
  if (openat2_available.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    const long fd = ::syscall(SYS_openat2, base.fd, path.c_str(), &how, sizeof(how));
    if (fd >= 0) {
      return FileHandle{static_cast<int32_t>(fd)};
    }
    if (errno == EXDEV || errno == ELOOP) {
      return Escapes(path, "it leads outside its root");
    }
    if (errno != ENOSYS && errno != EPERM) {
      return ErrnoStatus(errno, path, "open directory");
    }
    openat2_available = false;
  }
  return OpenBeneathByComponent(base.fd, path);
}

absl::Status PosixIo::SyncOpenDir(FileHandle dir) {
  if (::fsync(dir.fd) != 0) {
    return ErrnoStatus(errno, base::StrCat("directory fd ", dir.fd), "fsync directory");
  }
  return absl::OkStatus();
}

absl::StatusOr<FileHandle> PosixIo::OpenAt(FileHandle dir, const std::string& name, OpenMode mode) {
  const int fd = ::openat(dir.fd, name.c_str(), OpenFlags(mode) | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return ErrnoStatus(errno, name, "open");
  }
  return FileHandle{fd};
}

absl::Status PosixIo::RenameAt(FileHandle from_dir, const std::string& from, FileHandle to_dir,
                               const std::string& to) {
  return ::renameat(from_dir.fd, from.c_str(), to_dir.fd, to.c_str()) == 0
             ? absl::OkStatus()
             : ErrnoStatus(errno, to, "rename");
}

absl::Status PosixIo::UnlinkAt(FileHandle dir, const std::string& name) {
  return ::unlinkat(dir.fd, name.c_str(), 0) == 0 ? absl::OkStatus()
                                                  : ErrnoStatus(errno, name, "unlink");
}

absl::StatusOr<FileHandle> PosixIo::Open(const std::string& path, OpenMode mode) {
  const int fd = ::open(path.c_str(), OpenFlags(mode), 0600);
  if (fd < 0) {
    return ErrnoStatus(errno, path, "open");
  }
  return FileHandle{fd};
}

void PosixIo::Close(FileHandle file) {
  if (file.valid()) {
    ::close(file.fd);
  }
}

absl::StatusOr<std::vector<std::string>> PosixIo::ListDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    return ErrnoStatus(errno, path, "opendir");
  }
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") {
      names.emplace_back(name);
    }
  }
  ::closedir(dir);
  return names;
}

absl::Status PosixIo::MakeDirs(const std::string& path) {
  DurableDirs dirs(*this);
  return dirs.Ensure(path);
}

absl::Status PosixIo::SyncDir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno, path, "open directory");
  }
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoStatus(error, path, "fsync directory");
}

absl::Status PosixIo::Unlink(const std::string& path) {
  return ::unlink(path.c_str()) == 0 ? absl::OkStatus() : ErrnoStatus(errno, path, "unlink");
}

absl::Status PosixIo::Rename(const std::string& from, const std::string& to) {
  return ::rename(from.c_str(), to.c_str()) == 0 ? absl::OkStatus()
                                                 : ErrnoStatus(errno, to, "rename");
}

absl::StatusOr<uint64_t> PosixIo::Size(FileHandle file) {
  struct stat st;
  if (::fstat(file.fd, &st) != 0) {
    return ErrnoStatus(errno, base::StrCat("fd ", file.fd), "fstat");
  }
  return static_cast<uint64_t>(st.st_size);
}

absl::Status PosixIo::Truncate(FileHandle file, uint64_t size) {
  if (::ftruncate(file.fd, static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, base::StrCat("fd ", file.fd), "ftruncate");
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> PosixIo::ReadAt(FileHandle file, uint64_t offset, std::span<char> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(file.fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoStatus(errno, base::StrCat("fd ", file.fd), "pread");
    }
    if (n == 0) {
      break;
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

absl::Status PosixIo::WriteAndSync(FileHandle file, uint64_t offset, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(file.fd, data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoStatus(errno, base::StrCat("fd ", file.fd), "pwrite");
    }
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(file.fd) != 0) {
    return ErrnoStatus(errno, base::StrCat("fd ", file.fd), "fdatasync");
  }
  return absl::OkStatus();
}

void PosixIo::Write(FileHandle file, uint64_t offset, std::string_view data, IoOp& op) {
  ssize_t n;
  do {
    n = ::pwrite(file.fd, data.data(), data.size(), static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  completions_.emplace_back(&op, n < 0 ? -errno : static_cast<int32_t>(n));
}

void PosixIo::Fdatasync(FileHandle file, IoOp& op) {
  const int rc = ::fdatasync(file.fd);
  completions_.emplace_back(&op, rc < 0 ? -errno : 0);
}

size_t PosixIo::RunCompletions() {
  size_t ran = 0;
  while (!completions_.empty()) {
    auto [op, result] = completions_.front();
    completions_.pop_front();
    op->OnIoComplete(result);
    ++ran;
  }
  return ran;
}

}  // namespace relais::io
