#include "queue/maildir/maildir.h"

#include <algorithm>

#include "core/base/strings.h"

namespace relais::maildir {
namespace {

// The error text names paths: it goes to Result::error (the log), not into `detail`.
Result Failure(const absl::Status& status, std::string_view what) {
  Result r;
  r.error = base::StrCat(what, ": ", status.message());
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
      r.status = Status::kTemporary;  // ENOSPC or EDQUOT: the mailbox may have room later.
      r.problem = Problem::kNoSpace;
      break;
    case absl::StatusCode::kInvalidArgument:
      r.status = Status::kPermanent;
      r.problem = Problem::kRefused;
      r.detail = "the mailbox path is not allowed";
      break;
    default:
      // Permissions, I/O errors, a file where a directory should be: an operator can fix
      // these, so retry rather than bounce.
      r.status = Status::kTemporary;
      r.problem = Problem::kFileSystem;
      break;
  }
  return r;
}

Result Refused(std::string detail) {
  Result r;
  r.status = Status::kPermanent;
  r.problem = Problem::kRefused;
  r.detail = std::move(detail);
  return r;
}

// For a reply: the bytes of an address-derived path, with anything not printable ASCII (and
// quotes and backslashes) shown as '?', bounded.
std::string Printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 200)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u >= 0x7F || c == '"' || c == '\\' ? '?' : c);
  }
  return out;
}

}  // namespace

std::string UniqueName(uint64_t unix_micros, uint32_t pid, uint64_t counter,
                       std::string_view host) {
  std::string safe_host;
  for (char c : host) {
    if (c == '/') {
      safe_host += "\\057";
    } else if (c == ':') {
      safe_host += "\\072";
    } else {
      safe_host += c;
    }
  }
  return base::StrCat(unix_micros / 1'000'000, ".M", unix_micros % 1'000'000, "P", pid, "Q",
                      counter, ".", safe_host);
}

std::string RouteRoot(std::string_view path) {
  const size_t placeholder = std::min(path.find("{domain}"), path.find("{local}"));
  std::string_view fixed = path;
  if (placeholder != std::string_view::npos) {
    fixed = path.substr(0, placeholder);
    const size_t slash = fixed.rfind('/');
    if (slash == std::string_view::npos) {
      return ".";
    }
    fixed = fixed.substr(0, slash + 1);
  }
  while (fixed.size() > 1 && fixed.back() == '/') {
    fixed.remove_suffix(1);
  }
  return fixed.empty() ? std::string(".") : std::string(fixed);
}

struct Deliverer::Opened {
  io::FileHandle tmp;
  io::FileHandle fresh;  // new/

  void Close(io::Io& io) {
    io.Close(tmp);
    io.Close(fresh);
    tmp = fresh = io::FileHandle{};
  }
};

absl::Status Deliverer::OpenKnown(const std::string& root, const std::string& mailbox,
                                  Opened& out) {
  // The steady state: no mkdir, no directory fsync, only opens; each is resolved from the
  // root again (a mailbox can be removed and made again by someone else meanwhile).
  auto root_dir = io_.OpenDir(io::kWorkingDirectory, root, io::Resolve::kFollow);
  if (!root_dir.ok()) {
    return root_dir.status();
  }
  auto tmp = io_.OpenDir(*root_dir, mailbox + "/tmp", io::Resolve::kBeneath);
  auto fresh = tmp.ok() ? io_.OpenDir(*root_dir, mailbox + "/new", io::Resolve::kBeneath)
                        : absl::StatusOr<io::FileHandle>(tmp.status());
  io_.Close(*root_dir);
  if (!fresh.ok()) {
    if (tmp.ok()) {
      io_.Close(*tmp);
    }
    return fresh.status();
  }
  out.tmp = *tmp;
  out.fresh = *fresh;
  return absl::OkStatus();
}

absl::Status Deliverer::OpenEnsured(const std::string& root, const std::string& mailbox,
                                    Opened& out) {
  // Creates what is missing and syncs every entry on the way down once (DurableDirs), so that
  // no message is acknowledged from a directory a power cut could still take away.
  auto cur = dirs_.EnsureBeneath(root, mailbox + "/cur");
  if (!cur.ok()) {
    return cur.status();
  }
  io_.Close(*cur);
  auto tmp = dirs_.EnsureBeneath(root, mailbox + "/tmp");
  if (!tmp.ok()) {
    return tmp.status();
  }
  auto fresh = dirs_.EnsureBeneath(root, mailbox + "/new");
  if (!fresh.ok()) {
    io_.Close(*tmp);
    return fresh.status();
  }
  out.tmp = *tmp;
  out.fresh = *fresh;
  return absl::OkStatus();
}

Result Deliverer::Deliver(const Delivery& delivery, std::string_view content) {
  if (delivery.unique_name.empty() || !io::BeneathPathIsPlain(delivery.unique_name) ||
      delivery.unique_name.find('/') != std::string::npos) {
    return Failure(absl::InvalidArgumentError("bad unique name"), delivery.directory);
  }
  // The mailbox relative to the root. Repeated slashes from the config ("var/mail/" + "/d")
  // mean one; anything else that is not a plain path below the root is refused for good.
  std::string directory;
  for (char c : delivery.directory) {
    if (c != '/' || directory.empty() || directory.back() != '/') {
      directory.push_back(c);
    }
  }
  const std::string& root = delivery.root;
  std::string mailbox;
  if (root == "/" && directory.starts_with("/")) {
    mailbox = directory.substr(1);
  } else if (root == "." && !directory.starts_with("/")) {
    mailbox = directory.starts_with("./") ? directory.substr(2) : directory;
  } else if (!root.empty() && directory.starts_with(root + "/")) {
    mailbox = directory.substr(root.size() + 1);
  } else {
    return Refused("the mailbox is not below its route's root");
  }
  while (mailbox.ends_with('/')) {
    mailbox.pop_back();
  }
  if (!io::BeneathPathIsPlain(mailbox)) {
    return Refused(
        base::StrCat("mailbox \"", Printable(mailbox), "\" would leave its route's root"));
  }
  const std::string mailbox_path = base::StrCat(root, "/", mailbox);
  const bool known = dirs_.Known(mailbox_path + "/tmp") && dirs_.Known(mailbox_path + "/new") &&
                     dirs_.Known(mailbox_path + "/cur");
  Opened dirs;
  bool recreated = false;
  absl::Status opened = known ? OpenKnown(root, mailbox, dirs) : OpenEnsured(root, mailbox, dirs);
  if (known && opened.code() == absl::StatusCode::kNotFound) {
    // Removed behind our back (the mailbox, a directory above it or the root): forget all
    // that was known below the root and make the whole path exist and be durable again.
    dirs_.Forget(root);
    recreated = true;
    ++recreated_;
    opened = OpenEnsured(root, mailbox, dirs);
  }
  if (!opened.ok()) {
    Result r = Failure(opened, "maildir");
    if (opened.code() == absl::StatusCode::kInvalidArgument) {
      // A symlink or a name on the way that would lead outside: do not echo file-system
      // details to the sender.
      r.detail = base::StrCat("mailbox \"", Printable(mailbox), "\" would leave its route's root");
    }
    r.recreated = recreated;
    return r;
  }
  std::string file = base::StrCat("Return-Path: <", delivery.return_path,
                                  ">\nDelivered-To: ", delivery.delivered_to, "\n");
  file.reserve(file.size() + content.size());
  // Local mail stores keep LF line endings; the spool keeps the CRLF of the wire.
  for (size_t i = 0; i < content.size(); ++i) {
    if (content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n') {
      continue;
    }
    file.push_back(content[i]);
  }
  const std::string& name = delivery.unique_name;
  Result r = [&]() -> Result {
    auto handle = io_.OpenAt(dirs.tmp, name, io::OpenMode::kCreateExclusive);
    if (!handle.ok()) {
      return Failure(handle.status(), "maildir");
    }
    // The data must be on disk before the rename publishes it: a reader (or a crash) must
    // never find a partial message in new/.
    absl::Status written = io_.WriteAndSync(*handle, 0, file);
    io_.Close(*handle);
    if (!written.ok()) {
      (void)io_.UnlinkAt(dirs.tmp, name);
      return Failure(written, "maildir");
    }
    if (absl::Status s = io_.RenameAt(dirs.tmp, name, dirs.fresh, name); !s.ok()) {
      (void)io_.UnlinkAt(dirs.tmp, name);
      return Failure(s, "maildir");
    }
    // The rename lives in new/'s directory entries: sync them, or a power cut could undo a
    // delivery that we are about to report (and record) as done. new/ itself and every
    // directory above it are durable already (OpenEnsured, once per mailbox).
    if (absl::Status s = io_.SyncOpenDir(dirs.fresh); !s.ok()) {
      return Failure(s, "maildir");
    }
    Result ok;
    ok.status = Status::kDelivered;
    ok.problem = Problem::kNone;
    ok.detail = name;
    ok.path = base::StrCat(mailbox_path, "/new/", name);
    return ok;
  }();
  dirs.Close(io_);
  r.recreated = recreated;
  return r;
}

}  // namespace relais::maildir
