// queue/maildir/maildir.h — delivery of messages into Maildirs.
//
// The Maildir convention (D. J. Bernstein): write the message to tmp/<unique>, make it
// durable, rename it into new/<unique>, make the rename durable. Readers never see a partial
// file, and once Deliver returns kDelivered the message survives a crash. The stored file gets
// Return-Path: and Delivered-To: on top and LF line endings, as local mail stores expect.
//
// Containment: every delivery names its route's root, a directory from the config. The
// mailbox is everything of its path below that root, and it is reached only through
// io::Resolve::kBeneath (openat2 RESOLVE_BENEATH), so whatever the route's template expanded
// to ("..", an absolute path, a symlink planted in the tree), nothing outside the root is
// created, opened, written or synced: such a delivery fails for good (kRefused: a bounce).
//
// Results are typed (Status, Problem); their reply texts are in queue/delivery's status table.
// A file-system error's text names paths: it is kept in Result::error for the log, never in
// what the sender sees.
//
// Durability: before the first message is acknowledged from a mailbox, each directory from
// the root down to its tmp/, new/ and cur/ has had its entry synced by this Deliverer, even
// when it already existed (io::DurableDirs). Known mailboxes are remembered (bounded), so in
// the steady state a delivery does no mkdir and no directory fsync besides the one of new/
// that makes its rename durable. A mailbox removed behind our back is created again (the
// result says so, for the log) and the message delivered into it.
//
// Blocking: every call is a synchronous file-system operation through io::Io. Run it on a
// helper thread, never on a shard. One Deliverer per thread (a delivery worker); not
// thread-safe. Several Deliverers may share mailboxes: each syncs before it trusts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/io/durable_dirs.h"
#include "core/io/io.h"

namespace relais::maildir {

struct Delivery {
  std::string directory;     // The Maildir itself (tmp/, new/, cur/ are made inside).
  std::string return_path;   // Envelope sender, empty for <>.
  std::string delivered_to;  // The recipient.
  std::string unique_name;   // From UniqueName(); must not repeat within the Maildir.
  std::string root;          // RouteRoot() of the route: `directory` must lie below it.
};

enum class Status : uint8_t { kDelivered, kTemporary, kPermanent };
// Why a delivery did not happen: kNoSpace (ENOSPC, EDQUOT) and kFileSystem (permissions, I/O,
// a file where a directory should be: an operator can fix it) are temporary, kRefused (the
// mailbox would leave its route's root) permanent.
enum class Problem : uint8_t { kNone, kNoSpace, kRefused, kFileSystem };

struct Result {
  Status status = Status::kTemporary;
  Problem problem = Problem::kFileSystem;
  // kDelivered: the file's name in new/. kRefused: why, naming the mailbox only as the address
  // made it (relative to the root, printable). Otherwise empty. Safe for a reply.
  std::string detail;
  std::string error;       // The file-system error, with its path: for the log only.
  std::string path;        // The file in new/ when delivered.
  bool recreated = false;  // The mailbox was known but had gone: it was created again.
};

// The fixed part of a maildir route's path: the directory before the first placeholder
// ("/srv/mail/{domain}/{local}" -> "/srv/mail", "/srv/m/u-{local}" -> "/srv/m"), or the whole
// path when it has none. Never ends in '/' (but "/" itself); "." for a relative template that
// starts with a placeholder.
[[nodiscard]] std::string RouteRoot(std::string_view path_or_template);

class Deliverer {
 public:
  // `directories_max` bounds the directories remembered as durable (io::DurableDirs).
  explicit Deliverer(io::Io& io, size_t directories_max = 4096)
      : io_(io), dirs_(io, directories_max) {}

  // `content` is the message as stored (CRLF line endings, trace header first).
  [[nodiscard]] Result Deliver(const Delivery& delivery, std::string_view content);

  [[nodiscard]] const io::DurableDirs::Stats& directory_stats() const { return dirs_.stats(); }
  [[nodiscard]] uint64_t mailboxes_recreated() const { return recreated_; }

 private:
  struct Opened;
  absl::Status OpenKnown(const std::string& root, const std::string& mailbox, Opened& out);
  absl::Status OpenEnsured(const std::string& root, const std::string& mailbox, Opened& out);

  io::Io& io_;
  io::DurableDirs dirs_;
  uint64_t recreated_ = 0;
};

// "<seconds>.M<microseconds>P<pid>Q<counter>.<host>", with '/' and ':' in the host escaped as
// the convention asks.
[[nodiscard]] std::string UniqueName(uint64_t unix_micros, uint32_t pid, uint64_t counter,
                                     std::string_view host);

}  // namespace relais::maildir
