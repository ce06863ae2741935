// queue/delivery/planner.h — attempt planning: a due attempt of one message, and the router,
// become one Job whose recipients are each decided at once (expired, returned, no route,
// reject route, an unsafe Maildir path) or left to a transport (Maildir on the worker thread,
// SMTP/LMTP through the outbound pools). Then where the job goes next.
//
// Pure: no I/O, no clock (the caller passes `now_us`), no state. Runs on the shard.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "queue/delivery/job.h"
#include "queue/routing/router.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"

namespace relais::delivery {

struct PlanOptions {
  uint32_t shard = 0;
  uint32_t pid = 0;               // With the shard and the token, makes Maildir file names unique.
  std::string hostname;           // Reporting MTA, and the host part of Maildir file names.
  uint64_t delay_warning_ms = 0;  // 0: no delay reports.
};

// Where the body of the message is.
struct BodySource {
  bool in_memory = false;                       // message.trace + message.body hold it.
  std::optional<spool::BodyLocation> location;  // Else here (nullopt: the segment is gone).
};

// The job for `attempt` of `message`. `delay_reported`: a delay report went out already.
[[nodiscard]] std::unique_ptr<Job> Plan(const scheduler::Attempt& attempt,
                                        const spool::StoredMessage& message, const BodySource& body,
                                        bool delay_reported, const routing::Router& router,
                                        const PlanOptions& options, uint64_t token,
                                        uint64_t now_us);

// Where a job goes next. Blocking work comes first and only once: the worker reads a body
// that is not in memory and delivers the Maildir recipients; then the shard sends the network
// recipients from the body in memory; then the job is finished (report, log lines) wherever
// it is. So a body crosses threads at most once each way.
enum class Step : uint8_t {
  kWorker,   // A body to read from the spool or a Maildir recipient: the worker thread.
  kNetwork,  // Network recipients, the body in memory: the outbound pools.
  kFinish,   // Every recipient decided: report and log.
};
[[nodiscard]] Step NextStep(const Job& job);

}  // namespace relais::delivery
