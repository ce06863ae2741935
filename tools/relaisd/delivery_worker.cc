#include "tools/relaisd/delivery_worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>

#include "core/base/check.h"
#include "core/base/clock.h"
#include "core/base/strings.h"
#include "core/io/posix_io.h"
#include "core/log/log.h"
#include "queue/bounce/dsn.h"
#include "tools/relaisd/secure_random.h"

namespace relais::relaisd {
namespace {

void Signal(int fd) {
  const uint64_t one = 1;
  const ssize_t n = ::write(fd, &one, sizeof(one));
  RELAIS_CHECK(n == sizeof(one) || errno == EAGAIN) << "eventfd write: " << errno;
}

// A Maildir delivery's result, in the status table's words.
delivery::Status MaildirStatus(const maildir::Result& r) {
  switch (r.problem) {
    case maildir::Problem::kNone:
      return delivery::Make(delivery::Reason::kMaildirDelivered, r.detail);
    case maildir::Problem::kNoSpace:
      return delivery::Make(delivery::Reason::kMaildirFull);
    case maildir::Problem::kRefused:
      return delivery::Make(delivery::Reason::kMaildirRefused, r.detail);
    case maildir::Problem::kFileSystem:
      break;
  }
  return delivery::Make(delivery::Reason::kMaildirError);
}

}  // namespace

DeliveryWorker::DeliveryWorker(uint32_t shard, uint32_t capacity_log2,
                               uint32_t directories_known_max)
    : shard_(shard),
      directories_known_max_(directories_known_max),
      jobs_(capacity_log2),
      done_(capacity_log2) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  done_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  RELAIS_CHECK(wake_fd_ >= 0 && done_fd_ >= 0) << "eventfd: " << errno;
  thread_ = std::thread([this] { Loop(); });
}

DeliveryWorker::~DeliveryWorker() {
  stop_.store(true, std::memory_order_release);
  Signal(wake_fd_);
  thread_.join();
  ::close(wake_fd_);
  ::close(done_fd_);
}

bool DeliveryWorker::Submit(std::unique_ptr<DeliveryJob>& job) {
  if (!jobs_.TryPush(std::move(job))) {
    return false;
  }
  kick_pending_ = true;
  return true;
}

void DeliveryWorker::Kick() {
  if (kick_pending_) {
    kick_pending_ = false;
    Signal(wake_fd_);
  }
}

std::unique_ptr<DeliveryDone> DeliveryWorker::TakeDone() {
  auto done = done_.TryPop();
  return done ? std::move(*done) : nullptr;
}

void DeliveryWorker::Loop() {
  io::PosixIo io;
  // This worker's memory of which mailboxes are durable already (bounded): a mailbox costs
  // mkdirs and directory fsyncs on its first delivery in this process, none after.
  maildir::Deliverer deliverer(io, directories_known_max_);
  uint64_t recreated_reported = 0;
  uint64_t forgotten_reported = 0;
  base::SystemClock clock;
  const std::string name = "relais-deliv-" + std::to_string(shard_);
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  // Our own channel to the log writer: a batch reaches the output whole, and a slow reader
  // costs lines (counted), never a blocked delivery.
  log::Channel* const log_channel = log::OpenChannel(static_cast<int>(shard_));
  while (true) {
    uint64_t count;
    // Blocks until the shard has work for us or we are told to stop.
    const ssize_t n = ::read(wake_fd_, &count, sizeof(count));
    (void)n;
    std::string log_lines;  // The batch's log lines, written once at its end.
    while (auto job = jobs_.TryPop()) {
      auto done = std::make_unique<DeliveryDone>();
      done->token = (*job)->token;
      std::optional<std::string> read_error;  // Why the body could not be read.
      if ((*job)->location) {
        // A body beyond the shard's memory budget: read it here, where blocking is allowed.
        auto body = spool::ReadBodyAt(io, *(*job)->location);
        if (body.ok()) {
          (*job)->content = std::move(*body);
        } else {
          read_error = std::string(body.status().message());
        }
      }
      if ((*job)->load_only) {
        for (DeliveryJob::Item& item : (*job)->items) {
          if (!item.resolved && read_error) {
            item.resolved = true;
            item.result = delivery::Make(delivery::Reason::kSpoolUnreadable, *read_error);
          }
        }
        (*job)->load_only = false;
        (*job)->location.reset();
        done->loaded = std::move(*job);
        RELAIS_CHECK(done_.TryPush(std::move(done))) << "delivery results ring full";
        Signal(done_fd_);
        continue;
      }
      for (DeliveryJob::Item& item : (*job)->items) {
        if (!item.resolved && read_error) {
          item.resolved = true;
          item.result = delivery::Make(delivery::Reason::kSpoolUnreadable, *read_error);
        }
        RELAIS_CHECK(item.resolved || item.destination < 0) << "a network item reached the worker";
        const uint64_t start_us = clock.UnixMicros();
        scheduler::RecipientResult result = item.result;
        if (!item.resolved) {
          const maildir::Result r = deliverer.Deliver(item.maildir, (*job)->content);
          if (r.recreated) {
            log::AppendFormatted(log_lines, clock.UnixMicros(), log::Level::kWarning,
                                 static_cast<int>(shard_), "maildir_recreated",
                                 {{"id", (*job)->message_id},
                                  {"recipient", item.address},
                                  {"mailbox", item.maildir.directory},
                                  {"msg",
                                   "mailbox removed while relaisd was running; created again "
                                   "and made durable before delivering into it"}});
          }
          result = MaildirStatus(r);
          if (!r.error.empty()) {
            // The file-system error names paths: the log has it, the sender does not.
            log::AppendFormatted(log_lines, clock.UnixMicros(), log::Level::kWarning,
                                 static_cast<int>(shard_), "maildir_error",
                                 {{"id", (*job)->message_id},
                                  {"recipient", item.address},
                                  {"mailbox", item.maildir.directory},
                                  {"error", r.error}});
          }
        }
        // One line per recipient and attempt, whoever decided it; written with the batch.
        const uint64_t now_us = clock.UnixMicros();
        log::AppendFormatted(
            log_lines, now_us, log::Level::kInfo, static_cast<int>(shard_), "delivery_attempt",
            {{"id", (*job)->message_id},
             {"recipient", item.address},
             {"route", delivery::RouteName(item.route)},
             {"next_hop", item.next_hop},
             {"outcome", delivery::OutcomeName(result.outcome)},
             {"reply", result.Text()},
             {"duration_us", item.duration_us != 0 ? item.duration_us : now_us - start_us}});
        done->results.push_back(std::move(result));
        done->routes.push_back(item.route);
      }
      if (!(*job)->sender.empty() && read_error) {
        // No message, no bounce: a failure now would go unreported, so it waits for a retry.
        for (scheduler::RecipientResult& r : done->results) {
          if (r.outcome == scheduler::Outcome::kFailed) {
            r = delivery::Make(delivery::Reason::kSpoolUnreadable,
                               base::StrCat(*read_error, "; was: ", r.Text()));
          }
        }
      }
      if (!(*job)->sender.empty() && !read_error) {
        bounce::ReportInput in;
        for (size_t i = 0; i < done->results.size(); ++i) {
          const DeliveryJob::Item& item = (*job)->items[i];
          const scheduler::RecipientResult& result = done->results[i];
          const uint8_t notify = item.notify == 0 ? mail::kNotifyFailure : item.notify;
          std::optional<bounce::Action> action;
          if (result.outcome == scheduler::Outcome::kFailed &&
              (notify & mail::kNotifyFailure) != 0) {
            action = bounce::Action::kFailed;
          } else if (result.outcome == scheduler::Outcome::kDeferred &&
                     (notify & mail::kNotifyDelay) != 0 && (*job)->report_delay) {
            action = bounce::Action::kDelayed;
            done->delay_reported = true;
          } else if (result.outcome == scheduler::Outcome::kDelivered &&
                     (notify & mail::kNotifySuccess) != 0 && !item.dsn_passed_on) {
            // RFC 3461 4.4 and 6.2: final delivery (Maildir, LMTP) reports "delivered"; a
            // next hop without DSN means we can say no more than "relayed".
            action = item.route == delivery::Route::kSmarthost ? bounce::Action::kRelayed
                                                               : bounce::Action::kDelivered;
          }
          if (action) {
            in.recipients.push_back({item.address, result, *action, item.orcpt});
          }
        }
        if (!in.recipients.empty()) {
          in.reporting_mta = (*job)->reporting_mta;
          in.original_id = (*job)->message_id;
          in.sender = (*job)->sender;
          in.arrival_date = base::Rfc5322Date((*job)->received_us);
          in.date = base::Rfc5322Date(clock.UnixMicros());
          in.boundary_seed = SecureRandomHex(16);  // 128 bits: a sender cannot predict it.
          in.smtputf8 = (*job)->smtputf8;
          in.envid = (*job)->envid;
          in.return_full = (*job)->dsn_return == mail::DsnReturn::kFull;
          in.original = (*job)->content;
          done->bounce = bounce::BuildReport(in);
        }
      }
      done->mailboxes_recreated = deliverer.mailboxes_recreated() - recreated_reported;
      done->directories_forgotten = deliverer.directory_stats().evictions - forgotten_reported;
      recreated_reported = deliverer.mailboxes_recreated();
      forgotten_reported = deliverer.directory_stats().evictions;
      // The results ring is as large as the jobs ring and the shard keeps fewer attempts in
      // flight than either holds, so it cannot be full.
      RELAIS_CHECK(done_.TryPush(std::move(done))) << "delivery results ring full";
      Signal(done_fd_);
    }
    log::Append(log_channel, log_lines);
    if (stop_.load(std::memory_order_acquire)) {
      log::Close(log_channel);
      return;
    }
  }
}

}  // namespace relais::relaisd
