// core/log/log.h — structured logs: one JSON object per line with fixed keys first
// (ts, level, shard, event), then the record's own fields.
//
// Format() is pure. Emit() writes a whole line with one write(2) to the log fd (stderr by
// default), so lines from different threads never interleave. Used for lifecycle events
// (start, recovery, listening, shutdown, degraded modes); per-message lines go through each
// shard's buffer (tools/relaisd/shard_log), written by its io_uring.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace relais::log {

enum class Level : uint8_t { kInfo, kWarning, kError };

struct Field {
  std::string_view key;
  std::variant<std::string_view, int64_t, uint64_t, bool> value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, int v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, int64_t v) : key(k), value(v) {}
  Field(std::string_view k, uint32_t v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, uint64_t v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
};

// `shard` < 0: not a shard thread (startup, main).
[[nodiscard]] std::string Format(uint64_t unix_micros, Level level, int shard,
                                 std::string_view event, std::initializer_list<Field> fields);
// The same line appended to `out`: batched per-message lines need no string of their own.
void AppendFormatted(std::string& out, uint64_t unix_micros, Level level, int shard,
                     std::string_view event, std::initializer_list<Field> fields);
void Emit(Level level, int shard, std::string_view event, std::initializer_list<Field> fields);
// Appends `text` to `out` as the inside of a JSON string.
void AppendJsonEscaped(std::string& out, std::string_view text);
// `text` as a quoted JSON string.
[[nodiscard]] std::string JsonString(std::string_view text);
// Writes already formatted lines (several Format results) with one write(2).
void EmitLines(std::string_view lines);
// Where Emit writes; 2 (stderr) by default.
void SetFd(int fd);
[[nodiscard]] int Fd();
// Sends lines to `path` (appended, created mode 0640) instead. Called again for the same
// path, it reopens it onto the same descriptor (logrotate's SIGUSR1), so writers that hold
// the descriptor number go on into the new file. Returns an error text, empty on success.
[[nodiscard]] std::string OpenFile(const std::string& path);

}  // namespace relais::log
