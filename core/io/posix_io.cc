#include "core/io/posix_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/base/strings.h"

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

absl::StatusOr<FileHandle> PosixIo::Open(const std::string& path, OpenMode mode) {
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
  const int fd = ::open(path.c_str(), flags, 0600);
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
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (prefix.empty()) {
      continue;
    }
    if (::mkdir(prefix.c_str(), 0700) == 0) {
      // The new directory's entry lives in its parent: make it durable, or a crash could lose
      // the directory together with every segment later created in it.
      const size_t slash = prefix.rfind('/');
      const std::string parent = slash == std::string::npos ? "." : prefix.substr(0, slash);
      if (absl::Status s = SyncDir(parent.empty() ? "/" : parent); !s.ok()) {
        return s;
      }
    } else if (errno != EEXIST) {
      return ErrnoStatus(errno, prefix, "mkdir");
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(base::StrCat(path, ": not a directory"));
  }
  return absl::OkStatus();
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
