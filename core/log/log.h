// core/log/log.h — structured logs: one JSON object per line with fixed keys first
// (ts, level, shard, event), then the record's own fields.
//
// Format() is pure. Every string enters a record through AppendJsonEscaped, which also makes
// it valid UTF-8 (whatever a client sent: each invalid byte becomes U+FFFD), and cuts a value
// longer than kValueBytesMax (the record then ends with "truncated":true): every line is one
// valid JSON object of bounded size.
//
// One writer per output. Once StartWriter() has run, no thread but the log writer's writes
// to the log fd: producers copy whole records into a Channel of their own (a bounded
// single-producer queue of bytes), and the writer thread drains every channel, one channel's
// whole records at a time, continuing partial writes itself. So a record reaches a pipe, a
// socket or a file whole whatever its size, and a slow reader blocks only the writer: a full
// channel drops records and counts them (DroppedRecords, and a "log_records_dropped" line
// once the writer catches up). Before StartWriter (startup, tools, unit tests) every append
// is written at once.
//
// Emit() (lifecycle events: start, recovery, listening, shutdown, degraded modes, from any
// thread) shares one channel behind a mutex; per-message lines go through a channel per
// producer (core/log/shard_log, each delivery worker), never a mutex.
#pragma once

#include <cstddef>
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
// A string value longer than this (escaped) is cut at a character boundary.
inline constexpr size_t kValueBytesMax = 4096;

// Appends `text` to `out` as the inside of a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 (stray continuation bytes, truncated or overlong
// sequences, surrogates, code points past U+10FFFF) replaced by U+FFFD, one per byte.
// Returns false (having appended a prefix) when the result would exceed `bytes_max`.
bool AppendJsonEscaped(std::string& out, std::string_view text, size_t bytes_max = SIZE_MAX);
// `text` as valid UTF-8: each byte of an invalid sequence replaced by U+FFFD.
[[nodiscard]] std::string ValidUtf8(std::string_view text);
// `text` as a quoted JSON string.
[[nodiscard]] std::string JsonString(std::string_view text);
// Hands already formatted lines (several Format results) to the output (Emit's channel).
void EmitLines(std::string_view lines);

// One producer's queue of records to the writer. Open one per thread that logs per message;
// the channel lives until Close().
class Channel;
// `shard` attributes its dropped records (DroppedRecords); < 0: none. `bytes_max` 0: the
// configured size (SetChannelBytesMax).
[[nodiscard]] Channel* OpenChannel(int shard, size_t bytes_max = 0);
// The backlog a channel holds before it drops records (log.queue_bytes_max); 4 MiB unless
// set. Call before the producers open their channels.
void SetChannelBytesMax(size_t bytes_max);
// Producer side, one thread at a time: queues `lines` (whole lines). What does not fit is
// dropped and counted, never waited for. Returns false when anything was dropped.
bool Append(Channel* channel, std::string_view lines);
// True when every record appended to `channel` has been written (or counted as lost).
[[nodiscard]] bool Drained(const Channel* channel);
// The writer frees the channel once it has written what is left in it.
void Close(Channel* channel);
// Records dropped so far that belong to `shard` (a full channel); shard 0 also gets those
// of no shard (Emit's channel, and records a failed write lost).
[[nodiscard]] uint64_t DroppedRecords(int shard);

// Starts the writer thread (once; the caller has blocked the signals it handles elsewhere,
// the thread inherits the mask). At exit, the writer gets a moment to write what is queued.
void StartWriter();
// Lets the writer finish what is queued (up to `wait_ms`) and stops it; later appends are
// written at once again. Registered with atexit by StartWriter.
void StopWriter(uint32_t wait_ms = 2000);
// Where Emit writes; 2 (stderr) by default.
void SetFd(int fd);
[[nodiscard]] int Fd();
// Sends lines to `path` (appended, created mode 0640) instead. Called again for the same
// path, it reopens it onto the same descriptor (logrotate's SIGUSR1), so writers that hold
// the descriptor number go on into the new file. Returns an error text, empty on success.
[[nodiscard]] std::string OpenFile(const std::string& path);

}  // namespace relais::log
