// tools/relaisd/delivery_worker.h — the helper thread that runs one shard's blocking delivery
// work (queue/delivery/blocking.h: reading a body back from the spool, Maildir: write, fsync,
// rename, directory fsync; mkdirs once per mailbox), so the shard never blocks on the file
// system.
//
// The shard's delivery::Delivery hands over jobs through one SPSC ring and the shard takes
// results back through another; each side wakes the other with an eventfd (the shard reads its
// eventfd through io_uring). One worker per shard, so both rings keep a single producer and a
// single consumer. The worker writes the log lines of the jobs it finishes to a log channel of
// its own: it is allowed to block.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "core/ring/spsc_ring.h"
#include "queue/delivery/delivery.h"
#include "queue/delivery/job.h"

namespace relais::relaisd {

class DeliveryWorker final : public delivery::BlockingWork {
 public:
  // `directories_known_max`: Maildir directories remembered as durable (io::DurableDirs).
  // `classifier` (shared, immutable, outlives the worker) classifies the results of the jobs
  // finished here; null: every one not delivered is kOther.
  DeliveryWorker(uint32_t shard, uint32_t capacity_log2, uint32_t directories_known_max = 16384,
                 const delivery::BounceClassifier* classifier = nullptr);
  ~DeliveryWorker();  // Finishes the job in hand, then joins.
  DeliveryWorker(const DeliveryWorker&) = delete;
  DeliveryWorker& operator=(const DeliveryWorker&) = delete;

  // Shard side. The rings hold more jobs than attempts_in_flight_max allows (at most 512), so
  // a full ring is a bug.
  void Submit(std::unique_ptr<delivery::Job> job) override;
  // Wakes the worker for everything submitted since the last call.
  void Kick();
  [[nodiscard]] std::unique_ptr<delivery::JobDone> TakeDone();
  // Readable (8 bytes) when results are waiting.
  [[nodiscard]] int done_fd() const { return done_fd_; }

 private:
  void Loop();

  const uint32_t shard_;
  const uint32_t directories_known_max_;
  const delivery::BounceClassifier* const classifier_;
  ring::SpscRing<std::unique_ptr<delivery::Job>> jobs_;
  ring::SpscRing<std::unique_ptr<delivery::JobDone>> done_;
  int wake_fd_ = -1;
  int done_fd_ = -1;
  bool kick_pending_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace relais::relaisd
