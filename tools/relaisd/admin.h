// tools/relaisd/admin.h — the operators' control protocol behind `relaisctl`.
//
// relaisctl connects to a unix socket (mode 0600, so only the daemon's user and root get in),
// writes one request line and reads the answer until the daemon closes:
//   request:  "queue ls [state=S] [domain=D] [sender=S] [destination=X] [older-than=DURATION]
//             [json]" | "queue show ID [json]" | "queue summary [json]" |
//             "queue flush [ID|DOMAIN]" | "queue delete ID" | "queue bounce ID" |
//             "queue hold ID" | "queue release ID" | "status [json]" |
//             "dest ls [json]" | "dest show KEY|NAME [json]" |
//             "dest suspend KEY|NAME [for=DURATION] [reason=TEXT...]" | "dest resume KEY|NAME"
//   answer:   "OK\n" then the text (or JSON) | "ERROR <why>\n"
// States: ready (or queued), deferred, held, in-flight (or active). DURATION: a number and
// s, m, h or d ("30m", "2h", "1d"). reason= takes the rest of the line. Client text is bounded
// (kAdminWordBytesMax, kAdminReasonBytesMax) and printable ASCII only, so it can name nothing
// but a destination or a message and never breaks a line it is printed on.
// Shard 0 serves the socket. A request for one message goes to the shard that owns it (the
// shard number inside the message ID); the others go to every shard, over the mesh, and the
// answers are merged on shard 0: messages sorted by ID, the summary and the destinations by
// destination key (sums of counts, the worst state). Parsing and formatting here are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/mail/message_id.h"
#include "core/uring/mesh.h"
#include "queue/delivery/destinations.h"

namespace relais::relaisd {

enum class AdminOp : uint8_t {
  kList,
  kShow,
  kFlush,
  kDelete,
  kBounce,
  kHold,
  kRelease,
  kStatus,
  kSummary,      // queue summary
  kDestList,     // dest ls
  kDestShow,     // dest show KEY|NAME
  kDestSuspend,  // dest suspend KEY|NAME
  kDestResume,   // dest resume KEY|NAME
};

inline constexpr size_t kAdminWordBytesMax = 255;    // A key, name, domain or sender.
inline constexpr size_t kAdminReasonBytesMax = 200;  // dest suspend reason=.

struct AdminQuery final : uring::HandoffPayload {
  AdminOp op = AdminOp::kStatus;
  bool json = false;
  std::optional<mail::MessageId> id;
  std::string domain;          // ls filter (a recipient domain), or the domain to flush.
  std::string state;           // ls filter: queued, deferred, held, active (as MessageView::state).
  std::string sender;          // ls filter.
  std::string destination;     // ls filter, or the dest command's KEY|NAME ("unrouted": 0).
  uint64_t older_than_ms = 0;  // ls filter: received longer ago than this; 0: any.
  uint64_t duration_ms = 0;    // dest suspend for=; 0: until resumed.
  std::string reason;          // dest suspend reason=.
  uint64_t request = 0;        // Shard 0's handle on the pending request.
};

// The qshape age buckets of relaisctl queue summary: under 5, 10, 20, ... 1280 minutes, and
// 1280+.
[[nodiscard]] std::vector<uint64_t> SummaryBucketBoundsMs();

// One row of a shard's queue summary, by destination key (ids are per shard).
struct SummaryRow {
  std::string key;   // Empty: not routed yet (destination 0), or unknown to the destinations.
  std::string name;  // For people; "(not yet routed)" for destination 0.
  uint64_t total = 0;
  std::vector<uint64_t> buckets;  // SummaryBucketBoundsMs().size() + 1.
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
  std::string destination;  // Its destination's name (or key); empty: not routed yet.
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
  std::vector<SummaryRow> summary;
  // dest ls|show: queued is the scheduler's count (ready and deferred); suspended_until_ms is
  // on the monotonic clock, which every shard shares, read at now_ms.
  std::vector<delivery::DestinationView> destinations;
  uint64_t now_ms = 0;
  bool no_destinations = false;  // This shard has no destination table (no delivery by MX).
  std::string error;
};

// "30s", "30m", "2h", "1d" in milliseconds; nullopt for anything else (or over a year).
[[nodiscard]] std::optional<uint64_t> ParseAdminDuration(std::string_view text);
// Destinations of several shards merged by key: counts summed, the worst state (suspended,
// backing-off, active) with its reason, the latest suspension end. Sorted by queued, largest
// first, then key.
[[nodiscard]] std::vector<delivery::DestinationView> MergeDestinations(
    const std::vector<AdminAnswer>& answers);

// Parses one request line (without its newline).
[[nodiscard]] absl::StatusOr<AdminQuery> ParseAdminRequest(std::string_view line);
// Which shards must answer: one for a single-message request, else all.
[[nodiscard]] std::vector<uint32_t> AdminTargets(const AdminQuery& query, uint32_t shards);
// The full answer text ("OK\n..." or "ERROR ...\n") from every shard's answer.
[[nodiscard]] std::string FormatAdminResponse(const AdminQuery& query,
                                              const std::vector<AdminAnswer>& answers);

}  // namespace relais::relaisd
