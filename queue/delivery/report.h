// queue/delivery/report.h — the end of an attempt, once every recipient is decided: one
// delivery_attempt log line per recipient, and the DSN report policy (RFC 3461, RFC 3464):
// failures are reported unless NOTIFY excludes them, delays once (NOTIFY=DELAY, after
// delay_warning_ms), successes when NOTIFY=SUCCESS ("relayed" for a smarthost, "delivered"
// for final delivery; none when the next hop took the duty over). A message from <> is never
// reported on; a body that could not be read turns failures into deferrals (a report must
// return the message).
//
// It is also the one place that classifies (bounce_class.h): every recipient not delivered
// gets its Item::bounce_class, the delivery_attempt line's "bounce_class" ("none" for a
// delivery), JobDone::classes (the metric) and, in a report, X-Relais-Bounce-Class.
//
// Pure CPU: no I/O, no clock (the caller passes `now_us`), no state. It runs wherever the job
// ends: on the worker thread after Maildir deliveries, or on the shard after the network.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "queue/delivery/job.h"

namespace relais::delivery {

// `boundary_seed` returns a random token from a CSPRNG (>= 96 bits), called only when a report
// is built. The log lines are appended to `log_lines` (log::AppendFormatted, shard `shard`).
// `classifier` (shared, immutable) classifies what is not delivered; null: all kOther.
[[nodiscard]] std::unique_ptr<JobDone> Finish(Job& job, int shard, uint64_t now_us,
                                              const std::function<std::string()>& boundary_seed,
                                              std::string& log_lines,
                                              const BounceClassifier* classifier = nullptr);

}  // namespace relais::delivery
