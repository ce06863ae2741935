// tools/relaisd/shard_log.cc — see shard_log.h.
#include "tools/relaisd/shard_log.h"

namespace relais::relaisd {
namespace {
constexpr size_t kWriteBytesMax = 4096;  // PIPE_BUF on Linux.
}  // namespace

void ShardLog::Info(std::string_view event, std::initializer_list<log::Field> fields) {
  if (buffer_.size() >= buffer_bytes_max_) {
    ++dropped_;
    return;
  }
  log::AppendFormatted(buffer_, clock_.UnixMicros(), log::Level::kInfo, shard_, event, fields);
}

void ShardLog::Flush() {
  if (in_flight_ || buffer_.empty()) {
    return;
  }
  // Whole lines, up to 4 KiB (one longer line goes alone).
  size_t take = buffer_.size();
  if (take > kWriteBytesMax) {
    const size_t last = buffer_.rfind('\n', kWriteBytesMax - 1);
    take = last == std::string::npos ? buffer_.find('\n') + 1 : last + 1;
  }
  flight_.assign(buffer_, 0, take);
  buffer_.erase(0, take);
  flight_done_ = 0;
  in_flight_ = true;
  // Offset -1: at the file's position (and appended, for a file opened O_APPEND; a pipe or a
  // terminal has none).
  engine_.Write(fd_, static_cast<uint64_t>(-1), flight_, *this);
}

void ShardLog::OnIoComplete(int32_t result) {
  if (result > 0 && flight_done_ + static_cast<size_t>(result) < flight_.size()) {
    flight_done_ += static_cast<size_t>(result);
    engine_.Write(fd_, static_cast<uint64_t>(-1), std::string_view(flight_).substr(flight_done_),
                  *this);
    return;
  }
  if (result <= 0) {
    ++dropped_;  // stdout closed or full disk: the lines are lost, the mail is not.
  }
  in_flight_ = false;
  flight_.clear();
  Flush();
}

}  // namespace relais::relaisd
