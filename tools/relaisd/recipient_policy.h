// tools/relaisd/recipient_policy.h — the SMTP session's RCPT-time check, answered by the
// router: a recipient is taken only if its mail has somewhere to go.
// Immutable; shared read-only by all shards.
#pragma once

#include "protocols/smtp/server_session.h"
#include "queue/routing/router.h"

namespace relais::relaisd {

class RouterPolicy final : public smtp::RecipientPolicy {
 public:
  explicit RouterPolicy(const routing::Router& router) : router_(router) {}

  smtp::Reply Check(std::string_view local_part, std::string_view domain) const override {
    switch (router_.Check(local_part, domain)) {
      case routing::Verdict::kAccept:
        return smtp::Reply::kRecipientOk;
      case routing::Verdict::kNoRoute:
        return smtp::Reply::kNoRoute;
      case routing::Verdict::kRejectedByRoute:
        return smtp::Reply::kRecipientRejected;
      case routing::Verdict::kUnsafeLocalPart:
        return smtp::Reply::kUnsafeMailbox;
      case routing::Verdict::kUnsafeDomain:
        return smtp::Reply::kUnsafeDomain;
    }
    return smtp::Reply::kNoRoute;
  }

 private:
  const routing::Router& router_;
};

}  // namespace relais::relaisd
