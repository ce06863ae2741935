// tools/relaisd/admin_socket.cc — see admin_socket.h.
#include "tools/relaisd/admin_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "core/base/strings.h"
#include "core/io/posix_io.h"
#include "core/net/listener.h"
#include "core/net/request_server.h"

namespace relais::relaisd {

using base::StrCat;

absl::Status PrepareAdminSocketPath(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  io::PosixIo io;
  if (absl::Status s = io.MakeDirs(dir); !s.ok()) {  // Missing ones made 0700, durably.
    return s;
  }
  const uid_t us = ::geteuid();
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::UnavailableError(
        StrCat("admin socket directory ", dir, ": ", std::strerror(errno)));
  }
  if ((st.st_uid != us && st.st_uid != 0) || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return absl::FailedPreconditionError(StrCat(
        "admin socket directory ", dir, " (owner uid ", st.st_uid, ", mode ",
        absl::StrFormat("%04o", st.st_mode & 07777),
        ") can be written by users other than relaisd's: one of them could put an impostor at ",
        path,
        "; use a directory only relaisd's user can write (the default ./var/run is "
        "created mode 0700)"));
  }
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::OkStatus();
    }
    return absl::UnavailableError(StrCat("admin socket ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        StrCat("admin socket ", path,
               ": something that is not a socket is there; not removing "
               "it"));
  }
  if (st.st_uid != us) {
    return absl::FailedPreconditionError(StrCat("admin socket ", path, ": a socket of uid ",
                                                st.st_uid,
                                                " is there, not of "
                                                "relaisd's user (uid ",
                                                us, "); remove it if it is not meant to be there"));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(StrCat("admin socket ", path, ": path too long"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Someone accepting on the path is another daemon, unless that stops within a moment: a
  // process killed with its accept still armed in io_uring keeps the socket listening until
  // the kernel has torn its ring down, shortly after the process is gone.
  for (int tries = 0;; ++tries) {
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      return absl::UnavailableError(
          StrCat("admin socket ", path, ": socket: ", std::strerror(errno)));
    }
    const bool answered = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    uint32_t peer_uid = 0;
    const bool ours = answered && net::PeerIsUserOrRoot(probe, &peer_uid);
    ::close(probe);
    if (!answered) {
      break;
    }
    if (!ours) {
      return absl::FailedPreconditionError(StrCat("admin socket ", path,
                                                  ": answered by a process of uid ", peer_uid,
                                                  ", not relaisd's user; not replacing it"));
    }
    if (tries == 40) {
      return absl::FailedPreconditionError(StrCat(
          "admin socket ", path, ": another relaisd is running (two must not share a spool)"));
    }
    ::usleep(50'000);
  }
  ::unlink(path.c_str());  // A stale socket of ours, from a crash; nothing answers on it.
  return absl::OkStatus();
}

absl::StatusOr<int> OpenAdminSocket(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(StrCat("admin socket ", path, ": path too long"));
  }
  // A directory only we can write, nothing of anyone else's at the path (see above).
  if (absl::Status s = PrepareAdminSocketPath(path); !s.ok()) {
    return s;
  }
  return net::OpenUnixListener(path);
}

}  // namespace relais::relaisd
