// queue/delivery/outbound.cc — see outbound.h.
#include "queue/delivery/outbound.h"

#include <algorithm>

#include "core/base/check.h"

namespace relais::delivery {

Status FromReply(const smtp::RecipientReply& reply) {
  Status s;
  s.outcome = reply.status == smtp::RecipientStatus::kDelivered ? Outcome::kDelivered
              : reply.status == smtp::RecipientStatus::kFailed  ? Outcome::kFailed
                                                                : Outcome::kDeferred;
  s.code = reply.code;
  s.enhanced = reply.enhanced;
  // `reply` is "<code> <enhanced> text": the text after the two typed fields is the detail.
  const size_t prefix = reply.code == 0          ? 0
                        : reply.enhanced.empty() ? 4
                                                 : 4 + reply.enhanced.size() + 1;
  s.detail = prefix < reply.reply.size() ? reply.reply.substr(prefix) : std::string();
  return s;
}

smtp::RecipientReply ToReply(const Status& status) {
  smtp::RecipientReply r;
  r.status = status.outcome == Outcome::kDelivered ? smtp::RecipientStatus::kDelivered
             : status.outcome == Outcome::kFailed  ? smtp::RecipientStatus::kFailed
                                                   : smtp::RecipientStatus::kDeferred;
  r.reply = status.Text();
  r.code = status.code;
  r.enhanced = status.enhanced;
  return r;
}

std::vector<Part> SplitByDestination(const Job& job,
                                     const std::function<uint32_t(uint32_t dest)>& recipients_max) {
  std::vector<Part> parts;
  for (uint32_t i = 0; i < job.items.size(); ++i) {
    const Item& item = job.items[i];
    if (!item.pending_network()) {
      continue;
    }
    const uint32_t max = std::max<uint32_t>(1, recipients_max(item.dest));
    auto it = std::find_if(parts.begin(), parts.end(), [&](const Part& p) {
      return p.destination == item.destination && p.dest == item.dest && p.items.size() < max;
    });
    if (it == parts.end()) {
      parts.push_back({item.destination, item.dest, {}});
      it = parts.end() - 1;
    }
    it->items.push_back(i);
  }
  return parts;
}

smtp::OutgoingMessage Outgoing(const Job& job, const Part& part) {
  smtp::OutgoingMessage m;
  m.sender = job.sender;
  m.content = job.content;
  m.body_type = job.body_type;
  m.smtputf8 = job.smtputf8;
  m.envid = job.envid;  // RFC 3461 parameters go on to a next hop that offers DSN.
  m.ret = job.dsn_return == mail::DsnReturn::kFull      ? "FULL"
          : job.dsn_return == mail::DsnReturn::kHeaders ? "HDRS"
                                                        : "";
  for (uint32_t i : part.items) {
    const Item& item = job.items[i];
    m.recipients.push_back({item.address, item.notify_text, item.orcpt});
  }
  return m;
}

void ApplyReplies(Job& job, const Part& part, const std::vector<smtp::RecipientReply>& replies,
                  std::string_view next_hop, uint64_t duration_us) {
  RELAIS_CHECK(replies.size() == part.items.size()) << "one reply per recipient of the task";
  for (size_t k = 0; k < replies.size(); ++k) {
    Item& item = job.items[part.items[k]];
    item.decided = true;
    item.result = FromReply(replies[k]);
    item.next_hop = next_hop;
    item.duration_us = duration_us;
    item.dsn_passed_on = replies[k].dsn_passed_on;
  }
}

}  // namespace relais::delivery
