// queue/delivery/outbound.cc — see outbound.h.
#include "queue/delivery/outbound.h"

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

}  // namespace relais::delivery
