// tools/relaisd/delivery_worker.h — the helper thread that runs one shard's blocking
// deliveries (Maildir: write, fsync, rename, directory fsync; mkdirs once per mailbox), so the
// shard never blocks on the file system.
//
// The shard hands over jobs through one SPSC ring and takes results back through another;
// each side wakes the other with an eventfd (the shard reads its eventfd through io_uring).
// One worker per shard, so both rings keep a single producer and a single consumer. The
// worker also writes the per-attempt JSON log line: it is allowed to block.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/ring/spsc_ring.h"
#include "queue/delivery/status.h"
#include "queue/maildir/maildir.h"
#include "queue/scheduler/scheduler.h"
#include "queue/spool/spool.h"

namespace relais::relaisd {

struct DeliveryJob {
  struct Item {
    bool resolved = false;  // Decided on the shard (no transport): `result` is final.
    std::string address;    // The recipient.
    delivery::Route route = delivery::Route::kMaildir;  // For the log, the metrics, the report.
    int32_t destination = -1;  // Route index of a smarthost/lmtp recipient (sent by the shard).
    maildir::Delivery maildir;
    scheduler::RecipientResult result;
    std::string next_hop;      // For the log: the endpoint that answered, if any.
    uint64_t duration_us = 0;  // For the log, when the shard delivered it.
    // RFC 3461: what the sender asked to be told (mail::kNotify* bits; 0: failures only),
    // ORCPT as received, and whether a next hop took over reporting (it offered DSN).
    uint8_t notify = 0;
    std::string orcpt;
    std::string notify_text;  // NOTIFY as passed on to a next hop; empty: none.
    bool dsn_passed_on = false;
  };
  uint64_t token = 0;  // The shard's handle on the attempt.
  std::string message_id;
  std::string content;  // As stored: trace header, then the message. Empty when...
  std::optional<spool::BodyLocation> location;  // ...the worker must read it from here.
  std::vector<Item> items;                      // One per recipient of the attempt, in order.
  // For the bounce when a recipient fails for good; empty sender: never bounce (RFC 5321 6.1).
  std::string sender;
  std::string reporting_mta;
  uint64_t received_us = 0;
  mail::BodyType body_type = mail::BodyType::k7Bit;
  bool smtputf8 = false;
  mail::DsnReturn dsn_return = mail::DsnReturn::kUnspecified;
  std::string envid;
  // The message has waited past delay_warning_ms and no delay report went out yet: deferred
  // recipients that asked for NOTIFY=DELAY are reported.
  bool report_delay = false;
  // Only read the body from `location` into `content` and hand the job back (DeliveryDone::
  // loaded): the shard sends it over the network next. A read failure resolves the pending
  // items as deferred.
  bool load_only = false;
};

struct DeliveryDone {
  uint64_t token = 0;
  std::vector<scheduler::RecipientResult> results;  // One per item.
  std::vector<delivery::Route> routes;              // One per item: its route type.
  // An RFC 3464 report to the sender: failures (unless NOTIFY said otherwise), and the
  // successes and delays that NOTIFY asked for.
  std::string bounce;
  bool delay_reported = false;          // The report covers a delay (report_delay was acted on).
  std::unique_ptr<DeliveryJob> loaded;  // A load_only job, back with its content.
  // For the shard's counters: since the previous DeliveryDone.
  uint64_t mailboxes_recreated = 0;    // Known mailboxes found gone and made again.
  uint64_t directories_forgotten = 0;  // Times the known-directories set was full.
};

class DeliveryWorker {
 public:
  // `directories_known_max`: Maildir directories remembered as durable (io::DurableDirs).
  DeliveryWorker(uint32_t shard, uint32_t capacity_log2, uint32_t directories_known_max = 16384);
  ~DeliveryWorker();  // Finishes the job in hand, then joins.
  DeliveryWorker(const DeliveryWorker&) = delete;
  DeliveryWorker& operator=(const DeliveryWorker&) = delete;

  // Shard side. Submit returns false when the ring is full (the caller keeps the job).
  [[nodiscard]] bool Submit(std::unique_ptr<DeliveryJob>& job);
  // Wakes the worker for everything submitted since the last call.
  void Kick();
  [[nodiscard]] std::unique_ptr<DeliveryDone> TakeDone();
  // Readable (8 bytes) when results are waiting.
  [[nodiscard]] int done_fd() const { return done_fd_; }

 private:
  void Loop();

  const uint32_t shard_;
  const uint32_t directories_known_max_;
  ring::SpscRing<std::unique_ptr<DeliveryJob>> jobs_;
  ring::SpscRing<std::unique_ptr<DeliveryDone>> done_;
  int wake_fd_ = -1;
  int done_fd_ = -1;
  bool kick_pending_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace relais::relaisd
