#include "tools/relaisd/delivery_worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "core/base/check.h"
#include "core/base/clock.h"
#include "core/io/posix_io.h"
#include "core/log/log.h"
#include "queue/delivery/blocking.h"
#include "queue/maildir/maildir.h"
#include "tools/relaisd/secure_random.h"

namespace relais::relaisd {
namespace {

void Signal(int fd) {
  const uint64_t one = 1;
  const ssize_t n = ::write(fd, &one, sizeof(one));
  RELAIS_CHECK(n == sizeof(one) || errno == EAGAIN) << "eventfd write: " << errno;
}

}  // namespace

DeliveryWorker::DeliveryWorker(uint32_t shard, uint32_t capacity_log2,
                               uint32_t directories_known_max,
                               const delivery::BounceClassifier* classifier)
    : shard_(shard),
      directories_known_max_(directories_known_max),
      classifier_(classifier),
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

void DeliveryWorker::Submit(std::unique_ptr<delivery::Job> job) {
  RELAIS_CHECK(jobs_.TryPush(std::move(job))) << "delivery ring full";
  kick_pending_ = true;
}

void DeliveryWorker::Kick() {
  if (kick_pending_) {
    kick_pending_ = false;
    Signal(wake_fd_);
  }
}

std::unique_ptr<delivery::JobDone> DeliveryWorker::TakeDone() {
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
  // 128 bits: a sender cannot predict a report's MIME boundary.
  const std::function<std::string()> boundary = [] { return SecureRandomHex(16); };
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
      std::unique_ptr<delivery::JobDone> done =
          delivery::RunBlocking(std::move(*job), deliverer, io, clock, static_cast<int>(shard_),
                                boundary, log_lines, classifier_);
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
