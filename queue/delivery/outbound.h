// queue/delivery/outbound.h — the pure side of delivery over SMTP and LMTP: a job's network
// recipients split into tasks (one per destination and per that destination's
// recipients_per_transaction_max),
// each task's outgoing message, and the replies back as typed statuses.
//
// The connection pools (pools.h, behind delivery::Outbound) drive smtp::ClientSession; what they
// decide without a connection (stopping, no usable next hop) and what the session settled both
// reach the delivery side through these functions. No I/O, no state.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "protocols/smtp/client_session.h"
#include "queue/delivery/job.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

// The recipients of one outbound transaction.
struct Part {
  int32_t destination = -1;     // Route index.
  uint32_t dest = 0;            // DestinationId (Item::dest; 0: not resolved).
  std::vector<uint32_t> items;  // Indices into the job's items, in the task's order.
};

// The job's pending network recipients, grouped by destination (Item::dest, and the route
// index) in order of first appearance, at most `recipients_max(dest)` per part (at least 1).
[[nodiscard]] std::vector<Part> SplitByDestination(
    const Job& job, const std::function<uint32_t(uint32_t dest)>& recipients_max);
// The same with one limit for every destination.
[[nodiscard]] inline std::vector<Part> SplitByDestination(const Job& job, uint32_t recipients_max) {
  return SplitByDestination(job, [recipients_max](uint32_t) { return recipients_max; });
}

// The message of one part: views into `job`, which must outlive the transaction.
[[nodiscard]] smtp::OutgoingMessage Outgoing(const Job& job, const Part& part);

// Records a part's replies (one per item of the part, in order) in the job's items.
void ApplyReplies(Job& job, const Part& part, const std::vector<smtp::RecipientReply>& replies,
                  std::string_view next_hop, uint64_t duration_us);

// A next hop's verdict on one recipient: code and enhanced code as the client session parsed
// them off the wire, its text (without the codes) as the detail.
[[nodiscard]] Status FromReply(const smtp::RecipientReply& reply);

// A status of ours as an outbound result (the pool's own deferrals).
[[nodiscard]] smtp::RecipientReply ToReply(const Status& status);

}  // namespace relais::delivery
