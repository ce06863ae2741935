// queue/delivery/report.cc — see report.h.
#include "queue/delivery/report.h"

#include <optional>

#include "core/base/check.h"
#include "core/base/strings.h"
#include "core/log/log.h"
#include "queue/bounce/dsn.h"

namespace relais::delivery {

std::unique_ptr<JobDone> Finish(Job& job, int shard, uint64_t now_us,
                                const std::function<std::string()>& boundary_seed,
                                std::string& log_lines, const BounceClassifier* classifier) {
  auto done = std::make_unique<JobDone>();
  done->token = job.token;
  for (Item& item : job.items) {
    RELAIS_CHECK(item.decided) << "a job finished with an undecided recipient";
    // The one place a result is classified: what the log line, the metric and the report say.
    if (item.result.outcome == Outcome::kDelivered) {
      item.bounce_class = BounceClass::kNone;
    } else {
      item.bounce_class =
          classifier != nullptr ? classifier->Classify(item.result) : BounceClass::kOther;
    }
    // One line per recipient and attempt, whoever decided it.
    log::AppendFormatted(log_lines, now_us, log::Level::kInfo, shard, "delivery_attempt",
                         {{"id", job.message_id},
                          {"recipient", item.address},
                          {"route", RouteName(item.route)},
                          {"next_hop", item.next_hop},
                          {"outcome", OutcomeName(item.result.outcome)},
                          {"reply", item.result.Text()},
                          {"bounce_class", BounceClassName(item.bounce_class)},
                          {"duration_us", item.duration_us}});
    done->results.push_back(item.result);
    done->routes.push_back(item.route);
    done->classes.push_back(item.bounce_class);
  }
  if (job.sender.empty()) {
    return done;  // RFC 5321 6.1: no report to <>.
  }
  if (job.read_error) {
    // No message, no report: a failure now would go unreported, so it waits for a retry.
    for (Status& r : done->results) {
      if (r.outcome == Outcome::kFailed) {
        r = Make(Reason::kSpoolUnreadable, base::StrCat(*job.read_error, "; was: ", r.Text()));
      }
    }
    return done;
  }
  bounce::ReportInput in;
  for (size_t i = 0; i < done->results.size(); ++i) {
    const Item& item = job.items[i];
    const Status& result = done->results[i];
    const uint8_t notify = item.notify == 0 ? mail::kNotifyFailure : item.notify;
    std::optional<bounce::Action> action;
    if (result.outcome == Outcome::kFailed && (notify & mail::kNotifyFailure) != 0) {
      action = bounce::Action::kFailed;
    } else if (result.outcome == Outcome::kDeferred && (notify & mail::kNotifyDelay) != 0 &&
               job.report_delay) {
      action = bounce::Action::kDelayed;
      done->delay_reported = true;
    } else if (result.outcome == Outcome::kDelivered && (notify & mail::kNotifySuccess) != 0 &&
               !item.dsn_passed_on) {
      // RFC 3461 4.4 and 6.2: final delivery (Maildir, LMTP) reports "delivered"; a next hop
      // without DSN means we can say no more than "relayed".
      action =
          item.route == Route::kSmarthost ? bounce::Action::kRelayed : bounce::Action::kDelivered;
    }
    if (action) {
      in.recipients.push_back(
          {item.address, result, *action, item.orcpt, BounceClassName(item.bounce_class)});
    }
  }
  if (in.recipients.empty()) {
    return done;
  }
  in.reporting_mta = job.reporting_mta;
  in.original_id = job.message_id;
  in.sender = job.sender;
  in.arrival_date = base::Rfc5322Date(job.received_us);
  in.date = base::Rfc5322Date(now_us);
  in.boundary_seed = boundary_seed();
  in.smtputf8 = job.smtputf8;
  in.envid = job.envid;
  in.return_full = job.dsn_return == mail::DsnReturn::kFull;
  in.original = job.content;
  done->bounce = bounce::BuildReport(in);
  return done;
}

}  // namespace relais::delivery
