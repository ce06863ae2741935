// queue/spool/spool.h — one shard's append-only message store, with group commit.
//
// Layout: <path>/shard-<k>/seg-<sequence, 16 hex>.rls, one directory per shard so that shards
// never touch each other's files. Append() stages a record in memory; Flush(), called once per
// engine loop turn, writes every staged record in one write and one fdatasync (group commit).
// Each AppendCompletion runs after the batch holding its message is durable (kDurable) or has
// failed (kFailed / kNoSpace: nothing of that batch is acknowledged). kDurable always comes
// from a later I/O completion; a failure to create a segment is reported from Flush itself. After a
// failed write or fdatasync the segment is no longer trusted: the next batch goes to a new segment
// (no retry-fsync-and-hope, since a failed fdatasync may have dropped dirty pages for good).
//
// Recovery (Recover) scans every segment, drops a torn tail, skips and reports a corrupt
// record, and rebuilds the index of messages not yet done. New appends always go to a fresh
// segment. A segment is deleted when it and every older segment hold no live message.
//
// Owned by one shard; not thread-safe. Never blocks on the data path: writes go through
// io::Io. Segment creation (once per segment_bytes_max) and recovery are synchronous.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/clock.h"
#include "core/io/io.h"
#include "core/mail/envelope.h"
#include "core/mail/message_id.h"
#include "core/metrics/metrics.h"
#include "queue/spool/record.h"

namespace relais::spool {

struct SpoolOptions {
  std::string path = "./var/spool";
  uint16_t shard = 0;
  uint16_t shard_count = 1;  // Shard k also adopts the directories of shards j ≡ k (mod count).
  uint64_t segment_bytes_max = 64ull << 20;
  uint64_t spool_bytes_max = 0;  // 0: no cap.
  uint64_t body_memory_bytes_max = 256ull << 20;
  uint32_t no_space_backoff_ms = 5000;  // After ENOSPC, refuse new mail this long.
  bool read_only = false;               // Tools: recover and list, never write or truncate.
  // Observes each batch's write-plus-fdatasync time when set (the shard's metrics).
  metrics::Histogram* batch_seconds = nullptr;
};

enum class [[nodiscard]] AppendOutcome : uint8_t{kDurable, kFailed, kNoSpace};
enum class [[nodiscard]] AppendStatus : uint8_t{
    kStaged,      // The completion will run.
    kOverBudget,  // The spool cap or ENOSPC backoff: reply 452 4.3.1; the completion won't run.
};

class AppendCompletion {
 public:
  virtual void OnAppendDone(AppendOutcome outcome, const mail::MessageId& id) = 0;

 protected:
  ~AppendCompletion() = default;
};

// Segments are keyed by (directory shard, sequence): a shard that adopts another shard's old
// directory keeps its order apart from its own.
using SegmentKey = std::pair<uint32_t, uint64_t>;

struct StoredMessage {
  mail::MessageId id;
  uint64_t received_us = 0;
  mail::Envelope envelope;
  std::vector<RecipientState> states;
  SegmentKey segment;          // The segment holding its record.
  uint64_t record_offset = 0;  // In that segment.
  uint64_t record_size = 0;
  uint64_t body_size = 0;
  // Held while the memory budget allows (else both are empty and the body is read back from
  // the segment). The stored body is trace + body.
  std::string trace;
  std::string body;
  bool body_in_memory = false;
  // The last deferral, as recorded (next_attempt_us == 0: none).
  uint64_t next_attempt_us = 0;
  uint32_t attempts = 0;
  std::string last_reply;
  bool delay_reported = false;
};

struct RecoveryReport {
  uint32_t segments = 0;
  uint64_t messages_live = 0;
  uint64_t messages_done = 0;
  uint32_t torn_tails = 0;
  uint32_t corrupt_records = 0;
  uint32_t unreadable_segments = 0;
  std::vector<std::string> problems;  // One line each, naming file and offset.
};

struct SpoolStats {
  uint64_t appends = 0;
  uint64_t batches = 0;  // One write + one fdatasync each.
  uint64_t batch_failures = 0;
  uint64_t bytes_written = 0;
  uint64_t segments_created = 0;
  uint64_t segments_deleted = 0;
};

// Where a message's record lies, for reading its body off the shard (delivery workers). The
// file stays open while the message is live, and a message with a delivery in flight is live.
struct BodyLocation {
  io::FileHandle file;
  uint64_t record_offset = 0;
  uint64_t record_size = 0;
  mail::MessageId id;
};

// Reads a message record back and checks its CRC before returning the body. Blocking; safe on
// any thread (pread on a file that stays open).
[[nodiscard]] absl::StatusOr<std::string> ReadBodyAt(io::Io& io, const BodyLocation& location);

class Spool {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Spool>> Open(const SpoolOptions& options,
                                                                   io::Io& io,
                                                                   const base::Clock& clock);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Must run once, before the first Append.
  [[nodiscard]] absl::StatusOr<RecoveryReport> Recover();

  // Unique across shards and restarts (see core/mail/message_id.h).
  [[nodiscard]] mail::MessageId NewMessageId();

  // Stages a message whose stored body is `trace` then `body`. `done` must live until called.
  [[nodiscard]] AppendStatus Append(const mail::MessageId& id, mail::Envelope&& envelope,
                                    std::string_view trace, std::string&& body,
                                    AppendCompletion& done);
  // Stages an outcome for one recipient; a message whose recipients are all final is done.
  void RecordOutcome(const mail::MessageId& id, uint32_t recipient_index, RecipientState state);
  // Stages a deferral, so that a restart resumes the retry schedule instead of retrying at once.
  void RecordDeferral(const mail::MessageId& id, uint64_t next_attempt_us, uint32_t attempts,
                      std::string_view last_reply, bool delay_reported = false);
  // Starts a group commit of everything staged, unless one is in flight (then the staged
  // records go as soon as it completes). Call once per loop turn.
  void Flush();

  // True while new mail must be refused with 452 4.3.1 (cap reached, or ENOSPC backoff).
  [[nodiscard]] bool full() const { return full_; }
  [[nodiscard]] const bool* full_flag() const { return &full_; }
  // True when nothing is staged and no batch is in flight.
  [[nodiscard]] bool idle() const { return !in_flight_ && staged_.empty(); }

  [[nodiscard]] const StoredMessage* Find(const mail::MessageId& id) const;
  [[nodiscard]] absl::StatusOr<std::string> ReadBody(const StoredMessage& message);
  // True when the body is held in memory (message.trace + message.body); else Locate says
  // where to read it.
  [[nodiscard]] bool BodyInMemory(const StoredMessage& message) const {
    return message.body_in_memory;
  }
  [[nodiscard]] std::optional<BodyLocation> Locate(const StoredMessage& message) const;
  void ForEach(const std::function<void(const StoredMessage&)>& fn) const;
  [[nodiscard]] size_t message_count() const { return index_.size(); }
  [[nodiscard]] uint64_t live_bytes() const { return live_bytes_; }
  [[nodiscard]] size_t segment_count() const { return segments_.size(); }
  [[nodiscard]] const SpoolStats& stats() const { return stats_; }

 private:
  struct Segment {
    std::string path;
    io::FileHandle file;
    uint64_t size = 0;
    uint64_t live_messages = 0;
  };
  struct Waiter {
    AppendCompletion* done;
    std::unique_ptr<StoredMessage> message;
    uint64_t record_offset;  // Within the batch.
    uint64_t record_size;
  };
  class BatchOp final : public io::IoOp {
   public:
    explicit BatchOp(Spool* spool) : spool_(spool) {}
    void OnIoComplete(int32_t result) override { spool_->OnBatchIo(result); }

   private:
    Spool* spool_;
  };

  Spool(const SpoolOptions& options, io::Io& io, const base::Clock& clock);
  absl::Status RecoverSegment(const SegmentKey& key, const std::string& path,
                              RecoveryReport& report);
  absl::Status StartSegment();
  void OnBatchIo(int32_t result);
  void FinishBatch(AppendOutcome outcome);
  void Index(std::unique_ptr<StoredMessage> message);
  void Retire(const mail::MessageId& id);
  void ReclaimSegments();
  void UpdateFull();
  std::string ShardDir(uint32_t shard) const;

  const SpoolOptions options_;
  io::Io& io_;
  const base::Clock& clock_;
  bool recovered_ = false;
  uint64_t id_epoch_us_ = 0;
  uint64_t id_counter_ = 0;
  uint64_t next_sequence_ = 1;

  std::map<SegmentKey, Segment> segments_;
  SegmentKey current_key_{0, 0};  // Where appends go; {0, 0} before the first segment.
  bool current_trusted_ = false;
  std::unordered_map<mail::MessageId, std::unique_ptr<StoredMessage>, mail::MessageIdHash> index_;
  uint64_t live_bytes_ = 0;  // Sum of segment sizes.
  uint64_t body_memory_bytes_ = 0;

  std::string staged_;
  std::vector<Waiter> staged_waiters_;
  std::string flight_;
  std::vector<Waiter> flight_waiters_;
  // Segments of messages retired by staged (then in-flight) outcome records: their live
  // counts drop, and an emptied segment is deleted, only once that batch is durable.
  std::vector<SegmentKey> staged_retirements_;
  std::vector<SegmentKey> flight_retirements_;
  uint64_t flight_offset_ = 0;      // Where in the current segment the batch goes.
  uint64_t flight_started_us_ = 0;  // When the batch's write was submitted.
  uint64_t flight_written_ = 0;     // Bytes written so far (short writes continue).
  bool in_flight_ = false;
  bool syncing_ = false;
  BatchOp batch_op_{this};

  bool full_ = false;
  bool cap_reached_ = false;  // An append was refused by spool_bytes_max.
  uint64_t no_space_until_ms_ = 0;
  SpoolStats stats_;
};

}  // namespace relais::spool
