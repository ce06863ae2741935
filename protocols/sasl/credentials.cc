#include "protocols/sasl/credentials.h"

#include <crypt.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"
#include "core/base/strings.h"

namespace relais::sasl {
namespace {

// A credentials file is a few lines per user; this only stops a wrong path (a log, a device)
// from being read whole into memory.
constexpr size_t kFileBytesMax = size_t{64} << 20;
constexpr size_t kDomainBytesMax = 253;

bool UserChar(char c) {
  return base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) || c == '.' || c == '_' || c == '%' ||
         c == '+' || c == '@' || c == '-';
}

bool HashChar(char c) {
  return base::IsAsciiAlpha(c) || base::IsAsciiDigit(c) || c == '.' || c == '/' || c == '$';
}

// A DNS name: dot-separated labels of letters, digits and hyphens (RFC 1035 2.3.1), no empty
// label, at most 253 characters. `domain` is already lowercase.
bool ValidDomain(std::string_view domain) {
  if (domain.empty() || domain.size() > kDomainBytesMax) {
    return false;
  }
  for (std::string_view label : base::Split(domain, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!base::IsAsciiAlpha(c) && !base::IsAsciiDigit(c) && c != '-') {
        return false;
      }
    }
  }
  return true;
}

// Compares in time that depends only on the lengths (which are public: a crypt string's length
// follows from its method and settings), never on where the first difference is.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = diff | static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

// Hashes `password` with the method and salt of `setting` (a full crypt string). Returns false
// when crypt fails (a malformed setting; Load refuses those). The scratch state is this call's
// own (crypt_rn is reentrant with it, so threads share nothing) and is wiped afterwards, like
// the copy of the password.
bool HashMatches(std::string_view password, const std::string& setting) {
  std::string phrase(password);                // crypt takes a C string.
  auto data = std::make_unique<crypt_data>();  // 32 KiB: off the stack of a small thread.
  const char* out = crypt_rn(phrase.c_str(), setting.c_str(), data.get(), sizeof(*data));
  const bool ok = out != nullptr && out[0] != '*' && ConstantTimeEquals(out, setting);
  explicit_bzero(phrase.data(), phrase.size());
  explicit_bzero(data.get(), sizeof(*data));
  return ok;
}

}  // namespace

std::string_view HashSettings(std::string_view hash) {
  // "$y$j9T$salt$hash", "$gy$j9T$salt$hash", "$2b$12$salthash": through the third '$'.
  size_t end = 0;
  for (int dollars = 0; dollars < 3; ++dollars) {
    end = hash.find('$', end);
    if (end == std::string_view::npos) {
      return hash;
    }
    ++end;
  }
  return hash.substr(0, end);
}

bool ValidUserName(std::string_view user) {
  return !user.empty() && user.size() <= kUserBytesMax &&
         std::all_of(user.begin(), user.end(), UserChar);
}

std::string NormalizeUserName(std::string_view user) {
  const size_t at = user.rfind('@');
  if (at == std::string_view::npos) {
    return std::string(user);
  }
  return base::StrCat(user.substr(0, at + 1), base::AsciiStrToLower(user.substr(at + 1)));
}

std::string RefusedHashReason(std::string_view hash) {
  if (hash.empty()) {
    return "an empty hash";
  }
  if (hash.front() != '$') {
    // Traditional DES crypt is 13 characters of [./0-9A-Za-z]; extended DES starts with '_'.
    return hash.size() == 13 || hash.front() == '_' ? "a DES crypt hash (weak)"
                                                    : "not a crypt(3) hash (plaintext?)";
  }
  struct Refused {
    std::string_view prefix, name;
  };
  static constexpr Refused kRefused[] = {
      {"$1$", "an MD5-crypt hash ($1$, weak)"},
      {"$5$", "a SHA-256-crypt hash ($5$; use yescrypt or bcrypt)"},
      {"$6$", "a SHA-512-crypt hash ($6$; use yescrypt or bcrypt)"},
      {"$2a$", "an old bcrypt hash ($2a$; use $2b$)"},
      {"$2x$", "an old bcrypt hash ($2x$; use $2b$)"},
      {"$7$", "a scrypt hash ($7$; use yescrypt or bcrypt)"},
      {"$md5", "a SunMD5 hash (weak)"},
      {"$sha1$", "a SHA-1-crypt hash (weak)"},
      {"$3$", "an NT hash ($3$, weak)"},
  };
  for (const Refused& r : kRefused) {
    if (hash.starts_with(r.prefix)) {
      return std::string(r.name);
    }
  }
  if (!hash.starts_with("$y$") && !hash.starts_with("$gy$") && !hash.starts_with("$2b$") &&
      !hash.starts_with("$2y$")) {
    return "an unknown hash method (only yescrypt $y$/$gy$ and bcrypt $2b$/$2y$ are accepted)";
  }
  if (!std::all_of(hash.begin(), hash.end(), HashChar)) {
    return "a malformed hash (a character outside [./0-9A-Za-z$])";
  }
  // A whole hash, not only its settings: bcrypt is "$2b$" cost "$" 22 salt + 31 hash
  // characters (60 in all); yescrypt "$y$" params "$" salt "$" 43 hash characters.
  const bool bcrypt = hash.starts_with("$2");
  const size_t last = hash.rfind('$');
  if ((bcrypt && hash.size() != 60) ||
      (!bcrypt && (std::count(hash.begin(), hash.end(), '$') != 4 || hash.size() - last != 44))) {
    return "a malformed yescrypt/bcrypt hash (truncated, or only its settings)";
  }
  // libxcrypt checks the method's own syntax (salt, cost) without hashing.
  const std::string text(hash);
  if (crypt_checksalt(text.c_str()) != CRYPT_SALT_OK) {
    return "a malformed or disabled yescrypt/bcrypt hash";
  }
  return "";
}

absl::StatusOr<Credentials> Credentials::Load(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int error = errno;
    const std::string message =
        absl::StrFormat("credentials file %s: %s", path, std::strerror(error));
    if (error == ENOENT) {
      return absl::NotFoundError(message);
    }
    if (error == EACCES || error == EPERM) {
      return absl::PermissionDeniedError(message);
    }
    return absl::InvalidArgumentError(message);
  }
  // fstat on the opened file, not stat on the path: the mode checked is the mode of what is read.
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrFormat("credentials file %s: fstat: %s", path, std::strerror(error)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrFormat("credentials file %s: not a regular file", path));
  }
  if ((st.st_mode & 0007) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrFormat(
        "credentials file %s: mode %04o lets others read it (password hashes are secrets): "
        "chmod o-rwx %s (relaisctl passwd writes 0640)",
        path, static_cast<unsigned>(st.st_mode & 07777), path));
  }
  if (static_cast<uint64_t>(st.st_size) > kFileBytesMax) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("credentials file %s: %d bytes, more than %d",
                                                      path, st.st_size, kFileBytesMax));
  }
  std::string text;
  char buffer[16384];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrFormat("credentials file %s: read: %s", path, std::strerror(error)));
    }
    if (n == 0) {
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kFileBytesMax) {
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrFormat("credentials file %s: more than %d bytes", path, kFileBytesMax));
    }
  }
  ::close(fd);
  absl::StatusOr<Credentials> parsed = Parse(text, path);
  explicit_bzero(text.data(), text.size());
  return parsed;
}

absl::StatusOr<Credentials> Credentials::Parse(std::string_view text, std::string_view source) {
  Credentials out;
  absl::flat_hash_map<std::string, size_t> first_line;  // For the duplicate error.
  // For the decoy: how many entries use each method and cost, and the first of them.
  struct Settings {
    size_t count = 0;
    size_t order = 0;
    std::string hash;
  };
  absl::flat_hash_map<std::string, Settings> settings;
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    line = base::Trim(line, base::IsFwsChar);
    if (line.empty() || line.front() == '#') {
      continue;
    }
    auto error = [&](std::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrFormat("credentials file %s line %d: %s", source, line_number, why));
    };
    const std::vector<std::string_view> fields = base::Split(line, ':');
    if (fields.size() < 2 || fields.size() > 3) {
      return error("expected user:hash or user:hash:domain,domain");
    }
    const std::string_view user = fields[0];
    if (!ValidUserName(user)) {
      return error(absl::StrFormat(
          "user name must be 1 to %d characters of A-Z a-z 0-9 . _ %% + @ -", kUserBytesMax));
    }
    const std::string reason = RefusedHashReason(fields[1]);
    if (!reason.empty()) {
      return error(absl::StrFormat("user %s: refused: %s", user, reason));
    }
    std::string key = NormalizeUserName(user);
    User entry;
    entry.hash = std::string(fields[1]);
    auto add_domain = [&](std::string domain) {
      if (std::find(entry.owned_domains.begin(), entry.owned_domains.end(), domain) ==
          entry.owned_domains.end()) {
        entry.owned_domains.push_back(std::move(domain));
      }
    };
    if (const size_t at = key.rfind('@'); at != std::string::npos) {
      const std::string domain = key.substr(at + 1);
      if (!ValidDomain(domain)) {
        return error(absl::StrFormat("user %s: '%s' after '@' is not a domain", user, domain));
      }
      add_domain(domain);
    }
    if (fields.size() == 3) {
      for (std::string_view d : base::Split(fields[2], ',')) {
        std::string domain = base::AsciiStrToLower(base::Trim(d));
        if (!ValidDomain(domain)) {
          return error(absl::StrFormat("user %s: '%s' is not a domain", user, domain));
        }
        add_domain(std::move(domain));
      }
    }
    if (auto [it, inserted] = first_line.emplace(key, line_number); !inserted) {
      return error(absl::StrFormat("user %s is already defined on line %d", user, it->second));
    }
    Settings& same = settings[std::string(HashSettings(entry.hash))];
    if (same.count++ == 0) {
      same.order = settings.size();
      same.hash = entry.hash;
    }
    out.users_.emplace(std::move(key), std::move(entry));
  }
  // The decoy: an entry of the most common method and cost (the first seen on a tie), so an
  // unknown user costs what a typical known one does even in a file that mixes them.
  const Settings* decoy = nullptr;
  for (const auto& [unused, candidate] : settings) {
    if (decoy == nullptr || candidate.count > decoy->count ||
        (candidate.count == decoy->count && candidate.order < decoy->order)) {
      decoy = &candidate;
    }
  }
  if (decoy != nullptr) {
    out.decoy_hash_ = decoy->hash;
  }
  return out;
}

const Credentials::User* Credentials::Find(std::string_view user) const {
  if (!ValidUserName(user)) {
    return nullptr;
  }
  auto it = users_.find(NormalizeUserName(user));
  return it == users_.end() ? nullptr : &it->second;
}

bool Credentials::Contains(std::string_view user) const { return Find(user) != nullptr; }

namespace {
// A yescrypt hash of the default cost, for a file with no user at all.
const std::string& DefaultDecoy() {
  static const std::string kDecoy =
      "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2";
  return kDecoy;
}
}  // namespace

std::string_view Credentials::decoy_settings() const {
  return HashSettings(decoy_hash_.empty() ? DefaultDecoy() : decoy_hash_);
}

VerifyResult Credentials::Verify(std::string_view user, std::string_view password) const {
  const User* found = Find(user);
  if (found == nullptr) {
    // The same work as a typical real check, so the answer's timing does not tell which users
    // exist (the decoy has the most common method and cost of the file).
    (void)HashMatches(password, decoy_hash_.empty() ? DefaultDecoy() : decoy_hash_);
    return VerifyResult::kUnknownUser;
  }
  // SASL PLAIN cannot carry a NUL inside a password (RFC 4616 2); crypt would stop there.
  const bool has_nul = password.find('\0') != std::string_view::npos;
  const bool matches = HashMatches(password, found->hash);
  return matches && !has_nul ? VerifyResult::kOk : VerifyResult::kBadPassword;
}

std::span<const std::string> Credentials::OwnedDomains(std::string_view user) const {
  const User* found = Find(user);
  if (found == nullptr) {
    return {};
  }
  return found->owned_domains;
}

bool Credentials::OwnsDomain(std::string_view user, std::string_view domain) const {
  for (const std::string& owned : OwnedDomains(user)) {
    if (base::EqualsIgnoreCase(owned, domain)) {
      return true;
    }
  }
  return false;
}

}  // namespace relais::sasl
