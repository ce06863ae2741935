// core/log/shard_log.h — one shard's per-message log lines (reception, session end).
//
// Lines collect in a buffer during a loop turn; Flush hands them to the shard's own channel
// to the log writer (core/log), which alone writes the output, so a record reaches a pipe, a
// socket or a file whole. Flush never waits: when the reader is slower than the mail, the
// channel fills and further lines are dropped and counted (the core keeps serving mail).
// Owned by one shard; not thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "core/base/clock.h"
#include "core/log/log.h"

namespace relais::log {

class ShardLog final {
 public:
  // `buffer_bytes_max` 0: log.queue_bytes_max.
  ShardLog(const base::Clock& clock, int shard, size_t buffer_bytes_max = 0);
  ~ShardLog();
  ShardLog(const ShardLog&) = delete;
  ShardLog& operator=(const ShardLog&) = delete;

  void Info(std::string_view event, std::initializer_list<log::Field> fields);
  // Hands this turn's lines to the writer. Once per loop turn.
  void Flush();
  // Everything logged has been written (or counted as dropped).
  [[nodiscard]] bool idle() const { return buffer_.empty() && log::Drained(channel_); }
  // Records of this shard dropped so far (its delivery worker's too; shard 0 also counts
  // those of no shard).
  [[nodiscard]] uint64_t dropped() const { return log::DroppedRecords(shard_); }

 private:
  const base::Clock& clock_;
  const int shard_;
  log::Channel* const channel_;
  std::string buffer_;  // This turn's lines.
};

}  // namespace relais::log
