#include "tools/relaisctl/passwd.h"

#include <crypt.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "core/base/strings.h"
#include "protocols/sasl/credentials.h"
#include "tools/cli/args.h"

ABSL_FLAG(std::string, file, "/etc/relais/passwd",
          "passwd: the credentials file ([smtp_auth] credentials)");
ABSL_FLAG(std::string, domains, "",
          "passwd: the domains the user may send from besides its own (a,b); default: keep");
ABSL_FLAG(bool, delete, false, "passwd: remove the user's line");
ABSL_FLAG(bool, check, false, "passwd: check a password from stdin against the file");

namespace relais::relaisctl {
namespace {

constexpr char kUsage[] =
    "usage: relaisctl passwd [--file F] [--domains a,b] USER   (password from stdin)\n"
    "       relaisctl passwd [--file F] --delete USER\n"
    "       relaisctl passwd [--file F] --check USER           (password from stdin)\n";
// A password is a line a person or a script types; this only bounds memory.
constexpr size_t kPasswordBytesMax = 4096;

// Wipes a string holding a secret before it is freed.
struct Secret {
  std::string text;
  ~Secret() { explicit_bzero(text.data(), text.size()); }
};

// Reads one line from stdin (without its line end). False at EOF before any byte or on error.
bool ReadLine(Secret& out) {
  out.text.clear();
  char c;
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return n == 0 && !out.text.empty();
    }
    if (c == '\n') {
      break;
    }
    if (out.text.size() >= kPasswordBytesMax) {
      return false;
    }
    out.text.push_back(c);
  }
  if (!out.text.empty() && out.text.back() == '\r') {
    out.text.pop_back();
  }
  return true;
}

// Asks on the terminal with echo off.
bool Prompt(const char* question, Secret& out) {
  termios saved{};
  const bool tty = ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (tty) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::fputs(question, stderr);
  std::fflush(stderr);
  const bool ok = ReadLine(out);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  }
  return ok;
}

// The password: asked twice on a terminal, else the first line of stdin. Empty on failure
// (after saying why).
bool ReadPassword(bool confirm, Secret& password) {
  if (::isatty(STDIN_FILENO)) {
    if (!Prompt("Password: ", password)) {
      std::fprintf(stderr, "relaisctl: no password given\n");
      return false;
    }
    if (confirm) {
      Secret again;
      if (!Prompt("Again: ", again) || again.text != password.text) {
        std::fprintf(stderr, "relaisctl: the passwords differ; nothing changed\n");
        return false;
      }
    }
  } else if (!ReadLine(password)) {
    std::fprintf(stderr, "relaisctl: no password on stdin (one line, at most %zu bytes)\n",
                 kPasswordBytesMax);
    return false;
  }
  if (password.text.empty()) {
    std::fprintf(stderr, "relaisctl: an empty password is refused\n");
    return false;
  }
  return true;
}

// A yescrypt hash of `password` with a fresh random salt at libxcrypt's default cost.
std::string Hash(const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  // No random bytes given: libxcrypt draws them from the kernel (getrandom).
  if (crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof(setting)) == nullptr) {
    std::fprintf(stderr, "relaisctl: crypt_gensalt_rn: %s\n", std::strerror(errno));
    return "";
  }
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_rn(password.c_str(), setting, data.get(), sizeof(*data));
  std::string hash = out != nullptr && out[0] != '*' ? out : "";
  explicit_bzero(data.get(), sizeof(*data));
  if (hash.empty()) {
    std::fprintf(stderr, "relaisctl: crypt_rn failed: %s\n", std::strerror(errno));
  }
  return hash;
}

// Reads `path` whole. Missing: true with `exists` false.
bool ReadExisting(const std::string& path, std::string& text, bool& exists, struct stat& st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      exists = false;
      return true;
    }
    std::fprintf(stderr, "relaisctl: %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  exists = true;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "relaisctl: %s: not a regular file\n", path.c_str());
    ::close(fd);
    return false;
  }
  char buffer[16384];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) != 0) {
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      std::fprintf(stderr, "relaisctl: %s: read: %s\n", path.c_str(), std::strerror(errno));
      ::close(fd);
      return false;
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The directory holding `path`, where its temporary file goes and whose entry changes.
std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// Replaces `path` with `text` so that a crash leaves either the old file or the new one whole.
bool WriteAtomically(const std::string& path, const std::string& text, bool exists,
                     const struct stat& old) {
  const std::string dir = DirOf(path);
  std::string temp = path + ".tmp.XXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);  // Mode 0600 until the fchmod below.
  if (fd < 0) {
    std::fprintf(stderr, "relaisctl: cannot create a file next to %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return false;
  }
  auto fail = [&](const char* what) {
    std::fprintf(stderr, "relaisctl: %s %s: %s\n", what, temp.c_str(), std::strerror(errno));
    ::close(fd);
    ::unlink(temp.c_str());
    return false;
  };
  // The daemon's group reads the file (0640); keep the owner and group the operator gave the
  // old file (chown works for root; anyone else keeps their own and their group when allowed).
  if (exists && ::fchown(fd, old.st_uid, old.st_gid) != 0 &&
      ::fchown(fd, static_cast<uid_t>(-1), old.st_gid) != 0 && old.st_gid != getegid()) {
    std::fprintf(stderr, "relaisctl: warning: cannot give %s the group %u of the old file\n",
                 path.c_str(), static_cast<unsigned>(old.st_gid));
  }
  if (::fchmod(fd, 0640) != 0) {
    return fail("fchmod");
  }
  if (!WriteAll(fd, text)) {
    return fail("write");
  }
  // The bytes must be on disk before the rename makes them the file: otherwise a crash could
  // leave an empty credentials file under the real name.
  if (::fsync(fd) != 0) {
    return fail("fsync");
  }
  if (::close(fd) != 0) {
    std::fprintf(stderr, "relaisctl: close %s: %s\n", temp.c_str(), std::strerror(errno));
    ::unlink(temp.c_str());
    return false;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "relaisctl: rename %s to %s: %s\n", temp.c_str(), path.c_str(),
                 std::strerror(errno));
    ::unlink(temp.c_str());
    return false;
  }
  // The rename lives in the directory: sync it, or a crash could bring the old file back
  // after we said the password was changed.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0 || ::fsync(dir_fd) != 0) {
    std::fprintf(stderr, "relaisctl: fsync %s: %s\n", dir.c_str(), std::strerror(errno));
    if (dir_fd >= 0) {
      ::close(dir_fd);
    }
    return false;
  }
  ::close(dir_fd);
  return true;
}

int Check(const std::string& path, const std::string& user) {
  absl::StatusOr<sasl::Credentials> credentials = sasl::Credentials::Load(path);
  if (!credentials.ok()) {
    std::fprintf(stderr, "relaisctl: %s\n", std::string(credentials.status().message()).c_str());
    return 1;
  }
  Secret password;
  if (!ReadPassword(/*confirm=*/false, password)) {
    return 1;
  }
  switch (credentials->Verify(user, password.text)) {
    case sasl::VerifyResult::kOk:
      std::printf("ok: %s\n", user.c_str());
      return 0;
    case sasl::VerifyResult::kBadPassword:
      std::printf("wrong password for %s\n", user.c_str());
      return 1;
    case sasl::VerifyResult::kUnknownUser:
      std::printf("no user %s in %s\n", user.c_str(), path.c_str());
      return 1;
  }
  return 1;
}

}  // namespace

int PasswdCommand(std::span<char* const> words) {
  constexpr std::string_view kFlags[] = {"file", "domains", "delete", "check"};
  absl::StatusOr<cli::Args> args = cli::Parse(words, kFlags);
  if (!args.ok()) {
    std::fprintf(stderr, "relaisctl: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  if (args->help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const bool remove = absl::GetFlag(FLAGS_delete);
  const bool check = absl::GetFlag(FLAGS_check);
  const bool set_domains = args->given.contains("domains");
  if (args->positional.size() != 1 || (remove && check) || ((remove || check) && set_domains)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string path = absl::GetFlag(FLAGS_file);
  const std::string user = args->positional[0];
  if (!sasl::ValidUserName(user)) {
    std::fprintf(stderr,
                 "relaisctl: a user name is 1 to %zu characters of A-Z a-z 0-9 . _ %% + @ -\n",
                 sasl::kUserBytesMax);
    return 2;
  }
  if (check) {
    return Check(path, user);
  }
  const std::string domains = base::AsciiStrToLower(absl::GetFlag(FLAGS_domains));
  if (domains.find_first_of(" \t:\n") != std::string::npos) {
    std::fprintf(stderr, "relaisctl: --domains is a comma-separated list: a.example,b.example\n");
    return 2;
  }

  if (!domains.empty()) {
    // The entry must be one relaisd takes: check the domains with the file's own parser.
    const std::string probe = base::StrCat(
        user,
        ":$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2:", domains);
    if (absl::StatusOr<sasl::Credentials> parsed = sasl::Credentials::Parse(probe, "--domains");
        !parsed.ok()) {
      std::fprintf(stderr, "relaisctl: %s\n", std::string(parsed.status().message()).c_str());
      return 2;
    }
  }

  // Two runs at once must not both read the old file and the last rename drop the other's
  // change: hold an exclusive lock on the directory (the file itself is replaced, so a lock on
  // it would not be seen by the next run) until the new file is in place.
  const int lock_fd = ::open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX) != 0) {
    std::fprintf(stderr, "relaisctl: cannot lock %s: %s\n", DirOf(path).c_str(),
                 std::strerror(errno));
    return 1;
  }
  struct LockGuard {
    int fd;
    ~LockGuard() { ::close(fd); }  // Closing releases the lock.
  } lock{lock_fd};

  std::string old_text;
  bool exists = false;
  struct stat old {};
  if (!ReadExisting(path, old_text, exists, old)) {
    return 1;
  }
  Secret password;
  std::string hash;
  if (!remove) {
    if (!ReadPassword(/*confirm=*/true, password)) {
      return 1;
    }
    hash = Hash(password.text);
    if (hash.empty()) {
      return 1;
    }
  }

  // Every line is kept as it is but the user's own (the first; a later duplicate is dropped, so
  // the file loads again).
  const std::string key = sasl::NormalizeUserName(user);
  std::string text;
  bool found = false;
  std::string_view rest = old_text;
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    const std::string_view trimmed = base::Trim(line, base::IsFwsChar);
    const size_t colon = trimmed.find(':');
    const bool is_user = !trimmed.empty() && trimmed.front() != '#' &&
                         sasl::NormalizeUserName(trimmed.substr(0, colon)) == key;
    if (!is_user) {
      base::StrAppend(&text, line, "\n");
      continue;
    }
    if (!found && !remove) {
      // Keep the user's domains unless new ones are given.
      std::string_view kept;
      if (colon != std::string_view::npos) {
        const size_t second = trimmed.find(':', colon + 1);
        kept = second == std::string_view::npos ? "" : trimmed.substr(second + 1);
      }
      const std::string_view list = set_domains ? std::string_view(domains) : kept;
      base::StrAppend(&text, user, ":", hash, list.empty() ? "" : ":", list, "\n");
    }
    found = true;
  }
  if (remove && !found) {
    std::fprintf(stderr, "relaisctl: no user %s in %s\n", user.c_str(), path.c_str());
    return 1;
  }
  if (!found) {
    base::StrAppend(&text, user, ":", hash, domains.empty() ? "" : ":", domains, "\n");
  }
  // A fault elsewhere in the file is the operator's to fix and only warned about (this run
  // may be what fixes it); the entry itself was checked before.
  if (absl::StatusOr<sasl::Credentials> parsed = sasl::Credentials::Parse(text, path);
      !parsed.ok()) {
    std::fprintf(stderr, "relaisctl: warning: relaisd will refuse the file: %s\n",
                 std::string(parsed.status().message()).c_str());
  }
  if (!WriteAtomically(path, text, exists, old)) {
    return 1;
  }
  std::fprintf(stderr, "relaisctl: %s: %s %s\n", path.c_str(),
               remove  ? "removed"
               : found ? "changed the password of"
                       : "added",
               user.c_str());
  return 0;
}

}  // namespace relais::relaisctl
