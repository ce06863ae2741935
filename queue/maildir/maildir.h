// queue/maildir/maildir.h — delivery of one message to one Maildir.
//
// The Maildir convention (D. J. Bernstein): write the message to tmp/<unique>, make it
// durable, rename it into new/<unique>, make the rename durable. Readers never see a partial
// file, and once Deliver returns kDelivered the message survives a crash. The stored file gets
// Return-Path: and Delivered-To: on top and LF line endings, as local mail stores expect.
//
// Blocking: every call is a synchronous file-system operation through io::Io. Run it on a
// helper thread, never on a shard. Thread-compatible: no state besides the arguments.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/io/io.h"

namespace relais::maildir {

struct Delivery {
  std::string directory;     // The Maildir itself (tmp/, new/, cur/ are made inside).
  std::string return_path;   // Envelope sender, empty for <>.
  std::string delivered_to;  // The recipient.
  std::string unique_name;   // From UniqueName(); must not repeat within the Maildir.
};

enum class Status : uint8_t { kDelivered, kTemporary, kPermanent };

struct Result {
  Status status = Status::kTemporary;
  std::string reply;  // SMTP-style, e.g. "250 2.0.0 delivered" or "452 4.2.2 ...".
  std::string path;   // The file in new/ when delivered.
};

// `content` is the message as stored (CRLF line endings, trace header first).
[[nodiscard]] Result Deliver(io::Io& io, const Delivery& delivery, std::string_view content);

// "<seconds>.M<microseconds>P<pid>Q<counter>.<host>", with '/' and ':' in the host escaped as
// the convention asks.
[[nodiscard]] std::string UniqueName(uint64_t unix_micros, uint32_t pid, uint64_t counter,
                                     std::string_view host);

}  // namespace relais::maildir
