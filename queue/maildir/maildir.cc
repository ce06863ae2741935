#include "queue/maildir/maildir.h"

#include "core/base/strings.h"

namespace relais::maildir {
namespace {

Result Failure(const absl::Status& status, std::string_view what) {
  Result r;
  const std::string detail = base::StrCat(what, ": ", status.message());
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
      r.status = Status::kTemporary;  // ENOSPC or EDQUOT: the mailbox may have room later.
      r.reply = base::StrCat("452 4.2.2 ", detail);
      break;
    case absl::StatusCode::kInvalidArgument:
      r.status = Status::kPermanent;
      r.reply = base::StrCat("550 5.1.3 ", detail);
      break;
    default:
      // Permissions, I/O errors, a file where a directory should be: an operator can fix
      // these, so retry rather than bounce.
      r.status = Status::kTemporary;
      r.reply = base::StrCat("451 4.3.0 ", detail);
      break;
  }
  return r;
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

Result Deliver(io::Io& io, const Delivery& delivery, std::string_view content) {
  if (delivery.unique_name.empty() || delivery.unique_name.find('/') != std::string::npos) {
    return Failure(absl::InvalidArgumentError("bad unique name"), delivery.directory);
  }
  const std::string tmp_dir = delivery.directory + "/tmp";
  const std::string new_dir = delivery.directory + "/new";
  for (const std::string& dir : {tmp_dir, new_dir, delivery.directory + "/cur"}) {
    if (absl::Status s = io.MakeDirs(dir); !s.ok()) {
      return Failure(s, "maildir");
    }
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
  const std::string tmp_path = base::StrCat(tmp_dir, "/", delivery.unique_name);
  const std::string new_path = base::StrCat(new_dir, "/", delivery.unique_name);
  auto handle = io.Open(tmp_path, io::OpenMode::kCreateExclusive);
  if (!handle.ok()) {
    return Failure(handle.status(), "maildir");
  }
  // The data must be on disk before the rename publishes it: a reader (or a crash) must never
  // find a partial message in new/.
  absl::Status written = io.WriteAndSync(*handle, 0, file);
  io.Close(*handle);
  if (!written.ok()) {
    (void)io.Unlink(tmp_path);
    return Failure(written, "maildir");
  }
  if (absl::Status s = io.Rename(tmp_path, new_path); !s.ok()) {
    (void)io.Unlink(tmp_path);
    return Failure(s, "maildir");
  }
  // The rename lives in new/'s directory entries: sync them, or a power cut could undo a
  // delivery that we are about to report (and record) as done.
  if (absl::Status s = io.SyncDir(new_dir); !s.ok()) {
    return Failure(s, "maildir");
  }
  Result r;
  r.status = Status::kDelivered;
  r.reply = base::StrCat("250 2.0.0 delivered to maildir as ", delivery.unique_name);
  r.path = new_path;
  return r;
}

}  // namespace relais::maildir
