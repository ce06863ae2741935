// queue/delivery/blocking.cc — see blocking.h.
#include "queue/delivery/blocking.h"

#include <algorithm>

#include "core/log/log.h"
#include "queue/delivery/report.h"

namespace relais::delivery {

Status MaildirStatus(const maildir::Result& r) {
  switch (r.problem) {
    case maildir::Problem::kNone:
      return Make(Reason::kMaildirDelivered, r.detail);
    case maildir::Problem::kNoSpace:
      return Make(Reason::kMaildirFull);
    case maildir::Problem::kRefused:
      return Make(Reason::kMaildirRefused, r.detail);
    case maildir::Problem::kFileSystem:
      break;
  }
  return Make(Reason::kMaildirError);
}

std::unique_ptr<JobDone> RunBlocking(std::unique_ptr<Job> job, maildir::Deliverer& deliverer,
                                     io::Io& io, const base::Clock& clock, int shard,
                                     const std::function<std::string()>& boundary_seed,
                                     std::string& log_lines, const BounceClassifier* classifier) {
  if (job->location) {
    // A body beyond the shard's memory budget: read here, where blocking is allowed.
    auto body = spool::ReadBodyAt(io, *job->location);
    if (body.ok()) {
      job->content = std::move(*body);
    } else {
      job->read_error = std::string(body.status().message());
    }
    job->location.reset();
  }
  for (Item& item : job->items) {
    if (item.decided) {
      continue;
    }
    if (job->read_error) {
      item.decided = true;
      item.result = Make(Reason::kSpoolUnreadable, *job->read_error);
      continue;
    }
    if (!item.pending_maildir()) {
      continue;  // Network: on the shard, next.
    }
    const uint64_t start_us = clock.UnixMicros();
    const maildir::Result r = deliverer.Deliver(item.maildir, job->content);
    if (r.recreated) {
      log::AppendFormatted(log_lines, clock.UnixMicros(), log::Level::kWarning, shard,
                           "maildir_recreated",
                           {{"id", job->message_id},
                            {"recipient", item.address},
                            {"mailbox", item.maildir.directory},
                            {"msg",
                             "mailbox removed while relaisd was running; created again "
                             "and made durable before delivering into it"}});
    }
    if (!r.error.empty()) {
      // The file-system error names paths: the log has it, the sender does not.
      log::AppendFormatted(log_lines, clock.UnixMicros(), log::Level::kWarning, shard,
                           "maildir_error",
                           {{"id", job->message_id},
                            {"recipient", item.address},
                            {"mailbox", item.maildir.directory},
                            {"error", r.error}});
    }
    item.decided = true;
    item.result = MaildirStatus(r);
    item.duration_us = std::max<uint64_t>(1, clock.UnixMicros() - start_us);
  }
  if (job->any_pending_network()) {
    auto done = std::make_unique<JobDone>();
    done->token = job->token;
    done->unfinished = std::move(job);
    return done;
  }
  return Finish(*job, shard, clock.UnixMicros(), boundary_seed, log_lines, classifier);
}

}  // namespace relais::delivery
