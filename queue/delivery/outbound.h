// queue/delivery/outbound.h — the pure side of delivery over SMTP and LMTP: a next hop's reply
// as a typed status, and a typed status as the result an outbound pool hands back.
//
// The engine-bound connection pools (tools/relaisd/egress) drive smtp::ClientSession; what they
// decide without a connection (stopping, no usable next hop) and what the session settled both
// reach the delivery side through these functions. No I/O, no state.
#pragma once

#include "protocols/smtp/client_session.h"
#include "queue/delivery/status.h"

namespace relais::delivery {

// A next hop's verdict on one recipient: code and enhanced code as the client session parsed
// them off the wire, its text (without the codes) as the detail.
[[nodiscard]] Status FromReply(const smtp::RecipientReply& reply);

// A status of ours as an outbound result (the pool's own deferrals).
[[nodiscard]] smtp::RecipientReply ToReply(const Status& status);

}  // namespace relais::delivery
