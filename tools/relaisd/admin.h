// tools/relaisd/admin.h — the operators' control protocol behind `relaisctl`.
//
// relaisctl connects to a unix socket (mode 0600, so only the daemon's user and root get in),
// writes one request line and reads the answer until the daemon closes:
//   request:  "queue ls [state=S] [domain=D] [sender=S] [json]" | "queue show ID [json]" |
//             "queue flush [ID|DOMAIN]" | "queue delete ID" | "queue bounce ID" |
//             "queue hold ID" |
//             "queue release ID" | "status [json]"
//   answer:   "OK\n" then the text (or JSON) | "ERROR <why>\n"
// Shard 0 serves the socket. A request for one message goes to the shard that owns it (the
// shard number inside the message ID); the others go to every shard, over the mesh, and the
// answers are merged on shard 0. Parsing and formatting here are pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/mail/message_id.h"
#include "core/uring/mesh.h"

namespace relais::relaisd {

enum class AdminOp : uint8_t { kList, kShow, kFlush, kDelete, kBounce, kHold, kRelease, kStatus };

struct AdminQuery final : uring::HandoffPayload {
  AdminOp op = AdminOp::kStatus;
  bool json = false;
  std::optional<mail::MessageId> id;
  std::string domain;    // ls filter, or the domain to flush.
  std::string state;     // ls filter: queued, deferred, held, active.
  std::string sender;    // ls filter.
  uint64_t request = 0;  // Shard 0's handle on the pending request.
};

struct MessageView {
  std::string id;
  std::string sender;
  std::vector<std::pair<std::string, std::string>> recipients;  // Address, state.
  uint64_t size = 0;
  uint64_t received_us = 0;
  std::string state;  // queued, deferred, held, active.
  uint32_t attempts = 0;
  int64_t next_attempt_in_ms = 0;
  std::string last_reply;
};

struct ShardStatus {
  uint32_t shard = 0;
  uint32_t connections = 0;
  uint64_t messages = 0;
  uint64_t deferred = 0;
  uint64_t held = 0;
  uint64_t in_flight = 0;
  uint64_t spool_bytes = 0;
  uint64_t segments = 0;
  uint64_t accepted = 0;
  uint64_t delivery_attempts = 0;
};

struct AdminAnswer final : uring::HandoffPayload {
  uint64_t request = 0;
  std::vector<MessageView> messages;
  uint32_t affected = 0;
  ShardStatus status;
  std::string error;
};

// Parses one request line (without its newline).
[[nodiscard]] absl::StatusOr<AdminQuery> ParseAdminRequest(std::string_view line);
// Which shards must answer: one for a single-message request, else all.
[[nodiscard]] std::vector<uint32_t> AdminTargets(const AdminQuery& query, uint32_t shards);
// The full answer text ("OK\n..." or "ERROR ...\n") from every shard's answer.
[[nodiscard]] std::string FormatAdminResponse(const AdminQuery& query,
                                              const std::vector<AdminAnswer>& answers);

}  // namespace relais::relaisd
