// queue/delivery/planner.cc — see planner.h.
#include "queue/delivery/planner.h"

#include "core/base/strings.h"

namespace relais::delivery {

bool Job::any_pending_maildir() const {
  for (const Item& item : items) {
    if (item.pending_maildir()) {
      return true;
    }
  }
  return false;
}

bool Job::any_pending_network() const {
  for (const Item& item : items) {
    if (item.pending_network()) {
      return true;
    }
  }
  return false;
}

std::unique_ptr<Job> Plan(const scheduler::Attempt& attempt, const spool::StoredMessage& message,
                          const BodySource& body, bool delay_reported,
                          const routing::Router& router, const PlanOptions& options, uint64_t token,
                          uint64_t now_us) {
  auto job = std::make_unique<Job>();
  job->token = token;
  job->message_id = attempt.id.ToString();
  const std::string last = attempt.last_reply.empty()
                               ? std::string()
                               : base::StrCat("; last reply: ", attempt.last_reply);
  for (uint32_t index : attempt.recipients) {
    Item item;
    const mail::Recipient& recipient = message.envelope.recipients[index];
    const std::string& address = recipient.address;
    item.address = address;
    item.notify = recipient.notify;
    item.orcpt = recipient.orcpt;
    std::string_view local, domain;
    router.Split(address, local, domain);
    const config::Route* route = router.Find(domain);
    item.decided = true;
    item.route = RouteOf(route);
    if (attempt.give == scheduler::Attempt::Give::kExpired) {
      item.result = Make(Reason::kExpired, last);
    } else if (attempt.give == scheduler::Attempt::Give::kReturned) {
      item.result = Make(Reason::kReturned, last);
    } else if (!body.in_memory && !body.location) {
      item.result = Make(Reason::kSegmentGone);
    } else if (route == nullptr) {
      // The configuration changed since the message was accepted; it may change back.
      item.result = Make(Reason::kNoRoute);
    } else if (route->type == config::RouteType::kReject) {
      item.result = Make(Reason::kRejectedByRoute);
    } else if (route->type == config::RouteType::kSmarthost ||
               route->type == config::RouteType::kLmtp || route->type == config::RouteType::kMx) {
      // A network recipient: its next hops are resolved on the shard before any body is read.
      item.decided = false;
      item.destination = static_cast<int32_t>(router.IndexOf(*route));
      item.notify_text = mail::NotifyText(recipient.notify);  // Passed on to the next hop.
    } else if (routing::MaildirPath maildir = router.MaildirFor(*route, local, domain);
               maildir.verdict != routing::Verdict::kAccept) {
      // Refused at RCPT already; this covers mail spooled before that check existed.
      item.result =
          Make(maildir.verdict == routing::Verdict::kUnsafeDomain ? Reason::kUnsafeDomain
                                                                  : Reason::kUnsafeMailbox);
    } else {
      item.decided = false;
      item.maildir.directory = std::move(maildir.directory);
      item.maildir.root = maildir::RouteRoot(route->path);  // Delivery never leaves it.
      item.maildir.return_path = message.envelope.sender;
      item.maildir.delivered_to = address;
      // Unique across shards (shard in the sequence) and restarts (time and pid).
      item.maildir.unique_name = maildir::UniqueName(
          now_us, options.pid, (uint64_t{options.shard} << 40) | token, options.hostname);
    }
    job->items.push_back(std::move(item));
  }
  if (body.in_memory) {
    // The job may go to another thread: it gets its own copy.
    job->content = base::StrCat(message.trace, message.body);
  } else {
    job->location = body.location;
  }
  job->sender = message.envelope.sender;
  job->reporting_mta = options.hostname;
  job->received_us = message.received_us;
  job->body_type = message.envelope.body_type;
  job->smtputf8 = message.envelope.smtputf8;
  job->dsn_return = message.envelope.dsn_return;
  job->envid = message.envelope.envid;
  job->report_delay = options.delay_warning_ms != 0 &&
                      now_us >= message.received_us + options.delay_warning_ms * 1000 &&
                      !delay_reported;
  return job;
}

Step NextStep(const Job& job) {
  if (job.location.has_value() || job.any_pending_maildir()) {
    return Step::kWorker;
  }
  if (job.any_pending_network()) {
    return Step::kNetwork;
  }
  return Step::kFinish;
}

}  // namespace relais::delivery
