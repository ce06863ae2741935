// core/log/shard_log.cc — see shard_log.h.
#include "core/log/shard_log.h"

namespace relais::log {

ShardLog::ShardLog(const base::Clock& clock, int shard, size_t buffer_bytes_max)
    : clock_(clock), shard_(shard), channel_(log::OpenChannel(shard, buffer_bytes_max)) {}

ShardLog::~ShardLog() {
  Flush();
  log::Close(channel_);
}

void ShardLog::Info(std::string_view event, std::initializer_list<log::Field> fields) {
  log::AppendFormatted(buffer_, clock_.UnixMicros(), log::Level::kInfo, shard_, event, fields);
}

void ShardLog::Flush() {
  if (!buffer_.empty()) {
    log::Append(channel_, buffer_);
    buffer_.clear();
  }
}

}  // namespace relais::log
