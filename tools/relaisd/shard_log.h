// tools/relaisd/shard_log.h — one shard's per-message log lines (reception, session end),
// buffered and written by the shard's io_uring, so logging never blocks a core.
//
// Lines collect in a buffer during a loop turn; Flush hands them to one asynchronous write of
// at most 4 KiB of whole lines (PIPE_BUF: a pipe reader never sees lines of two writers
// mixed), continuing with the rest as each write completes. When the reader is slower than
// the mail, the buffer stops at buffer_bytes_max and further lines are dropped and counted:
// the core keeps serving mail. Owned by one shard; not thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "core/base/clock.h"
#include "core/io/io.h"
#include "core/log/log.h"
#include "core/uring/engine.h"

namespace relais::relaisd {

class ShardLog final : io::IoOp {
 public:
  ShardLog(uring::Engine& engine, const base::Clock& clock, int shard, int fd,
           size_t buffer_bytes_max = 4 << 20)
      : engine_(engine),
        clock_(clock),
        shard_(shard),
        fd_(fd),
        buffer_bytes_max_(buffer_bytes_max) {}

  void Info(std::string_view event, std::initializer_list<log::Field> fields);
  // Starts a write if none is in flight. Once per loop turn.
  void Flush();
  [[nodiscard]] bool idle() const { return !in_flight_ && buffer_.empty(); }
  [[nodiscard]] uint64_t dropped() const { return dropped_; }

 private:
  void OnIoComplete(int32_t result) override;

  uring::Engine& engine_;
  const base::Clock& clock_;
  const int shard_;
  const int fd_;
  const size_t buffer_bytes_max_;
  std::string buffer_;  // Lines not yet handed to a write.
  std::string flight_;  // The lines of the write in flight.
  size_t flight_done_ = 0;
  bool in_flight_ = false;
  uint64_t dropped_ = 0;
};

}  // namespace relais::relaisd
