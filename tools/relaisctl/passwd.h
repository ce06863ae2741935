// tools/relaisctl/passwd.h — `relaisctl passwd`: writes, deletes and checks entries of the SMTP
// AUTH credentials file ([smtp_auth] credentials; format in protocols/sasl/credentials.h).
//
//   relaisctl passwd [--file F] [--domains a,b] USER   password from stdin; adds or replaces
//   relaisctl passwd [--file F] --delete USER          removes USER's line
//   relaisctl passwd [--file F] --check USER           password from stdin; exit 0 when relaisd
//                                                      would accept it, 1 when not
//
// The password is read from stdin: on a terminal without echo and asked twice, otherwise the
// first line. It is hashed with yescrypt (crypt_gensalt_rn("$y$", default cost) + crypt_rn).
// Every other line of the file (comments, other users) is kept as it is; the user's line is
// replaced in place, keeping its domain list unless --domains is given. The file is written
// atomically: a temporary file in the same directory (mode 0640, the old file's owner and
// group when we may), fsync, rename over the old one, fsync of the directory.
#pragma once

#include <span>

namespace relais::relaisctl {

// `words`: the arguments after "passwd". Returns the exit code (0 done, 1 failed, 2 usage).
[[nodiscard]] int PasswdCommand(std::span<char* const> words);

}  // namespace relais::relaisctl
