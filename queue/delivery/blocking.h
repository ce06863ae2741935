// queue/delivery/blocking.h — the blocking part of a job, run on the shard's worker thread
// (tools/relaisd/delivery_worker owns the thread and the rings): read a body that is not in
// memory back from the spool, deliver the Maildir recipients, then either finish the job there
// (report.h) or hand it back unfinished, its body in memory, for its network recipients.
//
// Every file-system call goes through `io` and every time through `clock`, so tests run it
// over tests/sim's disk with a fake clock. Not thread-safe: one call at a time per Deliverer.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/base/clock.h"
#include "core/io/io.h"
#include "queue/delivery/job.h"
#include "queue/maildir/maildir.h"

namespace relais::delivery {

// A Maildir delivery's result, in the status table's words.
[[nodiscard]] Status MaildirStatus(const maildir::Result& result);

// Runs the blocking part of `job` and returns what goes back to the shard: the finished
// results, or the job itself (JobDone::unfinished) when network recipients remain. Log lines
// (maildir_recreated, maildir_error, delivery_attempt) are appended to `log_lines`.
// `classifier`: as report.h's Finish takes it.
[[nodiscard]] std::unique_ptr<JobDone> RunBlocking(
    std::unique_ptr<Job> job, maildir::Deliverer& deliverer, io::Io& io, const base::Clock& clock,
    int shard, const std::function<std::string()>& boundary_seed, std::string& log_lines,
    const BounceClassifier* classifier = nullptr);

}  // namespace relais::delivery
