// tools/relaisd/admin_socket.h — making the admin socket's path safe to bind, so relaisctl
// talks to this daemon and nobody else.
//
// The socket lives in a directory only the daemon's user can write (the default ./var/run is
// created mode 0700, durably): nobody else can put anything at the path or swap it. A
// directory that others can write is refused. What is already at the path is replaced only
// when it is a stale socket of our own user: a file, or a socket that another user created,
// is reported and left alone; a socket answered by one of our processes is another relaisd
// (two must not share a spool). relaisd and relaisctl both check the peer's credentials
// (SO_PEERCRED) on every connection as well.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace relais::relaisd {

// Creates the socket's directory when missing and checks it; removes a stale socket of ours.
// Afterwards the caller binds `path`.
[[nodiscard]] absl::Status PrepareAdminSocketPath(const std::string& path);

// Binds the admin unix socket with mode 0600. Fails if a live daemon answers on it (two
// daemons must never share a spool); removes a stale socket left by a crash.
[[nodiscard]] absl::StatusOr<int> OpenAdminSocket(const std::string& path);

}  // namespace relais::relaisd
